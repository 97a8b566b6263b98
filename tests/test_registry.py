"""contest_study.registry: keys, reuse, forced retraining, interruptions, locks, tables."""

import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from contest_study.metrics import evaluate_run
import contest_study.registry as registry_module
from contest_study.registry import (
    ENGINE_LIBRARIES,
    ENGINE_MODULES,
    FORCE_ENV,
    Registry,
    RegistryError,
    RunLockedError,
    best_per_family,
    engine_version,
    save_predictions,
)

LABELS = ["label_1", "label_2", "label_3"]
RUN = dict(model="cnn_1b", family="cnn", hyperparams={"lr": 1e-3, "filters": [16, 32]}, data_fingerprint="fp0", seed=7)


@pytest.fixture(autouse=True)
def no_forced_retraining(monkeypatch):
    monkeypatch.delenv(FORCE_ENV, raising=False)


def scored_payload(seed=0, quality=0.5, oracle=False, **extra):
    """A payload as the training engine returns it, scored on random predictions."""
    rng = np.random.default_rng(seed)
    val_true = (rng.random((80, 3)) < 0.4).astype(int)
    holdout_true = (rng.random((40, 3)) < 0.4).astype(int)
    val_score = np.clip(quality * val_true + (1 - quality) * rng.random((80, 3)), 0, 1)
    holdout_score = np.clip(quality * holdout_true + (1 - quality) * rng.random((40, 3)), 0, 1)
    scores = evaluate_run(
        LABELS,
        val_true=val_true,
        val_score=val_score,
        holdout_true=holdout_true,
        holdout_score=holdout_score,
        val_black=np.arange(80) < 20,
        holdout_black=np.arange(40) < 10,
        oracle_val=np.clip(val_true * 0.9, 0.05, 1) if oracle else None,
        oracle_holdout=np.clip(holdout_true * 0.9, 0.05, 1) if oracle else None,
    )
    return {
        "description": "a test run",
        "label_names": LABELS,
        "epochs_run": 3,
        "best_epoch": 2,
        "stopped_because": "epoch cap",
        "wall_time_s": 1.5,
        "params": 1234,
        "history": {"loss": [0.7, 0.5, 0.4], "val_loss": [0.8, 0.6, 0.55]},
        **scores,
        **extra,
    }


class CountingRun:
    """A run_fn that counts its calls and returns a scored payload."""

    def __init__(self, **payload_options):
        self.calls = 0
        self.payload_options = payload_options

    def __call__(self, workdir):
        self.calls += 1
        (workdir / "history.csv").write_text(f"call {self.calls}\n")
        return scored_payload(**self.payload_options, description=f"call {self.calls}")


# ----------------------------------------------------------------------------- keys


def test_key_is_stable_across_dict_order_and_processes():
    key = Registry.make_key(**{k: RUN[k] for k in ("model", "hyperparams", "data_fingerprint", "seed")})
    reordered = Registry.make_key("cnn_1b", {"filters": (16, 32), "lr": 0.001}, "fp0", 7)
    assert key == reordered
    # A fixed value: changing the hashing scheme would silently orphan every stored run.
    assert Registry.make_key("cnn_1b", {"lr": 1e-3}, "fp0", 7, engine_version="e1") == "cnn_1b-241b2a567d7d"
    code = (
        "from contest_study.registry import Registry; "
        "print(Registry.make_key('cnn_1b', {'lr': 1e-3, 'filters': [16, 32]}, 'fp0', 7))"
    )
    other_process = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    assert other_process.stdout.strip() == key


def test_key_changes_with_every_part():
    base = Registry.make_key("cnn_1b", {"lr": 1e-3}, "fp0", 7)
    assert Registry.make_key("cnn_2b", {"lr": 1e-3}, "fp0", 7) != base
    assert Registry.make_key("cnn_1b", {"lr": 1e-2}, "fp0", 7) != base
    assert Registry.make_key("cnn_1b", {"lr": 1e-3}, "fp1", 7) != base
    assert Registry.make_key("cnn_1b", {"lr": 1e-3}, "fp0", 8) != base
    assert Registry.make_key("cnn_1b", {"lr": np.float64(1e-3)}, "fp0", np.int64(7)) == base
    assert Registry.make_key("cnn_1b", {"lr": 1e-3}, "fp0", 7, engine_version=engine_version()) == base
    assert Registry.make_key("cnn_1b", {"lr": 1e-3}, "fp0", 7, engine_version="another engine") != base


def test_engine_version_follows_the_code_and_the_libraries(monkeypatch):
    engine_version.cache_clear()
    before = engine_version()
    monkeypatch.setattr(registry_module, "ENGINE_LIBRARIES", {**ENGINE_LIBRARIES, "keras": ("no-such-package",)})
    engine_version.cache_clear()
    assert engine_version() != before
    monkeypatch.setattr(registry_module, "ENGINE_LIBRARIES", ENGINE_LIBRARIES)
    monkeypatch.setattr(registry_module, "ENGINE_MODULES", ENGINE_MODULES[1:])
    engine_version.cache_clear()
    assert engine_version() != before
    monkeypatch.undo()
    engine_version.cache_clear()
    assert engine_version() == before


def test_records_of_another_engine_version_are_neither_reused_nor_listed(tmp_path):
    old = Registry(tmp_path, engine_version="old-engine")
    run = CountingRun()
    stale = old.fetch_or_run(**RUN, run_fn=run)
    assert stale.data["engine_version"] == "old-engine"
    new = Registry(tmp_path, engine_version="new-engine")
    assert new.records() == [] and new.table().empty
    fresh = new.fetch_or_run(**RUN, run_fn=run)
    assert run.calls == 2 and fresh.key != stale.key
    assert [r.key for r in new.records()] == [fresh.key]
    # A directory whose record names another engine than its key says is refused, not reused.
    record = json.loads(fresh.record_file.read_text())
    fresh.record_file.write_text(json.dumps({**record, "engine_version": "old-engine"}))
    assert new.get(fresh.key) is None
    new.fetch_or_run(**RUN, run_fn=run)
    assert run.calls == 3 and new.get(fresh.key).data["engine_version"] == "new-engine"


def test_records_carry_library_versions_and_git_commit(tmp_path):
    record = Registry(tmp_path).fetch_or_run(**RUN, run_fn=CountingRun())
    versions = record.data["library_versions"]
    assert set(versions) == {"tensorflow", "keras", "numpy", "scikit-learn", "python"}
    assert versions["numpy"] == np.__version__
    git = record.data["git"]
    assert set(git) == {"commit", "dirty"}
    assert git["commit"] is None or len(git["commit"]) == 40


def read_events(log_dir):
    """The events of every event file in ``log_dir`` (TFRecord framing: length, its CRC, data, its CRC)."""
    from tensorboard.compat.proto.event_pb2 import Event

    events = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        content = path.read_bytes()
        while content:
            (length,) = struct.unpack("<Q", content[:8])
            events.append(Event.FromString(content[12 : 12 + length]))
            content = content[16 + length :]
    return events


def test_every_installed_run_writes_an_hparams_summary(tmp_path):
    from tensorboard.plugins.hparams import plugin_data_pb2

    record = Registry(tmp_path).fetch_or_run(**RUN, run_fn=CountingRun())
    values = {value.tag: value for event in read_events(record.path / "tensorboard") for value in event.summary.value}
    assert set(values) == {"_hparams_/session_start_info", "val_map", "val_map_non_black"}
    start = plugin_data_pb2.HParamsPluginData.FromString(
        values["_hparams_/session_start_info"].metadata.plugin_data.content
    ).session_start_info
    assert start.group_name == record.key
    assert start.hparams["model"].string_value == "cnn_1b" and start.hparams["seed"].number_value == 7
    assert start.hparams["filters"].string_value == "[16, 32]"
    assert values["val_map"].tensor.float_val[0] == pytest.approx(record.metrics["val"]["all"]["map"], rel=1e-6)
    assert values["val_map_non_black"].tensor.float_val[0] == pytest.approx(
        record.metrics["val"]["non_black"]["map"], rel=1e-6
    )


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        (("../evil", {}, "fp", 0), ValueError, "model name"),
        (("cnn", [], "fp", 0), TypeError, "hyperparams must be a dict"),
        (("cnn", {}, "", 0), ValueError, "data_fingerprint"),
        (("cnn", {}, "fp", 1.5), TypeError, "seed"),
        (("cnn", {"optimizer": object()}, "fp", 0), TypeError, "hyperparams.optimizer"),
    ],
)
def test_bad_key_parts(arguments, error, message):
    with pytest.raises(error, match=message):
        Registry.make_key(*arguments)


# ----------------------------------------------------------------------------- reuse and retraining


def test_finished_run_is_reused(tmp_path):
    registry = Registry(tmp_path)
    run = CountingRun()
    first = registry.fetch_or_run(**RUN, run_fn=run)
    second = Registry(tmp_path).fetch_or_run(**RUN, run_fn=run)
    assert run.calls == 1
    assert first.key == second.key == Registry.make_key("cnn_1b", RUN["hyperparams"], "fp0", 7)
    assert second.path == tmp_path / first.key
    assert second.data == first.data
    assert {name: second.data[name] for name in RUN} == RUN
    assert second.data["created"]
    assert registry.get(first.key).description == "call 1"
    assert not (tmp_path / ".incomplete" / first.key).exists()
    assert not (tmp_path / ".locks" / f"{first.key}.lock").exists()


def test_forced_retrain_replaces_the_entry(tmp_path):
    registry = Registry(tmp_path)
    run = CountingRun()
    first = registry.fetch_or_run(**RUN, run_fn=run)
    replaced = registry.fetch_or_run(**RUN, run_fn=run, force=True)
    assert run.calls == 2
    assert replaced.key == first.key
    assert replaced.description == "call 2"
    assert (replaced.path / "history.csv").read_text() == "call 2\n"
    assert [r.key for r in registry.records()] == [first.key]
    assert not any((tmp_path / ".replaced").iterdir())


def test_environment_variable_forces_every_call(tmp_path, monkeypatch):
    registry = Registry(tmp_path)
    run = CountingRun()
    registry.fetch_or_run(**RUN, run_fn=run)
    monkeypatch.setenv(FORCE_ENV, "1")
    registry.fetch_or_run(**RUN, run_fn=run)
    assert run.calls == 2
    monkeypatch.setenv(FORCE_ENV, "0")
    registry.fetch_or_run(**RUN, run_fn=run)
    assert run.calls == 2
    monkeypatch.setenv(FORCE_ENV, "yes")
    with pytest.raises(ValueError, match=FORCE_ENV):
        registry.fetch_or_run(**RUN, run_fn=run)


def test_interrupted_run_leaves_no_entry_and_resumes(tmp_path):
    registry = Registry(tmp_path)
    key = Registry.make_key(RUN["model"], RUN["hyperparams"], RUN["data_fingerprint"], RUN["seed"])

    def interrupted(workdir):
        (workdir / "backup").mkdir()
        (workdir / "backup" / "epoch.txt").write_text("2")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        registry.fetch_or_run(**RUN, run_fn=interrupted)
    assert registry.get(key) is None
    assert registry.records() == []
    assert (tmp_path / ".incomplete" / key / "backup" / "epoch.txt").read_text() == "2"
    assert not (tmp_path / ".locks" / f"{key}.lock").exists()

    seen = {}

    def resumed(workdir):
        seen["epoch"] = (workdir / "backup" / "epoch.txt").read_text()
        return scored_payload()

    record = registry.fetch_or_run(**RUN, run_fn=resumed)
    assert seen["epoch"] == "2"
    assert (record.path / "backup" / "epoch.txt").is_file()
    assert not (tmp_path / ".incomplete" / key).exists()


def test_forced_run_starts_from_scratch_and_keeps_the_old_entry_until_it_finishes(tmp_path):
    registry = Registry(tmp_path)
    registry.fetch_or_run(**RUN, run_fn=CountingRun())

    def interrupted(workdir):
        (workdir / "partial").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        registry.fetch_or_run(**RUN, run_fn=interrupted, force=True)
    assert registry.records()[0].description == "call 1"

    def fresh(workdir):
        assert not (workdir / "partial").exists()
        return scored_payload()

    registry.fetch_or_run(**RUN, run_fn=fresh, force=True)


def test_payload_is_checked_and_stored_as_strict_json(tmp_path):
    registry = Registry(tmp_path)
    with pytest.raises(TypeError, match="must return a dict"):
        registry.fetch_or_run(**RUN, run_fn=lambda workdir: None)
    with pytest.raises(ValueError, match="returned model='rnn'"):
        registry.fetch_or_run(**RUN, run_fn=lambda workdir: {"model": "rnn"})
    with pytest.raises(TypeError, match="record.odd"):
        registry.fetch_or_run(**RUN, run_fn=lambda workdir: {"odd": {1, 2}})
    assert registry.records() == []

    record = registry.fetch_or_run(
        **RUN, run_fn=lambda workdir: {"model": "cnn_1b", "ap": float("nan"), "n": np.int64(3), "x": np.ones(2)}
    )

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    stored = json.loads(record.record_file.read_text(), parse_constant=refuse)
    assert stored["ap"] is None and stored["n"] == 3 and stored["x"] == [1.0, 1.0]


def test_recursive_call_for_the_same_key_is_refused(tmp_path):
    registry = Registry(tmp_path)

    def recursive(workdir):
        return registry.fetch_or_run(**RUN, run_fn=recursive)

    with pytest.raises(RuntimeError, match="already being trained by this thread"):
        registry.fetch_or_run(**RUN, run_fn=recursive)


# ----------------------------------------------------------------------------- locks


def lock_file(tmp_path):
    key = Registry.make_key(RUN["model"], RUN["hyperparams"], RUN["data_fingerprint"], RUN["seed"])
    path = tmp_path / ".locks" / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def start_time(pid):
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


@pytest.fixture
def live_process():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def write_lock(path, pid, host=None, start=None):
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "start": start}))


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_live_lock_makes_the_caller_wait_then_raise(tmp_path, live_process):
    path = lock_file(tmp_path)
    write_lock(path, live_process.pid, start=start_time(live_process.pid))
    registry = Registry(tmp_path, lock_timeout_s=0.3, lock_poll_s=0.05)
    run = CountingRun()
    started = time.monotonic()
    with pytest.raises(RunLockedError, match=f"process {live_process.pid} .*{path.name}"):
        registry.fetch_or_run(**RUN, run_fn=run)
    assert time.monotonic() - started >= 0.3
    assert run.calls == 0 and path.exists()

    # The owner dies: its lock is stale and taken over.
    live_process.kill()
    live_process.wait()
    registry.fetch_or_run(**RUN, run_fn=run)
    assert run.calls == 1 and not path.exists()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_reused_pid_is_a_stale_lock(tmp_path, live_process):
    path = lock_file(tmp_path)
    write_lock(path, live_process.pid, start="0")  # a pid now used by another process
    run = CountingRun()
    Registry(tmp_path, lock_timeout_s=0.3, lock_poll_s=0.05).fetch_or_run(**RUN, run_fn=run)
    assert run.calls == 1


def test_lock_of_another_host_is_waited_for_a_bounded_time_then_reported(tmp_path, caplog):
    path = lock_file(tmp_path)
    path.write_text(json.dumps({"pid": 4242, "host": "some-other-machine", "start": None, "since": time.time() - 3600}))
    registry = Registry(tmp_path, lock_timeout_s=2, lock_poll_s=0.05, lock_report_s=0.05)
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="contest_study.registry"):
        with pytest.raises(RunLockedError) as error:
            registry.fetch_or_run(**RUN, run_fn=CountingRun())
    assert 2 <= time.monotonic() - started < 60
    message = str(error.value)
    for part in ("process 4242 on host some-other-machine", "held for 36", str(path), "delete the lock file"):
        assert part in message
    waiting = [record.getMessage() for record in caplog.records if "is locked by" in record.getMessage()]
    assert len(waiting) >= 2 and "some-other-machine" in waiting[0]  # said at once, then again
    assert path.exists()


def test_lock_timeout_comes_from_the_environment(tmp_path, monkeypatch):
    assert Registry(tmp_path).lock_timeout_s == 600
    monkeypatch.setenv("STUDY_LOCK_TIMEOUT_S", "12.5")
    assert Registry(tmp_path).lock_timeout_s == 12.5
    monkeypatch.setenv("STUDY_LOCK_TIMEOUT_S", "ten minutes")
    with pytest.raises(ValueError, match="STUDY_LOCK_TIMEOUT_S"):
        Registry(tmp_path)


def test_unreadable_lock_is_stale_only_once_old(tmp_path):
    path = lock_file(tmp_path)
    path.write_text("")  # its creator has not written its pid yet
    registry = Registry(tmp_path, lock_timeout_s=0.1, lock_poll_s=0.05)
    with pytest.raises(RunLockedError):
        registry.fetch_or_run(**RUN, run_fn=CountingRun())
    an_hour_ago = time.time() - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))
    run = CountingRun()
    registry.fetch_or_run(**RUN, run_fn=run)
    assert run.calls == 1


def test_dead_pid_lock_is_taken_over(tmp_path):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    write_lock(lock_file(tmp_path), finished.pid)
    run = CountingRun()
    Registry(tmp_path, lock_timeout_s=1, lock_poll_s=0.05).fetch_or_run(**RUN, run_fn=run)
    assert run.calls == 1


def test_second_process_waits_for_the_first_and_reuses_its_run(tmp_path):
    started_flag = tmp_path / "started"
    child_code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from contest_study.registry import Registry

        def run(workdir):
            Path({str(started_flag)!r}).write_text("yes")
            time.sleep(1.0)
            return {{"description": "trained by the child"}}

        Registry(Path({str(tmp_path / "runs")!r})).fetch_or_run(
            model="cnn_1b", family="cnn", hyperparams={RUN["hyperparams"]!r}, data_fingerprint="fp0", seed=7, run_fn=run
        )
        """
    )
    child = subprocess.Popen([sys.executable, "-c", child_code])
    try:
        deadline = time.monotonic() + 30
        while not started_flag.exists():
            assert child.poll() is None, "the child process failed"
            assert time.monotonic() < deadline
            time.sleep(0.02)

        def must_not_run(workdir):
            raise AssertionError("the key was trained twice")

        registry = Registry(tmp_path / "runs", lock_timeout_s=30, lock_poll_s=0.05)
        # Even a forced call takes the entry finished while it waited: it is newer than the call.
        record = registry.fetch_or_run(**RUN, run_fn=must_not_run, force=True)
        assert record.description == "trained by the child"
    finally:
        assert child.wait(timeout=30) == 0


# ----------------------------------------------------------------------------- reading


def test_corrupt_record_is_an_error_naming_the_file(tmp_path):
    registry = Registry(tmp_path)
    record = registry.fetch_or_run(**RUN, run_fn=CountingRun())
    record.record_file.write_text("{not json")
    for read in (lambda: registry.get(record.key), registry.records, registry.table):
        with pytest.raises(RegistryError, match=str(record.record_file)):
            read()
    with pytest.raises(RegistryError, match=str(record.record_file)):
        registry.fetch_or_run(**RUN, run_fn=CountingRun())

    record.record_file.write_text(json.dumps({"key": "another-key"}))
    with pytest.raises(RegistryError, match="has key 'another-key'"):
        registry.get(record.key)
    record.record_file.unlink()
    with pytest.raises(RegistryError, match="has no record.json"):
        registry.records()


def test_record_accessors(tmp_path):
    registry = Registry(tmp_path)

    def run(workdir):
        save_predictions(workdir, val_ids=np.array(["a.png", "b.png"]), val_score=np.array([[0.1, 0.2, 0.3]] * 2))
        (workdir / "best.weights.h5").write_bytes(b"weights")
        return scored_payload()

    record = registry.fetch_or_run(**RUN, run_fn=run)
    assert record.model == "cnn_1b" and record.family == "cnn" and record.seed == 7
    assert record.hyperparams == RUN["hyperparams"]
    assert record.label_names == LABELS
    assert set(record.thresholds) == set(LABELS)
    assert set(record.metrics) == {"val", "holdout"} and record.oracle is None
    assert list(record.history.columns) == ["loss", "val_loss"]
    assert list(record.history.index) == [1, 2, 3] and record.history.index.name == "epoch"
    predictions = record.predictions()
    assert predictions["val_ids"].tolist() == ["a.png", "b.png"]
    assert predictions["val_score"].shape == (2, 3)
    assert record.weights_path == record.path / "best.weights.h5"

    other = registry.fetch_or_run(**{**RUN, "seed": 8}, run_fn=lambda workdir: {"history": {}})
    assert other.weights_path is None
    assert other.history.empty
    with pytest.raises(FileNotFoundError, match="predictions.npz"):
        other.predictions()
    with pytest.raises(RegistryError, match="has no 'metrics'"):
        other.metrics


def test_table_and_best_per_family(tmp_path):
    registry = Registry(tmp_path)
    assert registry.table().empty
    runs = [
        ("cnn_1b", "cnn", 0.2, False),
        ("cnn_2b", "cnn", 0.6, False),
        ("gru", "rnn", 0.4, True),
    ]
    for model, family, quality, oracle in runs:
        registry.fetch_or_run(
            model=model,
            family=family,
            hyperparams={},
            data_fingerprint="fp0",
            seed=0,
            run_fn=lambda workdir, q=quality, o=oracle: scored_payload(quality=q, oracle=o),
        )
    table = registry.table()
    assert list(table.columns) == [
        "model",
        "family",
        "description",
        "val AP label_1",
        "val AP label_2",
        "val AP label_3",
        "val mAP",
        "val mAP (non-black)",
        "holdout mAP",
        "holdout mAP (non-black)",
        "val F1 macro (tuned)",
        "holdout F1 macro (tuned)",
        "val accuracy",
        "oracle val mAP",
        "params",
        "epochs",
        "best epoch",
        "stopped by",
        "wall time (s)",
        "key",
    ]
    assert list(table["model"]) == ["cnn_2b", "gru", "cnn_1b"]
    assert table["val mAP"].is_monotonic_decreasing
    assert table["oracle val mAP"].isna().tolist() == [True, False, True]
    assert table.loc[0, "params"] == 1234 and table.loc[0, "epochs"] == 3
    assert table.loc[0, "best epoch"] == 2 and table.loc[0, "stopped by"] == "epoch cap"
    gru = registry.records(family="rnn")[0]
    assert table.loc[1, "val mAP"] == pytest.approx(gru.metrics["val"]["all"]["map"])
    assert table.loc[1, "val AP label_2"] == pytest.approx(gru.metrics["val"]["all"]["ap"]["label_2"])

    without_oracle = registry.table(registry.records(family="cnn"))
    assert "oracle val mAP" not in without_oracle.columns and len(without_oracle) == 2

    best = best_per_family(registry.records())
    assert [(r.family, r.model) for r in best] == [("cnn", "cnn_2b"), ("rnn", "gru")]


def test_undefined_metrics_become_nan_in_the_table(tmp_path):
    registry = Registry(tmp_path)
    payload = scored_payload()
    payload["metrics"]["val"]["all"]["ap"]["label_2"] = float("nan")
    payload["params"] = None
    record = registry.fetch_or_run(**RUN, run_fn=lambda workdir: payload)
    assert record.metrics["val"]["all"]["ap"]["label_2"] is None
    table = registry.table()
    assert np.isnan(table.loc[0, "val AP label_2"]) and np.isnan(table.loc[0, "params"])
    assert pd.api.types.is_float_dtype(table["val AP label_2"])

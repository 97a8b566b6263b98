"""The grid search (keras-tuner over the engine and registry) and its distributed roles.

The distributed tests start a chief and workers (``scripts/distributed_search.py``) on
127.0.0.1: one worker is killed with SIGKILL while it holds a trial, and the search still ends.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import pytest

from contest_study import grid, search
from contest_study.registry import Registry
from contest_study.study import open_study

REPOSITORY = Path(__file__).resolve().parents[1]
SCRIPT = REPOSITORY / "scripts" / "distributed_search.py"


def build_tiny_dense(input_shape, n_labels):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(keras.layers.AveragePooling2D(8)(inputs))
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(n_labels, activation="sigmoid", name="labels")(x), name="tiny_dense")


@pytest.fixture
def tiny_study(make_contest_folder, tmp_path):
    """A smoke-profile study on a tiny folder, with one finished run whose architecture the trials train."""
    data = make_contest_folder(n_train=40, n_val=16, n_test=4)
    study = open_study(profile="smoke", data_dir=data, workdir=tmp_path / "work", seed=3)
    architecture = study.train(build_tiny_dense, family="fully_connected", description="tiny dense network")
    return SimpleNamespace(study=study, data=data, workdir=tmp_path / "work", architecture=architecture)


def test_a_local_search_stores_every_trial_and_a_second_search_trains_nothing(tiny_study, tmp_path):
    trials = grid.make_trials(tiny_study.architecture.key,
                              grid.expand_grid({"learning_rate": (1e-3, 1e-2)}, {"epochs": 1, "lr_schedule": "constant"}), "smoke")
    runner = search.TrialRunner(tiny_study.study, log=None)
    outcome = search.run_search(runner, trials, directory=tmp_path / "kt", name="grid")
    assert all(outcome.records) and not outcome.failures
    assert len(runner.trained) == 2
    assert {record.family for record in outcome.records} == {search.TRIAL_FAMILY}
    assert {record.data["trained_by"]["worker"] for record in outcome.records} == {"local"}
    table = search.trials_table(outcome)
    assert sorted(table["learning_rate"]) == [1e-3, 1e-2]
    assert table["95% CI low"].notna().all()
    spread = search.spread_table(table, chance=0.0)
    assert spread.loc[0, "trials"] == spread.loc[0, "finished"] == spread.loc[0, "above chance"] == 2
    assert spread.loc[0, "min"] <= spread.loc[0, "q50"] <= spread.loc[0, "max"]
    assert search.spread_table(table, chance=1.0).loc[0, "above chance"] == 0

    again = search.TrialRunner(tiny_study.study, log=None)
    second = search.run_search(again, trials, directory=tmp_path / "kt", name="grid")
    assert again.trained == []
    assert [record.key for record in second.records] == [record.key for record in outcome.records]


def test_a_trial_naming_an_unknown_architecture_fails_with_the_registry_named(tiny_study):
    runner = search.TrialRunner(tiny_study.study, log=None)
    with pytest.raises(Exception, match="not in the registry"):
        runner.run(grid.TrialSpec("0" * 16, {"epochs": 1}, profile="smoke"))


def test_a_worker_refuses_trials_planned_on_other_data():
    study = SimpleNamespace(registry=Registry(Path("unused")), data=SimpleNamespace(fingerprint="abc"),
                            context=SimpleNamespace(seed=42))
    runner = search.TrialRunner(study, worker="w")
    runner.check_identity({"data_fingerprint": "abc", "seed": 42})
    with pytest.raises(Exception, match="data_fingerprint.*same data folder"):
        runner.check_identity({"data_fingerprint": "other", "seed": 42})


def test_the_oracle_waits_for_held_trials_and_requeues_a_silent_workers_trial(tmp_path):
    trials = [grid.TrialSpec("k", {"learning_rate": rate}) for rate in (1e-3, 1e-2)]
    oracle = search.PlannedTrialsOracle(trials)
    oracle._set_project_dir(str(tmp_path), "oracle")
    first, second = oracle.create_trial("a"), oracle.create_trial("b")
    assert {first.status, second.status} == {"RUNNING"}
    assert oracle.create_trial("c").status == "IDLE"  # both held: c waits instead of stopping
    oracle.last_heard["a"] -= 100
    assert [tuner for tuner, _ in oracle.requeue_silent(50)] == ["a"]
    again = oracle.create_trial("c")
    assert again.trial_id == first.trial_id and again.status == "RUNNING"
    for tuner, trial in (("c", again), ("b", second)):
        trial.status = "COMPLETED"
        oracle.update_trial(trial.trial_id, {search.OBJECTIVE: 0.5})
        oracle.end_trial(trial)
    assert oracle.finished()
    assert oracle.create_trial("c").status == "STOPPED"


# ----------------------------------------------------------------------------- distributed


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_line(path: Path, text: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise AssertionError(f"{path.name}: exited with {process.returncode}:\n{path.read_text(errors='replace')}")
        time.sleep(0.2)
    raise AssertionError(f"{path.name}: no {text!r} within {timeout_s} s:\n{path.read_text(errors='replace')}")


class Processes:
    def __init__(self, folder: Path, common: list[str]):
        self.folder, self.common = folder, common
        self.running, self.logs = {}, {}
        self.environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg"}

    def start(self, name: str, arguments: list[str]) -> subprocess.Popen:
        self.logs[name] = self.folder / f"{name}.log"
        with open(self.logs[name], "w") as log:
            self.running[name] = subprocess.Popen([sys.executable, str(SCRIPT), *arguments, *self.common], stdout=log,
                                                  stderr=subprocess.STDOUT, env=self.environment)
        return self.running[name]

    def report(self) -> str:
        return "\n\n".join(f"{log.name}:\n{log.read_text(errors='replace')}" for log in self.logs.values())

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def test_a_worker_killed_mid_trial_does_not_stop_the_search(tiny_study, tmp_path):
    port = _free_port()
    processes = Processes(tmp_path, ["--data-dir", str(tiny_study.data), "--workdir", str(tiny_study.workdir),
                                     "--seed", "3"])
    try:
        chief = processes.start("chief", ["chief", "--profile", "smoke", "--port", str(port), "--worker-timeout", "10",
                                          "--architecture", tiny_study.architecture.key,
                                          "--axis", "learning_rate=0.001,0.003,0.01,0.03"])
        _wait_for_line(processes.logs["chief"], "serving 4 trials on 127.0.0.1", chief, timeout_s=120)
        doomed = processes.start("doomed", ["worker", "--chief", f"127.0.0.1:{port}", "--id", "doomed",
                                            "--heartbeat", "1"])
        _wait_for_line(processes.logs["doomed"], "doomed: claimed", doomed, timeout_s=120)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
        survivor = processes.start("survivor", ["worker", "--chief", f"127.0.0.1:{port}", "--id", "survivor",
                                                "--heartbeat", "1"])
        assert survivor.wait(timeout=600) == 0, processes.report()
        assert chief.wait(timeout=120) == 0, processes.report()
    finally:
        processes.stop_all()
    assert "doomed silent for more than 10 s" in processes.logs["chief"].read_text()
    trials = [json.loads(path.read_text()) for path in (tiny_study.workdir / "runs").glob("*/record.json")]
    trials = [record for record in trials if record["family"] == search.TRIAL_FAMILY]
    assert sorted(record["hyperparams"]["learning_rate"] for record in trials) == [0.001, 0.003, 0.01, 0.03]
    assert {record["trained_by"]["worker"] for record in trials} == {"survivor"}


def test_a_worker_gives_up_when_the_chief_is_unreachable(tiny_study, tmp_path):
    processes = Processes(tmp_path, ["--data-dir", str(tiny_study.data), "--workdir", str(tiny_study.workdir)])
    try:
        worker = processes.start("lonely", ["worker", "--chief", f"127.0.0.1:{_free_port()}", "--id", "lonely",
                                            "--chief-timeout", "2"])
        assert worker.wait(timeout=120) == 2, processes.report()
    finally:
        processes.stop_all()
    assert "has not answered for 2 s; giving up" in processes.logs["lonely"].read_text()


def test_the_script_rejects_bad_arguments(capsys):
    spec = importlib.util.spec_from_file_location("distributed_search", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for arguments, message in (
        (["worker", "--chief", "nowhere"], "HOST:PORT"),
        (["chief", "--axis", "colour=red"], "TrainConfig field"),
        (["chief", "--axis", "learning_rate=fast"], "not a valid float"),
        (["chief", "--profile", "huge"], "invalid choice"),
        (["chief", "--worker-timeout", "0"], "seconds > 0"),
    ):
        with pytest.raises(SystemExit):
            script.build_parser().parse_args(arguments)
        assert message in capsys.readouterr().err
    assert script.build_parser().parse_args(["chief"]).bind == "127.0.0.1"
    with pytest.raises(SystemExit, match="must not contain 'chief'"):
        script.main(["worker", "--chief", "127.0.0.1:1", "--id", "chief-2"])

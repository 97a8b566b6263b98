"""The hyperparameter study: grid expansion, the scikit-learn wiring, and the search through keras-tuner.

The two-worker test starts a keras-tuner chief and two workers (``scripts/distributed_search.py``)
on 127.0.0.1 and checks that the trials of both land in one results registry.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sklearn.model_selection import GridSearchCV, KFold

from contest_study import tuning
from contest_study.config import StudyContext, get_profile
from contest_study.metrics import multilabel_average_precision_scorer
from contest_study.registry import Registry
from contest_study.study import open_study
from contest_study.training import config_for_profile, experiment_hyperparams

REPOSITORY = Path(__file__).resolve().parents[1]
SCRIPT = REPOSITORY / "scripts" / "distributed_search.py"


# ----------------------------------------------------------------------------- grid expansion


def test_source_grid_expands_to_144_distinct_combinations_with_the_head_of_each_loss():
    combinations = tuning.expand_grid(tuning.SOURCE_GRID)
    assert len(combinations) == 2 * 3 * 2 * 2 * 2 * 3 == 144
    assert len({json.dumps(c, sort_keys=True) for c in combinations}) == 144
    for combination in combinations:
        assert combination["output_activation"] == tuning.HEAD_FOR_LOSS[combination["loss"]]
    # Every value of every axis appears equally often.
    for axis, values in tuning.SOURCE_GRID.items():
        counts = {value: sum(c[axis] == value for c in combinations) for value in values}
        assert set(counts.values()) == {144 // len(values)}


def test_expand_grid_keeps_fixed_settings_and_an_explicit_head():
    combinations = tuning.expand_grid({"learning_rate": (1e-3, 1e-2)},
                                      {"loss": "categorical_crossentropy", "output_activation": "sigmoid"})
    assert combinations == [
        {"loss": "categorical_crossentropy", "output_activation": "sigmoid", "learning_rate": 1e-3},
        {"loss": "categorical_crossentropy", "output_activation": "sigmoid", "learning_rate": 1e-2},
    ]


@pytest.mark.parametrize(
    "axes, fixed, message",
    [
        ({"learning_rates": (1e-3,)}, None, "learning_rates"),
        ({"epochs": ()}, None, "'epochs' has no values"),
        ({"epochs": (5, 5)}, None, "repeats a value"),
        ({"epochs": (5,)}, {"epochs": 10}, "both a grid axis and a fixed setting"),
        ({"epochs": (5,)}, {"colour": "red"}, "colour"),
        ({"loss": ("hinge",)}, None, "'hinge' has no head"),
    ],
)
def test_expand_grid_rejects_bad_grids_naming_the_fault(axes, fixed, message):
    with pytest.raises(ValueError, match=message):
        tuning.expand_grid(axes, fixed)


@pytest.mark.parametrize("profile, cnn_trials", [("smoke", 4), ("default", 12 + 4 + 4 + 1), ("full", 144)])
def test_each_plan_expands_to_distinct_runs(profile, cnn_trials):
    plan = tuning.plan_for(profile)
    combinations = tuning.grid_combinations(plan.cnn_grids, plan.fixed)
    trials = tuning.make_trials("cnn_1a", combinations, plan)
    assert len(trials) == cnn_trials
    capped = replace(get_profile(profile), max_train_images=plan.train_images or get_profile(profile).max_train_images,
                     max_eval_images=plan.eval_images or get_profile(profile).max_eval_images)
    keys = {
        Registry.make_key(trial.model, experiment_hyperparams(trial.config, profile=capped), "fingerprint", 42)
        for trial in trials
    }
    assert len(keys) == len(trials)
    # The grid isolates what it varies: constant learning rate, the profile's epochs unless an axis sets them.
    assert {trial.config.lr_schedule for trial in trials} == {"constant"}
    if profile == "full":
        assert {(t.config.epochs, t.config.batch_size, t.config.train_metric) for t in trials} == {
            (e, b, m) for e in (5, 10) for b in (32, 64, 128) for m in ("f1", "accuracy")
        }


def test_the_grids_of_the_other_families_and_the_schedules_expand():
    plan = tuning.plan_for("default")
    assert len(tuning.grid_combinations([plan.fc_grid], plan.fixed)) == 6
    schedules = tuning.schedule_trials("cnn_1e", {"learning_rate": 1e-2, "optimizer": "sgd"}, plan)
    assert [trial.config.lr_schedule for trial in schedules] == list(tuning.SCHEDULES)
    assert {(t.config.epochs, t.config.learning_rate, t.config.optimizer) for t in schedules} == {
        (plan.schedule_epochs, 1e-2, "sgd")
    }


def test_a_trial_survives_its_trip_through_json():
    trial = tuning.TrialSpec(model="cnn_1e", config=config_for_profile("default", learning_rate=0.1, optimizer="sgd"),
                             profile="default", train_images=600, eval_images=600)
    assert tuning.TrialSpec.from_json(trial.to_json()) == trial
    with pytest.raises(ValueError, match="not a trial description"):
        tuning.TrialSpec.from_json('{"model": "cnn_1e"}')
    with pytest.raises(ValueError, match="unknown model"):
        tuning.TrialSpec(model="cnn_9", config=config_for_profile("smoke"), profile="smoke")
    with pytest.raises(ValueError, match="train_images"):
        tuning.TrialSpec(model="cnn_1a", config=config_for_profile("smoke"), profile="smoke", train_images=0)


def test_a_worker_refuses_trials_planned_on_other_data():
    study = SimpleNamespace(registry=Registry(Path("unused")), data=SimpleNamespace(fingerprint="abc"),
                            context=SimpleNamespace(seed=42))
    runner = tuning.TrialRunner(study, worker="w")
    runner.check_identity({"data_fingerprint": "abc", "seed": 42})
    with pytest.raises(Exception, match="data_fingerprint.*same data folder"):
        runner.check_identity({"data_fingerprint": "other", "seed": 42})


# ----------------------------------------------------------------------------- scikit-learn wiring


def test_grid_search_cv_scores_the_keras_wrapper_by_mean_average_precision():
    rng = np.random.default_rng(0)
    shape = (8, 8, 1)
    X = rng.random((48, 64), dtype=np.float32)
    y = (rng.random((48, 3)) < 0.4).astype(np.float32)
    y[:3] = 1  # every label has positives in every fold
    estimator = tuning.MultiLabelKerasEstimator(
        model=tuning.fc_network,
        model_kwargs={"image_shape": shape, "dropout": 0.0, "kernel_initializer": "glorot_uniform",
                      "learning_rate": 1e-3, "seed": 0},
    )
    candidates = [{**estimator.model_kwargs, "kernel_initializer": name} for name in ("zeros", "he_normal")]
    search = GridSearchCV(estimator, {"model_kwargs": candidates}, scoring=multilabel_average_precision_scorer,
                          cv=KFold(2, shuffle=True, random_state=0), error_score="raise")
    search.fit(X, y, epochs=1, batch_size=16, verbose=0)

    assert len(search.cv_results_["mean_test_score"]) == 2
    fitted = search.best_estimator_
    proba = fitted.predict_proba(X)
    assert proba.shape == (48, 3) and ((proba >= 0) & (proba <= 1)).all()
    # The scorer GridSearchCV used is scikit-learn's macro average precision of the probabilities.
    assert multilabel_average_precision_scorer(fitted, X, y) == pytest.approx(
        average_precision_score(y, proba, average="macro"))
    assert set(np.unique(fitted.predict(X))) <= {0, 1}

    # All-zero kernels: every image gets the same scores, so AP is each label's positive rate.
    zeros = tuning.MultiLabelKerasEstimator(model=tuning.fc_network, model_kwargs=candidates[0])
    zeros.fit(X, y, epochs=1, batch_size=16, verbose=0)
    constant = zeros.predict_proba(X)
    assert np.allclose(constant, constant[0], atol=1e-6)
    assert multilabel_average_precision_scorer(zeros, X, y) == pytest.approx(y.mean(axis=0).mean())


def test_the_wrapper_rejects_a_single_label_target():
    estimator = tuning.MultiLabelKerasEstimator(
        model=tuning.fc_network,
        model_kwargs={"image_shape": (4, 4, 1), "dropout": 0.0, "kernel_initializer": "zeros",
                      "learning_rate": 1e-3, "seed": 0},
    )
    with pytest.raises(ValueError, match="matrix"):
        estimator.fit(np.zeros((6, 16), np.float32), np.zeros(6, np.float32), epochs=1, verbose=0)


# ----------------------------------------------------------------------------- searches


def _tiny_study(folder: Path, workdir: Path):
    context = StudyContext(profile=get_profile("smoke"), workdir=workdir, data_dir=folder, seed=3)
    return open_study(context)


def _fc_trials(plan, rates=(1e-3, 1e-2)):
    return tuning.make_trials("fc_3a", tuning.grid_combinations([{"learning_rate": rates}], plan.fixed), plan)


def test_a_local_search_stores_every_trial_and_a_second_search_trains_nothing(make_contest_folder, tmp_path):
    study = _tiny_study(make_contest_folder(n_train=40, n_val=16, n_test=4), tmp_path / "work")
    plan = tuning.plan_for("smoke")
    trials = _fc_trials(plan)
    runner = tuning.TrialRunner(study, log=None)
    outcome = tuning.run_search(runner, trials, directory=tmp_path / "kt", name="grid")
    assert all(outcome.records) and not outcome.failures
    assert len(runner.trained) == 2
    assert {record.data["trained_by"]["worker"] for record in outcome.records} == {"local"}
    table = tuning.trials_table(outcome, chance=0.3)
    assert list(table["learning_rate"].sort_values()) == [1e-3, 1e-2]

    again = tuning.TrialRunner(study, log=None)
    second = tuning.run_search(again, trials, directory=tmp_path / "kt", name="grid")
    assert again.trained == []
    assert [record.key for record in second.records] == [record.key for record in outcome.records]


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


def test_two_workers_share_a_search_and_both_reach_the_registry(make_contest_folder, tmp_path):
    data = make_contest_folder(n_train=40, n_val=16, n_test=4)
    workdir = tmp_path / "work"
    port = _free_port()
    common = ["--data-dir", str(data), "--workdir", str(workdir), "--seed", "3"]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg"}
    processes, logs = {}, {}

    def start(name, arguments):
        logs[name] = tmp_path / f"{name}.log"
        with open(logs[name], "w") as log:
            processes[name] = subprocess.Popen([sys.executable, str(SCRIPT), *arguments], stdout=log,
                                               stderr=subprocess.STDOUT, env=environment)

    try:
        # The workers start first and block until the chief answers, so both get a trial at once.
        for name in ("w1", "w2"):
            start(name, ["worker", "--chief", f"127.0.0.1:{port}", "--id", name, *common])
        for name in ("w1", "w2"):
            _wait_for_line(logs[name], "ready", processes[name], timeout_s=90)
        start("chief", ["chief", "--profile", "smoke", "--bind", "127.0.0.1", "--port", str(port),
                        "--model", "fc_3a", "--axis", "learning_rate=0.001,0.003,0.01,0.03", *common])
        for name in ("w1", "w2"):
            processes[name].wait(timeout=120)
            assert processes[name].returncode == 0, "\n\n".join(
                f"{log.name}:\n{log.read_text(errors='replace')}" for log in logs.values())
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()

    records = [json.loads(path.read_text()) for path in (workdir / "runs").glob("*/record.json")]
    assert sorted(record["hyperparams"]["learning_rate"] for record in records) == [0.001, 0.003, 0.01, 0.03]
    assert {record["trained_by"]["worker"] for record in records} == {"w1", "w2"}
    assert all(record["model"] == "fc_3a" and record["metrics"]["val"]["all"]["n_images"] for record in records)


def test_the_script_rejects_bad_arguments(capsys):
    spec = importlib.util.spec_from_file_location("distributed_search", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for arguments, message in (
        (["worker", "--chief", "nowhere"], "HOST:PORT"),
        (["chief", "--model", "fc_3a", "--axis", "colour=red"], "TrainConfig field"),
        (["chief", "--model", "fc_3a", "--axis", "learning_rate=fast"], "not a valid float"),
        (["chief", "--profile", "huge"], "invalid choice"),
    ):
        with pytest.raises(SystemExit):
            script.build_parser().parse_args(arguments)
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit, match="must not contain 'chief'"):
        script.main(["worker", "--chief", "127.0.0.1:1", "--id", "chief-2"])

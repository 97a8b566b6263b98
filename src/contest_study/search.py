"""The grid search of notebook 05: keras-tuner hands out planned trials, the engine trains each into the registry.

Every trial is an ordinary ``Study.train`` run (family ``"tuning"``), so a finished trial is
found, not trained again, and an interrupted one resumes. :class:`PlannedTrialsOracle` hands
the trials out in order, to this process or (``contest_study.distributed``) to remote workers.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import keras_tuner
import numpy as np
import pandas as pd
from keras_tuner.engine.base_tuner import BaseTuner
from keras_tuner.engine.trial import TrialStatus

from contest_study.config import get_profile
from contest_study.data import black_mask
from contest_study.grid import CONFIG_COLUMNS, TrialSpec
from contest_study.registry import TRIAL_FAMILY, Registry, RunRecord

OBJECTIVE = "val_map"
TRIAL_HYPERPARAMETER = "trial"
FINISHED = (TrialStatus.COMPLETED, TrialStatus.FAILED)


class StampedRegistry(Registry):
    """The same registry, adding ``trained_by`` (worker, host, pid) to the records it creates.

    A trial found already finished keeps the stamp of whoever trained it; ``trained`` lists
    the keys this object actually trained.
    """

    def __init__(self, registry: Registry, worker: str):
        super().__init__(registry.root, lock_timeout_s=registry.lock_timeout_s, lock_poll_s=registry.lock_poll_s,
                         lock_report_s=registry.lock_report_s, engine_version=registry.engine_version)
        self.stamp = {"worker": worker, "host": socket.gethostname(), "pid": os.getpid()}
        self.trained: list[str] = []

    def fetch_or_run(self, *, run_fn, **kwargs) -> RunRecord:
        def stamped(workdir: Path) -> dict:
            payload = {**run_fn(workdir), "trained_by": self.stamp}
            self.trained.append(workdir.name)
            return payload

        return super().fetch_or_run(run_fn=stamped, **kwargs)


class LookupRegistry(Registry):
    """The same registry answering ``fetch_or_run`` with the finished entry or None, never training."""

    def __init__(self, registry: Registry):
        super().__init__(registry.root, lock_timeout_s=registry.lock_timeout_s, lock_poll_s=registry.lock_poll_s,
                         lock_report_s=registry.lock_report_s, engine_version=registry.engine_version)

    def fetch_or_run(self, *, model, hyperparams, data_fingerprint, seed, **_) -> RunRecord | None:
        return self.get(self.make_key(model, hyperparams, data_fingerprint, seed, self.engine_version))


class TrialRunner:
    """Runs (or finds) trials of one study through its engine and registry.

    ``worker`` names this process in the records it trains; ``log`` gets one line per trained trial.
    """

    def __init__(self, study, *, worker: str = "local", log: Callable[[str], None] | None = print):
        self.study = study
        self.registry = StampedRegistry(study.registry, worker)
        self.log = log
        self.records: dict[str, RunRecord] = {}

    @property
    def trained(self) -> list[str]:
        """Keys of the trials this runner trained (not found finished in the registry)."""
        return self.registry.trained

    def identity(self) -> dict:
        """What a worker must share with the chief for its runs to land under the chief's keys."""
        return {"data_fingerprint": self.study.data.fingerprint, "seed": self.study.context.seed}

    def check_identity(self, values: Mapping) -> None:
        """Refuse a trial from a search over other data or another seed (clear error)."""
        for name, own in self.identity().items():
            if name in values and values[name] != own:
                raise keras_tuner.errors.FatalError(
                    f"this worker's {name} is {own!r} but the search's is {values[name]!r}: point the worker at "
                    "the same data folder (a copy that keeps file times, e.g. rsync -a) and the same --seed as the chief"
                )

    def architecture(self, spec: TrialSpec) -> RunRecord:
        """The run whose saved Keras config is the trial's network (of any engine version: only its
        architecture is used)."""
        path = self.study.registry.root / spec.architecture
        if not path.is_dir():
            raise keras_tuner.errors.FatalError(
                f"run {spec.architecture} (the architecture of the trials) is not in the registry "
                f"{self.study.registry.root}: share the chief's --workdir, or copy that run folder here"
            )
        return RunRecord.load(path)

    def _train(self, spec: TrialSpec, registry: Registry) -> RunRecord | None:
        source = self.architecture(spec)
        context = replace(self.study.context, profile=get_profile(spec.profile))
        study = replace(self.study, registry=registry, context=context)
        # The engine prints one line per epoch; a search prints one line per trial instead.
        with contextlib.redirect_stdout(io.StringIO()):
            return study.train(self.study.builder_from_record(source), family=TRIAL_FAMILY,
                               description=f"{source.model}, hyperparameter trial: {spec.label()}",
                               train_fraction=spec.train_fraction, **spec.config)

    def find(self, spec: TrialSpec) -> RunRecord | None:
        """The finished record of ``spec``, or None (never trains)."""
        return self._train(spec, LookupRegistry(self.registry))

    def run(self, spec: TrialSpec) -> RunRecord:
        """The record of ``spec``, training it first when the registry does not hold it."""
        already = len(self.trained)
        started = time.perf_counter()
        record = self._train(spec, self.registry)
        self.records[spec.to_json()] = record
        if len(self.trained) > already and self.log:
            self.log(f"trained {spec.label()} in {time.perf_counter() - started:.1f} s: "
                     f"val mAP {record.metrics['val']['all']['map']:.3f}")
        return record


@contextlib.contextmanager
def quiet_tensorflow():
    """TensorFlow's Python warnings (retracing notices: every trial builds a new model) silenced."""
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        tf_logger.setLevel(level)


class PlannedTrialsOracle(keras_tuner.Oracle):
    """A keras-tuner oracle handing out a fixed list of trials, each once, in order.

    The grid is decided beforehand, so there is nothing to sample: a tuner that asks gets the
    next trial nobody holds; while others still train, it waits (IDLE), since a trial whose
    worker fell silent comes back (:meth:`requeue_silent`); once every trial has a result it
    stops. Each trial is one hyperparameter value, its JSON (:meth:`TrialSpec.to_json`);
    ``identity`` (data fingerprint, seed) travels as fixed values for workers to check.
    """

    def __init__(self, trials: Sequence[TrialSpec] = (), *, identity: Mapping | None = None, **kwargs):
        self.planned = list(dict.fromkeys(trial.to_json() for trial in trials))
        self._identity = dict(identity or {})
        hyperparameters = keras_tuner.HyperParameters()
        if self.planned:
            hyperparameters.Choice(TRIAL_HYPERPARAMETER, self.planned)
        for name, value in self._identity.items():
            hyperparameters.Fixed(name, value)
        super().__init__(objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
                         hyperparameters=hyperparameters, **kwargs)
        self.last_heard: dict[str, float] = {}

    def _status_of(self) -> dict[str, str]:
        return {trial.hyperparameters.values.get(TRIAL_HYPERPARAMETER): trial.status for trial in self.trials.values()}

    def populate_space(self, trial_id):
        statuses = self._status_of()
        for planned in self.planned:
            if planned not in statuses:
                return {"status": TrialStatus.RUNNING, "values": {TRIAL_HYPERPARAMETER: planned, **self._identity}}
        if self.finished():
            return {"status": TrialStatus.STOPPED, "values": None}
        return {"status": TrialStatus.IDLE, "values": None}

    @keras_tuner.synchronized
    def finished(self) -> bool:
        """Every planned trial has a result (completed or failed)."""
        statuses = self._status_of()
        return all(statuses.get(planned) in FINISHED for planned in self.planned) and not self._retry_queue

    def _heard(self, tuner_id: str | None) -> None:
        if tuner_id is not None:
            self.last_heard[tuner_id] = time.monotonic()

    def _holder(self, trial_id: str) -> str | None:
        return next((tuner for tuner, trial in self.ongoing_trials.items() if trial.trial_id == trial_id), None)

    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        self._heard(tuner_id)
        return super().create_trial(tuner_id)

    @keras_tuner.synchronized
    def update_trial(self, trial_id, metrics, step=0):
        self._heard(self._holder(trial_id))
        return super().update_trial(trial_id, metrics, step=step)

    @keras_tuner.synchronized
    def end_trial(self, trial):
        self._heard(self._holder(trial.trial_id))
        return super().end_trial(trial)

    @keras_tuner.synchronized
    def get_trial(self, trial_id):
        # A worker's heartbeat while it trains (contest_study.distributed).
        self._heard(self._holder(trial_id))
        return super().get_trial(trial_id)

    @keras_tuner.synchronized
    def requeue_silent(self, timeout_s: float) -> list[tuple[str, str]]:
        """Put back in the queue the trials of tuners silent for more than ``timeout_s``; returns (tuner, trial)."""
        now, requeued = time.monotonic(), []
        for tuner_id, trial in list(self.ongoing_trials.items()):
            if now - self.last_heard.get(tuner_id, now) > timeout_s:
                self.ongoing_trials.pop(tuner_id)
                self.tuner_ids.discard(tuner_id)
                self._retry_queue.append(trial.trial_id)
                requeued.append((tuner_id, trial.hyperparameters.values.get(TRIAL_HYPERPARAMETER)))
        return requeued


class RegistryTuner(BaseTuner):
    """A keras-tuner tuner whose trials are runs of the study's engine, stored in the registry.

    ``idle_wait_s``: pause before asking again while other tuners hold the last trials;
    ``trial_guard(trial)``: a context manager around each trial (a worker's heartbeat).
    """

    def __init__(self, oracle, runner: TrialRunner, *, idle_wait_s: float = 1.0, trial_guard=None,
                 on_claim: Callable[[TrialSpec], None] | None = None, **kwargs):
        self.runner = runner
        self.idle_wait_s = idle_wait_s
        self.trial_guard = trial_guard or (lambda trial: contextlib.nullcontext())
        self.on_claim = on_claim
        oracle.verbose = 0  # the runner prints one line per trained trial instead of keras-tuner's tables
        super().__init__(oracle=oracle, hypermodel=None, **kwargs)

    def search(self):
        """Ask for trials and run them until the oracle says stop (keras-tuner's loop, waiting when idle)."""
        self.on_search_begin()
        while True:
            trial = self.oracle.create_trial(self.tuner_id)
            if trial.status == TrialStatus.STOPPED:
                break
            if trial.status == TrialStatus.IDLE:
                time.sleep(self.idle_wait_s)
                continue
            if self.on_claim:
                self.on_claim(TrialSpec.from_json(trial.hyperparameters.values[TRIAL_HYPERPARAMETER]))
            self.on_trial_begin(trial)
            with self.trial_guard(trial):
                self._try_run_and_update_trial(trial)
            self.on_trial_end(trial)
        self.on_search_end()

    def run_trial(self, trial, *args, **kwargs):
        values = trial.hyperparameters.values
        self.runner.check_identity(values)
        with quiet_tensorflow():
            record = self.runner.run(TrialSpec.from_json(values[TRIAL_HYPERPARAMETER]))
        # An undefined mAP (no positive label) is NaN: keras-tuner then marks the trial invalid.
        value = record.metrics["val"]["all"]["map"]
        return {OBJECTIVE: float("nan") if value is None else float(value)}


@dataclass
class SearchOutcome:
    """What a search left: each planned trial's record (None if it failed) and the failures' messages."""

    trials: list[TrialSpec]
    records: list[RunRecord | None]
    failures: dict[str, str]  # trial JSON -> error message

    def pairs(self) -> list[tuple[TrialSpec, RunRecord | None]]:
        return list(zip(self.trials, self.records))


def run_search(runner: TrialRunner, trials: Sequence[TrialSpec], *, directory: Path, name: str) -> SearchOutcome:
    """Run ``trials`` in this process through keras-tuner; finished ones come from the registry.

    ``directory`` holds keras-tuner's own bookkeeping, rebuilt on every call (the registry is
    what remembers the trials). A trial that raises is marked failed and reported in the outcome.
    """
    oracle = PlannedTrialsOracle(trials, identity=runner.identity(), max_consecutive_failed_trials=len(trials) + 1)
    tuner = RegistryTuner(oracle, runner, directory=str(Path(directory) / "local"), project_name=name, overwrite=True)
    tuner.search()
    failures = {
        trial.hyperparameters.values.get(TRIAL_HYPERPARAMETER): (trial.message or "failed").strip().splitlines()[-1]
        for trial in tuner.oracle.trials.values()
        if trial.status in (TrialStatus.FAILED, TrialStatus.INVALID)
    }
    return SearchOutcome(list(trials), [runner.records.get(spec.to_json()) for spec in trials], failures)


# ----------------------------------------------------------------------------- tables


def chance_map(split) -> float:
    """mAP of a constant score on the non-black images of ``split``: each label's positive rate, averaged.

    The average precision of a score that ranks nothing is the share of positives: what a
    network that learnt nothing about the images scores.
    """
    labels = np.asarray(split.labels)[~black_mask(split.images)]
    rates = labels.mean(axis=0)
    return float(rates[rates > 0].mean()) if (rates > 0).any() else float("nan")


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def trials_table(outcome: SearchOutcome) -> pd.DataFrame:
    """One row per trial: its settings, scores, epochs run, why it stopped, who trained it; best first."""
    rows = []
    for spec, record in outcome.pairs():
        row = {name: spec.config.get(name) for name in CONFIG_COLUMNS}
        if record is None:
            row["error"] = outcome.failures.get(spec.to_json(), "not run")
        else:
            metrics = record.metrics
            row.update({
                "val mAP": _number(metrics["val"]["all"]["map"]),
                "val mAP (non-black)": _number(metrics["val"]["non_black"]["map"]),
                "95% CI low": _number((metrics["val"]["non_black"].get("map_ci95") or [None])[0]),
                "holdout mAP (non-black)": _number(metrics["holdout"]["non_black"]["map"]),
                "epochs run": record.data.get("epochs_run"),
                "stopped because": record.data.get("stopped_because"),
                "wall time (s)": record.data.get("wall_time_s"),
                "trained by": (record.data.get("trained_by") or {}).get("worker", "?"),
                "key": record.key,
            })
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("val mAP", "val mAP (non-black)", "95% CI low", "holdout mAP (non-black)", "wall time (s)",
                   "epochs run"):
        table[column] = table[column].astype(float) if column in table else np.nan
    return table.sort_values("val mAP (non-black)", ascending=False, na_position="last",
                             kind="stable").reset_index(drop=True)


def spread_table(table: pd.DataFrame, chance: float) -> pd.DataFrame:
    """How the trials spread on the non-black validation images: how many finished, how many sit
    above ``chance`` (the low end of their 95 % bootstrap interval above it), and the quantiles."""
    finished = table.dropna(subset=["val mAP (non-black)"])
    scores = finished["val mAP (non-black)"]
    quantiles = scores.quantile([0.0, 0.25, 0.5, 0.75, 1.0]) if len(scores) else pd.Series(dtype=float)
    return pd.DataFrame([{
        "trials": len(table),
        "finished": len(finished),
        "above chance": int((finished["95% CI low"] > chance).sum()),
        "chance": chance,
        **{("min" if q == 0 else "max" if q == 1 else f"q{int(q * 100)}"): value for q, value in quantiles.items()},
    }])


def best_row(table: pd.DataFrame) -> pd.Series:
    """The trial with the best non-black validation mAP (the hold-out never takes part in the choice)."""
    ranked = table.dropna(subset=["val mAP (non-black)"])
    if ranked.empty:
        raise ValueError("no trial finished: nothing to choose from")
    return ranked.sort_values("val mAP (non-black)", ascending=False, kind="stable").iloc[0]


def save_table(table: pd.DataFrame, name: str, figures_dir) -> Path:
    """Write ``table`` as ``<figures_dir>/<name>.csv`` atomically and return the path."""
    from contest_study.files import atomic_output

    path = Path(figures_dir) / f"{name}.csv"
    with atomic_output(path) as temporary:
        table.to_csv(temporary, index=False)
    return path

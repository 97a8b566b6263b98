"""The hyperparameter study (notebook ``05_hyperparameters``) and the search that can spread over machines.

- **The grid** of the source documents (:data:`SOURCE_GRID`): epochs, learning rate,
  optimizer, loss, training metric and batch size. :func:`expand_grid` lists its
  combinations; :class:`TuningPlan` (one per profile, :data:`PLANS`) says which
  combinations each network gets and on how many images.
- **Every trial is an ordinary run of the engine** (``training.run_experiment``) and is
  stored in the results registry, so a finished trial is never trained again and an
  interrupted one resumes. :class:`TrialRunner` runs or finds one trial.
- **The search goes through keras-tuner** (:func:`run_search`): a :class:`PlannedTrialsOracle`
  hands the planned trials out, a :class:`RegistryTuner` runs each one through the
  engine. Without the ``KERASTUNER_*`` environment variables everything happens in
  this process (the notebook); with them, keras-tuner's distributed mode serves the
  same trials over gRPC from a chief to any number of workers on any number of
  machines (``scripts/distributed_search.py``). The registry is where the results
  meet: a worker's trials are found, not retrained, by the notebook.
- **scikit-learn tuning** (:func:`sklearn_search`): ``GridSearchCV`` over dropout and
  kernel initializer of the 4-hidden-layer network, wrapped by Keras's own
  scikit-learn wrapper and scored by mean average precision over the labels.
- **Words from results**: the ``describe_*`` functions turn the tables into the
  sentences of the notebook, so no number is written by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pandas as pd
from keras_tuner.engine.base_tuner import BaseTuner
from keras_tuner.engine.trial import TrialStatus

from contest_study.config import Profile, get_profile
from contest_study.data import black_mask
from contest_study.evaluation import prepare_splits, score_and_save, split_hyperparams
from contest_study.metrics import FAILURE_GAP_FRACTION, multilabel_average_precision_scorer
from contest_study.models import MODELS, build_fc_3a, get_model_spec
from contest_study.registry import Registry, RunRecord
from contest_study.training import TrainConfig, config_for_profile, run_experiment

# ----------------------------------------------------------------------------- the grid

# The grid of 000_…txt (epochs, learning rate, optimizer, loss, training metric) with the
# batch sizes of 001_…txt: 2 * 3 * 2 * 2 * 2 * 3 = 144 combinations.
SOURCE_GRID: dict[str, tuple] = {
    "epochs": (5, 10),
    "learning_rate": (1e-3, 1e-2, 1e-1),
    "optimizer": ("adam", "sgd"),
    "loss": ("binary_crossentropy", "categorical_crossentropy"),
    "train_metric": ("f1", "accuracy"),
    "batch_size": (32, 64, 128),
}

# The head each loss is tried with. Categorical cross-entropy expects one distribution over
# the labels, so it gets the softmax head it was designed for: the documented failed approach.
HEAD_FOR_LOSS = {"binary_crossentropy": "sigmoid", "categorical_crossentropy": "softmax"}

# The grid isolates what it varies: a constant learning rate (the schedules are compared
# separately) and no augmentation unless a plan asks for it.
GRID_DEFAULTS = {"lr_schedule": "constant", "augment": False}

_TRAIN_CONFIG_FIELDS = {f.name for f in fields(TrainConfig)}


def expand_grid(axes: Mapping[str, Sequence], fixed: Mapping | None = None) -> list[dict]:
    """Every combination of ``axes`` (``{TrainConfig field: values}``), as TrainConfig overrides.

    ``fixed`` adds the same overrides to every combination. The head follows the loss
    (:data:`HEAD_FOR_LOSS`) unless ``output_activation`` is given. Combinations come
    in the order of :func:`itertools.product` (the last axis varies fastest).
    """
    fixed = dict(fixed or {})
    names = list(axes)
    unknown = sorted((set(names) | set(fixed)) - _TRAIN_CONFIG_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown grid axis or fixed setting {', '.join(unknown)}; "
            f"TrainConfig fields are {', '.join(sorted(_TRAIN_CONFIG_FIELDS))}"
        )
    both = sorted(set(names) & set(fixed))
    if both:
        raise ValueError(f"{', '.join(both)} cannot be both a grid axis and a fixed setting")
    for name in names:
        values = list(axes[name])
        if not values:
            raise ValueError(f"grid axis {name!r} has no values")
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"grid axis {name!r} repeats a value: {values!r}")
    combinations = []
    for values in itertools.product(*(axes[name] for name in names)):
        overrides = {**fixed, **dict(zip(names, values))}
        if "output_activation" not in overrides:
            loss = overrides.get("loss", "binary_crossentropy")
            if loss not in HEAD_FOR_LOSS:
                raise ValueError(f"loss {loss!r} has no head to pair with; known losses: {', '.join(HEAD_FOR_LOSS)}")
            overrides["output_activation"] = HEAD_FOR_LOSS[loss]
        combinations.append(overrides)
    return combinations


# ----------------------------------------------------------------------------- plans per profile


@dataclass(frozen=True)
class SklearnPlan:
    """What ``GridSearchCV`` tries on the fully connected network of 004_…txt."""

    dropouts: tuple[float, ...]
    initializers: tuple[str, ...]
    cv: int
    epochs: int
    batch_size: int = 64
    learning_rate: float = 1e-3


@dataclass(frozen=True)
class TuningPlan:
    """How much of the hyperparameter study one profile runs.

    - ``train_images`` / ``eval_images``: a seeded subsample of the training images (black
      images removed but one) and a cap on the validation and hold-out images that every
      trial of the plan shares; None keeps the profile's own caps (all images in
      ``default`` and ``full``), and then a trial is the very run ``Study.train`` makes.
    - ``cnn_model`` (and ``rnn_model``, ``fc_model``): a model name, or None for the
      network notebooks 02-04 chose (best validation mAP in the registry), with
      ``*_fallback`` when they have not run.
    - ``cnn_grids``: the CNN's trials are the union of these grids (dicts of axes).
    - ``rnn_grid`` / ``fc_grid``: the smaller grids of the other two families (None: skipped).
    - ``fixed``: settings every grid trial shares (on top of :data:`GRID_DEFAULTS`).
    - ``schedule_epochs``: epochs of the learning-rate schedule comparison.
    """

    profile: str
    train_images: int | None
    eval_images: int | None
    cnn_model: str | None
    cnn_grids: tuple[Mapping[str, tuple], ...]
    rnn_model: str | None
    rnn_grid: Mapping[str, tuple] | None
    fc_model: str | None
    fc_grid: Mapping[str, tuple] | None
    schedule_epochs: int
    sklearn: SklearnPlan
    fixed: Mapping = field(default_factory=dict)
    cnn_fallback: str = "cnn_1b"
    rnn_fallback: str = "rnn_lstm"
    fc_fallback: str = "fc_3a"
    summary: str = ""


_LR = SOURCE_GRID["learning_rate"]
_OPTIMIZERS = SOURCE_GRID["optimizer"]
_LOSSES = SOURCE_GRID["loss"]

PLANS: dict[str, TuningPlan] = {
    # Seconds, to test the notebook end to end: every kind of trial once or twice.
    "smoke": TuningPlan(
        profile="smoke",
        train_images=None,
        eval_images=None,
        cnn_model="cnn_1a",
        # The training-metric pairs and the recurrent grid run like the trials kept here; each trial
        # costs seconds of tracing, which the smoke budget (under a minute) cannot spare.
        cnn_grids=({"learning_rate": (1e-3, 1e-1), "optimizer": ("adam",), "loss": _LOSSES},),
        rnn_model="rnn_lstm",
        rnn_grid=None,
        fc_model="fc_3a",
        fc_grid={"learning_rate": (1e-3,), "optimizer": ("adam",)},
        schedule_epochs=1,
        sklearn=SklearnPlan(dropouts=(0.5,), initializers=("zeros", "he_normal"), cv=2, epochs=1),
        fixed={"epochs": 1, "batch_size": 32, "train_metric": "accuracy"},
        summary="a few trials of one epoch on the smoke profile's tiny subset, to test the notebook",
    ),
    # The 2-core budget: cnn_1e, the CNN that learns fastest from few images, on a subsample; every
    # combination of learning rate, optimizer and loss at 10 epochs, the sigmoid ones at 5 epochs too,
    # batch sizes and the training metric on a slice.
    "default": TuningPlan(
        profile="default",
        train_images=400,
        eval_images=400,
        cnn_model="cnn_1e",
        cnn_grids=(
            {"learning_rate": _LR, "optimizer": _OPTIMIZERS, "loss": _LOSSES},
            {"learning_rate": (1e-3, 1e-2), "optimizer": _OPTIMIZERS, "loss": ("binary_crossentropy",),
             "epochs": (5,)},
            {"learning_rate": (1e-2,), "optimizer": _OPTIMIZERS, "loss": ("binary_crossentropy",),
             "batch_size": (32, 128)},
            {"learning_rate": (1e-3,), "optimizer": ("adam",), "loss": ("binary_crossentropy",),
             "train_metric": ("f1",)},
        ),
        rnn_model="rnn_lstm",
        rnn_grid={"learning_rate": (1e-3, 1e-2), "optimizer": _OPTIMIZERS},
        fc_model="fc_3a",
        fc_grid={"learning_rate": _LR, "optimizer": _OPTIMIZERS},
        schedule_epochs=10,
        sklearn=SklearnPlan(dropouts=(0.0, 0.5), initializers=("zeros", "glorot_uniform", "he_normal"),
                            cv=3, epochs=5),
        fixed={"epochs": 10, "batch_size": 64, "train_metric": "accuracy"},
        summary=(
            "a reduced grid on a seeded subsample of the training images, with the CNN of the study that "
            "learns fastest from few images, so that the notebook fits the 2-core budget"
        ),
    ),
    # The complete grid at full size, on the networks notebooks 02-04 chose.
    "full": TuningPlan(
        profile="full",
        train_images=None,
        eval_images=None,
        cnn_model=None,
        cnn_grids=(dict(SOURCE_GRID),),
        rnn_model=None,
        rnn_grid={"learning_rate": _LR, "optimizer": _OPTIMIZERS, "epochs": (5, 10)},
        fc_model=None,
        fc_grid={"learning_rate": _LR, "optimizer": _OPTIMIZERS, "epochs": (5, 10)},
        schedule_epochs=get_profile("full").max_epochs,
        sklearn=SklearnPlan(dropouts=(0.0, 0.2, 0.4, 0.6),
                            initializers=("zeros", "random_normal", "glorot_uniform", "he_normal"),
                            cv=3, epochs=10),
        fixed={"epochs": 10, "batch_size": 64, "train_metric": "accuracy", "augment": True},
        summary="every combination of the grid at full size on the CNN chosen in notebook 02",
    ),
}


def plan_for(profile: str | Profile) -> TuningPlan:
    """The tuning plan of a profile (by name or Profile)."""
    name = profile.name if isinstance(profile, Profile) else profile
    get_profile(name)  # a clear error for an unknown name
    return PLANS[name]


def grid_combinations(grids: Sequence[Mapping[str, Sequence]], fixed: Mapping | None = None) -> list[dict]:
    """The union of several grids' combinations (first occurrence kept, in order).

    A grid overrides ``fixed`` on the axes it varies; :data:`GRID_DEFAULTS` come first.
    """
    seen, combinations = set(), []
    for axes in grids:
        shared = {**GRID_DEFAULTS, **{k: v for k, v in (fixed or {}).items() if k not in axes}}
        for overrides in expand_grid(axes, shared):
            identity = json.dumps(overrides, sort_keys=True)
            if identity not in seen:
                seen.add(identity)
                combinations.append(overrides)
    return combinations


# ----------------------------------------------------------------------------- trials


@dataclass(frozen=True)
class TrialSpec:
    """One trial: which network, trained how, on which images (profile and tuning caps)."""

    model: str
    config: TrainConfig
    profile: str
    train_images: int | None = None
    eval_images: int | None = None

    def __post_init__(self):
        get_model_spec(self.model)
        get_profile(self.profile)
        for name in ("train_images", "eval_images"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"TrialSpec.{name} must be None or an integer >= 1, got {value!r}")

    def to_json(self) -> str:
        """The trial as canonical JSON: what the keras-tuner oracle sends to a worker."""
        return json.dumps(
            {
                "model": self.model,
                "config": self.config.as_hyperparams(),
                "profile": self.profile,
                "train_images": self.train_images,
                "eval_images": self.eval_images,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> "TrialSpec":
        try:
            values = json.loads(text)
            return cls(
                model=values["model"],
                config=TrainConfig(**values["config"]),
                profile=values["profile"],
                train_images=values["train_images"],
                eval_images=values["eval_images"],
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not a trial description: {text[:200]!r} ({error})") from None


def make_trials(model: str, combinations: Sequence[Mapping], plan: TuningPlan) -> list[TrialSpec]:
    """The trials of ``model`` for each combination, at the plan's profile and image caps."""
    return [
        TrialSpec(
            model=model,
            config=config_for_profile(plan.profile, **overrides),
            profile=plan.profile,
            train_images=plan.train_images,
            eval_images=plan.eval_images,
        )
        for overrides in combinations
    ]


def _tuning_fingerprint(source_fingerprint: str, train_images, eval_images, seed: int) -> str:
    """Fingerprint of a tuning subsample: other images, no test split, hence other registry keys."""
    identity = {
        "data": source_fingerprint,
        "tuning_subsample": {"train_images": train_images, "eval_images": eval_images, "seed": seed},
        "test_split": False,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class TrialData:
    """The data a trial trains on: the study's own, or a tuning subsample of it."""

    data: object  # contest_study.data.ContestData
    oracle: dict | None
    profile: Profile


class StampedRegistry(Registry):
    """The same registry, adding ``trained_by`` (worker, host, pid) to the records it creates.

    A trial found already finished keeps the stamp of whoever trained it. ``trained``
    lists the keys this object actually trained.
    """

    def __init__(self, registry: Registry, worker: str):
        super().__init__(registry.root, lock_timeout_s=registry.lock_timeout_s, lock_poll_s=registry.lock_poll_s)
        self.stamp = {"worker": worker, "host": socket.gethostname(), "pid": os.getpid()}
        self.trained: list[str] = []

    def fetch_or_run(self, *, run_fn, **kwargs) -> RunRecord:
        def stamped(workdir: Path) -> dict:
            payload = {**run_fn(workdir), "trained_by": self.stamp}
            self.trained.append(workdir.name)  # the registry trains in .incomplete/<key>
            return payload

        return super().fetch_or_run(run_fn=stamped, **kwargs)


class LookupRegistry(Registry):
    """The same registry answering ``fetch_or_run`` with the finished entry or None, never training.

    Passing it to ``training.run_experiment`` finds a run under exactly the key the
    engine would give it, whatever goes into that key.
    """

    def __init__(self, registry: Registry):
        super().__init__(registry.root, lock_timeout_s=registry.lock_timeout_s, lock_poll_s=registry.lock_poll_s)

    def fetch_or_run(self, *, model, hyperparams, data_fingerprint, seed, **_) -> RunRecord | None:
        return self.get(self.make_key(model, hyperparams, data_fingerprint, seed))


class TrialRunner:
    """Runs (or finds) trials of one study through the engine and its registry.

    ``worker`` names this process in the records it trains; ``verbose`` is Keras'
    (0: silent; this runner prints one line per trained trial instead).
    """

    def __init__(self, study, *, worker: str = "local", verbose: int = 0, log=print):
        self.study = study
        self.registry = StampedRegistry(study.registry, worker)
        self.verbose = verbose
        self.log = log
        # The record of every trial this runner ran, by the trial's JSON.
        self.records: dict[str, RunRecord] = {}
        self._data: dict[tuple, TrialData] = {}

    @property
    def seed(self) -> int:
        return self.study.context.seed

    def identity(self) -> dict:
        """What a worker must share with the chief for its runs to land under the chief's keys."""
        return {"data_fingerprint": self.study.data.fingerprint, "seed": self.seed}

    def check_identity(self, values: Mapping) -> None:
        """Refuse a trial from a search over other data or another seed (clear error)."""
        for name, own in self.identity().items():
            if name in values and values[name] != own:
                raise keras_tuner.errors.FatalError(
                    f"this worker's {name} is {own!r} but the search's is {values[name]!r}: "
                    "point the worker at the same data folder (a copy that keeps file times, e.g. rsync -a) "
                    "and the same --seed as the chief"
                )

    def trial_data(self, spec: TrialSpec) -> TrialData:
        """The data, oracle and profile (with the tuning caps) of ``spec``, built once per subsample."""
        cache_key = (spec.profile, spec.train_images, spec.eval_images)
        if cache_key in self._data:
            return self._data[cache_key]
        study = self.study
        profile = get_profile(spec.profile)
        if spec.train_images is None and spec.eval_images is None:
            trial_data = TrialData(study.data, study.oracle, profile)
        else:
            profile = replace(profile, max_train_images=spec.train_images, max_eval_images=spec.eval_images)
            # The engine's own split preparation, once: every trial then starts from these arrays.
            splits = prepare_splits(study.data, black_images="removed", profile=profile, seed=self.seed,
                                    oracle=study.oracle)
            view = replace(
                study.data,
                train=splits.train,
                val=splits.val,
                holdout=splits.holdout,
                # Trials only compare hyperparameters: no test predictions to make.
                test=None,
                fingerprint=_tuning_fingerprint(study.data.fingerprint, spec.train_images, spec.eval_images,
                                                self.seed),
                notes=[*study.data.notes, f"tuning subsample: {len(splits.train)} training images, "
                                          f"{len(splits.val)} validation, {len(splits.holdout)} hold-out"],
            )
            oracle = None
            if splits.oracle_val is not None:
                oracle = {"val": splits.oracle_val, "holdout": splits.oracle_holdout}
            trial_data = TrialData(view, oracle, profile)
        self._data[cache_key] = trial_data
        return trial_data

    def _experiment(self, spec: TrialSpec, registry: Registry):
        trial_data = self.trial_data(spec)
        return run_experiment(
            registry,
            trial_data.data,
            model_name=spec.model,
            config=spec.config,
            seed=self.seed,
            oracle=trial_data.oracle,
            profile=trial_data.profile,
            description=f"{MODELS[spec.model].description}; hyperparameter trial",
            verbose=self.verbose,
        )

    def find(self, spec: TrialSpec) -> RunRecord | None:
        """The finished record of ``spec``, or None (never trains)."""
        return self._experiment(spec, LookupRegistry(self.registry))

    @property
    def trained(self) -> list[str]:
        """Keys of the trials this runner trained (not found finished in the registry)."""
        return self.registry.trained

    def run(self, spec: TrialSpec) -> RunRecord:
        """The record of ``spec``, training it first when the registry does not hold it."""
        already_trained = len(self.trained)
        started = time.perf_counter()
        record = self._experiment(spec, self.registry)
        self.records[spec.to_json()] = record
        if len(self.trained) > already_trained and self.log:
            self.log(
                f"trained {describe_trial(spec)} in {time.perf_counter() - started:.1f} s: "
                f"val mAP {record.metrics['val']['all']['map']:.3f}"
            )
        return record


def describe_trial(spec: TrialSpec) -> str:
    """A short readable name of a trial."""
    config = spec.config
    return (
        f"{spec.model} epochs={config.epochs} lr={config.learning_rate:g} {config.optimizer} "
        f"{config.loss}/{config.output_activation} metric={config.train_metric} batch={config.batch_size} "
        f"schedule={config.lr_schedule}"
    )


# ----------------------------------------------------------------------------- keras-tuner

OBJECTIVE = "val_map"
TRIAL_HYPERPARAMETER = "trial"


class PlannedTrialsOracle(keras_tuner.Oracle):
    """A keras-tuner oracle that hands out a fixed list of trials, each once, in order.

    The grid is already decided (:func:`expand_grid`), so there is nothing to sample:
    the oracle only has to give every tuner that asks the next trial nobody has
    started, locally or over gRPC (keras-tuner's own ``GridSearchOracle`` waits for
    finished trials before proposing the next combination, which leaves workers idle).
    Each trial is one hyperparameter value, the trial's JSON (:meth:`TrialSpec.to_json`),
    so a worker receives exactly what the chief planned. ``identity`` values (data
    fingerprint, seed) travel as fixed hyperparameters for the workers to check.
    """

    def __init__(self, trials: Sequence[TrialSpec] = (), *, identity: Mapping | None = None, **kwargs):
        self._planned = list(dict.fromkeys(trial.to_json() for trial in trials))
        self._identity = dict(identity or {})
        hyperparameters = keras_tuner.HyperParameters()
        if self._planned:
            hyperparameters.Choice(TRIAL_HYPERPARAMETER, self._planned)
        for name, value in self._identity.items():
            hyperparameters.Fixed(name, value)
        super().__init__(
            objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
            hyperparameters=hyperparameters,
            **kwargs,
        )

    def populate_space(self, trial_id):
        started = {trial.hyperparameters.values.get(TRIAL_HYPERPARAMETER) for trial in self.trials.values()}
        for planned in self._planned:
            if planned not in started:
                return {"status": TrialStatus.RUNNING, "values": {TRIAL_HYPERPARAMETER: planned, **self._identity}}
        # Nothing left to hand out: this tuner stops (the chief waits for the running trials).
        return {"status": TrialStatus.STOPPED, "values": None}


class RegistryTuner(BaseTuner):
    """A keras-tuner tuner whose trials are runs of the study's engine, stored in the registry."""

    def __init__(self, oracle: keras_tuner.Oracle, runner: TrialRunner, **kwargs):
        self.runner = runner
        super().__init__(oracle=oracle, hypermodel=None, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        values = trial.hyperparameters.values
        self.runner.check_identity(values)
        # Every trial builds a new model, so TensorFlow's notices about retraced functions are expected.
        with _quiet_tensorflow():
            record = self.runner.run(TrialSpec.from_json(values[TRIAL_HYPERPARAMETER]))
        # An undefined mAP (no positive label) is NaN: keras-tuner then marks the trial invalid.
        return {OBJECTIVE: _value(record.metrics["val"]["all"]["map"])}


def distributed_role() -> str:
    """``"local"``, ``"chief"`` or ``"worker"``, from keras-tuner's environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "local"
    missing = [name for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if name not in os.environ]
    if missing:
        raise RuntimeError(f"KERASTUNER_ORACLE_IP is set but {', '.join(missing)} is not")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


@dataclass
class SearchOutcome:
    """What a search left: each planned trial's record (None if it failed) and the failures' messages."""

    trials: list[TrialSpec]
    records: list[RunRecord | None]
    failures: dict[str, str]  # trial JSON -> error message

    def pairs(self) -> list[tuple[TrialSpec, RunRecord | None]]:
        return list(zip(self.trials, self.records))


def run_search(runner: TrialRunner, trials: Sequence[TrialSpec], *, directory: Path, name: str,
               verbose: int = 0) -> SearchOutcome | None:
    """Run ``trials`` through keras-tuner (see the module docstring); None on a chief or worker.

    ``directory`` holds keras-tuner's own bookkeeping (one sub-folder per tuner id);
    it is rebuilt on every call, since the registry is what remembers the trials.
    A trial that raises is marked failed by keras-tuner and reported in the outcome.
    """
    role = distributed_role()
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "local")
    # A worker gets its trials from the chief: its own oracle only carries the objective.
    planned = () if role == "worker" else trials
    oracle = PlannedTrialsOracle(planned, identity=runner.identity(), max_consecutive_failed_trials=3)
    tuner = RegistryTuner(oracle, runner, directory=str(Path(directory) / tuner_id), project_name=name,
                          overwrite=True)
    tuner.search(verbose=verbose)
    if role != "local":
        return None
    failures = {
        trial.hyperparameters.values.get(TRIAL_HYPERPARAMETER): trial.message or "failed"
        for trial in tuner.oracle.trials.values()
        if trial.status in (TrialStatus.FAILED, TrialStatus.INVALID)
    }
    return SearchOutcome(list(trials), [runner.records.get(spec.to_json()) for spec in trials], failures)


# ----------------------------------------------------------------------------- choosing the networks


def chosen_model(study, family: str, fallback: str, standard: Mapping | None = None) -> tuple[str, RunRecord | None]:
    """The network of ``family`` with the best validation mAP among the runs notebooks 02-04 made.

    ``standard`` are the training overrides those notebooks use (02: ``augment=True``).
    Returns ``(name, record)``; ``(fallback, None)`` when none of them is in the registry.
    """
    lookup = LookupRegistry(study.registry)
    config = study.config(**dict(standard or {}))
    found = []
    for name, spec in MODELS.items():
        if spec.family == family:
            record = run_experiment(lookup, study.data, model_name=name, config=config, seed=study.context.seed,
                                    oracle=study.oracle, profile=study.context.profile)
            if record is not None:
                found.append(record)
    if not found:
        return fallback, None
    best = max(found, key=lambda record: _finite(record.metrics["val"]["all"]["map"]))
    return best.model, best


STANDARD_TRAINING = {"cnn": {"augment": True}, "rnn": {}, "fully_connected": {}}


def plan_model(study, plan: TuningPlan, family: str) -> tuple[str, str]:
    """The network a plan tunes for ``family`` and a sentence saying why."""
    attribute = {"cnn": "cnn", "rnn": "rnn", "fully_connected": "fc"}[family]
    named = getattr(plan, f"{attribute}_model")
    if named is not None:
        return named, f"`{named}` ({MODELS[named].description}), named by the plan of this profile."
    chosen, record = chosen_model(study, family, getattr(plan, f"{attribute}_fallback"), STANDARD_TRAINING[family])
    if record is None:
        return chosen, (f"`{chosen}` ({MODELS[chosen].description}): its notebook has not run in this profile, "
                        "so the plan's fallback is used.")
    return chosen, (f"`{chosen}` ({MODELS[chosen].description}), the best {family} of its notebook "
                    f"(validation mAP {record.metrics['val']['all']['map']:.3f}).")


# ----------------------------------------------------------------------------- tables


CONFIG_COLUMNS = ("epochs", "learning_rate", "optimizer", "loss", "output_activation", "train_metric",
                  "batch_size", "lr_schedule")

def _finite(value) -> float:
    return -math.inf if value is None or not math.isfinite(value) else float(value)


def _value(value) -> float:
    return float("nan") if value is None else float(value)


def chance_map(split) -> float:
    """mAP of a constant score on the non-black images of ``split``: each label's positive rate, averaged.

    The average precision of a score that ranks nothing is the share of positives, so this
    is what a network that learnt nothing about the images scores.
    """
    labels = np.asarray(split.labels)[~black_mask(split.images)]
    rates = labels.mean(axis=0)
    return float(rates[rates > 0].mean()) if (rates > 0).any() else float("nan")


def base_rate_loss(split) -> float:
    """Binary cross-entropy of always predicting each label's training frequency (non-black images)."""
    labels = np.asarray(split.labels)[~black_mask(split.images)].astype(float)
    rates = np.clip(labels.mean(axis=0), 1e-7, 1 - 1e-7)
    return float(np.mean(-(rates * np.log(rates) + (1 - rates) * np.log(1 - rates))))


def learnable_map(outcome: SearchOutcome) -> tuple[float, str]:
    """The best achievable non-black val mAP of a search and what it is: the oracle's, else the best trial's."""
    for record in outcome.records:
        if record is not None and record.oracle:
            return _value(record.oracle["val"]["non_black"]["map"]), "the oracle"
    scores = [_value(record.metrics["val"]["non_black"]["map"]) for record in outcome.records if record is not None]
    return (max(scores), "the best trial") if scores else (float("nan"), "no trial")


def trials_table(outcome: SearchOutcome, chance: float) -> pd.DataFrame:
    """One row per trial: its settings, scores, epochs run, final training loss and status.

    ``status``: ``"crashed"`` (no record: the error is in ``error``), ``"failed to learn"``
    (closes less than :data:`FAILURE_GAP_FRACTION` of the gap between ``chance`` and the
    best achievable mAP, :func:`learnable_map`, on the non-black validation images) or
    ``"learnt"``. ``gap closed`` is that share.
    """
    rows = []
    for spec, record in outcome.pairs():
        row = {"model": spec.model, **{column: getattr(spec.config, column) for column in CONFIG_COLUMNS}}
        row["crashed"] = record is None
        if record is None:
            row["error"] = outcome.failures.get(spec.to_json(), "not run")
        else:
            metrics = record.metrics
            losses = record.history.get("loss", pd.Series(dtype=float))
            row.update(
                {
                    "val mAP": _value(metrics["val"]["all"]["map"]),
                    "val mAP (non-black)": _value(metrics["val"]["non_black"]["map"]),
                    "holdout mAP": _value(metrics["holdout"]["all"]["map"]),
                    "holdout mAP (non-black)": _value(metrics["holdout"]["non_black"]["map"]),
                    "epochs run": record.data.get("epochs_run"),
                    "final training loss": float(losses.iloc[-1]) if len(losses) else float("nan"),
                    "wall time (s)": record.data.get("wall_time_s"),
                    "trained by": (record.data.get("trained_by") or {}).get("worker", "?"),
                    "key": record.key,
                }
            )
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("val mAP", "val mAP (non-black)", "holdout mAP", "holdout mAP (non-black)",
                   "final training loss", "wall time (s)", "epochs run"):
        if column not in table:
            table[column] = np.nan
        table[column] = table[column].astype(float)
    best, _ = learnable_map(outcome)
    table["gap closed"] = (table["val mAP (non-black)"] - chance) / (best - chance) if best > chance else np.nan
    learnt = table["gap closed"] >= FAILURE_GAP_FRACTION
    table["status"] = np.where(table.pop("crashed"), "crashed", np.where(learnt, "learnt", "failed to learn"))
    return table.sort_values("val mAP", ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def usual_slice(table: pd.DataFrame, plan: TuningPlan, **overrides) -> pd.DataFrame:
    """The trials at the plan's usual epochs, batch size and training metric (``overrides`` replace them)."""
    usual = {name: plan.fixed[name] for name in ("epochs", "batch_size", "train_metric")}
    usual.update(overrides)
    keep = np.ones(len(table), dtype=bool)
    for name, value in usual.items():
        if value is not None:
            keep &= (table[name] == value).to_numpy()
    return table[keep]


def batch_size_slice(table: pd.DataFrame, plan: TuningPlan) -> pd.DataFrame:
    """Sigmoid trials at the usual epochs and metric, at the learning rates tried with every batch size."""
    rows = usual_slice(table, plan, batch_size=None)
    rows = rows[rows["loss"] == "binary_crossentropy"]
    sizes = rows.groupby("learning_rate")["batch_size"].nunique()
    return rows[rows["learning_rate"].isin(sizes[sizes == rows["batch_size"].nunique()].index)]


def save_table(table: pd.DataFrame, name: str, figures_dir) -> Path:
    """Write ``table`` as ``<figures_dir>/<name>.csv`` atomically and return the path."""
    from contest_study.export import atomic_output

    path = Path(figures_dir) / f"{name}.csv"
    with atomic_output(path) as temporary:
        table.to_csv(temporary, index=False)
    return path


# ----------------------------------------------------------------------------- words from results


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _share(part: int, whole: int) -> str:
    return f"{part} of {whole}"


def plural(count: int, word: str) -> str:
    """``count`` and ``word``, with an s unless ``count`` is 1."""
    return f"{count} {word}" + ("" if count == 1 else "s")


def describe_plan(plan: TuningPlan, trial_data: TrialData, cnn_reason: str, n_cnn_trials: int) -> str:
    """What this profile's plan runs, on which images, and how it differs from the complete grid."""
    data = trial_data.data
    complete = len(expand_grid(SOURCE_GRID))
    images = (
        f"a seeded subsample of {len(data.train)} training images (black images removed but one), "
        f"scored on {len(data.val)} validation and {len(data.holdout)} hold-out images"
        if plan.train_images is not None
        else f"the training images of the `{plan.profile}` profile (black images removed but one), scored on "
             f"its validation and hold-out images"
    )
    text = (
        f"**Profile `{plan.profile}`**: {plan.summary}. Every trial trains on {images}. The CNN is {cnn_reason} "
        f"It gets {n_cnn_trials} of the {complete} combinations of the source grid"
    )
    if n_cnn_trials < complete:
        text += f"; the `full` profile runs all {complete} at full size"
    return text + "."


def describe_crashes(table: pd.DataFrame) -> str:
    """The trials that raised instead of finishing, with the last line of their error."""
    crashed = table[table["status"] == "crashed"]
    if crashed.empty:
        return "Every trial finished (none raised an error)."
    lines = [f"{len(crashed)} trial(s) raised an error and are not in the registry (they run again next time):"]
    for _, row in crashed.iterrows():
        last_line = str(row.get("error", "")).strip().splitlines()[-1:] or ["?"]
        lines.append(f"- lr {row['learning_rate']:g}, {row['optimizer']}, {row['loss']}: {last_line[0]}")
    return "\n".join(lines)


def describe_softmax(table: pd.DataFrame, outcome: SearchOutcome, val_split, train_split) -> str:
    """Why a softmax head with categorical cross-entropy fails on three independent labels."""
    val_labels = np.asarray(val_split.labels)[~black_mask(val_split.images)]
    train_labels = np.asarray(train_split.labels)[~black_mask(train_split.images)]
    several = float((val_labels.sum(axis=1) >= 2).mean())
    none = float((train_labels.sum(axis=1) == 0).mean())
    text = (
        "**Softmax head with categorical cross-entropy.** A softmax makes the three scores of an image "
        "sum to 1, so at the 0.5 threshold an image can carry at most one label, while "
        f"{several:.0%} of the non-black validation images have two or more. Categorical cross-entropy, "
        "−Σ y·log p, only rewards putting probability on the labels that are present: the "
        f"{none:.0%} of training images with no label at all add exactly zero to the loss, and a label's "
        "score can only fall when another one rises. "
    )
    softmax_records = [record for spec, record in outcome.pairs()
                       if record is not None and spec.config.output_activation == "softmax"]
    if not softmax_records:
        return text + "This run has no softmax trial to measure it on."
    best_softmax = max(softmax_records, key=lambda record: _finite(record.metrics["val"]["all"]["map"]))
    scores = best_softmax.predictions()["val_score"]
    text += (
        f"In the best softmax trial the scores of a validation image sum to {scores.sum(axis=1).mean():.3f} on "
        f"average and at most {int((scores >= 0.5).sum(axis=1).max())} label per image reaches 0.5. "
    )
    by_loss = table.groupby("loss")
    best = by_loss["val mAP"].max()
    failed = by_loss["status"].apply(lambda column: int((column != "learnt").sum()))
    counts = by_loss.size()
    parts = [
        f"with {loss.replace('_', ' ')} the best trial reaches val mAP {_fmt(best[loss])} and "
        f"{_share(failed[loss], counts[loss])} trials failed to learn or crashed"
        for loss in best.index
    ]
    return text + "Across the grid, " + "; ".join(parts) + "."


def describe_grid(table: pd.DataFrame, model: str) -> str:
    """How many trials of a grid learnt, its best one, and what a grid where nothing learnt can tell."""
    learnt = table[table["status"] == "learnt"]
    text = f"**{model}**: {_share(len(learnt), len(table))} trials learnt"
    ranked = table.dropna(subset=["val mAP"])
    if not ranked.empty:
        best = ranked.iloc[0]
        text += (f"; the best, {best['optimizer']} at learning rate {best['learning_rate']:g}, reaches val mAP "
                 f"{best['val mAP']:.3f} ({best['val mAP (non-black)']:.3f} on the non-black images)")
    text += "."
    if learnt.empty:
        text += (" None closes a tenth of the gap between guessing and the best achievable score, so on these "
                 "images the grid cannot rank the network's hyperparameters: at this size the network learns "
                 "nothing, whatever its settings.")
    return text


def _describe_final_losses(final: pd.Series, learning_rate: float, base_loss: float) -> str:
    """How the sigmoid trials of one learning rate ended, against the loss of predicting the base rates."""
    collapsed = int((abs(final - base_loss) <= 0.02 * base_loss).sum())
    exploded = int((final > 2 * base_loss).sum())
    parts = []
    if collapsed:
        parts.append(
            f"{_share(collapsed, len(final))} end with a training loss within 2% of {base_loss:.3f}, the loss of "
            "always predicting each label's frequency: the network outputs the base rates whatever the image"
        )
    if exploded:
        parts.append(
            f"{_share(exploded, len(final))} end above twice {base_loss:.3f}, the loss of always predicting each "
            f"label's frequency (largest {final.max():.3g}): the weights "
            "grew until the sigmoids saturate, and the loss, computed from the logits, has no ceiling"
        )
    if not parts:
        return (f"At {learning_rate:g} no sigmoid trial collapsed to the base rates or blew up: final training "
                f"losses {final.min():.3f} to {final.max():.3f}, against {base_loss:.3f} for the base rates.")
    return f"At {learning_rate:g}, of the sigmoid trials, " + "; ".join(parts) + "."


def describe_learning_rates(table: pd.DataFrame, base_loss: float, *, mechanism: bool = True) -> str:
    """What each learning rate did with each optimizer, and how the largest one ended its training.

    ``mechanism``: start with how the two optimizers scale their steps (once per notebook is enough).
    """
    text = "**Learning rate and optimizer.** "
    if mechanism:
        text += (
            "Adam scales each weight's step by the running size of its gradient, so every weight moves by up "
            "to the learning rate at every batch whatever the gradient; SGD's step is the gradient times the "
            "learning rate, amplified up to tenfold by momentum 0.9. "
        )
    sentences = []
    for optimizer, rows in table.groupby("optimizer"):
        by_rate = rows.groupby("learning_rate")
        means = by_rate["val mAP (non-black)"].mean()
        failed = by_rate["status"].apply(lambda column: int((column != "learnt").sum()))
        counts = by_rate.size()
        parts = [f"{means[lr]:.3f} at {lr:g} ({_share(failed[lr], counts[lr])} failed)" for lr in means.index]
        sentence = f"With {optimizer}, the mean non-black val mAP is " + ", ".join(parts)
        largest = means.index.max()
        # The base-rate loss is a binary cross-entropy: only sigmoid trials compare with it.
        top = rows[(rows["learning_rate"] == largest) & (rows["loss"] == "binary_crossentropy")]
        if len(means) > 1 and len(top) and math.isfinite(base_loss):
            sentence += ". " + _describe_final_losses(top["final training loss"], largest, base_loss)
        sentences.append(sentence.rstrip(".") + ".")
    return text + " ".join(sentences)


def _paired_difference(table: pd.DataFrame, axis: str, first, second, value: str = "val mAP") -> pd.Series:
    """``value`` at ``second`` minus at ``first`` for trials equal on every other setting."""
    others = [column for column in CONFIG_COLUMNS if column != axis]
    pivot = table[table[axis].isin([first, second])].pivot_table(index=others, columns=axis, values=value)
    if first not in pivot or second not in pivot:
        return pd.Series(dtype=float)
    return (pivot[second] - pivot[first]).dropna()


def describe_training_metric(table: pd.DataFrame, outcome: SearchOutcome) -> str:
    """Whether training with F1 instead of accuracy as the logged metric changed anything but the logs."""
    pairs = []
    by_settings = {}
    for spec, record in outcome.pairs():
        if record is not None:
            others = replace(spec.config, train_metric="accuracy")
            by_settings.setdefault((spec.model, others), {})[spec.config.train_metric] = record
    for runs in by_settings.values():
        if {"accuracy", "f1"} <= set(runs):
            pairs.append((runs["accuracy"], runs["f1"]))
    text = (
        "**Training metric.** The metric is only computed and logged: the gradients come from the loss, "
        "and early stopping, checkpoints and the learning-rate schedule all watch the validation loss. "
    )
    if not pairs:
        return text + "This run has no pair of trials that differ only by the metric."
    map_gap = max(abs(_value(a.metrics["val"]["all"]["map"]) - _value(b.metrics["val"]["all"]["map"]))
                  for a, b in pairs)
    loss_gap = max(
        float(np.max(np.abs(a.history["loss"].to_numpy() - b.history["loss"].to_numpy())))
        if len(a.history) == len(b.history) else float("inf")
        for a, b in pairs
    )
    if map_gap == 0 and loss_gap == 0:
        measured = "have identical validation mAPs and identical training losses, epoch by epoch"
    else:
        measured = (f"have validation mAPs that differ by at most {map_gap:.2g} and training losses that differ, "
                    f"epoch by epoch, by at most {loss_gap:.2g} (floating-point noise of the multi-threaded "
                    "CPU kernels)")
    return text + (
        f"The {plural(len(pairs), 'pair')} of trials that differ only by it {measured}. So the training metric "
        "changes the logs and nothing else, which is why the grid does not train every combination twice: "
        "it trains the pairs that show it."
    )


def describe_epochs_and_batches(table: pd.DataFrame) -> str:
    """The effect of more epochs and of the batch size, on trials equal in every other setting."""
    sentences = []
    epochs = sorted(table["epochs"].unique())
    if len(epochs) >= 2:
        difference = _paired_difference(table, "epochs", epochs[0], epochs[-1])
        if len(difference):
            identical = int((difference.abs() < 1e-12).sum())
            longer = table[table["epochs"] == epochs[-1]]
            stopped = int((longer["epochs run"] < epochs[-1]).sum())
            sentences.append(
                f"**Epochs.** Over {plural(len(difference), 'pair')} of trials that differ only by it, "
                f"{epochs[-1]} instead of {epochs[0]} epochs changes the val mAP by {difference.mean():+.3f} on "
                f"average ({int((difference > 1e-12).sum())} improve, {int((difference < -1e-12).sum())} get worse, "
                f"{identical} are identical: early stopping restored an epoch among the first {epochs[0]}, "
                f"whose weights both runs share). Early stopping ended {_share(stopped, len(longer))} "
                f"{epochs[-1]}-epoch trials before their last epoch."
            )
    batches = sorted(table["batch_size"].unique())
    if len(batches) >= 2:
        reference = 64 if 64 in batches else batches[0]
        parts = []
        for batch in batches:
            if batch == reference:
                continue
            difference = _paired_difference(table, "batch_size", reference, batch)
            if len(difference):
                parts.append(f"{batch} changes it by {difference.mean():+.3f} on average over "
                             f"{plural(len(difference), 'pair')}")
        if parts:
            sentences.append(
                f"**Batch size.** Against batches of {reference}, " + "; ".join(parts) + ". At a fixed number "
                "of epochs a smaller batch takes more, noisier steps; a larger one fewer, smoother steps."
            )
    return " ".join(sentences) or "This run varies neither the epochs nor the batch size."


def best_trial(table: pd.DataFrame) -> pd.Series:
    """The row with the best validation mAP (the hold-out never takes part in the choice)."""
    ranked = table.dropna(subset=["val mAP"])
    if ranked.empty:
        raise ValueError("no trial finished: nothing to choose from")
    return ranked.sort_values("val mAP", ascending=False, kind="stable").iloc[0]


def best_config(row: pd.Series) -> dict:
    """The TrainConfig overrides of a table row."""
    values = {column: row[column] for column in CONFIG_COLUMNS}
    for column in ("epochs", "batch_size"):
        values[column] = int(values[column])
    values["learning_rate"] = float(values["learning_rate"])
    return values


# ----------------------------------------------------------------------------- learning-rate schedules


SCHEDULES = ("constant", "exponential", "warmup_decay", "plateau")


def schedule_trials(model: str, base: Mapping, plan: TuningPlan) -> list[TrialSpec]:
    """The four schedules on ``base`` (the grid's best settings), for ``plan.schedule_epochs`` epochs."""
    overrides = {**GRID_DEFAULTS, **plan.fixed, **base, "epochs": plan.schedule_epochs}
    return make_trials(model, [{**overrides, "lr_schedule": schedule} for schedule in SCHEDULES], plan)


def describe_schedules(table: pd.DataFrame) -> str:
    rows = table.dropna(subset=["val mAP"]).set_index("lr_schedule")
    if rows.empty:
        return "No schedule trial finished."
    best = rows["val mAP"].idxmax()
    parts = [
        f"{schedule}: {rows.loc[schedule, 'val mAP']:.3f} (hold-out {rows.loc[schedule, 'holdout mAP']:.3f}, "
        f"{plural(int(rows.loc[schedule, 'epochs run']), 'epoch')} run)"
        for schedule in rows.index
    ]
    text = "**Learning-rate schedules.** Validation mAP " + "; ".join(parts) + f". The best is **{best}**"
    if "constant" in rows.index and best != "constant":
        text += f", {rows.loc[best, 'val mAP'] - rows.loc['constant', 'val mAP']:+.3f} against a constant rate"
    spread = rows["val mAP"].max() - rows["val mAP"].min()
    return text + f"; the four schedules lie within {spread:.3f} of each other."


# ----------------------------------------------------------------------------- scikit-learn tuning


class MultiLabelKerasEstimator(keras.wrappers.SKLearnRegressor):
    """Keras's scikit-learn wrapper for a network with one sigmoid output per label.

    ``keras.wrappers.SKLearnClassifier`` one-hot encodes a single target and refuses a
    multi-label one; the regressor wrapper keeps the target as it is but validates it
    as one column (it does not pass ``multi_output=True`` to scikit-learn's check). So
    ``fit`` is the wrapper's own with that one change: the (N, labels) 0/1 matrix is
    what a sigmoid network trained with binary cross-entropy needs. Parameters,
    cloning and model building stay the wrapper's. ``predict_proba`` returns the
    sigmoid outputs, so scikit-learn's classification scorers (here
    :func:`contest_study.metrics.multilabel_average_precision_scorer`) apply, and
    ``predict`` the 0/1 decisions at 0.5.
    """

    def fit(self, X, y, **kwargs):
        from sklearn.utils.validation import validate_data

        X, y = validate_data(self, X, y, multi_output=True, dtype="float32")
        if y.ndim != 2:
            raise ValueError(f"y must be an (images, labels) 0/1 matrix, got shape {y.shape}")
        model = self._get_model(X, y)
        self.history_ = model.fit(X, y, **{**(self.fit_kwargs or {}), **kwargs})
        self.model_ = model
        return self

    def predict_proba(self, X) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted, validate_data

        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype="float32")
        return np.asarray(self.model_.predict(X, verbose=0), dtype=np.float64)

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X) >= 0.5).astype(np.int8)


def fc_network(X, y, *, image_shape, dropout: float, kernel_initializer: str, learning_rate: float, seed: int):
    """The 4-hidden-layer network (``models.build_fc_3a``) with ``kernel_initializer`` on every dense layer.

    Takes flat pixel rows (what scikit-learn passes around) and reshapes them to images;
    the builder's dense layers are cloned with the initializer swapped in, so the
    architecture stays the study's own. Seeded: every fit of one setting starts alike.
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    built = build_fc_3a(input_shape=image_shape, n_labels=y.shape[1], dropout=dropout)
    initializer = keras.initializers.get(kernel_initializer)  # a clear error for an unknown name

    def with_initializer(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.Dense):
            config["kernel_initializer"] = keras.initializers.serialize(initializer)
        return layer.__class__.from_config(config)

    network = keras.models.clone_model(built, clone_function=with_initializer)
    pixels = keras.Input(shape=(int(np.prod(image_shape)),), name="pixels")
    model = keras.Model(pixels, network(keras.layers.Reshape(tuple(image_shape))(pixels)), name="fc_3a_sklearn")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy")
    return model


@contextlib.contextmanager
def _quiet_tensorflow():
    """TensorFlow's Python warnings (here: retracing notices) silenced for the duration."""
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        tf_logger.setLevel(level)


def sklearn_hyperparams(plan: TuningPlan, profile: Profile) -> dict:
    sklearn_plan = plan.sklearn
    return {
        "search": "GridSearchCV",
        "dropout": list(sklearn_plan.dropouts),
        "kernel_initializer": list(sklearn_plan.initializers),
        "cv": sklearn_plan.cv,
        "epochs": sklearn_plan.epochs,
        "batch_size": sklearn_plan.batch_size,
        "learning_rate": sklearn_plan.learning_rate,
        "optimizer": "adam",
        "loss": "binary_crossentropy",
        **split_hyperparams("removed", profile),
    }


def sklearn_search(runner: TrialRunner, plan: TuningPlan, *, force: bool = False) -> RunRecord:
    """``GridSearchCV`` over dropout x kernel initializer of ``fc_3a``, stored in the registry.

    Cross-validated on the plan's training images (``KFold``, shuffled, seeded; the
    multi-label targets rule out stratified folds), scored by mean average precision
    over the labels; the best setting is refit on all of them and scored on
    validation and hold-out like every other run. The record adds ``cv_results``
    (one row per setting) and ``best_params``.
    """
    from sklearn.model_selection import GridSearchCV, KFold

    spec = TrialSpec(model="fc_3a", config=config_for_profile(plan.profile), profile=plan.profile,
                     train_images=plan.train_images, eval_images=plan.eval_images)
    trial_data = runner.trial_data(spec)
    seed, sklearn_plan = runner.seed, plan.sklearn
    splits = prepare_splits(trial_data.data, black_images="removed", profile=trial_data.profile, seed=seed,
                            oracle=trial_data.oracle)
    image_shape = splits.train.images.shape[1:]

    def flat(split) -> np.ndarray:
        return split.images.reshape(len(split), -1)

    def run(workdir: Path) -> dict:
        started = time.perf_counter()
        estimator = MultiLabelKerasEstimator(
            model=fc_network,
            model_kwargs={"image_shape": image_shape, "dropout": 0.0, "kernel_initializer": "glorot_uniform",
                          "learning_rate": sklearn_plan.learning_rate, "seed": seed},
        )
        # The grid is over whole model_kwargs dicts: the wrapper's parameters are the dict, not its keys.
        candidates = [
            {**estimator.model_kwargs, "dropout": dropout, "kernel_initializer": initializer}
            for dropout in sklearn_plan.dropouts
            for initializer in sklearn_plan.initializers
        ]
        search = GridSearchCV(
            estimator,
            {"model_kwargs": candidates},
            scoring=multilabel_average_precision_scorer,
            cv=KFold(sklearn_plan.cv, shuffle=True, random_state=seed),
            refit=True,
            error_score="raise",
        )
        # Fit options go to fit(): the wrapper's clone for each fold keeps model_kwargs only. Every fit
        # is a new model, so TensorFlow's notices about retraced functions are expected.
        with _quiet_tensorflow():
            search.fit(flat(splits.train), splits.train.labels.astype(np.float32), epochs=sklearn_plan.epochs,
                       batch_size=sklearn_plan.batch_size, verbose=0)
        best = search.best_estimator_
        val_score, holdout_score = best.predict_proba(flat(splits.val)), best.predict_proba(flat(splits.holdout))
        test_score = best.predict_proba(flat(splits.test)) if splits.test is not None else None
        scores = score_and_save(workdir, splits, val_score=val_score, holdout_score=holdout_score,
                                test_score=test_score)
        best.model_.save_weights(str(workdir / "best.weights.h5"))
        results = search.cv_results_
        cv_rows = []
        for index, kwargs in enumerate(results["param_model_kwargs"]):
            cv_rows.append(
                {
                    "dropout": kwargs["dropout"],
                    "kernel_initializer": kwargs["kernel_initializer"],
                    "mean CV mAP": _json_number(results["mean_test_score"][index]),
                    "std CV mAP": _json_number(results["std_test_score"][index]),
                    "fold mAPs": [_json_number(results[f"split{fold}_test_score"][index])
                                  for fold in range(sklearn_plan.cv)],
                    "mean fit time (s)": float(results["mean_fit_time"][index]),
                }
            )
        return {
            "description": "fc_3a tuned by GridSearchCV over dropout and kernel initializer",
            "profile": trial_data.profile.name,
            "label_names": splits.label_names,
            "black_images": "removed",
            "n_train_images": len(splits.train),
            "params": best.model_.count_params(),
            "epochs_run": sklearn_plan.epochs,
            "wall_time_s": time.perf_counter() - started,
            "history": {name: [float(v) for v in values] for name, values in best.history_.history.items()},
            "best_params": {"dropout": search.best_params_["model_kwargs"]["dropout"],
                            "kernel_initializer": search.best_params_["model_kwargs"]["kernel_initializer"]},
            "cv_results": cv_rows,
            **scores,
        }

    return runner.registry.fetch_or_run(
        model="fc_3a",
        family="fully_connected",
        hyperparams=sklearn_hyperparams(plan, trial_data.profile),
        data_fingerprint=trial_data.data.fingerprint,
        seed=seed,
        run_fn=run,
        force=force,
    )


def _json_number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def cv_results_table(record: RunRecord) -> pd.DataFrame:
    """The cross-validation results of :func:`sklearn_search`, best mean first."""
    table = pd.DataFrame(record.data["cv_results"])
    table[["mean CV mAP", "std CV mAP"]] = table[["mean CV mAP", "std CV mAP"]].astype(float)
    return table.sort_values("mean CV mAP", ascending=False, kind="stable").reset_index(drop=True)


def describe_sklearn(record: RunRecord, cv_table: pd.DataFrame, chance: float) -> str:
    best = record.data["best_params"]
    top = cv_table.iloc[0]
    text = (
        f"**scikit-learn tuning.** `GridSearchCV` tried {len(cv_table)} settings with {len(top['fold mAPs'])}-fold "
        f"cross-validation on {record.data['n_train_images']} training images. The best is dropout "
        f"{best['dropout']:g} with the `{best['kernel_initializer']}` initializer: mean CV mAP "
        f"{top['mean CV mAP']:.3f} ± {top['std CV mAP']:.3f}; refit on all training images it scores "
        f"{record.metrics['val']['all']['map']:.3f} on validation and {record.metrics['holdout']['all']['map']:.3f} "
        f"on the hold-out. "
    )
    for initializer, rows in cv_table.groupby("kernel_initializer"):
        if initializer == "zeros":
            text += (
                f"With all-zero kernels the mean CV mAP is at most {rows['mean CV mAP'].max():.3f}, against "
                f"{chance:.3f} for a constant score: every unit of a layer starts identical and, with zero "
                "weights after it, receives a zero gradient, so only the biases learn and the network "
                "predicts the same scores for every image. "
            )
    spread = cv_table.groupby("dropout")["mean CV mAP"].max()
    text += "Best mean CV mAP per dropout rate: " + ", ".join(
        f"{dropout:g} → {value:.3f}" for dropout, value in spread.items()) + ". "
    margin = top["mean CV mAP"] - chance
    if margin <= top["std CV mAP"]:
        text += (
            f"The best setting beats a constant score by {margin:.3f}, less than the spread of its folds "
            f"({top['std CV mAP']:.3f}): on these images no setting is distinguishable from guessing, so the choice "
            "is not evidence for any dropout rate or initializer. A fully connected network gives every pixel its "
            "own weight and has to learn each shape at every position separately; the convolutional networks "
            "share their filters across positions."
        )
    else:
        text += f"The best setting beats a constant score by {margin:.3f} ({margin / top['std CV mAP']:.1f} fold spreads)."
    return text


# ----------------------------------------------------------------------------- the final choice


def best_configuration(model: str, grid_row: pd.Series, schedule_row: pd.Series, plan: TuningPlan,
                       n_trials: int) -> dict:
    """The chosen hyperparameters and the evidence for them (what feeds the summary)."""
    config = best_config(schedule_row if schedule_row["val mAP"] >= grid_row["val mAP"] else grid_row)
    return {
        "model": model,
        "profile": plan.profile,
        "train_config": config,
        "trained_on": {"train_images": plan.train_images, "eval_images": plan.eval_images},
        "evidence": {
            "grid_trials": n_trials,
            "grid_best": {"val mAP": float(grid_row["val mAP"]), "holdout mAP": float(grid_row["holdout mAP"]),
                          "key": grid_row["key"]},
            "schedule_best": {"lr_schedule": schedule_row["lr_schedule"], "val mAP": float(schedule_row["val mAP"]),
                              "holdout mAP": float(schedule_row["holdout mAP"]), "key": schedule_row["key"]},
        },
    }


BEST_CONFIGURATION_FILE = "05_best_configuration.json"


def save_best_configuration(configuration: dict, figures_dir) -> Path:
    """Write the chosen configuration beside the figures (atomic), for the summary to read."""
    from contest_study.export import write_text_atomic

    path = Path(figures_dir) / BEST_CONFIGURATION_FILE
    write_text_atomic(path, json.dumps(configuration, indent=2, sort_keys=True) + "\n")
    return path


def read_best_configuration(figures_dir) -> dict | None:
    """The configuration notebook 05 chose (None before it has run)."""
    path = Path(figures_dir) / BEST_CONFIGURATION_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"cannot read {path}: {error}") from None


def describe_final_choice(configuration: dict) -> str:
    config, evidence = configuration["train_config"], configuration["evidence"]
    return (
        f"**Final choice for `{configuration['model']}`:** {config['optimizer']} at learning rate "
        f"{config['learning_rate']:g} with the **{config['lr_schedule']}** schedule, batch size "
        f"{config['batch_size']}, {plural(config['epochs'], 'epoch')}, {config['loss'].replace('_', ' ')} with a "
        f"{config['output_activation']} head (the training metric only changes the logs). Evidence: the best of "
        f"{evidence['grid_trials']} grid trials reaches val mAP {evidence['grid_best']['val mAP']:.3f} "
        f"(hold-out {evidence['grid_best']['holdout mAP']:.3f}); with the {evidence['schedule_best']['lr_schedule']} "
        f"schedule the same settings reach {evidence['schedule_best']['val mAP']:.3f} "
        f"(hold-out {evidence['schedule_best']['holdout mAP']:.3f}). The choice is made on validation only; the "
        "hold-out is shown to judge it."
        + (f" All of it was measured on the tuning subsample of {configuration['trained_on']['train_images']} "
           "training images: a network trained on all of them may prefer other settings, which the `full` "
           "profile checks." if configuration["trained_on"]["train_images"] else "")
    )

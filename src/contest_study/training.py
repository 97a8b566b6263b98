"""The one training engine: every neural network of the study is trained by :func:`run_experiment`.

A notebook writes the network (a builder function) and, for one network per chapter, its own
compile-and-fit recipe; the engine adds what every run needs and changes nothing else: the
seeded build, the ``tf.data`` pipelines, the registry entry (skipped when the run exists),
checkpoints and resume, the CSV/TensorBoard logs, and the scores of every split.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from contest_study.config import Profile, get_profile
from contest_study.data import drop_black_images, subsample
from contest_study.evaluation import prepare_splits, resolve_profile, score_and_save, split_hyperparams
from contest_study.files import atomic_output, write_text_atomic
from contest_study.registry import RunRecord

OPTIMIZERS = ("adam", "sgd")
LOSSES = ("binary_crossentropy", "categorical_crossentropy")
TRAIN_METRICS = ("accuracy", "f1")
LR_SCHEDULES = ("constant", "exponential", "warmup_decay", "plateau")
INPUT_CHANNEL_OPTIONS = (1, 3)
# The labels are independent yes/no questions (sigmoid); softmax is the grid's documented failure.
OUTPUT_ACTIVATIONS = ("sigmoid", "softmax")

# Learning-rate schedules, per epoch so that they mean the same at any dataset size.
EXPONENTIAL_DECAY_PER_EPOCH = 0.85  # 15 epochs end at about 9% of the initial rate
WARMUP_EPOCHS = 1
WARMUP_START_FRACTION = 0.1  # the warm-up climbs from 10% of the learning rate
COSINE_FINAL_FRACTION = 0.01
PLATEAU_FACTOR = 0.5
MIN_LEARNING_RATE = 1e-5
SGD_MOMENTUM = 0.9

TERMINAL_PROGRESS_ENV = "STUDY_TERMINAL_PROGRESS"
WEIGHTS_FILE = "best.weights.h5"
HISTORY_FILE = "history.csv"
TENSORBOARD_DIR = "tensorboard"
BACKUP_DIR = "backup"
CALLBACK_STATE_FILE = "callback_state.json"
# Keras verbose=2: one line per epoch, readable in a notebook and in a log file.
DEFAULT_VERBOSE = 2


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"TrainConfig.{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")


def _whole_number(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"TrainConfig.{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """How one network is trained; every field is part of the run's registry key.

    ``lr_schedule``: ``"constant"``; ``"plateau"`` (default: halved by ReduceLROnPlateau
    when the validation loss stalls for ``max(1, patience // 2)`` epochs); ``"exponential"``
    (x0.85 per epoch); ``"warmup_decay"`` (one epoch of linear warm-up from 10 % of the
    rate, then a cosine decay to 1 %).
    """

    epochs: int = 15
    batch_size: int = 64
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    loss: str = "binary_crossentropy"
    train_metric: str = "accuracy"
    lr_schedule: str = "plateau"
    patience: int = 5
    output_activation: str = "sigmoid"

    def __post_init__(self):
        _whole_number("epochs", self.epochs, 1)
        _whole_number("batch_size", self.batch_size, 1)
        _whole_number("patience", self.patience, 0)
        if isinstance(self.learning_rate, bool) or not isinstance(self.learning_rate, (int, float)):
            raise ValueError(f"TrainConfig.learning_rate must be a number, got {self.learning_rate!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("loss", self.loss, LOSSES)
        _choice("train_metric", self.train_metric, TRAIN_METRICS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("output_activation", self.output_activation, OUTPUT_ACTIVATIONS)
        # Frozen dataclass: normalise through object.__setattr__ (1 and 1.0 must give one registry key).
        object.__setattr__(self, "learning_rate", float(self.learning_rate))

    def as_hyperparams(self) -> dict:
        """The config as a plain dict (the hyperparameter part of the registry key)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def config_for_profile(profile: Profile | str, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` with the profile's epoch cap, batch size and patience, plus ``overrides``."""
    if isinstance(profile, str):
        profile = get_profile(profile)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values = {
        "epochs": profile.max_epochs,
        "batch_size": profile.batch_size,
        "patience": profile.early_stopping_patience,
        **overrides,
    }
    return TrainConfig(**values)


# ----------------------------------------------------------------------------- input pipeline


def make_dataset(images, labels, batch_size: int, *, shuffle: bool, seed: int | None = None) -> tf.data.Dataset:
    """A ``tf.data`` pipeline over in-memory arrays: slices, cache, seeded shuffle, batches, prefetch.

    ``labels`` None gives an images-only dataset (for prediction). Shuffling is
    reshuffled every epoch from ``seed``, so a seeded run sees the same order of
    batches every time; an unseeded shuffle is refused for that reason.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, height, width, channels), got shape {images.shape}")
    if images.dtype != np.float32:
        images = images.astype(np.float32)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if shuffle and seed is None:
        raise ValueError("a shuffled dataset needs a seed (reproducible runs)")
    if labels is None:
        dataset = tf.data.Dataset.from_tensor_slices(images)
    else:
        labels = np.asarray(labels)
        if labels.ndim != 2 or len(labels) != len(images):
            raise ValueError(f"labels must be (N, labels) with N = {len(images)} images, got shape {labels.shape}")
        # Keras losses and metrics compare float targets with float scores.
        dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.float32)))
    dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- compile


def _learning_rate(config: TrainConfig, steps_per_epoch: int | None):
    if config.lr_schedule in ("constant", "plateau"):
        return config.learning_rate
    if steps_per_epoch is None or steps_per_epoch < 1:
        raise ValueError(f"lr_schedule {config.lr_schedule!r} needs steps_per_epoch >= 1, got {steps_per_epoch!r}")
    if config.lr_schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            config.learning_rate, decay_steps=steps_per_epoch, decay_rate=EXPONENTIAL_DECAY_PER_EPOCH
        )
    warmup_steps = WARMUP_EPOCHS * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate * WARMUP_START_FRACTION,
        decay_steps=max(1, config.epochs - WARMUP_EPOCHS) * steps_per_epoch,
        alpha=COSINE_FINAL_FRACTION,
        warmup_target=config.learning_rate,
        warmup_steps=warmup_steps,
    )


def build_optimizer(config: TrainConfig, steps_per_epoch: int | None = None) -> keras.optimizers.Optimizer:
    """The optimizer with the config's learning rate or schedule.

    ``steps_per_epoch`` (batches per epoch) is needed by the ``"exponential"`` and
    ``"warmup_decay"`` schedules, which are defined per epoch.
    """
    learning_rate = _learning_rate(config, steps_per_epoch)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=SGD_MOMENTUM)


def build_loss(config: TrainConfig) -> keras.losses.Loss:
    if config.loss == "binary_crossentropy":
        return keras.losses.BinaryCrossentropy()
    # Treats the 0/1 label vector as one distribution over the labels: the documented failed approach.
    return keras.losses.CategoricalCrossentropy()


def build_train_metric(config: TrainConfig) -> list[keras.metrics.Metric]:
    """The metrics logged every epoch: binary accuracy, the contest's PR-AUC, and the config's option.

    ``pr_auc`` is Keras' PR-AUC per label, averaged (an approximation of the average
    precision on 200 thresholds); the final scores are scikit-learn's exact AP.
    """
    metrics = [
        keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.5),
        keras.metrics.AUC(curve="PR", multi_label=True, name="pr_auc"),
    ]
    if config.train_metric == "f1":
        metrics.append(keras.metrics.F1Score(average="macro", threshold=0.5, name="f1"))
    return metrics


def compile_model(model: keras.Model, config: TrainConfig, *, steps_per_epoch: int | None = None) -> keras.Model:
    """Compile ``model`` with the config's optimizer, loss and metrics (returns it)."""
    model.compile(
        optimizer=build_optimizer(config, steps_per_epoch),
        loss=build_loss(config),
        metrics=build_train_metric(config),
    )
    return model


# ----------------------------------------------------------------------------- fit


class TerminalProgress(keras.callbacks.Callback):
    """One line per epoch on the terminal of ``scripts/export_submission.py``.

    A notebook executed headlessly keeps Keras' own display in its outputs, so the
    terminal would stay silent for the many minutes a study trains. The kernel's
    original stderr (``sys.__stderr__``) is that terminal; the export sets
    ``STUDY_TERMINAL_PROGRESS=1`` to ask for these lines.
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        scores = " ".join(f"{name} {value:.4f}" for name, value in logs.items() if "loss" in name)
        print(f"    {self.model.name} epoch {epoch + 1}/{self.epochs}: {scores}", file=sys.__stderr__, flush=True)


class BackupAndRestoreWithState(keras.callbacks.BackupAndRestore):
    """Keras' ``BackupAndRestore`` (model, optimizer, epoch) plus the state of the ``watched`` callbacks.

    Keras restores the weights and the epoch but not the callbacks: without this, a
    resumed run's early stopping would forget its best epoch and patience, the
    checkpoint its best value and ReduceLROnPlateau its counters. At every epoch end
    the state of each watched ``EarlyStopping`` (wait, best, best epoch, best weights),
    ``ModelCheckpoint`` (best) and ``ReduceLROnPlateau`` (wait, cooldown, best) and
    the learning rate are written to the backup folder before the model is, keyed by
    epoch, so a kill between the two writes still finds the state of the backed-up epoch.
    """

    def __init__(self, backup_dir, watched=()):
        super().__init__(str(backup_dir), double_checkpoint=True)
        self.state_dir = Path(backup_dir)
        self.watched = list(watched)

    @property
    def _state_file(self) -> Path:
        return self.state_dir / CALLBACK_STATE_FILE

    def _weights_file(self, epochs_done: int) -> Path:
        return self.state_dir / f"early_stopping_best.{epochs_done}.npz"

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        epochs_done = getattr(self.model, "_initial_epoch", None) or 0  # set by Keras' restore
        if epochs_done:
            self._restore(epochs_done)

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch + 1)
        super().on_epoch_end(epoch, logs)

    def _save(self, epochs_done: int) -> None:
        states = []
        for callback in self.watched:
            state = {"class": type(callback).__name__}
            if isinstance(callback, keras.callbacks.EarlyStopping):
                state.update(wait=callback.wait, best=callback.best, best_epoch=callback.best_epoch,
                             stopped_epoch=callback.stopped_epoch)
                if callback.best_weights is not None:
                    # Saved when they change (a new best); later epochs point to that file.
                    if callback.best_epoch == epochs_done - 1 or not self._weights_file(callback.best_epoch + 1).exists():
                        with atomic_output(self._weights_file(callback.best_epoch + 1)) as temporary:
                            with open(temporary, "wb") as handle:
                                np.savez(handle, *callback.best_weights)
                    state["best_weights"] = self._weights_file(callback.best_epoch + 1).name
            elif isinstance(callback, keras.callbacks.ModelCheckpoint):
                state.update(best=callback.best)
            elif isinstance(callback, keras.callbacks.ReduceLROnPlateau):
                state.update(wait=callback.wait, cooldown_counter=callback.cooldown_counter, best=callback.best)
            states.append(_plain(state))
        saved = self._read_states()
        saved[str(epochs_done)] = {"callbacks": states, "learning_rate": _current_learning_rate(self.model)}
        # The previous epoch's state stays: the model backup of this epoch may not be written yet.
        saved = {epoch: saved[epoch] for epoch in sorted(saved, key=int)[-2:]}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self._state_file, json.dumps(saved))
        kept = {state.get("best_weights") for entry in saved.values() for state in entry["callbacks"]}
        for path in self.state_dir.glob("early_stopping_best.*.npz"):
            if path.name not in kept:
                path.unlink(missing_ok=True)

    def _read_states(self) -> dict:
        try:
            return json.loads(self._state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def _restore(self, epochs_done: int) -> None:
        entry = self._read_states().get(str(epochs_done))
        if entry is None:
            if self.watched:
                raise RuntimeError(
                    f"the backup in {self.state_dir} resumes after epoch {epochs_done} but holds no callback "
                    f"state for it ({self._state_file}); delete {self.state_dir} to train this run from scratch"
                )
            return
        names = [state["class"] for state in entry["callbacks"]]
        if names != [type(callback).__name__ for callback in self.watched]:
            raise RuntimeError(
                f"the backup in {self.state_dir} holds the state of callbacks {names}, but this run watches "
                f"{[type(callback).__name__ for callback in self.watched]}; delete {self.state_dir} to start afresh"
            )
        for callback, state in zip(self.watched, entry["callbacks"]):
            for name, value in state.items():
                if name == "best_weights":
                    with np.load(self.state_dir / value) as archive:
                        callback.best_weights = [archive[f"arr_{i}"] for i in range(len(archive.files))]
                elif name != "class":
                    setattr(callback, name, value)
        if entry["learning_rate"] is not None:
            self.model.optimizer.learning_rate = entry["learning_rate"]


def _plain(state: dict) -> dict:
    """Numbers as plain floats/ints (JSON), whatever backend scalar type the callback kept."""
    return {
        name: float(value) if isinstance(value, (float, np.floating)) or hasattr(value, "numpy") else value
        for name, value in state.items()
    }


def _current_learning_rate(model: keras.Model) -> float | None:
    """The optimizer's rate when it is a variable (a schedule owns its own rate: None)."""
    optimizer = model.optimizer
    if isinstance(getattr(optimizer, "_learning_rate", None), keras.optimizers.schedules.LearningRateSchedule):
        return None
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def stop_summary(callbacks, epochs_run: int, history: dict[str, list[float]]) -> dict:
    """``best_epoch`` (from 1) and ``stopped_because`` ("early stopping" or "epoch cap") of a finished fit.

    From the ``EarlyStopping`` among ``callbacks``; without one, the best epoch is the
    lowest validation loss of ``history`` and training ran to its cap.
    """
    stopper = next((c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)), None)
    if stopper is not None and stopper.best is not None:
        best_epoch = stopper.best_epoch + 1
    elif history.get("val_loss"):
        best_epoch = int(np.nanargmin(history["val_loss"])) + 1
    else:
        best_epoch = epochs_run
    stopped = stopper is not None and stopper.stopped_epoch > 0
    return {"best_epoch": best_epoch, "stopped_because": "early stopping" if stopped else "epoch cap"}


def make_callbacks(config: TrainConfig, workdir: Path, watched=None) -> list[keras.callbacks.Callback]:
    """The engine's callbacks, writing into ``workdir`` (see the module docstring).

    ``watched=None``: the engine's own early stopping, checkpoint and (``"plateau"``)
    ReduceLROnPlateau, whose state the backup keeps. A notebook recipe that brings its
    own passes them as ``watched``: then only the logs and the backup are returned.
    """
    workdir = Path(workdir)
    if watched is None:
        watched = [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True),
            keras.callbacks.ModelCheckpoint(
                str(workdir / WEIGHTS_FILE), monitor="val_loss", save_best_only=True, save_weights_only=True
            ),
        ]
        # Keras refuses ReduceLROnPlateau with a schedule object (the schedule owns the rate).
        if config.lr_schedule == "plateau":
            watched.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor="val_loss",
                    factor=PLATEAU_FACTOR,
                    patience=max(1, config.patience // 2),
                    min_lr=MIN_LEARNING_RATE,
                )
            )
        callbacks = list(watched)
    else:
        callbacks = []
    callbacks += [
        keras.callbacks.CSVLogger(str(workdir / HISTORY_FILE), append=True),
        keras.callbacks.TensorBoard(log_dir=str(workdir / TENSORBOARD_DIR)),
        # Last, so an epoch is in the CSV log before the backup counts it as done.
        BackupAndRestoreWithState(workdir / BACKUP_DIR, watched),
    ]
    if os.environ.get(TERMINAL_PROGRESS_ENV) == "1":
        callbacks.append(TerminalProgress(config.epochs))
    return callbacks


class _SetEpoch(keras.callbacks.Callback):
    def __init__(self, variable: tf.Variable):
        super().__init__()
        self.variable = variable

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(epoch)


def epoch_ordered_batches(images, labels, batch_size: int, seed: int) -> tuple[tf.data.Dataset, keras.callbacks.Callback]:
    """Training batches shuffled by (seed, epoch), and the callback that tells the data the epoch.

    ``Dataset.shuffle`` draws each epoch's order from a generator that restarts with
    the process, so a resumed run would repeat the first epochs' orders; here epoch e
    always gets the same order, and a resumed run sees the batches the uninterrupted one saw.
    """
    images = tf.convert_to_tensor(np.asarray(images, dtype=np.float32))
    labels = tf.convert_to_tensor(np.asarray(labels, dtype=np.float32))
    n_images = int(images.shape[0])
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)

    def one_epoch(_):
        seeds = tf.stack([tf.constant(seed, tf.int64), epoch.read_value()])
        return tf.data.Dataset.from_tensor_slices(
            tf.random.experimental.stateless_shuffle(tf.range(n_images, dtype=tf.int64), seed=seeds)
        )

    batches = (
        tf.data.Dataset.from_tensors(0)
        .flat_map(one_epoch)
        .batch(batch_size)
        .map(lambda rows: (tf.gather(images, rows), tf.gather(labels, rows)))
        .apply(tf.data.experimental.assert_cardinality(math.ceil(n_images / batch_size)))
        .prefetch(tf.data.AUTOTUNE)
    )
    return batches, _SetEpoch(epoch)


def _read_history(path: Path) -> dict[str, list[float]]:
    """Per-epoch curves from the CSV log, which also holds the epochs of an interrupted attempt."""
    frame = pd.read_csv(path)
    # An epoch logged just before an interruption, but not backed up, is run again: keep its last run.
    frame = frame.drop_duplicates(subset="epoch", keep="last").sort_values("epoch")
    return {column: frame[column].astype(float).tolist() for column in frame.columns if column != "epoch"}


def fit(
    model: keras.Model,
    train_split,
    val_split,
    config: TrainConfig,
    workdir: Path,
    *,
    seed: int,
    verbose: int | None = None,
    extra_callbacks=(),
) -> dict:
    """Compile and train ``model`` on ``train_split``, stopping early on ``val_split``'s loss.

    The splits need ``images`` and ``labels`` (``contest_study.data.Split``). Writes
    ``best.weights.h5`` (the restored best weights), ``history.csv``,
    ``tensorboard/`` and, while unfinished, ``backup/`` into ``workdir``; when
    ``backup/`` is there from an interrupted call, training resumes after its last
    finished epoch. ``verbose`` is Keras' (default 2: one line per epoch).

    Returns ``{"history": {metric: [per epoch]}, "epochs_run", "best_epoch",
    "stopped_because", "wall_time_s", "params"}`` (see :func:`stop_summary`);
    ``epochs_run`` counts the epochs of an interrupted attempt too, ``wall_time_s``
    only this call's training. A resumed run continues with the callbacks' state and
    the batch order of the uninterrupted one (:class:`BackupAndRestoreWithState`,
    :func:`epoch_ordered_batches`), so it ends with the same weights.
    """
    for split, role in ((train_split, "train_split"), (val_split, "val_split")):
        if split.labels is None:
            raise ValueError(f"{role} ({getattr(split, 'name', '?')}) has no labels to train on")
        if len(split.images) == 0:
            raise ValueError(f"{role} ({getattr(split, 'name', '?')}) has no images")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / BACKUP_DIR).exists():
        # No interrupted attempt to resume: a log left by one that died in its first epoch is stale.
        (workdir / HISTORY_FILE).unlink(missing_ok=True)
    steps_per_epoch = math.ceil(len(train_split.images) / config.batch_size)
    compile_model(model, config, steps_per_epoch=steps_per_epoch)
    train_data, set_epoch = epoch_ordered_batches(train_split.images, train_split.labels, config.batch_size, seed)
    val_data = make_dataset(val_split.images, val_split.labels, config.batch_size, shuffle=False)
    callbacks = [set_epoch, *make_callbacks(config, workdir), *extra_callbacks]
    started = time.perf_counter()
    model.fit(
        train_data,
        validation_data=val_data,
        epochs=config.epochs,
        shuffle=False,  # the batches are already shuffled, by seed and epoch
        callbacks=callbacks,
        verbose=DEFAULT_VERBOSE if verbose is None else verbose,
    )
    wall_time_s = time.perf_counter() - started
    # EarlyStopping restored the best epoch's weights; saving them again makes the file
    # match the model whatever the checkpoint last wrote.
    model.save_weights(str(workdir / WEIGHTS_FILE))
    history = _read_history(workdir / HISTORY_FILE)
    epochs_run = len(next(iter(history.values()), []))
    return {
        "history": history,
        "epochs_run": epochs_run,
        **stop_summary(callbacks, epochs_run, history),
        "wall_time_s": wall_time_s,
        "params": model.count_params(),
    }


# ----------------------------------------------------------------------------- experiments


MODEL_FILE = "model.json"
OUTPUT_LAYER = "labels"


def _with_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """The images with ``channels`` channels: grayscale is replicated to 3 identical channels."""
    if images.shape[-1] == channels:
        return images
    return np.repeat(images, channels, axis=-1)


def _predict_splits(model: keras.Model, splits, channels: int, batch_size: int) -> list[np.ndarray | None]:
    """Scores of every split (None for a missing or empty one), predicted in whole batches.

    The splits are predicted together and padded to a multiple of the batch size:
    a last batch of another size would make TensorFlow trace the prediction again.
    """
    present = [split for split in splits if split is not None and len(split)]
    images = np.concatenate([_with_channels(split.images, channels) for split in present])
    padding = np.zeros((-len(images) % batch_size, *images.shape[1:]), images.dtype)
    scores = model.predict(np.concatenate([images, padding]), batch_size=batch_size, verbose=0)[: len(images)]
    parts = iter(np.split(scores, np.cumsum([len(split) for split in present])[:-1]))
    return [next(parts) if split is not None and len(split) else None for split in splits]


def with_output_layer(model: keras.Model, **settings) -> keras.Model:
    """``model`` with settings of its output layer (named ``"labels"``) replaced, e.g. its activation.

    The hyperparameter grid's categorical cross-entropy needs a softmax head on the same
    architecture, and mixed precision a float32 head; rebuilding from the Keras config
    changes those settings and nothing else.
    """
    config = json.loads(model.to_json())
    outputs = [layer for layer in config["config"]["layers"] if layer["config"].get("name") == OUTPUT_LAYER]
    if not outputs:
        raise ValueError(f"model {model.name!r} has no output layer named {OUTPUT_LAYER!r} to change {sorted(settings)}")
    outputs[0]["config"].update(settings)
    return keras.models.model_from_json(json.dumps(config))


def build_for_run(build, input_shape, n_labels: int, *, seed: int, output_activation: str = "sigmoid") -> keras.Model:
    """Build the network of ``build(input_shape, n_labels)`` in a fresh, seeded Keras session.

    The fresh session resets the layer-name counters, so the same builder gives the same
    Keras config (the run's fingerprint) in any process; the seed fixes the initial weights.
    Under a mixed-precision policy the output layer computes in float32, as Keras advises.
    """
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(seed)
    model = build(tuple(input_shape), n_labels)
    if not isinstance(model, keras.Model):
        raise TypeError(f"the builder {getattr(build, '__name__', build)!r} must return a keras.Model, got {type(model).__name__}")
    if output_activation != "sigmoid":
        model = with_output_layer(model, activation=output_activation)
    if keras.mixed_precision.global_policy().name != "float32":
        model = with_output_layer(model, dtype="float32")
    return model


def architecture_fingerprint(model: keras.Model) -> str:
    """A short hash of the network's Keras config: part of every run's registry key."""
    return hashlib.sha256(model.to_json().encode()).hexdigest()[:12]


def recipe_fingerprint(fit_recipe) -> str:
    """A short hash of a notebook's own compile-and-fit function (its source), for the registry key."""
    try:
        source = inspect.getsource(fit_recipe)
    except (OSError, TypeError):
        raise ValueError(
            f"the source of the fit recipe {getattr(fit_recipe, '__name__', fit_recipe)!r} cannot be read; "
            "define it in a notebook cell or a module"
        ) from None
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def experiment_hyperparams(
    config: TrainConfig,
    *,
    model: keras.Model,
    black_images: str = "removed",
    profile: Profile | str | None = None,
    fit_recipe=None,
    subset_fraction: float = 1.0,
) -> dict:
    """The hyperparameters that identify a run in the registry (with the model name, data and seed)."""
    hyperparams = {
        **config.as_hyperparams(),
        **split_hyperparams(black_images, profile),
        "input_channels": int(model.input_shape[-1]),
        "architecture": architecture_fingerprint(model),
        "fit_recipe": recipe_fingerprint(fit_recipe) if fit_recipe is not None else "engine",
    }
    if subset_fraction != 1.0:
        hyperparams["train_fraction"] = subset_fraction
    return hyperparams


def engine_callbacks(config: TrainConfig, workdir: Path, watched=()) -> list[keras.callbacks.Callback]:
    """The engine's share of :func:`make_callbacks` (logs, backup and resume), for a notebook's recipe.

    The recipe brings its own early stopping, checkpoint and learning-rate callbacks; ``watched``
    are those, whose state the backup keeps so that a resumed run continues where it stopped.
    """
    return make_callbacks(config, workdir, watched=list(watched))


@dataclass
class RunFolder:
    """What a notebook's own compile-and-fit recipe gets from the engine besides the data.

    ``directory`` is the run's working folder (checkpoints go there); ``callbacks(watched)``
    are the engine's own callbacks — the epoch of the seeded batch order, CSV log,
    TensorBoard, and the backup that lets an interrupted run resume, with the state of the
    ``watched`` callbacks — to append to the recipe's own.
    """

    directory: Path
    config: TrainConfig
    epoch_callback: keras.callbacks.Callback
    watched: list = field(default_factory=list)

    def callbacks(self, watched=()) -> list[keras.callbacks.Callback]:
        self.watched = list(watched)
        return [self.epoch_callback, *engine_callbacks(self.config, self.directory, self.watched)]


def _fit_with_recipe(fit_recipe, model, train_split, val_split, config: TrainConfig, workdir: Path, *, seed: int) -> dict:
    """Run a notebook's compile-and-fit function the way :func:`fit` runs the engine's own."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / BACKUP_DIR).exists():
        (workdir / HISTORY_FILE).unlink(missing_ok=True)
    train_data, set_epoch = epoch_ordered_batches(train_split.images, train_split.labels, config.batch_size, seed)
    val_data = make_dataset(val_split.images, val_split.labels, config.batch_size, shuffle=False)
    run = RunFolder(workdir, config, set_epoch)
    started = time.perf_counter()
    fit_recipe(model, train_data, val_data, run)
    wall_time_s = time.perf_counter() - started
    model.save_weights(str(workdir / WEIGHTS_FILE))
    history = _read_history(workdir / HISTORY_FILE)
    epochs_run = len(next(iter(history.values()), []))
    return {
        "history": history,
        "epochs_run": epochs_run,
        **stop_summary(run.watched, epochs_run, history),
        "wall_time_s": wall_time_s,
        "params": model.count_params(),
    }


def run_experiment(
    registry,
    data,
    *,
    build,
    family: str,
    config: TrainConfig,
    seed: int,
    description: str = "",
    black_images: str = "removed",
    oracle: Mapping[str, np.ndarray] | None = None,
    force: bool = False,
    input_channels: int | None = None,
    profile: Profile | str | None = None,
    fit_recipe=None,
    train_fraction: float = 1.0,
    verbose: int | None = None,
) -> RunRecord:
    """Train (or reuse) the network ``build(input_shape, n_labels)`` makes; return its registry record.

    - ``build``: a function of ``(input_shape, n_labels)`` returning an uncompiled
      ``keras.Model`` named as the run, whose output layer is named ``"labels"``.
    - ``black_images``: ``"removed"`` trains without the totally black images but one
      (their labels are random coins) and early-stops on the validation images that
      are not black; ``"kept"`` trains and early-stops on all of them. Validation and
      hold-out are scored whole and without black images either way.
    - ``input_channels``: None feeds the data's channels; 3 replicates grayscale.
    - ``fit_recipe``: a notebook's own ``fit(model, train_data, val_data, run)``
      (compile, callbacks, ``model.fit``); None uses :func:`fit`. Its source is in the key.
    - ``train_fraction``: train on a seeded fraction of the training images (label budgets).
    - ``profile``: its image caps subsample train, val and hold-out (seeded).
    - ``force``: retrain even when the registry holds the run.

    The record holds the scores of val and hold-out, the epochs and why training
    stopped, the wall time and the history; beside it are ``predictions.npz``,
    ``best.weights.h5``, ``history.csv``, ``tensorboard/`` and ``model.json``, the
    network's Keras config, from which :func:`model_from_record` rebuilds it.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction!r}")
    channels = data.channels if input_channels is None else input_channels
    if channels not in INPUT_CHANNEL_OPTIONS:
        raise ValueError(f"input_channels must be 1 or 3, got {input_channels!r}")
    if data.channels not in (1, channels):
        raise ValueError(
            f"input_channels={channels} cannot be fed from data with {data.channels} channels "
            "(keep_channels loads every image with 3)"
        )
    profile = resolve_profile(profile)
    image_shape = (*data.train.images.shape[1:3], channels)
    model = build_for_run(
        build, image_shape, len(data.label_names), seed=seed, output_activation=config.output_activation
    )
    hyperparams = experiment_hyperparams(
        config, model=model, black_images=black_images, profile=profile, fit_recipe=fit_recipe,
        subset_fraction=train_fraction,
    )
    splits = prepare_splits(data, black_images=black_images, profile=profile, seed=seed, oracle=oracle)

    def run(workdir: Path) -> dict:
        nonlocal model
        train, val, holdout = (
            replace(split, images=_with_channels(split.images, channels))
            for split in (splits.train, splits.val, splits.holdout)
        )
        if train_fraction < 1:
            train = subsample(train, max(1, round(train_fraction * len(train))), seed=seed)
        # The callbacks watch the validation images of the kind the network trains on: with
        # black images removed, the loss on the validation's black third only measures the
        # arbitrary score the network gives an input it never learnt, and would swing early
        # stopping, checkpointing and the learning rate by itself.
        monitored = drop_black_images(val, keep=0) if black_images == "removed" else val
        if os.environ.get(TERMINAL_PROGRESS_ENV) == "1":
            print(f"  training {model.name} on {len(train)} images ({workdir.name})", file=sys.__stderr__, flush=True)
        started = time.perf_counter()
        # A model built before this call may have trained already (a forced rerun): start afresh.
        model = build_for_run(
            build, image_shape, len(data.label_names), seed=seed, output_activation=config.output_activation
        )
        (Path(workdir) / MODEL_FILE).write_text(model.to_json(), encoding="utf-8")
        if fit_recipe is None:
            outcome = fit(model, train, monitored, config, workdir, seed=seed, verbose=verbose)
        else:
            outcome = _fit_with_recipe(fit_recipe, model, train, monitored, config, workdir, seed=seed)
        val_score, holdout_score, test_score = _predict_splits(
            model, [val, holdout, splits.test], channels, config.batch_size
        )
        wall_time_s = time.perf_counter() - started
        scores = score_and_save(
            workdir, splits, val_score=val_score, holdout_score=holdout_score, test_score=test_score
        )
        return {
            "description": description,
            "profile": profile.name if profile else None,
            "label_names": splits.label_names,
            "black_images": black_images,
            "input_channels": channels,
            "n_train_images": len(train),
            "n_monitored_val_images": len(monitored),
            "params": outcome["params"],
            "epochs_run": outcome["epochs_run"],
            "wall_time_s": wall_time_s,
            "history": outcome["history"],
            **{name: value for name, value in outcome.items() if name not in ("history", "epochs_run", "wall_time_s", "params")},
            **scores,
        }

    return registry.fetch_or_run(
        model=model.name,
        family=family,
        hyperparams=hyperparams,
        data_fingerprint=data.fingerprint,
        seed=seed,
        run_fn=run,
        force=force,
    )


def model_from_record(record: RunRecord, *, weights: bool = False) -> keras.Model:
    """The network of a registry run, rebuilt from its saved Keras config (and best weights)."""
    path = record.path / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: run {record.key} has no saved architecture (trained before model.json was kept)")
    model = keras.models.model_from_json(path.read_text(encoding="utf-8"))
    if weights:
        model.load_weights(str(record.weights_path))
    return model


def builder_from_record(record: RunRecord):
    """A builder ``(input_shape, n_labels) -> keras.Model`` of the architecture of a registry run.

    The saved config fixes the input shape and the number of labels; asking for others is an error.
    """
    def build(input_shape, n_labels):
        model = model_from_record(record)
        if tuple(model.input_shape[1:]) != tuple(input_shape) or model.output_shape[-1] != n_labels:
            raise ValueError(
                f"run {record.key} ({record.model}) takes {model.input_shape[1:]} -> {model.output_shape[-1]} labels, "
                f"asked for {tuple(input_shape)} -> {n_labels}"
            )
        return model

    build.__name__ = f"build_{record.model}"
    return build

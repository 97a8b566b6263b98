"""Transfer learning (notebook 07): pretrained backbones under the study's 3-label head.

Two sources of pretrained weights, each compared with the same network trained from
random initialisation on the same images:

1. **Self-supervised**: the encoder of the denoising autoencoder
   (:mod:`contest_study.autoencoder`), trained on unlabelled images, becomes the
   backbone of a classifier (encoder -> flatten -> dropout -> dense 64 -> 3 sigmoid
   labels), trained in two stages: the encoder **frozen** (only the head learns, at
   the head learning rate), then **fine-tuned** (every layer, from the frozen stage's
   best weights, at a 10x lower rate, so the pretrained filters are adjusted rather
   than overwritten). The reference is the same architecture from random
   initialisation, trained at the head rate for as many epochs as both stages together.
2. **Keras Applications MobileNetV2** (no top, global average pooling), fed the
   grayscale image resized to its input size, replicated to 3 channels and scaled to
   [-1, 1] as ``mobilenet_v2.preprocess_input`` does, all inside the model. ImageNet
   weights are **never downloaded** (these machines have no internet): they are
   looked for at the path of the ``STUDY_IMAGENET_WEIGHTS`` environment variable (or
   the ``path`` argument), else in the Keras cache (``$KERAS_HOME/models`` or
   ``~/.keras/models``, and ``/tmp/.keras/models`` where Keras caches when the home
   folder is read-only) under the file name ``keras.applications`` downloads them to
   (:func:`imagenet_weights_file_name`). Found: frozen, then fine-tuned, like the
   encoder (batch normalisation kept on its ImageNet statistics). Missing: the
   network is trained from random initialisation (every layer, head rate, the two
   stages' epochs), and its model name, family and description say
   "random init (no ImageNet weights found)", so no table can take it for transfer
   learning.

Runs that start from pretrained weights are in the family ``"transfer"``; the
references trained from random initialisation in ``"from_scratch"``. Every run is a
standard classifier record of the results registry (built with
:func:`contest_study.evaluation.prepare_splits`, trained by
:func:`contest_study.training.fit`, scored and saved by
:func:`contest_study.evaluation.score_and_save`), so the study's tables and figures
read them like any other run. A fine-tuned record counts the epochs and training
time of both stages, and its training curves run through both.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import layers

from contest_study.autoencoder import FAMILY as AUTOENCODER_FAMILY
from contest_study.autoencoder import architecture_fingerprint, build_encoder, load_autoencoder
from contest_study.data import drop_black_images
from contest_study.evaluation import prepare_splits, score_and_save, split_hyperparams
from contest_study.models import BATCH_NORM_MOMENTUM
from contest_study.registry import RunRecord
from contest_study.training import _predict_splits, fit

TRANSFER_FAMILY = "transfer"
SCRATCH_FAMILY = "from_scratch"
WEIGHTS_ENV = "STUDY_IMAGENET_WEIGHTS"
RANDOM_INIT_LABEL = "random init (no ImageNet weights found)"
# The configurations keras.applications publishes ImageNet weights for (MobileNetV2).
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
IMAGENET_IMAGE_SIZES = (96, 128, 160, 192, 224)
# The smallest input side MobileNetV2 accepts.
MIN_INPUT_SIZE = 32


@dataclass(frozen=True)
class TransferSettings:
    """Epochs and sizes of notebook 07's runs; the relevant fields are part of each run's key.

    ``frozen_epochs`` / ``fine_tune_epochs``: the two stages of the encoder transfer
    (the from-scratch reference gets their sum). ``backbone_*``: the same for
    MobileNetV2, with its width multiplier ``backbone_alpha``, its input side
    ``backbone_image_size`` and a cap on its training images
    ``backbone_max_train_images`` (None: the profile's). ``backbone_input_size``
    (None: ``backbone_image_size``) resizes the images to another side than the one of
    the ImageNet configuration whose weights are looked for: only the ``smoke`` profile
    does, to test the same code on fewer pixels (no-top weights fit any side).
    """

    frozen_epochs: int
    fine_tune_epochs: int
    backbone_frozen_epochs: int
    backbone_fine_tune_epochs: int
    backbone_max_train_images: int | None
    backbone_alpha: float = 0.35
    backbone_image_size: int = 96
    backbone_input_size: int | None = None
    head_learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    hidden_units: int = 64
    dropout: float = 0.3
    # Run the training steps op by op instead of tracing them into a graph first. Tracing MobileNetV2's
    # training step takes ~25-35 s on a 2-core CPU, and even a small network's a few seconds: longer
    # than a whole smoke-profile training. Same computation, so not part of any registry key.
    eager_training: bool = False

    def __post_init__(self):
        for name in ("frozen_epochs", "fine_tune_epochs", "backbone_frozen_epochs", "backbone_fine_tune_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TransferSettings.{name} must be an integer >= 1, got {value!r}")
        if self.backbone_alpha not in IMAGENET_ALPHAS or self.backbone_image_size not in IMAGENET_IMAGE_SIZES:
            raise ValueError(
                f"TransferSettings: MobileNetV2 has ImageNet weights for alpha in {IMAGENET_ALPHAS} and input "
                f"sides in {IMAGENET_IMAGE_SIZES}, got alpha {self.backbone_alpha} and side {self.backbone_image_size}"
            )
        side = self.input_size
        if isinstance(side, bool) or not isinstance(side, int) or side < MIN_INPUT_SIZE:
            raise ValueError(
                f"TransferSettings.backbone_input_size must be None or an integer >= {MIN_INPUT_SIZE} "
                f"(MobileNetV2's smallest input), got {side!r}"
            )
        if self.backbone_max_train_images is not None and self.backbone_max_train_images < 1:
            raise ValueError(
                f"TransferSettings.backbone_max_train_images must be None or >= 1, got {self.backbone_max_train_images}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TransferSettings.dropout must be in [0, 1), got {self.dropout}")

    @property
    def input_size(self) -> int:
        """The side MobileNetV2's input images are resized to."""
        return self.backbone_image_size if self.backbone_input_size is None else self.backbone_input_size


# ``default`` keeps notebooks 06 and 07 together within a few minutes on a 2-core CPU:
# MobileNetV2 at its smallest ImageNet configuration (alpha 0.35, 96x96) on a seeded
# 2,000 of the training images, for 2 epochs; the encoder runs use every training image.
# ``smoke`` feeds MobileNetV2 32x32 images (a ninth of the pixels; the 96x96 weights
# are the ones looked for): its training and its predictions on the whole test split
# were most of the smoke run's time.
SETTINGS: dict[str, TransferSettings] = {
    "smoke": TransferSettings(
        frozen_epochs=1,
        fine_tune_epochs=1,
        backbone_frozen_epochs=1,
        backbone_fine_tune_epochs=1,
        backbone_max_train_images=32,
        backbone_input_size=32,
        eager_training=True,
    ),
    "default": TransferSettings(
        frozen_epochs=4,
        fine_tune_epochs=4,
        backbone_frozen_epochs=1,
        backbone_fine_tune_epochs=1,
        backbone_max_train_images=2000,
    ),
    "full": TransferSettings(
        frozen_epochs=20,
        fine_tune_epochs=40,
        backbone_frozen_epochs=10,
        backbone_fine_tune_epochs=30,
        backbone_max_train_images=None,
        backbone_alpha=1.0,
        backbone_image_size=128,
    ),
}


def settings_for(profile) -> TransferSettings:
    """The transfer settings of a profile (a ``config.Profile`` or its name)."""
    name = profile if isinstance(profile, str) else profile.name
    try:
        return SETTINGS[name]
    except KeyError:
        raise ValueError(f"no transfer settings for profile {name!r}; known: {', '.join(SETTINGS)}") from None


# ----------------------------------------------------------------------------- models


def set_backbone_trainable(model: keras.Model, trainable: bool, *, backbone: str = "encoder") -> keras.Model:
    """Freeze (``False``) or unfreeze (``True``) the nested backbone of ``model``; returns ``model``.

    Takes effect at the next compile (``training.fit`` compiles).
    """
    model.get_layer(backbone).trainable = trainable
    return model


def build_encoder_classifier(encoder: keras.Model, n_labels: int = 3, *, hidden_units=64, dropout=0.3) -> keras.Model:
    """``encoder`` (the nested layer ``"encoder"``) under a dense head with ``n_labels`` sigmoid outputs."""
    inputs = keras.Input(shape=tuple(encoder.input.shape[1:]), name="image")
    x = layers.Flatten()(encoder(inputs))
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(hidden_units, activation="relu")(x)
    outputs = layers.Dense(n_labels, activation="sigmoid", name="labels")(x)
    return keras.Model(inputs, outputs, name="encoder_classifier")


def build_backbone_classifier(
    input_shape=(64, 64, 1),
    n_labels: int = 3,
    *,
    alpha: float = 0.35,
    image_size: int = 96,
    weights_path: Path | None = None,
    dropout: float = 0.3,
) -> keras.Model:
    """MobileNetV2 (nested layer ``"backbone"``) under a sigmoid head, on grayscale or RGB images in [0, 1].

    ``weights_path``: the ImageNet no-top weights to load (:func:`find_imagenet_weights`),
    or None for random initialisation. Never downloads anything.
    """
    backbone = keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3),
        alpha=alpha,
        include_top=False,
        weights=None,  # never a download: the weights, when found, are loaded from a local file below
        pooling="avg",
        name="backbone",
    )
    pretrained = weights_path is not None
    if pretrained:
        load_backbone_weights(backbone, weights_path)
    else:
        # Keras' momentum 0.99 leaves the inference statistics of a network trained from
        # scratch for a few short epochs far from the training ones (see models.BATCH_NORM_MOMENTUM).
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = BATCH_NORM_MOMENTUM
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Resizing(image_size, image_size, name="resize")(inputs)
    if input_shape[-1] == 1:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    # mobilenet_v2.preprocess_input maps [0, 255] to [-1, 1]; these images are in [0, 1].
    x = layers.Rescaling(2.0, offset=-1.0, name="to_minus_one_one")(x)
    # Pretrained: batch normalisation keeps its ImageNet statistics even while fine-tuning (Keras'
    # transfer-learning recipe: small batches of another kind of image would wreck them).
    features = backbone(x, training=False) if pretrained else backbone(x)
    x = layers.Dropout(dropout)(features)
    outputs = layers.Dense(n_labels, activation="sigmoid", name="labels")(x)
    return keras.Model(inputs, outputs, name="mobilenetv2_classifier")


# ----------------------------------------------------------------------------- ImageNet weights


def _configuration(alpha: float, image_size: int) -> str:
    return f"MobileNetV2 (alpha {alpha:g}, {image_size}x{image_size} input)"


def imagenet_weights_file_name(alpha: float, image_size: int) -> str:
    """The name keras.applications gives MobileNetV2's no-top ImageNet weights in its cache."""
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{image_size}_no_top.h5"


def keras_cache_dirs() -> list[Path]:
    """Where Keras keeps downloaded weights: ``$KERAS_HOME/models`` or ``~/.keras/models``, then the
    ``.keras/models`` of the temporary folder, Keras' fallback when the home folder is read-only."""
    home = os.environ.get("KERAS_HOME")
    base = Path(home).expanduser() if home else Path("~").expanduser() / ".keras"
    candidates = [base / "models", Path(tempfile.gettempdir()) / ".keras" / "models"]
    return list(dict.fromkeys(candidates))


@dataclass(frozen=True)
class WeightsLookup:
    """Where ImageNet weights for a backbone configuration were found, or where they were looked for."""

    alpha: float
    image_size: int
    file_name: str
    path: Path | None
    source: str | None  # how it was found: the environment variable or the Keras cache
    searched: tuple[Path, ...]

    @property
    def found(self) -> bool:
        return self.path is not None

    @property
    def configuration(self) -> str:
        return _configuration(self.alpha, self.image_size)

    @property
    def message(self) -> str:
        """What the notebook tells the reader, in plain words."""
        if self.found:
            return (
                f"ImageNet weights for {self.configuration} found ({self.source}): `{self.path}`. "
                "The backbone starts from them: this is transfer learning."
            )
        places = ", ".join(f"`{folder}`" for folder in self.searched)
        return (
            f"**No ImageNet weights were found for {self.configuration}**: `{WEIGHTS_ENV}` is not set and "
            f"`{self.file_name}` is in none of the Keras cache folders ({places}). This machine cannot "
            "download them, so the backbone is trained **from random initialisation** instead. Its results "
            f"are labelled *{RANDOM_INIT_LABEL}* in every table: they say nothing about transfer learning. "
            f"To use the weights, put `{self.file_name}` in the Keras cache or set `{WEIGHTS_ENV}` to its path."
        )

    def fingerprint(self) -> dict | None:
        """What identifies the weights in a registry key (None without weights)."""
        if not self.found:
            return None
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        return {"file_name": self.path.name, "sha256": digest}


def find_imagenet_weights(alpha: float, image_size: int, *, path: str | os.PathLike | None = None) -> WeightsLookup:
    """Look for MobileNetV2's no-top ImageNet weights on disk; never downloads.

    ``path`` (else the ``STUDY_IMAGENET_WEIGHTS`` environment variable), when given,
    must be an existing file: a wrong path is an error naming it rather than a silent
    fall-back to random initialisation. Otherwise the Keras cache folders
    (:func:`keras_cache_dirs`) are searched for :func:`imagenet_weights_file_name`.
    """
    file_name = imagenet_weights_file_name(alpha, image_size)
    explicit, source = (path, "path argument") if path is not None else (os.environ.get(WEIGHTS_ENV), WEIGHTS_ENV)
    if explicit:
        candidate = Path(explicit).expanduser()
        if not candidate.is_file():
            raise FileNotFoundError(
                f"{source} points to {str(explicit)!r}, which is not a file; give the path of the "
                f"MobileNetV2 no-top ImageNet weights ({file_name}) or unset it"
            )
        return WeightsLookup(alpha, image_size, file_name, candidate.resolve(), source, (candidate,))
    folders = keras_cache_dirs()
    for folder in folders:
        if (folder / file_name).is_file():
            return WeightsLookup(alpha, image_size, file_name, folder / file_name, "Keras cache", tuple(folders))
    return WeightsLookup(alpha, image_size, file_name, None, None, tuple(folders))


def load_backbone_weights(backbone: keras.Model, path: Path) -> None:
    """Load a weights file into ``backbone``; a file that does not fit is an error naming it."""
    try:
        backbone.load_weights(str(path))
    except (OSError, ValueError) as error:
        raise ValueError(
            f"cannot load the ImageNet weights {path} into {backbone.name} ({error}); it must be the "
            f"MobileNetV2 no-top weights file of the configured alpha and input size. Remove it from the "
            f"Keras cache or point {WEIGHTS_ENV} at the right file."
        ) from error


# ----------------------------------------------------------------------------- runs


@contextmanager
def _functions_run_eagerly(enabled: bool):
    """TensorFlow functions run op by op inside the block (when ``enabled``), as before after it."""
    if not enabled:
        yield
        return
    previous = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(previous)


def _epochs(count: int) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def _concatenated_history(first: dict, second: dict) -> dict:
    """Two stages' per-epoch curves one after the other (the curves both stages logged)."""
    return {name: list(first[name]) + list(second[name]) for name in second if name in first}


def _train_classifier(
    study,
    splits,
    *,
    model_name: str,
    family: str,
    description: str,
    initialisation: str,
    hyperparams: dict,
    build,
    config,
    previous: RunRecord | None = None,
    eager: bool = False,
    force: bool = False,
    verbose: int | None = None,
) -> RunRecord:
    """Train (or reuse) one classifier like training.run_experiment does, from the model ``build()`` returns.

    ``previous``: the stage this one continues (its epochs, time and curves are added).
    ``eager``: run the training steps without tracing them (``TransferSettings.eager_training``).
    """
    seed = study.context.seed

    def run(workdir: Path) -> dict:
        started = time.perf_counter()
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        model = build()
        # Early stopping watches the non-black validation images, as for every run trained without black images.
        monitored = drop_black_images(splits.val, keep=0)
        with _functions_run_eagerly(eager):
            outcome = fit(model, splits.train, monitored, config, workdir, seed=seed, verbose=verbose)
        val_score, holdout_score, test_score = _predict_splits(
            model, [splits.val, splits.holdout, splits.test], 1, config.batch_size
        )
        wall_time_s = time.perf_counter() - started
        scores = score_and_save(
            workdir, splits, val_score=val_score, holdout_score=holdout_score, test_score=test_score
        )
        history, epochs_run = outcome["history"], outcome["epochs_run"]
        stages = {}
        if previous is not None:
            stages = {"stage_epochs": [previous.data["epochs_run"], epochs_run], "starts_from": previous.key}
            history = _concatenated_history(previous.data["history"], history)
            epochs_run += previous.data["epochs_run"]
            wall_time_s += previous.data["wall_time_s"]
        return {
            "description": description,
            "initialisation": initialisation,
            "profile": study.context.profile.name,
            "label_names": list(splits.label_names),
            "black_images": "removed",
            "n_train_images": len(splits.train),
            "n_monitored_val_images": len(monitored),
            "params": outcome["params"],
            "trainable_params": int(sum(np.prod(weight.shape) for weight in model.trainable_weights)),
            "epochs_run": epochs_run,
            "wall_time_s": wall_time_s,
            "history": history,
            **stages,
            **scores,
        }

    return study.registry.fetch_or_run(
        model=model_name,
        family=family,
        hyperparams={**hyperparams, "architecture": architecture_fingerprint(build)},
        data_fingerprint=study.data.fingerprint,
        seed=seed,
        run_fn=run,
        force=force,
    )


def train_encoder_transfer(
    study, autoencoder_record: RunRecord, *, settings: TransferSettings | None = None, force: bool = False,
    verbose: int | None = None,
) -> dict[str, RunRecord]:
    """The autoencoder's encoder as a classifier backbone: ``{"frozen", "fine_tuned", "from_scratch"}`` records.

    ``study`` is a ``contest_study.study.Study``; ``autoencoder_record`` comes from
    :func:`contest_study.autoencoder.train_autoencoder` on the same study.
    """
    if autoencoder_record.family != AUTOENCODER_FAMILY:
        raise ValueError(f"run {autoencoder_record.key} is a {autoencoder_record.family!r} run, not an autoencoder")
    if autoencoder_record.data["data_fingerprint"] != study.data.fingerprint:
        raise ValueError(f"autoencoder run {autoencoder_record.key} was trained on other data than this study's")
    settings = settings or settings_for(study.context.profile)
    profile = study.context.profile
    splits = prepare_splits(study.data, black_images="removed", profile=profile, seed=study.context.seed,
                            oracle=study.oracle)
    n_labels = len(splits.label_names)
    head = {"hidden_units": settings.hidden_units, "dropout": settings.dropout}
    architecture = {
        "input_shape": autoencoder_record.data["input_shape"],
        "filters": autoencoder_record.hyperparams["filters"],
        "bottleneck_channels": autoencoder_record.hyperparams["bottleneck_channels"],
    }
    common = {**split_hyperparams("removed", profile), "head": head}
    head_config = study.config(epochs=settings.frozen_epochs, learning_rate=settings.head_learning_rate)
    fine_tune_config = study.config(epochs=settings.fine_tune_epochs, learning_rate=settings.fine_tune_learning_rate)
    scratch_config = study.config(
        epochs=settings.frozen_epochs + settings.fine_tune_epochs, learning_rate=settings.head_learning_rate
    )
    runs = {}

    def pretrained_frozen():
        encoder = load_autoencoder(autoencoder_record).get_layer("encoder")
        model = build_encoder_classifier(encoder, n_labels, **head)
        return set_backbone_trainable(model, False)

    runs["frozen"] = _train_classifier(
        study, splits,
        model_name="ae_encoder_frozen",
        family=TRANSFER_FAMILY,
        description=(
            f"denoising-autoencoder encoder, frozen, under a dense head trained {_epochs(settings.frozen_epochs)}"
        ),
        initialisation=f"autoencoder encoder (run {autoencoder_record.key})",
        hyperparams={**common, **head_config.as_hyperparams(), "stage": "frozen",
                     "autoencoder_run": autoencoder_record.key},
        build=pretrained_frozen, config=head_config, eager=settings.eager_training, force=force, verbose=verbose,
    )

    def fresh_classifier():
        """The encoder's architecture under the head, with new (random) weights."""
        encoder = build_encoder(tuple(architecture["input_shape"]), filters=tuple(architecture["filters"]),
                                bottleneck_channels=architecture["bottleneck_channels"])
        return build_encoder_classifier(encoder, n_labels, **head)

    def from_frozen_stage():
        model = fresh_classifier()
        model.load_weights(str(runs["frozen"].weights_path))
        return set_backbone_trainable(model, True)

    runs["fine_tuned"] = _train_classifier(
        study, splits,
        model_name="ae_encoder_finetuned",
        family=TRANSFER_FAMILY,
        description=(
            f"denoising-autoencoder encoder + dense head: {_epochs(settings.frozen_epochs)} frozen, then "
            f"{_epochs(settings.fine_tune_epochs)} fine-tuned at learning rate {settings.fine_tune_learning_rate:g}"
        ),
        initialisation=f"autoencoder encoder (run {autoencoder_record.key})",
        hyperparams={**common, **fine_tune_config.as_hyperparams(), "stage": "fine_tuned",
                     "starts_from": runs["frozen"].key},
        build=from_frozen_stage, config=fine_tune_config, previous=runs["frozen"], eager=settings.eager_training,
        force=force, verbose=verbose,
    )

    runs["from_scratch"] = _train_classifier(
        study, splits,
        model_name="ae_encoder_scratch",
        family=SCRATCH_FAMILY,
        description=(
            f"the autoencoder-encoder classifier's architecture from random initialisation, trained "
            f"{_epochs(scratch_config.epochs)} (as many as frozen + fine-tuned)"
        ),
        initialisation="random",
        hyperparams={**common, **scratch_config.as_hyperparams(), "stage": "from_scratch",
                     "encoder_architecture": architecture},
        build=fresh_classifier, config=scratch_config, eager=settings.eager_training, force=force, verbose=verbose,
    )
    return runs


def train_backbone_transfer(
    study, lookup: WeightsLookup, *, settings: TransferSettings | None = None, force: bool = False,
    verbose: int | None = None,
) -> dict[str, RunRecord]:
    """MobileNetV2 under the study's head, from ImageNet weights when ``lookup`` found them.

    Returns ``{"frozen", "fine_tuned"}`` records with the weights, ``{"random_init"}``
    without them (see the module docstring). ``lookup`` comes from
    :func:`find_imagenet_weights` for the settings' alpha and input size.
    """
    settings = settings or settings_for(study.context.profile)
    if (lookup.alpha, lookup.image_size) != (settings.backbone_alpha, settings.backbone_image_size):
        raise ValueError(
            f"the weights lookup is for alpha {lookup.alpha:g} and side {lookup.image_size}, the settings ask for "
            f"alpha {settings.backbone_alpha:g} and side {settings.backbone_image_size}"
        )
    profile = study.context.profile
    caps = [cap for cap in (profile.max_train_images, settings.backbone_max_train_images) if cap is not None]
    # The backbone's own cap on training images (it is the slowest network of the study), in the key like any cap.
    backbone_profile = replace(profile, max_train_images=min(caps) if caps else None)
    splits = prepare_splits(study.data, black_images="removed", profile=backbone_profile, seed=study.context.seed,
                            oracle=study.oracle)
    input_shape = splits.train.images.shape[1:]
    n_labels = len(splits.label_names)
    # The side the images are resized to (the weights' configuration's, but in the smoke profile).
    network = {"alpha": settings.backbone_alpha, "image_size": settings.input_size,
               "dropout": settings.dropout}
    common = {**split_hyperparams("removed", backbone_profile), "backbone": "MobileNetV2", **network}
    configuration = _configuration(settings.backbone_alpha, settings.input_size)

    def build(weights_path, trainable):
        def make():
            model = build_backbone_classifier(input_shape, n_labels, weights_path=weights_path, **network)
            return set_backbone_trainable(model, trainable, backbone="backbone")

        return make

    if not lookup.found:
        epochs = settings.backbone_frozen_epochs + settings.backbone_fine_tune_epochs
        config = study.config(epochs=epochs, learning_rate=settings.head_learning_rate)
        record = _train_classifier(
            study, splits,
            model_name="mobilenetv2_random_init",
            family=SCRATCH_FAMILY,
            description=f"{configuration}, {RANDOM_INIT_LABEL}, trained from scratch {_epochs(epochs)}",
            initialisation=RANDOM_INIT_LABEL,
            hyperparams={**common, **config.as_hyperparams(), "stage": "from_scratch", "imagenet_weights": None},
            build=build(None, True), config=config, eager=settings.eager_training, force=force,
            verbose=verbose,
        )
        return {"random_init": record}

    weights = lookup.fingerprint()
    initialisation = f"ImageNet ({lookup.path.name})"
    head_config = study.config(epochs=settings.backbone_frozen_epochs, learning_rate=settings.head_learning_rate)
    fine_tune_config = study.config(
        epochs=settings.backbone_fine_tune_epochs, learning_rate=settings.fine_tune_learning_rate
    )
    runs = {}
    runs["frozen"] = _train_classifier(
        study, splits,
        model_name="mobilenetv2_imagenet_frozen",
        family=TRANSFER_FAMILY,
        description=f"{configuration}, ImageNet weights, frozen; head trained {_epochs(head_config.epochs)}",
        initialisation=initialisation,
        hyperparams={**common, **head_config.as_hyperparams(), "stage": "frozen", "imagenet_weights": weights},
        build=build(lookup.path, False), config=head_config, eager=settings.eager_training, force=force,
        verbose=verbose,
    )

    def from_frozen_stage():
        model = build(lookup.path, True)()
        model.load_weights(str(runs["frozen"].weights_path))
        return model

    runs["fine_tuned"] = _train_classifier(
        study, splits,
        model_name="mobilenetv2_imagenet_finetuned",
        family=TRANSFER_FAMILY,
        description=(
            f"{configuration}, ImageNet weights: {_epochs(head_config.epochs)} frozen, then "
            f"{_epochs(fine_tune_config.epochs)} fine-tuned at learning rate {settings.fine_tune_learning_rate:g}"
        ),
        initialisation=initialisation,
        hyperparams={**common, **fine_tune_config.as_hyperparams(), "stage": "fine_tuned",
                     "starts_from": runs["frozen"].key},
        build=from_frozen_stage, config=fine_tune_config, previous=runs["frozen"],
        eager=settings.eager_training, force=force, verbose=verbose,
    )
    return runs


def settings_table(settings: TransferSettings) -> pd.DataFrame:
    """The settings as a one-column table, for the notebook to state every reduction."""
    return pd.Series({**asdict(settings), "backbone_input_size": settings.input_size}, name="value").to_frame()

"""The convolutional denoising autoencoder of notebook 06, whose encoder notebook 07 reuses.

- **Noise** (:func:`add_noise`): Gaussian, mean 0.1 and variance 0.3 (standard
  deviation sqrt(0.3)), added to the [0, 1] images and clipped back to [0, 1]. Each
  image gets one seeded draw, so a re-run sees the same (noisy, clean) pairs.
- **Images**: no labels are needed, so the autoencoder learns from the training and
  the test images, black images left out (they have nothing to reconstruct). A
  seeded 10 % of them watch early stopping; the validation images are neither
  trained on nor used for early stopping, only scored, so the reconstruction scores
  compare fairly with the two references: the noisy input itself and a Gaussian
  filter whose width is chosen on training images (:func:`choose_gaussian_sigma`).
  The hold-out split is never touched.
- **Architecture** (:func:`build_autoencoder`): an encoder of stride-2 3x3
  convolutions then a linear 3x3 convolution to a few channels (the bottleneck),
  and a decoder of stride-2 transposed convolutions back to one sigmoid channel.
  With the default settings the bottleneck holds 8 x 8 x 4 = 256 numbers for the
  64 x 64 = 4,096 input pixels: :func:`compression_rate` computes 16 from the
  layer shapes. Encoder and decoder are nested models named ``"encoder"`` and
  ``"decoder"``, so :mod:`contest_study.transfer` can lift the trained encoder out.
- **Registry**: :func:`train_autoencoder` stores the run in a registry of its own,
  ``<runs>/.autoencoder/`` (same :class:`~contest_study.registry.Registry` class:
  atomic entries, locks, resumable working folder). The classifier registry is kept
  for runs scored by average precision: every entry there has the per-label AP that
  its tables and ``best_per_family`` read, which an autoencoder does not have. The
  record holds MSE and PSNR instead, the compression rate, the training curves, and
  beside it ``best.weights.h5`` and ``denoising_examples.npz`` (clean, noisy and
  denoised validation images for the before/after figure). The same call with the
  same study returns the stored record, which is how notebook 07 finds the encoder.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import layers
from scipy import ndimage

from contest_study.config import Profile
from contest_study.data import black_mask, drop_black_images, subsample
from contest_study.registry import Registry, RunRecord
from contest_study.training import (
    BACKUP_DIR,
    DEFAULT_VERBOSE,
    HISTORY_FILE,
    WEIGHTS_FILE,
    TrainConfig,
    _read_history,
    build_optimizer,
    make_callbacks,
)

NOISE_MEAN = 0.1
NOISE_VARIANCE = 0.3
NOISE_STD = math.sqrt(NOISE_VARIANCE)

MODEL_NAME = "conv_denoising_autoencoder"
FAMILY = "autoencoder"
REGISTRY_DIR = ".autoencoder"
EXAMPLES_FILE = "denoising_examples.npz"
N_EXAMPLES = 16
# Share of the unlabelled images that watch early stopping instead of being trained on.
MONITOR_FRACTION = 0.1
# Widths tried for the Gaussian-filter reference, in pixels; the best on training images is kept.
GAUSSIAN_SIGMAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
SIGMA_CHOICE_IMAGES = 512
# Independent noise draws for the three image sets, from one study seed.
NOISE_STREAMS = {"train": 0, "monitor": 1, "val": 2}
# PSNR of a perfect reconstruction is infinite; an error floor keeps averages finite.
MSE_FLOOR = 1e-10


@dataclass(frozen=True)
class AutoencoderSettings:
    """How much the autoencoder trains, and its shape; every field is part of its registry key.

    ``max_images`` caps the unlabelled training pool (train + test images, black
    ones left out; None: all of them). ``filters`` are the encoder's stride-2
    convolutions, ``decoder_filters`` the decoder's stride-2 transposed ones (as
    many), ``bottleneck_channels`` the channels of the code.
    """

    max_images: int | None
    epochs: int
    batch_size: int
    patience: int
    learning_rate: float = 1e-3
    filters: tuple[int, ...] = (16, 32, 32)
    decoder_filters: tuple[int, ...] = (32, 16, 8)
    bottleneck_channels: int = 4

    def __post_init__(self):
        for name in ("epochs", "batch_size", "bottleneck_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AutoencoderSettings.{name} must be an integer >= 1, got {value!r}")
        if self.max_images is not None and self.max_images < 2:
            raise ValueError(f"AutoencoderSettings.max_images must be None or >= 2, got {self.max_images!r}")
        if not self.filters or len(self.decoder_filters) != len(self.filters):
            raise ValueError(
                f"AutoencoderSettings needs as many decoder_filters as filters (one per resolution), "
                f"got {self.filters!r} and {self.decoder_filters!r}"
            )
        object.__setattr__(self, "filters", tuple(self.filters))
        object.__setattr__(self, "decoder_filters", tuple(self.decoder_filters))
        object.__setattr__(self, "learning_rate", float(self.learning_rate))

    def as_hyperparams(self) -> dict:
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}

    def architecture(self) -> dict:
        """The builder's keyword arguments (what :func:`build_autoencoder` needs)."""
        return {
            "filters": self.filters,
            "decoder_filters": self.decoder_filters,
            "bottleneck_channels": self.bottleneck_channels,
        }


# Sized for each profile: ``default`` keeps notebooks 06 and 07 together within a few
# minutes on a 2-core CPU (a seeded 6,000 of the ~10,000 unlabelled images, 6 epochs);
# ``full`` trains on every image until early stopping.
SETTINGS: dict[str, AutoencoderSettings] = {
    "smoke": AutoencoderSettings(max_images=256, epochs=1, batch_size=32, patience=1),
    "default": AutoencoderSettings(max_images=6000, epochs=6, batch_size=64, patience=2),
    "full": AutoencoderSettings(max_images=None, epochs=50, batch_size=64, patience=5),
}


def settings_for(profile: Profile | str) -> AutoencoderSettings:
    """The autoencoder settings of a profile (by object or name)."""
    name = profile if isinstance(profile, str) else profile.name
    try:
        return SETTINGS[name]
    except KeyError:
        raise ValueError(f"no autoencoder settings for profile {name!r}; known: {', '.join(SETTINGS)}") from None


# ----------------------------------------------------------------------------- noise


def sample_noise(shape, seed) -> np.ndarray:
    """Gaussian noise of mean 0.1 and variance 0.3 (float32), before it meets an image.

    ``seed`` is anything ``numpy.random.default_rng`` accepts (an int, or a
    sequence such as ``(study_seed, stream)`` for independent draws).
    """
    generator = np.random.default_rng(seed)
    return NOISE_MEAN + NOISE_STD * generator.standard_normal(shape, dtype=np.float32)


def add_noise(images, seed) -> np.ndarray:
    """``images`` (float in [0, 1]) plus :func:`sample_noise`, clipped back to [0, 1] (float32)."""
    images = np.asarray(images, dtype=np.float32)
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
        raise ValueError(
            f"add_noise expects images in [0, 1], got values in [{images.min():g}, {images.max():g}]"
        )
    noisy = images + sample_noise(images.shape, seed)
    return np.clip(noisy, 0.0, 1.0, out=noisy)


# ----------------------------------------------------------------------------- model


def build_encoder(input_shape=(64, 64, 1), *, filters=(16, 32, 32), bottleneck_channels=4) -> keras.Model:
    """Stride-2 3x3 convolutions (ReLU), then a linear 3x3 convolution to the code."""
    side = input_shape[0]
    if input_shape[0] != input_shape[1] or side % 2 ** len(filters):
        raise ValueError(
            f"input_shape {tuple(input_shape)} must be square with a side divisible by 2**{len(filters)} "
            "(one halving per encoder convolution)"
        )
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for width in filters:
        x = layers.Conv2D(width, 3, strides=2, padding="same", activation="relu")(x)
    # The bottleneck: (64 / 2**3) ** 2 * 4 = 256 numbers for 64 * 64 * 1 = 4,096 input values with the
    # default settings, a compression rate of 16 (compression_rate() computes it from the layer shapes).
    code = layers.Conv2D(bottleneck_channels, 3, padding="same", name="bottleneck")(x)
    return keras.Model(inputs, code, name="encoder")


def build_decoder(code_shape, *, decoder_filters=(32, 16, 8), output_channels=1) -> keras.Model:
    """Stride-2 3x3 transposed convolutions (ReLU) back to full size, then a sigmoid 3x3 convolution."""
    inputs = keras.Input(shape=tuple(code_shape), name="code")
    x = inputs
    for width in decoder_filters:
        x = layers.Conv2DTranspose(width, 3, strides=2, padding="same", activation="relu")(x)
    # Sigmoid: the clean images live in [0, 1].
    outputs = layers.Conv2D(output_channels, 3, padding="same", activation="sigmoid", name="reconstruction")(x)
    return keras.Model(inputs, outputs, name="decoder")


def build_autoencoder(
    input_shape=(64, 64, 1), *, filters=(16, 32, 32), decoder_filters=(32, 16, 8), bottleneck_channels=4
) -> keras.Model:
    """The uncompiled denoising autoencoder: noisy image -> ``encoder`` -> ``decoder`` -> clean image."""
    if len(decoder_filters) != len(filters):
        raise ValueError(f"need as many decoder_filters as filters, got {decoder_filters!r} and {filters!r}")
    encoder = build_encoder(input_shape, filters=filters, bottleneck_channels=bottleneck_channels)
    decoder = build_decoder(encoder.output.shape[1:], decoder_filters=decoder_filters, output_channels=input_shape[-1])
    inputs = keras.Input(shape=tuple(input_shape), name="noisy_image")
    return keras.Model(inputs, decoder(encoder(inputs)), name="denoising_autoencoder")


def architecture_fingerprint(build) -> str:
    """A short hash of the Keras config of the model ``build()`` returns, for registry keys.

    With it in a run's key, a change to the code of an architecture never reuses runs
    of the old one (as ``training.architecture_fingerprint`` does for the study's
    networks). The session is cleared first: auto-generated layer names are in the config.
    """
    keras.backend.clear_session(free_memory=False)  # no garbage collection: it only costs time
    fingerprint = hashlib.sha256(build().to_json().encode()).hexdigest()[:12]
    keras.backend.clear_session(free_memory=False)
    return fingerprint


def bottleneck_shape(autoencoder: keras.Model) -> tuple[int, ...]:
    """Shape of one image's code (the encoder's output, without the batch axis)."""
    return tuple(int(size) for size in autoencoder.get_layer("encoder").output.shape[1:])


def compression_rate(autoencoder: keras.Model) -> float:
    """Input values per bottleneck value, from the model's layer shapes (4,096 / 256 = 16 by default)."""
    input_size = math.prod(int(size) for size in autoencoder.input.shape[1:])
    return input_size / math.prod(bottleneck_shape(autoencoder))


def load_autoencoder(record: RunRecord) -> keras.Model:
    """The trained autoencoder of a :func:`train_autoencoder` record (rebuilt, best weights loaded)."""
    if record.family != FAMILY:
        raise ValueError(f"run {record.key} is a {record.family!r} run, not an autoencoder")
    if record.weights_path is None:
        raise FileNotFoundError(f"autoencoder run {record.key} has no weights file in {record.path}")
    hyperparams = record.hyperparams
    model = build_autoencoder(
        tuple(record.data["input_shape"]),
        filters=tuple(hyperparams["filters"]),
        decoder_filters=tuple(hyperparams["decoder_filters"]),
        bottleneck_channels=hyperparams["bottleneck_channels"],
    )
    model.load_weights(str(record.weights_path))
    return model


# ----------------------------------------------------------------------------- references and scores


def gaussian_filter_images(images, sigma: float) -> np.ndarray:
    """Each image blurred by a Gaussian of ``sigma`` pixels (the channels and images kept apart)."""
    images = np.asarray(images, dtype=np.float32)
    return ndimage.gaussian_filter(images, sigma=(0, sigma, sigma, 0), mode="reflect")


def choose_gaussian_sigma(clean, noisy, sigmas=GAUSSIAN_SIGMAS) -> float:
    """The filter width of ``sigmas`` whose output is closest (MSE) to ``clean``."""
    errors = [float(np.mean((gaussian_filter_images(noisy, sigma) - clean) ** 2)) for sigma in sigmas]
    return float(sigmas[int(np.argmin(errors))])


def psnr(clean, restored) -> np.ndarray:
    """Peak signal-to-noise ratio of every image, in dB, for values in [0, 1]."""
    clean, restored = np.asarray(clean, dtype=np.float64), np.asarray(restored, dtype=np.float64)
    if clean.shape != restored.shape:
        raise ValueError(f"clean images {clean.shape} and restored images {restored.shape} differ in shape")
    mse = ((clean - restored) ** 2).reshape(len(clean), -1).mean(axis=1)
    return 10.0 * np.log10(1.0 / np.maximum(mse, MSE_FLOOR))


def reconstruction_scores(clean, restored) -> dict:
    """``{"mse": pixel MSE over all images, "psnr": mean of the per-image PSNR in dB}``."""
    clean, restored = np.asarray(clean, dtype=np.float64), np.asarray(restored, dtype=np.float64)
    return {"mse": float(np.mean((clean - restored) ** 2)), "psnr": float(np.mean(psnr(clean, restored)))}


# ----------------------------------------------------------------------------- images


@dataclass(frozen=True)
class DenoisingImages:
    """The clean images the autoencoder trains on, watches and is scored on (no labels)."""

    train: np.ndarray
    monitor: np.ndarray
    val: np.ndarray


def denoising_images(data, settings: AutoencoderSettings, profile: Profile | None, seed: int) -> DenoisingImages:
    """Training and test images without the black ones (capped, seeded), split into train and
    monitor parts; the non-black validation images (capped by the profile) for the scores."""
    pools = [data.train.images] + ([data.test.images] if data.test is not None and len(data.test) else [])
    # Positions of the non-black images in train + test, chosen before any image is copied.
    chosen = np.flatnonzero(np.concatenate([~black_mask(images) for images in pools]))
    generator = np.random.default_rng(seed)
    if settings.max_images is not None and len(chosen) > settings.max_images:
        chosen = chosen[np.sort(generator.choice(len(chosen), settings.max_images, replace=False))]
    if len(chosen) < 2:
        raise ValueError(
            f"the training and test images hold {len(chosen)} non-black image(s); the autoencoder needs at least 2"
        )
    starts = np.cumsum([0] + [len(images) for images in pools])
    pool = np.concatenate([
        images[chosen[(chosen >= start) & (chosen < start + len(images))] - start]
        for images, start in zip(pools, starts)
    ])
    order = generator.permutation(len(pool))
    n_monitor = max(1, round(MONITOR_FRACTION * len(pool)))
    val = drop_black_images(data.val, keep=0)
    if profile is not None:
        val = subsample(val, profile.max_eval_images, seed)
    if len(val) == 0:
        raise ValueError("the validation split has no non-black image to score the autoencoder on")
    return DenoisingImages(
        train=pool[np.sort(order[n_monitor:])], monitor=pool[np.sort(order[:n_monitor])], val=val.images
    )


def _pairs(noisy: np.ndarray, clean: np.ndarray, batch_size: int, seed: int | None) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((noisy, clean)).cache()
    if seed is not None:
        dataset = dataset.shuffle(len(clean), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _save_examples(directory: Path, **arrays) -> None:
    """Write the before/after example images beside the record (atomically, like predictions.npz)."""
    path = Path(directory) / EXAMPLES_FILE
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def denoising_examples(record: RunRecord) -> dict[str, np.ndarray]:
    """The stored validation examples of an autoencoder run: ``clean``, ``noisy`` and ``denoised`` images."""
    path = record.path / EXAMPLES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"autoencoder run {record.key} has no examples file {path}")
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


# ----------------------------------------------------------------------------- training


def autoencoder_registry(classifier_registry: Registry) -> Registry:
    """The registry of unsupervised runs, nested (hidden) in the classifier registry's folder."""
    return Registry(
        classifier_registry.root / REGISTRY_DIR,
        lock_timeout_s=classifier_registry.lock_timeout_s,
        lock_poll_s=classifier_registry.lock_poll_s,
    )


def train_autoencoder(
    study, *, settings: AutoencoderSettings | None = None, force: bool = False, verbose: int | None = None
) -> RunRecord:
    """Train (or reuse) the denoising autoencoder of ``study`` (a ``contest_study.study.Study``).

    ``settings`` default to the study profile's (:data:`SETTINGS`). The record's
    ``reconstruction`` holds the validation MSE and PSNR of the noisy input, the
    Gaussian filter and the autoencoder; see the module docstring for the rest.
    """
    profile = study.context.profile
    seed = study.context.seed
    settings = settings or settings_for(profile)
    input_shape = (*study.data.train.images.shape[1:3], 1)
    if study.data.channels != 1:
        raise ValueError(f"the autoencoder reads grayscale images; the data has {study.data.channels} channels")
    hyperparams = {
        **settings.as_hyperparams(),
        "architecture": architecture_fingerprint(lambda: build_autoencoder(input_shape, **settings.architecture())),
        "noise_mean": NOISE_MEAN,
        "noise_variance": NOISE_VARIANCE,
        "max_eval_images": profile.max_eval_images,
    }
    config = TrainConfig(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        patience=settings.patience,
    )

    def run(workdir: Path) -> dict:
        images = denoising_images(study.data, settings, profile, seed)
        noisy = {name: add_noise(getattr(images, name), (seed, stream)) for name, stream in NOISE_STREAMS.items()}
        started = time.perf_counter()
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        model = build_autoencoder(input_shape, **settings.architecture())
        model.compile(optimizer=build_optimizer(config), loss="mse")
        if not (workdir / BACKUP_DIR).exists():
            # As in training.fit: without an interrupted attempt to resume, an old log is stale.
            (workdir / HISTORY_FILE).unlink(missing_ok=True)
        model.fit(
            _pairs(noisy["train"], images.train, settings.batch_size, seed),
            validation_data=_pairs(noisy["monitor"], images.monitor, settings.batch_size, None),
            epochs=settings.epochs,
            shuffle=False,  # _pairs already shuffles, seeded
            callbacks=make_callbacks(config, workdir),
            verbose=DEFAULT_VERBOSE if verbose is None else verbose,
        )
        model.save_weights(str(workdir / WEIGHTS_FILE))
        denoised = model.predict(noisy["val"], batch_size=settings.batch_size, verbose=0)
        wall_time_s = time.perf_counter() - started

        sample = slice(0, SIGMA_CHOICE_IMAGES)
        sigma = choose_gaussian_sigma(images.train[sample], noisy["train"][sample])
        filtered = gaussian_filter_images(noisy["val"], sigma)
        shown = slice(0, N_EXAMPLES)
        _save_examples(
            workdir,
            clean=images.val[shown],
            noisy=noisy["val"][shown],
            denoised=denoised[shown],
        )
        history = _read_history(workdir / HISTORY_FILE)
        code_shape = bottleneck_shape(model)
        return {
            "description": (
                f"convolutional denoising autoencoder, encoder {'-'.join(map(str, settings.filters))} "
                f"stride-2 convs, bottleneck {'x'.join(map(str, code_shape))} "
                f"(compression {compression_rate(model):g}x)"
            ),
            "profile": profile.name,
            "input_shape": list(input_shape),
            "bottleneck_shape": list(code_shape),
            "compression_rate": compression_rate(model),
            "n_train_images": len(images.train),
            "n_monitor_images": len(images.monitor),
            "n_val_images": len(images.val),
            "gaussian_sigma": sigma,
            "reconstruction": {
                "val": {
                    "noisy input": reconstruction_scores(images.val, noisy["val"]),
                    "Gaussian filter": reconstruction_scores(images.val, filtered),
                    "autoencoder": reconstruction_scores(images.val, denoised),
                }
            },
            "params": model.count_params(),
            "epochs_run": len(next(iter(history.values()), [])),
            "wall_time_s": wall_time_s,
            "history": history,
        }

    return autoencoder_registry(study.registry).fetch_or_run(
        model=MODEL_NAME,
        family=FAMILY,
        hyperparams=hyperparams,
        data_fingerprint=study.data.fingerprint,
        seed=seed,
        run_fn=run,
        force=force,
    )


def reconstruction_table(record: RunRecord) -> pd.DataFrame:
    """Validation MSE and PSNR of the noisy input, the Gaussian filter and the autoencoder, one row each."""
    scores = record.data["reconstruction"]["val"]
    table = pd.DataFrame(scores).T.rename(columns={"mse": "MSE", "psnr": "PSNR (dB)"})
    table = table.rename(index={"Gaussian filter": f"Gaussian filter (sigma {record.data['gaussian_sigma']:g} px)"})
    table.index.name = f"{record.data['n_val_images']} validation images"
    return table

"""Plumbing of the denoising autoencoder of notebook 06 (the network itself is in the notebook).

The noise, the images it learns from (every non-black image of every split: it reads no label),
the PSNR and the Gaussian-filter reference, and its registry run. The run lives in a registry of
its own, ``<runs>/.autoencoder/`` (it has no average precision, which every classifier table
reads); beside its record are ``model.json`` and the best weights, from which notebook 07 loads
the trained encoder (:func:`load_encoder`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
from scipy import ndimage

from contest_study.data import black_mask
from contest_study.files import atomic_output, write_text_atomic
from contest_study.registry import Registry, RunRecord
from contest_study.training import architecture_fingerprint, recipe_fingerprint

NOISE_MEAN = 0.1
NOISE_VARIANCE = 0.3
NOISE_STD = math.sqrt(NOISE_VARIANCE)

FAMILY = "autoencoder"
REGISTRY_DIR = ".autoencoder"
MODEL_FILE = "model.json"
WEIGHTS_FILE = "best.weights.h5"
EXAMPLES_FILE = "denoising_examples.npz"
ENCODER_LAYER = "encoder"
N_EXAMPLES = 16
# Share of the images that watch early stopping (and score the reconstruction) instead of being trained on.
MONITOR_FRACTION = 0.1
# Widths tried for the Gaussian-filter reference, in pixels; the best on training images is kept.
GAUSSIAN_SIGMAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
SIGMA_CHOICE_IMAGES = 512
# Independent noise draws for the two image sets, from one study seed.
NOISE_STREAMS = {"train": 0, "monitor": 1}
# PSNR of a perfect reconstruction is infinite; an error floor keeps averages finite.
MSE_FLOOR = 1e-10


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
    """The clean images the autoencoder trains on and watches, and where they came from (no labels)."""

    train: np.ndarray
    monitor: np.ndarray
    # Non-black images taken from each split, and black images left out.
    sources: dict
    n_black_dropped: int


def denoising_images(data, max_images: int | None, seed: int) -> DenoisingImages:
    """Every non-black image of train, val, hold-out and test (capped, seeded), split into a
    training part and a seeded tenth that watches early stopping."""
    pools = {name: split.images for name in ("train", "val", "holdout", "test")
             if (split := getattr(data, name)) is not None and len(split)}
    keep = {name: ~black_mask(images) for name, images in pools.items()}
    # Positions of the non-black images in all splits one after the other, chosen before any image is copied.
    chosen = np.flatnonzero(np.concatenate(list(keep.values())))
    generator = np.random.default_rng(seed)
    if max_images is not None and len(chosen) > max_images:
        chosen = chosen[np.sort(generator.choice(len(chosen), max_images, replace=False))]
    if len(chosen) < 2:
        raise ValueError(f"the contest folder holds {len(chosen)} non-black image(s); the autoencoder needs at least 2")
    starts = dict(zip(pools, np.cumsum([0] + [len(images) for images in pools.values()])))
    parts = {name: chosen[(chosen >= starts[name]) & (chosen < starts[name] + len(images))] - starts[name]
             for name, images in pools.items()}
    pool = np.concatenate([pools[name][rows] for name, rows in parts.items()])
    order = generator.permutation(len(pool))
    n_monitor = max(1, round(MONITOR_FRACTION * len(pool)))
    return DenoisingImages(
        train=pool[np.sort(order[n_monitor:])],
        monitor=pool[np.sort(order[:n_monitor])],
        sources={name: len(rows) for name, rows in parts.items()},
        n_black_dropped=int(sum((~mask).sum() for mask in keep.values())),
    )


# ----------------------------------------------------------------------------- registry run


def autoencoder_registry(classifier_registry: Registry) -> Registry:
    """The registry of unsupervised runs, nested (hidden) in the classifier registry's folder."""
    return Registry(
        classifier_registry.root / REGISTRY_DIR,
        lock_timeout_s=classifier_registry.lock_timeout_s,
        lock_poll_s=classifier_registry.lock_poll_s,
    )


def compression_rate(model: keras.Model) -> float:
    """Input values per value of the code (the output of the nested ``encoder``), from the layer shapes."""
    code = model.get_layer(ENCODER_LAYER).output_shape[1:]
    return math.prod(model.input.shape[1:]) / math.prod(code)


def pretrain(study, build, fit, *, recipe: dict, max_images: int | None = None, force: bool = False) -> RunRecord:
    """Train (or reuse) the denoising autoencoder ``build(input_shape)`` makes, with the notebook's ``fit``.

    ``build`` returns an uncompiled ``keras.Model`` holding a nested model named ``"encoder"``;
    ``fit(model, (noisy, clean), (noisy_monitor, clean_monitor), directory)`` compiles and trains it
    and returns Keras' ``History``. The registry key holds the network's Keras config, the source of
    ``fit``, ``recipe`` (the values ``fit`` reads; its ``epochs`` is the cap), the noise and the image cap.
    """
    seed = study.context.seed
    input_shape = study.input_shape
    keras.backend.clear_session(free_memory=False)  # fresh layer-name counters: the same config in any process
    model = build(input_shape)
    hyperparams = {
        "architecture": architecture_fingerprint(model),
        "fit_recipe": recipe_fingerprint(fit),
        "recipe": recipe,
        "noise_mean": NOISE_MEAN,
        "noise_variance": NOISE_VARIANCE,
        "max_images": max_images,
        "monitor_fraction": MONITOR_FRACTION,
    }

    def run(workdir) -> dict:
        images = denoising_images(study.data, max_images, seed)
        noisy = {name: add_noise(getattr(images, name), (seed, stream)) for name, stream in NOISE_STREAMS.items()}
        started = time.perf_counter()
        keras.backend.clear_session(free_memory=False)
        keras.utils.set_random_seed(seed)
        model = build(input_shape)
        write_text_atomic(workdir / MODEL_FILE, model.to_json())
        history = fit(model, (noisy["train"], images.train), (noisy["monitor"], images.monitor), workdir).history
        model.save_weights(str(workdir / WEIGHTS_FILE))
        denoised = model.predict(noisy["monitor"], batch_size=256, verbose=0)
        wall_time_s = time.perf_counter() - started

        sample = slice(0, SIGMA_CHOICE_IMAGES)
        sigma = choose_gaussian_sigma(images.train[sample], noisy["train"][sample])
        filtered = gaussian_filter_images(noisy["monitor"], sigma)
        shown = slice(0, N_EXAMPLES)
        with atomic_output(workdir / EXAMPLES_FILE) as temporary, open(temporary, "wb") as handle:
            np.savez_compressed(handle, clean=images.monitor[shown], noisy=noisy["monitor"][shown],
                                denoised=denoised[shown])
        val_losses = history.get("val_loss", [])
        epochs_run = len(val_losses)
        return {
            "description": f"{model.name}: bottleneck {'x'.join(map(str, model.get_layer(ENCODER_LAYER).output_shape[1:]))}",
            "profile": study.context.profile.name,
            "input_shape": list(input_shape),
            "compression_rate": compression_rate(model),
            "images_per_split": images.sources,
            "n_black_dropped": images.n_black_dropped,
            "n_train_images": len(images.train),
            "n_monitor_images": len(images.monitor),
            "gaussian_sigma": sigma,
            "reconstruction": {
                "noisy input": reconstruction_scores(images.monitor, noisy["monitor"]),
                "Gaussian filter": reconstruction_scores(images.monitor, filtered),
                "autoencoder": reconstruction_scores(images.monitor, denoised),
            },
            "params": model.count_params(),
            "epochs_run": epochs_run,
            "best_epoch": int(np.argmin(val_losses)) + 1 if val_losses else None,
            "stopped_because": "epoch cap" if epochs_run >= recipe.get("epochs", math.inf) else "early stopping",
            "wall_time_s": wall_time_s,
            "history": {name: [float(value) for value in values] for name, values in history.items()},
        }

    return autoencoder_registry(study.registry).fetch_or_run(
        model=model.name,
        family=FAMILY,
        hyperparams=hyperparams,
        data_fingerprint=study.data.fingerprint,
        seed=seed,
        run_fn=run,
        force=force,
    )


def latest_run(study) -> RunRecord:
    """The newest autoencoder run of this study's data and seed (notebook 06 trains it)."""
    runs = [record for record in autoencoder_registry(study.registry).records(FAMILY)
            if record.data["data_fingerprint"] == study.data.fingerprint and record.seed == study.context.seed]
    if not runs:
        raise LookupError(
            f"no denoising-autoencoder run in {study.registry.root / REGISTRY_DIR} for this data and seed "
            f"{study.context.seed}: run notebook 06_denoising_autoencoder first"
        )
    return max(runs, key=lambda record: record.data["created"])


def load_encoder(record: RunRecord, *, pretrained: bool = True, name: str = ENCODER_LAYER) -> keras.Model:
    """The encoder of an autoencoder run, rebuilt from its ``model.json``: with its trained weights, or
    (``pretrained=False``) freshly initialised, the same architecture from scratch. ``name`` renames it."""
    if record.family != FAMILY:
        raise ValueError(f"run {record.key} is a {record.family!r} run, not an autoencoder")
    model = keras.models.model_from_json((record.path / MODEL_FILE).read_text(encoding="utf-8"))
    if pretrained:
        model.load_weights(str(record.path / WEIGHTS_FILE))
    encoder = model.get_layer(ENCODER_LAYER)
    encoder.name = name
    return encoder


def denoising_examples(record: RunRecord) -> dict[str, np.ndarray]:
    """The stored examples of an autoencoder run: ``clean``, ``noisy`` and ``denoised`` monitor images."""
    path = record.path / EXAMPLES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"autoencoder run {record.key} has no examples file {path}")
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def reconstruction_table(record: RunRecord) -> pd.DataFrame:
    """MSE and PSNR of the noisy input, the Gaussian filter and the autoencoder, one row each."""
    table = pd.DataFrame(record.data["reconstruction"]).T.rename(columns={"mse": "MSE", "psnr": "PSNR (dB)"})
    table = table.rename(index={"Gaussian filter": f"Gaussian filter (sigma {record.data['gaussian_sigma']:g} px)"})
    table.index.name = f"{record.data['n_monitor_images']} held-out images"
    return table

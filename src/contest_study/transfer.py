"""ImageNet weights for notebook 07's MobileNetV2: found in the Keras cache, or downloaded when asked.

Nothing is downloaded unless the notebook asks (``download_imagenet_weights = True``, for
Kaggle, Colab or a laptop online). Without the weights the notebook trains the same backbone
from random initialisation, named :data:`RANDOM_INIT_NAME`, never called transfer; the
lookup's ``message`` says which, and what is missing.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras

RANDOM_INIT_NAME = "mobilenetv2_random_init"
IMAGENET_NAME = "mobilenetv2_imagenet"
# Where keras.applications.MobileNetV2(weights="imagenet") downloads its weights from.
IMAGENET_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
# The configurations keras.applications publishes ImageNet weights for (MobileNetV2).
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
IMAGENET_IMAGE_SIZES = (96, 128, 160, 192, 224)


def imagenet_weights_file_name(alpha: float, image_size: int) -> str:
    """The name keras.applications gives MobileNetV2's no-top ImageNet weights in its cache."""
    if alpha not in IMAGENET_ALPHAS or image_size not in IMAGENET_IMAGE_SIZES:
        raise ValueError(
            f"MobileNetV2 has ImageNet weights for alpha in {IMAGENET_ALPHAS} and input sides in "
            f"{IMAGENET_IMAGE_SIZES}, got alpha {alpha} and side {image_size}"
        )
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{image_size}_no_top.h5"


def keras_cache_dirs() -> list[Path]:
    """Where Keras keeps downloaded weights: ``$KERAS_HOME/models`` or ``~/.keras/models``, then the
    ``.keras/models`` of the temporary folder, Keras' fallback when the home folder is read-only."""
    home = os.environ.get("KERAS_HOME")
    base = Path(home).expanduser() if home else Path("~").expanduser() / ".keras"
    return list(dict.fromkeys([base / "models", Path(tempfile.gettempdir()) / ".keras" / "models"]))


@dataclass(frozen=True)
class WeightsLookup:
    """The ImageNet weights file for one MobileNetV2 configuration, or why there is none."""

    file_name: str
    path: Path | None
    message: str

    @property
    def found(self) -> bool:
        return self.path is not None


def find_imagenet_weights(alpha: float, image_size: int, *, download: bool = False) -> WeightsLookup:
    """MobileNetV2's no-top ImageNet weights from the Keras cache; with ``download``, fetched into it
    when missing. A refused download is not an error: the lookup says what is missing."""
    file_name = imagenet_weights_file_name(alpha, image_size)
    folders = keras_cache_dirs()
    configuration = f"MobileNetV2 (alpha {alpha:g}, {image_size}x{image_size})"
    for folder in folders:
        if (folder / file_name).is_file():
            return WeightsLookup(file_name, folder / file_name,
                                 f"ImageNet weights of {configuration} found in the Keras cache: {folder / file_name}.")
    fallback = (f"The backbone is trained from random initialisation instead, as `{RANDOM_INIT_NAME}`: "
                "its scores say nothing about transfer learning.")
    places = ", ".join(str(folder) for folder in folders)
    if not download:
        return WeightsLookup(file_name, None, (
            f"No ImageNet weights of {configuration}: {file_name} is in none of the Keras cache folders ({places}) "
            f"and download_imagenet_weights is False. {fallback} Online, set download_imagenet_weights = True."
        ))
    try:
        path = keras.utils.get_file(file_name, IMAGENET_WEIGHTS_URL + file_name, cache_dir=str(folders[0].parent),
                                    cache_subdir=folders[0].name)
    except Exception as error:  # Keras wraps every network failure in a bare Exception
        return WeightsLookup(file_name, None, (
            f"Downloading the ImageNet weights of {configuration} failed: {error}. Missing: {file_name} from "
            f"{IMAGENET_WEIGHTS_URL}, which this machine cannot reach; put the file in {folders[0]} to use it. "
            f"{fallback}"
        ))
    return WeightsLookup(file_name, Path(path), f"ImageNet weights of {configuration} downloaded to {path}.")

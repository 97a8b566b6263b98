"""The embedded default dataset: a seeded generator writing the contest layout.

The study must run without the real contest data, so this module writes a
stand-in with the same layout, sizes and quirks, read by the same loader:
``train.csv`` and ``val.csv`` (``image_id,label_1,label_2,label_3``),
``test.csv`` (``image_id``) and the PNGs in ``train_images/``,
``val_images/`` and ``test_images/``, ids like ``000123.png``.

What an image shows
-------------------
Every non-black image is a 64x64 grayscale picture, saved as an RGB PNG with
three equal channels: a background of random brightness with a faint linear
gradient and Gaussian pixel noise, and three to six objects at random,
non-overlapping positions, with random scale, orientation and contrast (each
object lighter or darker than the background). The objects come in three
families, one per label. Each family has a *target* and a *distractor* with
the same stroke, size range, contrast and amount of "ink", so only the shape
tells them apart, wherever it is. This is what makes the architecture matter:
a fully connected network sees pixels at fixed places and stays near chance,
a small CNN recognises the shapes anywhere.

- ``label_1``: a **ring** (circle outline); distractor: a **square outline**
  at any rotation, of similar perimeter.
- ``label_2``: an upright **plus-shaped cross** (0 +- 6 degrees); distractor:
  a **diagonal X cross** (45 +- 6 degrees) with the same arms.
- ``label_3``: a **checkerboard patch** of 4-6 cells of 3 px per side;
  distractor: a patch of the same size and cells holding the same number of
  light and dark cells in random order (so the same mean and contrast).

Each family shows one object, or two with probability 0.2, whatever the
labels are; when a label's latent presence ``z_k`` is 1 one of them is the
target, otherwise all are distractors, so the number of objects says nothing
about the labels. (In a crowded draw, about one image in fifteen, a
distractor that finds no room is left out; a target never is.)

The labels survive the training engine's augmentations: every shape but the
crosses is flip, rotation and scale invariant, and the plus and the X are 45
degrees apart, far more than a 10-degree rotation plus the 6-degree jitter;
objects keep a 4-pixel margin from the border, so small shifts and zooms do
not cut them much; contrast changes keep every shape. Strokes of 2-3 px,
texture cells of 3 px and weak pixel noise keep the shapes recognisable
after the bilinear resampling of rotation, zoom and shifts, so augmented
training images look like the plain ones a model is evaluated on.

How the labels are drawn
------------------------
The latent presences are correlated: ``z_1 ~ Bernoulli(0.44)``,
``z_2 ~ Bernoulli(0.28)``, ``z_3 ~ Bernoulli(0.28 if z_1 else 0.08)``, so
``label_3`` is more likely with ``label_1`` (latent rate about 0.17). The
written label is ``z_k`` flipped with probability 0.05 (label noise, as in a
hand-labelled contest); positive rates on the non-black images are about
0.45 / 0.30 / 0.20.

As in the contest, a third of every split (test included) is totally black
images (all pixels 0) whose labels are independent fair coins.

The Bayes-optimal oracle
------------------------
Every object has a contrast several times the pixel noise and no two objects
overlap, so the image determines ``z`` exactly, and the best possible
probability of a label is ``1 - 0.05`` when its target is drawn and ``0.05``
when not (0.5 for a black image). These probabilities are written, for every
train and val image, to ``oracle/bayes_probabilities.csv``, outside the
folders models read; :func:`load_oracle` returns them so the study can put
the best achievable score beside every model's.

The oracle has only three distinct values per label, and scikit-learn's
average precision credits a block of tied scores with the precision at the
block's end. That scores the oracle about 0.02 mAP (non-black images) to
0.05 (all images: the black ones tie at 0.5) below a model ranking the same
images by a continuous score, as any perfect shape recogniser does.
:func:`load_oracle` therefore adds to each probability a fixed offset below
1e-6, derived from a hash of the image id and so independent of the labels:
the ranking breaks ties in an arbitrary but reproducible order, like a
model's, and its average precision is what a perfect shape recogniser
scores (up to the luck of the order within ties: about +-0.005 mAP on 2,000
images).

Writing is atomic (a temporary sibling folder renamed into place once
complete) and ``dataset_card.json`` records the parameters, so
:func:`ensure_dataset` reuses a finished dataset at once and never touches a
folder it did not write.

Command line::

    python -m contest_study.synthetic --out data/embedded [--labelled N] [--test N] [--seed S] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import secrets
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

GENERATOR_NAME = "contest_study.synthetic"
# Bump whenever a change alters what is written for given parameters, so that
# an existing folder is recognised as a different dataset.
GENERATOR_VERSION = 1

IMAGE_SIZE = 64
LABEL_NAMES = ("label_1", "label_2", "label_3")
ID_COLUMN = "image_id"
SPLIT_NAMES = ("train", "val", "test")
CARD_NAME = "dataset_card.json"
ORACLE_RELATIVE_PATH = Path("oracle") / "bayes_probabilities.csv"

# Latent presence rates; z_3 depends on z_1 (the label correlation).
LATENT_RATE_1 = 0.44
LATENT_RATE_2 = 0.28
LATENT_RATE_3_GIVEN_1 = 0.28
LATENT_RATE_3_GIVEN_NOT_1 = 0.08
LABEL_FLIP_PROBABILITY = (0.05, 0.05, 0.05)
BLACK_LABEL_RATE = 0.5
ORACLE_TIE_BREAK = 1e-6  # width of the label-independent offsets load_oracle adds

# Rendering ranges, in pixels and in intensity units of [0, 1].
BACKGROUND_LEVEL = (0.35, 0.65)
BACKGROUND_GRADIENT = (0.0, 0.12)  # brightness change from the centre to an edge
NOISE_SIGMA = (0.02, 0.04)
OBJECT_CONTRAST = (0.22, 0.40)  # at least 5 noise sigmas: every object is unmistakable
STROKE_HALF_WIDTH = (1.0, 1.5)
RING_RADIUS = (5.0, 8.0)
SQUARE_HALF_SIDE = (4.0, 6.5)  # perimeter 32-52 px, the ring's is 31-50 px
CROSS_ARM = (5.0, 7.5)
CROSS_ANGLE_JITTER_DEG = 6.0
# Cells of 3 px keep the pattern through the bilinear resampling of rotation and zoom augmentation.
PATCH_CELL_SIZES = (3,)
PATCH_CELLS_PER_SIDE = (4, 5, 6)
SECOND_OBJECT_PROBABILITY = 0.2
BORDER_MARGIN = 4.0
OBJECT_GAP = 1.0
POSITION_ATTEMPTS = 30  # random tries per object within one layout
LAYOUT_ATTEMPTS = 20  # layouts tried before a distractor is left out

PROGRESS_EVERY = 2000  # images between progress lines (only for sets at least this large)



def _span(values: tuple[int, ...]) -> str:
    return f"{min(values)}-{max(values)}" if len(set(values)) > 1 else f"{values[0]}"


LABEL_MEANINGS = {
    "label_1": {
        "target": f"ring (circle outline), radius {RING_RADIUS[0]:g}-{RING_RADIUS[1]:g} px",
        "distractor": f"square outline at any rotation, half side {SQUARE_HALF_SIDE[0]:g}-{SQUARE_HALF_SIDE[1]:g} px "
        "(same stroke, similar perimeter)",
    },
    "label_2": {
        "target": f"upright plus-shaped cross (0 +- {CROSS_ANGLE_JITTER_DEG:g} degrees), "
        f"arms {CROSS_ARM[0]:g}-{CROSS_ARM[1]:g} px",
        "distractor": f"diagonal X cross (45 +- {CROSS_ANGLE_JITTER_DEG:g} degrees), same arms and stroke",
    },
    "label_3": {
        "target": f"checkerboard patch of {_span(PATCH_CELLS_PER_SIDE)} cells per side, "
        f"cells of {_span(PATCH_CELL_SIZES)} px",
        "distractor": "patch of the same size and cells with the same count of light and dark cells in random "
        "order (equal mean and contrast)",
    },
}

_FAMILIES = (("ring", "square"), ("plus", "x_cross"), ("checkerboard", "cell_noise"))
_PATCH_KINDS = ("checkerboard", "cell_noise")
_PIXEL_CENTRES = np.arange(IMAGE_SIZE, dtype=np.float64) + 0.5
_ROWS, _COLS = np.meshgrid(_PIXEL_CENTRES, _PIXEL_CENTRES, indexing="ij")


@dataclass(frozen=True)
class DatasetParameters:
    """Everything that decides the content of a generated dataset (checked on creation)."""

    n_labelled: int
    n_test: int
    val_fraction: float
    black_fraction: float
    seed: int

    def __post_init__(self) -> None:
        for name in ("n_labelled", "n_test", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        for name in ("val_fraction", "black_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.n_test < 1:
            raise ValueError(f"n_test must be >= 1, got {self.n_test}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be strictly between 0 and 1, got {self.val_fraction!r}")
        if not 0.0 <= self.black_fraction < 1.0:
            raise ValueError(f"black_fraction must be in [0, 1), got {self.black_fraction!r}")
        sizes = self.split_sizes()
        if sizes["train"] < 1 or sizes["val"] < 1:
            raise ValueError(
                f"n_labelled={self.n_labelled} with val_fraction={self.val_fraction} leaves the train or val "
                "split empty"
            )

    def split_sizes(self) -> dict[str, int]:
        n_val = round(self.n_labelled * self.val_fraction)
        return {"train": self.n_labelled - n_val, "val": n_val, "test": self.n_test}

    def as_dict(self) -> dict:
        """Plain JSON-able values, as stored in (and compared with) the dataset card."""
        values = asdict(self)
        for name in ("n_labelled", "n_test", "seed"):
            values[name] = int(values[name])
        for name in ("val_fraction", "black_fraction"):
            values[name] = float(values[name])
        return values


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _PlannedObject:
    kind: str  # one of the names in _FAMILIES
    size: float  # ring radius, square half side, cross arm or patch cell size (px)
    half_width: float  # stroke half width (outlines and crosses)
    angle: float  # radians
    cells_per_side: int  # patches only
    contrast: float  # signed intensity change

    @property
    def bounding_radius(self) -> float:
        """Radius of a circle around the centre holding every pixel the object touches."""
        # Strokes reach half_width + 0.5 px past their centre line (anti-aliasing ramp).
        reach = self.half_width + 0.5
        if self.kind == "ring":
            return self.size + reach
        if self.kind == "square":
            return (self.size + reach) * math.sqrt(2.0)
        if self.kind in ("plus", "x_cross"):
            return self.size + reach
        # Patches snap to whole pixels, which moves them by up to half a pixel each way.
        return self.size * self.cells_per_side * math.sqrt(2.0) / 2.0 + math.sqrt(0.5)


def _local_coordinates(centre: tuple[float, float], angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in an object's frame: origin at its centre, axes turned by ``angle``."""
    d_rows = _ROWS - centre[0]
    d_cols = _COLS - centre[1]
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    return cos_a * d_cols + sin_a * d_rows, -sin_a * d_cols + cos_a * d_rows


def _stroke(distance: np.ndarray, half_width: float) -> np.ndarray:
    """Share of each pixel covered by a stroke along the zero set of ``distance``, with a 1-px anti-aliasing ramp."""
    return np.clip(half_width + 0.5 - distance, 0.0, 1.0)


def _outline_or_cross(obj: _PlannedObject, centre: tuple[float, float]) -> np.ndarray:
    """Coverage in [0, 1] of a ring, square outline or cross, from its distance function over the whole image."""
    u, v = _local_coordinates(centre, obj.angle)
    if obj.kind == "ring":
        distance = np.abs(np.hypot(u, v) - obj.size)
    elif obj.kind == "square":
        distance = np.abs(np.maximum(np.abs(u), np.abs(v)) - obj.size)
    else:  # a plus or an X: two perpendicular bars through the centre
        along_u = np.hypot(np.maximum(np.abs(u) - obj.size, 0.0), v)
        along_v = np.hypot(np.maximum(np.abs(v) - obj.size, 0.0), u)
        distance = np.minimum(along_u, along_v)
    return _stroke(distance, obj.half_width)


def _patch_cells(obj: _PlannedObject, rng: np.random.Generator) -> np.ndarray:
    """The +-1 pixel pattern of a patch: alternating cells for the checkerboard, shuffled ones for its distractor."""
    n = obj.cells_per_side
    parity = np.add.outer(np.arange(n), np.arange(n)) % 2
    table = np.where(parity == rng.integers(2), 1.0, -1.0)
    if obj.kind == "cell_noise":
        # The same cells in random order: exactly the checkerboard's mean and contrast. A shuffle
        # that happens to rebuild a checkerboard (odds below 1e-6) is redrawn: the image must tell.
        checkerboards = (table, -table)
        while any(np.array_equal(table, checkerboard) for checkerboard in checkerboards):
            table = rng.permutation(table.ravel()).reshape(n, n)
    cell = int(obj.size)
    return np.kron(table, np.ones((cell, cell)))


def _draw_latent_presence(rng: np.random.Generator) -> np.ndarray:
    """The correlated latent presences z (z_3 is likelier when z_1 is 1)."""
    u = rng.random(3)
    z1 = u[0] < LATENT_RATE_1
    z2 = u[1] < LATENT_RATE_2
    z3 = u[2] < (LATENT_RATE_3_GIVEN_1 if z1 else LATENT_RATE_3_GIVEN_NOT_1)
    return np.array([z1, z2, z3], dtype=np.int8)


def _plan_object(kind: str, rng: np.random.Generator) -> _PlannedObject:
    contrast = rng.choice((-1.0, 1.0)) * rng.uniform(*OBJECT_CONTRAST)
    half_width = rng.uniform(*STROKE_HALF_WIDTH)
    jitter = math.radians(rng.uniform(-CROSS_ANGLE_JITTER_DEG, CROSS_ANGLE_JITTER_DEG))
    if kind == "ring":
        return _PlannedObject(kind, rng.uniform(*RING_RADIUS), half_width, 0.0, 0, contrast)
    if kind == "square":
        angle = rng.uniform(0.0, math.pi / 2)
        return _PlannedObject(kind, rng.uniform(*SQUARE_HALF_SIDE), half_width, angle, 0, contrast)
    if kind == "plus":
        return _PlannedObject(kind, rng.uniform(*CROSS_ARM), half_width, jitter, 0, contrast)
    if kind == "x_cross":
        return _PlannedObject(kind, rng.uniform(*CROSS_ARM), half_width, math.pi / 4 + jitter, 0, contrast)
    cell = float(rng.choice(PATCH_CELL_SIZES))
    cells_per_side = int(rng.choice(PATCH_CELLS_PER_SIDE))
    # A patch swings both ways around the background, so its sign means nothing.
    return _PlannedObject(kind, cell, 0.0, 0.0, cells_per_side, abs(contrast))


def _random_layout(objects: list[_PlannedObject], rng: np.random.Generator) -> list[tuple[float, float]] | None:
    """Random centres keeping each object inside the margin and clear of the others; None if one finds no room."""
    # The largest objects go first: they are the hard ones to fit, and the small ones fill the gaps.
    order = sorted(range(len(objects)), key=lambda i: -objects[i].bounding_radius)
    placed: dict[int, tuple[float, float, float]] = {}
    for index in order:
        radius = objects[index].bounding_radius
        low, high = radius + BORDER_MARGIN, IMAGE_SIZE - radius - BORDER_MARGIN
        for _ in range(POSITION_ATTEMPTS):
            row, col = rng.uniform(low, high, size=2)
            if all(math.hypot(row - r, col - c) >= radius + other + OBJECT_GAP for r, c, other in placed.values()):
                placed[index] = (row, col, radius)
                break
        else:
            return None
    return [placed[index][:2] for index in range(len(objects))]


def _place(
    targets: list[_PlannedObject], distractors: list[_PlannedObject], rng: np.random.Generator
) -> tuple[list[_PlannedObject], list[tuple[float, float]]]:
    """The objects that fit, with non-overlapping centres.

    When no layout fits, a random distractor is left out and new layouts are
    drawn; targets are never left out, so the oracle stays exact.
    """
    distractors = list(distractors)
    while True:
        objects = targets + distractors
        for _ in range(LAYOUT_ATTEMPTS):
            centres = _random_layout(objects, rng)
            if centres is not None:
                return objects, centres
        if not distractors:
            raise RuntimeError("no room for the target objects: the size ranges are too large for the image")
        distractors.pop(int(rng.integers(len(distractors))))


def _render_non_black(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One non-black image (uint8, 64x64) showing the target of label k exactly when ``z[k]`` is 1."""
    targets: list[_PlannedObject] = []
    distractors: list[_PlannedObject] = []
    for (target_kind, distractor_kind), present in zip(_FAMILIES, z):
        count = 2 if rng.random() < SECOND_OBJECT_PROBABILITY else 1
        if present:
            targets.append(_plan_object(target_kind, rng))
            count -= 1
        distractors.extend(_plan_object(distractor_kind, rng) for _ in range(count))
    objects, centres = _place(targets, distractors, rng)

    level = rng.uniform(*BACKGROUND_LEVEL)
    gradient = rng.uniform(*BACKGROUND_GRADIENT)
    direction = rng.uniform(0.0, 2 * math.pi)
    half = IMAGE_SIZE / 2
    image = level + gradient * (math.cos(direction) * (_COLS - half) + math.sin(direction) * (_ROWS - half)) / half
    for obj, centre in zip(objects, centres):
        if obj.kind in _PATCH_KINDS:
            # Patches sit on whole pixels so that every cell is crisp.
            cells = _patch_cells(obj, rng)
            side = cells.shape[0]
            top, left = round(centre[0] - side / 2), round(centre[1] - side / 2)
            image[top : top + side, left : left + side] += obj.contrast * cells
        else:
            image += obj.contrast * _outline_or_cross(obj, centre)
    image += rng.normal(0.0, rng.uniform(*NOISE_SIGMA), size=image.shape)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- writing


def _image_rng(seed: int, index: int, attempt: int) -> np.random.Generator:
    # One independent stream per image (and per redraw after a duplicate), so an
    # image depends only on (seed, index), not on how many draws earlier ones made.
    return np.random.default_rng([seed, 1, index, attempt])


def _split_rng(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, 0, SPLIT_NAMES.index(split)])


def _save_png(gray: np.ndarray, path: Path) -> None:
    # The contest stores its grayscale images as RGB with three equal channels.
    Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2)).save(path, format="PNG")


def _write_split(
    root: Path, split: str, first_index: int, size: int, params: DatasetParameters, seen: set[bytes], progress
) -> dict:
    """Render and save one split's PNGs; return its ids, labels, oracle probabilities and black mask."""
    image_dir = root / f"{split}_images"
    image_dir.mkdir()
    is_black = np.zeros(size, dtype=bool)
    n_black = round(size * params.black_fraction)
    is_black[_split_rng(params.seed, split).choice(size, size=n_black, replace=False)] = True
    flip_probability = np.asarray(LABEL_FLIP_PROBABILITY)

    ids, labels, oracle = [], [], []
    for offset in range(size):
        index = first_index + offset
        if is_black[offset]:
            rng = _image_rng(params.seed, index, 0)
            gray = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
            label = (rng.random(3) < BLACK_LABEL_RATE).astype(np.int8)
            probability = np.full(3, BLACK_LABEL_RATE)
        else:
            for attempt in range(1000):
                rng = _image_rng(params.seed, index, attempt)
                z = _draw_latent_presence(rng)
                flipped = rng.random(3) < flip_probability
                gray = _render_non_black(z, rng)
                digest = hashlib.blake2b(gray.tobytes(), digest_size=16).digest()
                if digest not in seen:  # otherwise an exact duplicate of an earlier image: draw again
                    seen.add(digest)
                    break
            else:
                raise RuntimeError(f"image {index}: every redraw duplicated an earlier image")
            label = (z ^ flipped).astype(np.int8)
            probability = np.where(z == 1, 1.0 - flip_probability, flip_probability)
        image_id = f"{index:06d}.png"
        _save_png(gray, image_dir / image_id)
        ids.append(image_id)
        labels.append(label)
        oracle.append(probability)
        progress()
    return {
        "ids": ids,
        "labels": np.array(labels, dtype=np.int8).reshape(size, len(LABEL_NAMES)),
        "oracle": np.array(oracle, dtype=np.float64).reshape(size, len(LABEL_NAMES)),
        "is_black": is_black,
    }


def _dataset_card(params: DatasetParameters, splits: dict[str, dict]) -> dict:
    labelled = np.concatenate([splits["train"]["labels"], splits["val"]["labels"]])
    non_black = ~np.concatenate([splits["train"]["is_black"], splits["val"]["is_black"]])
    labels = {
        name: {
            **LABEL_MEANINGS[name],
            "label_flip_probability": LABEL_FLIP_PROBABILITY[k],
            "positive_rate_non_black": round(float(labelled[non_black, k].mean()), 4) if non_black.any() else None,
            "positive_rate_all_labelled": round(float(labelled[:, k].mean()), 4),
        }
        for k, name in enumerate(LABEL_NAMES)
    }
    return {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "parameters": params.as_dict(),
        "description": (
            "Synthetic stand-in for the contest data: 64x64 grayscale images saved as RGB PNGs with three equal "
            "channels; a noisy background with a gradient and 3-6 non-overlapping objects at random positions, "
            "scales, orientations and contrasts; one target/distractor shape family per label."
        ),
        "image": {"height": IMAGE_SIZE, "width": IMAGE_SIZE, "png_mode": "RGB", "channels": "three equal channels"},
        "splits": {
            name: {"images": len(split["ids"]), "black_images": int(split["is_black"].sum())}
            for name, split in splits.items()
        },
        "labels": labels,
        "latent_model": {
            "z_1": f"Bernoulli({LATENT_RATE_1})",
            "z_2": f"Bernoulli({LATENT_RATE_2})",
            "z_3": f"Bernoulli({LATENT_RATE_3_GIVEN_1} if z_1 else {LATENT_RATE_3_GIVEN_NOT_1})",
            "rendering": (
                f"each family shows 1 object, or 2 with probability {SECOND_OBJECT_PROBABILITY}, whatever z is; "
                "the target is one of them exactly when z_k = 1, never hidden or overlapped"
            ),
            "label": "z_k flipped with probability label_flip_probability (label noise)",
        },
        "black_images": (
            f"{params.black_fraction:.4g} of every split (rounded) is totally black (all pixels 0); "
            f"their labels are independent Bernoulli({BLACK_LABEL_RATE}) draws"
        ),
        "oracle": (
            f"{ORACLE_RELATIVE_PATH.as_posix()}: Bayes-optimal P(label = 1 | image) for every train and val image: "
            f"1 - flip probability when the target is drawn, the flip probability when not, {BLACK_LABEL_RATE} "
            f"for black images; load_oracle adds label-independent offsets below {ORACLE_TIE_BREAK:g} to break ties"
        ),
        "augmentation_invariance": (
            "labels are unchanged by flips, rotations up to about 10 degrees, small zooms and shifts "
            f"(objects keep a {BORDER_MARGIN:g}-pixel margin from the border) and contrast changes"
        ),
    }


def _write_dataset(root: Path, params: DatasetParameters) -> None:
    """Write every file of the dataset into the empty folder ``root``; the card comes last."""
    sizes = params.split_sizes()
    total = sum(sizes.values())
    done = 0
    started = time.monotonic()

    def progress() -> None:
        nonlocal done
        done += 1
        if total >= PROGRESS_EVERY and (done % PROGRESS_EVERY == 0 or done == total):
            print(f"synthetic dataset: {done}/{total} images ({time.monotonic() - started:.0f} s)", flush=True)

    seen: set[bytes] = set()  # hashes of the non-black images of every split: no duplicates anywhere
    splits: dict[str, dict] = {}
    first_index = 0  # ids run on across the splits, so each id names one image
    for split in SPLIT_NAMES:
        splits[split] = _write_split(root, split, first_index, sizes[split], params, seen, progress)
        first_index += sizes[split]

    oracle_frames = []
    for split in ("train", "val"):
        frame = pd.DataFrame(splits[split]["labels"], columns=list(LABEL_NAMES))
        frame.insert(0, ID_COLUMN, splits[split]["ids"])
        frame.to_csv(root / f"{split}.csv", index=False)
        oracle = pd.DataFrame(splits[split]["oracle"], columns=list(LABEL_NAMES))
        oracle.insert(0, "is_black", splits[split]["is_black"].astype(np.int8))
        oracle.insert(0, "split", split)
        oracle.insert(0, ID_COLUMN, splits[split]["ids"])
        oracle_frames.append(oracle)
    pd.DataFrame({ID_COLUMN: splits["test"]["ids"]}).to_csv(root / "test.csv", index=False)
    (root / ORACLE_RELATIVE_PATH).parent.mkdir()
    pd.concat(oracle_frames, ignore_index=True).to_csv(root / ORACLE_RELATIVE_PATH, index=False)

    # Last: a folder holding our card is a finished dataset.
    card = json.dumps(_dataset_card(params, splits), indent=2) + "\n"
    (root / CARD_NAME).write_text(card, encoding="utf-8")


# --------------------------------------------------------------------------- folder management


def _read_card(folder: Path) -> dict | None:
    """The card of a dataset written by this generator in ``folder``, or None."""
    try:
        card = json.loads((folder / CARD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) and card.get("generator") == GENERATOR_NAME else None


def _is_complete(folder: Path, card: dict) -> bool:
    """Every CSV, the oracle, and as many PNGs per split as the card announces."""
    needed = [folder / f"{split}.csv" for split in SPLIT_NAMES] + [folder / ORACLE_RELATIVE_PATH]
    if not all(path.is_file() for path in needed):
        return False
    splits = card.get("splits", {})
    for split in SPLIT_NAMES:
        image_dir = folder / f"{split}_images"
        if split not in splits or not image_dir.is_dir():
            return False
        with os.scandir(image_dir) as entries:
            if sum(1 for _ in entries) != splits[split].get("images"):
                return False
    return True


def _sibling_work_folder(out_dir: Path, purpose: str) -> Path:
    """A new hidden folder beside ``out_dir``, named after this process so stale ones can be recognised."""
    folder = out_dir.parent / f".{out_dir.name}.{purpose}-{os.getpid()}-{secrets.token_hex(4)}"
    folder.mkdir()
    return folder


def _remove_stale_work_folders(out_dir: Path) -> None:
    """Delete work folders beside ``out_dir`` left by generator processes that no longer run (killed mid-way)."""
    prefixes = tuple(f".{out_dir.name}.{purpose}-" for purpose in ("incomplete", "replaced"))
    for folder in out_dir.parent.iterdir():
        if not folder.name.startswith(prefixes) or not folder.is_dir():
            continue
        pid_text = folder.name.rsplit("-", 2)[-2]
        if not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # the process exists (owned by someone else): leave its folder alone


def generate_dataset(
    out_dir,
    *,
    n_labelled: int = 15000,
    n_test: int = 5000,
    val_fraction: float = 0.2,
    black_fraction: float = 1 / 3,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Write a new synthetic dataset to ``out_dir``; return its resolved path.

    The dataset is written into a hidden sibling folder and renamed into place
    only once complete, so an interrupted run never leaves a dataset that looks
    finished. ``out_dir`` must be missing or empty, or, with ``force``, hold a
    dataset written by this generator (its ``dataset_card.json`` says so),
    which is then replaced. A folder holding anything else is never touched.
    """
    params = DatasetParameters(n_labelled, n_test, val_fraction, black_fraction, seed)
    out_dir = Path(out_dir).expanduser().resolve()
    replaces_existing = False
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir} exists and is not a folder; choose another output folder")
        if any(out_dir.iterdir()):
            if _read_card(out_dir) is None:
                raise FileExistsError(
                    f"{out_dir} is not empty and holds no {CARD_NAME} written by {GENERATOR_NAME}: refusing to "
                    "overwrite it, even with --force; choose another output folder"
                )
            if not force:
                raise FileExistsError(f"{out_dir} already holds a synthetic dataset; use --force to regenerate it")
        replaces_existing = True

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_work_folders(out_dir)
    staging = _sibling_work_folder(out_dir, "incomplete")
    try:
        _write_dataset(staging, params)
        if replaces_existing:
            # Move the old folder aside first, so the new one appears with a single rename.
            retired = _sibling_work_folder(out_dir, "replaced")
            os.replace(out_dir, retired / "dataset")
            os.replace(staging, out_dir)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out_dir)
    except BaseException:  # including KeyboardInterrupt: never leave a half-written dataset behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def ensure_dataset(out_dir, *, n_labelled: int = 15000, n_test: int = 5000, seed: int = 0) -> Path:
    """Return ``out_dir`` holding the requested dataset, generating it only when needed.

    A complete dataset with the same parameters is reused at once; one of ours
    with missing files is regenerated. A dataset of ours with other parameters,
    or a folder holding anything else, raises ``FileExistsError``: nothing is
    overwritten behind the user's back.
    """
    params = DatasetParameters(n_labelled, n_test, 0.2, 1 / 3, seed)
    out_dir = Path(out_dir).expanduser().resolve()
    if not (out_dir.is_dir() and any(out_dir.iterdir())):
        return generate_dataset(out_dir, **params.as_dict())
    card = _read_card(out_dir)
    if card is None:
        raise FileExistsError(
            f"{out_dir} is not empty and holds no {CARD_NAME} written by {GENERATOR_NAME}, so it is not a "
            "synthetic dataset; choose another folder"
        )
    if card.get("generator_version") != GENERATOR_VERSION or card.get("parameters") != params.as_dict():
        raise FileExistsError(
            f"{out_dir} holds a synthetic dataset with parameters {card.get('parameters')} (generator version "
            f"{card.get('generator_version')}), not the requested {params.as_dict()} (version {GENERATOR_VERSION}); "
            "regenerate it with --force or choose another folder"
        )
    if _is_complete(out_dir, card):
        return out_dir
    return generate_dataset(out_dir, **params.as_dict(), force=True)


# --------------------------------------------------------------------------- the oracle


def _tie_break_offsets(ids: list[str]) -> np.ndarray:
    """Offsets in (-ORACLE_TIE_BREAK/2, ORACLE_TIE_BREAK/2) per image and label, from a hash of the image id."""
    words = np.array(
        [np.frombuffer(hashlib.blake2b(i.encode("utf-8"), digest_size=24).digest(), dtype="<u8") for i in ids],
        dtype=np.float64,
    ).reshape(len(ids), len(LABEL_NAMES))
    return (words / 2.0**64 - 0.5) * ORACLE_TIE_BREAK


def load_oracle(data_dir, ids) -> np.ndarray | None:
    """Bayes-optimal P(label = 1 | image), shape (len(ids), 3), row i for ``ids[i]``.

    ``ids`` are image ids exactly as in the CSVs (train or val). Returns None
    when ``data_dir`` has no oracle file (a real contest folder). The values
    carry label-independent offsets below 1e-6 that break the ties of the
    exact posterior, so that average precision scores the oracle like a model
    ranking the same images (see the module docstring); the exact values are
    in ``oracle/bayes_probabilities.csv``.
    """
    path = Path(data_dir) / ORACLE_RELATIVE_PATH
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={ID_COLUMN: str})
    missing_columns = [column for column in (ID_COLUMN, *LABEL_NAMES) if column not in frame.columns]
    if missing_columns:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing_columns)}")
    duplicated = frame.loc[frame[ID_COLUMN].duplicated(), ID_COLUMN]
    if len(duplicated):
        raise ValueError(f"{path}: image_id {duplicated.iloc[0]!r} appears more than once")
    frame = frame.set_index(ID_COLUMN)
    wanted = [str(image_id) for image_id in np.asarray(ids, dtype=object).ravel()]
    unknown = [image_id for image_id in wanted if image_id not in frame.index]
    if unknown:
        examples = ", ".join(repr(image_id) for image_id in unknown[:5])
        raise ValueError(f"{path}: no oracle probabilities for {len(unknown)} image id(s), e.g. {examples}")
    probabilities = frame.loc[wanted, list(LABEL_NAMES)].to_numpy(dtype=np.float64)
    return probabilities + _tie_break_offsets(wanted)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m contest_study.synthetic",
        description=(
            "Write the synthetic stand-in for the contest data in the contest layout (train.csv, val.csv, "
            "test.csv and their PNG folders), plus the Bayes-optimal oracle (oracle/) and dataset_card.json. "
            "A complete dataset with the same parameters is reused as it is."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write: new, empty or ours")
    parser.add_argument("--labelled", type=int, default=15000, metavar="N", help="train + val images (default 15000)")
    parser.add_argument("--test", type=int, default=5000, metavar="N", help="unlabelled test images (default 5000)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0); same seed, same data")
    parser.add_argument(
        "--force",
        action="store_true",
        help="regenerate even when --out holds a complete dataset of ours (a folder not written by this "
        "generator is never touched)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.force:
            path = generate_dataset(args.out, n_labelled=args.labelled, n_test=args.test, seed=args.seed, force=True)
        else:
            path = ensure_dataset(args.out, n_labelled=args.labelled, n_test=args.test, seed=args.seed)
    except ValueError as error:
        parser.error(str(error))
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"dataset ready in {path} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The embedded default dataset: a seeded generator writing the contest layout.

The study must run without the real contest data, so this module writes a
stand-in with the same layout and quirks, read by the same loader:
``train.csv`` and ``val.csv`` (``image_id,label_1,label_2,label_3``),
``test.csv`` (``image_id``) and the PNGs in ``train_images/``,
``val_images/`` and ``test_images/``, ids like ``000123.png``.

Its purpose is to tell the model families apart by degree, not all or
nothing: every cue below is there for one family's inductive bias.

What an image shows
-------------------
A 64x64 grayscale picture saved as an RGB PNG with three equal channels: a
dark background of random brightness with a faint gradient and Gaussian
pixel noise, and up to three light objects. Label k owns a **home slot** (label_1
top left, label_2 top right, label_3 bottom centre); its object, if any, sits
there at a uniform offset of up to 10 px up or down and 4 px sideways, never
overlapping another. The
slot shows the label's **target** shape, or a **distractor** drawn with the
same stroke, size, contrast and ink:

- ``label_1``: a **ring** against a **square outline** of similar perimeter;
- ``label_2``: an upright **plus** against a diagonal **X** with the same arms;
- ``label_3``: **three horizontal bars** against the same bars **vertical**.

Which family each cue favours:

- *shape* (the only exact cue) needs translation-tolerant local features: a
  CNN learns it at any offset and reaches the oracle;
- *ink in a slot* is a partial cue: a target is always drawn, a distractor
  only with probability 0.35 when the target is absent. Pixels at fixed
  places (logistic regression, k-NN, a fully connected network) get this
  part, plus what little shape survives the offsets;
- *rows*: the shapes differ row by row (a plus has one long row, an X none;
  horizontal bars alternate full and empty rows; a square has two long
  rows, a ring none). An RNN reading rows shares its weights over rows, so
  the large up-down offset costs it nothing, the small sideways one a
  little: it gets most of the way, though more slowly than a CNN.

Strokes of 2-3 px and an angle jitter of at most 10 degrees keep the shapes
apart through the training engine's augmentations (rotation up to about 10
degrees, small zooms and shifts, flips); a flip swaps the two top slots, so
the slot cue does not survive it, the shapes do.

Dataset size: 7,500 labelled images (6,000 train, 1,500 val) and 2,500 test,
half the contest's 15,000 labelled, so that the default study's ~45 trainings
run to early stopping on a 2-core CPU; the shapes are large and clean enough
that a small CNN reaches the oracle on this many images.

How the labels are drawn
------------------------
The latent presences are correlated: ``z_1 ~ Bernoulli(0.44)``,
``z_2 ~ Bernoulli(0.28)``, ``z_3 ~ Bernoulli(0.28 if z_1 else 0.08)``, so
``label_3`` is more likely with ``label_1``. The written label is ``z_k``
flipped with probability 0.05 (label noise, as in a hand-labelled contest);
positive rates on the non-black images are about 0.45 / 0.30 / 0.20.
As in the contest, a third of every split (test included) is totally black
images (all pixels 0) whose labels are independent fair coins.

The Bayes-optimal oracle
------------------------
Every object has a contrast several times the pixel noise and none overlaps
another, so the image determines ``z`` exactly (the slot cue adds nothing
once the shape is seen), and the best possible probability of a label is
``1 - 0.05`` when its target is drawn, ``0.05`` when not, and 0.5 for a
black image. These probabilities are written, for every train and val image,
to ``oracle/bayes_probabilities.csv``, outside the folders models read;
:func:`load_oracle` returns them so the study can put the best achievable
score beside every model's.

The oracle has only three distinct values per label, and scikit-learn's
average precision credits a block of tied scores with the precision at the
block's end, which would score it below a model ranking the same images by a
continuous score. :func:`load_oracle` therefore adds to each probability a
fixed offset below 1e-6, derived from a hash of the image id and so
independent of the labels: ties break in an arbitrary but reproducible
order, like a model's.

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
GENERATOR_VERSION = 2

IMAGE_SIZE = 64
LABEL_NAMES = ("label_1", "label_2", "label_3")
ID_COLUMN = "image_id"
SPLIT_NAMES = ("train", "val", "test")
CARD_NAME = "dataset_card.json"
ORACLE_RELATIVE_PATH = Path("oracle") / "bayes_probabilities.csv"
# Sized for the default study on a 2-core CPU (see the module docstring).
DEFAULT_LABELLED = 7500
DEFAULT_TEST = 2500

# Latent presence rates; z_3 depends on z_1 (the label correlation).
LATENT_RATE_1 = 0.44
LATENT_RATE_2 = 0.28
LATENT_RATE_3_GIVEN_1 = 0.28
LATENT_RATE_3_GIVEN_NOT_1 = 0.08
LABEL_FLIP_PROBABILITY = (0.05, 0.05, 0.05)
BLACK_LABEL_RATE = 0.5
ORACLE_TIE_BREAK = 1e-6  # width of the label-independent offsets load_oracle adds

# Rendering ranges, in pixels and in intensity units of [0, 1].
# A dark background under light strokes: recurrent networks reading raw rows learn far faster than on a
# mid-grey one (in our runs an LSTM stayed at chance for 5 epochs on a 0.30-0.45 background).
BACKGROUND_LEVEL = (0.05, 0.20)
BACKGROUND_GRADIENT = (0.0, 0.08)  # brightness change from the centre to an edge
NOISE_SIGMA = (0.02, 0.04)
OBJECT_CONTRAST = (0.35, 0.60)  # always lighter than the background, at least 8 noise sigmas
STROKE_HALF_WIDTH = (1.0, 1.5)
RING_RADIUS = (6.0, 8.0)
SQUARE_HALF_SIDE = (5.0, 6.5)  # perimeter 40-52 px, the ring's is 38-50 px
SQUARE_ANGLE_JITTER_DEG = 10.0
CROSS_ARM = (6.0, 8.0)
CROSS_ANGLE_JITTER_DEG = 6.0
BAR_HALF_LENGTH = (5.5, 7.0)
BAR_SPACING = (5.0, 6.0)  # between the centre lines of the three parallel bars
BARS_ANGLE_JITTER_DEG = 6.0
# Each label's objects live in a home slot: a centre (row, col) and a uniform offset of up to SLOT_JITTER
# px (rows, columns). Wide across rows, narrow across columns: a row-reading RNN shares its weights over
# rows, so only the column offset costs it anything, while pixel models pay for both.
SLOT_CENTRES = ((18.0, 18.0), (18.0, 46.0), (46.0, 32.0))
SLOT_JITTER = (10.0, 4.0)
DISTRACTOR_PROBABILITY = 0.35  # a slot shows its distractor when its target is absent
BORDER_MARGIN = 2.0
OBJECT_GAP = 1.0
LAYOUT_ATTEMPTS = 1000

PROGRESS_EVERY = 2000  # images between progress lines (only for sets at least this large)


LABEL_MEANINGS = {
    "label_1": {
        "target": f"ring (circle outline), radius {RING_RADIUS[0]:g}-{RING_RADIUS[1]:g} px",
        "distractor": f"square outline (0 +- {SQUARE_ANGLE_JITTER_DEG:g} degrees), half side "
        f"{SQUARE_HALF_SIDE[0]:g}-{SQUARE_HALF_SIDE[1]:g} px (same stroke, similar perimeter)",
    },
    "label_2": {
        "target": f"upright plus-shaped cross (0 +- {CROSS_ANGLE_JITTER_DEG:g} degrees), "
        f"arms {CROSS_ARM[0]:g}-{CROSS_ARM[1]:g} px",
        "distractor": f"diagonal X cross (45 +- {CROSS_ANGLE_JITTER_DEG:g} degrees), same arms and stroke",
    },
    "label_3": {
        "target": f"three horizontal bars (0 +- {BARS_ANGLE_JITTER_DEG:g} degrees), half length "
        f"{BAR_HALF_LENGTH[0]:g}-{BAR_HALF_LENGTH[1]:g} px, {BAR_SPACING[0]:g}-{BAR_SPACING[1]:g} px apart",
        "distractor": "the same three bars turned vertical (90 +- 6 degrees)",
    },
}
for _k, _name in enumerate(LABEL_NAMES):
    LABEL_MEANINGS[_name]["home_slot"] = (
        f"centre (row, col) {SLOT_CENTRES[_k]}, offset up to {SLOT_JITTER[0]:g} px vertically and "
        f"{SLOT_JITTER[1]:g} px horizontally (inside the border margin); the distractor is shown there with "
        f"probability {DISTRACTOR_PROBABILITY} when the target is absent, else the slot is empty"
    )

_FAMILIES = (("ring", "square"), ("plus", "x_cross"), ("h_bars", "v_bars"))
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
    size: float  # ring radius, square half side, cross arm or bar half length (px)
    half_width: float  # stroke half width
    angle: float  # radians
    spacing: float  # bars only: distance between neighbouring bars (px)
    contrast: float  # intensity added on the stroke (always > 0)

    @property
    def bounding_radius(self) -> float:
        """Radius of a circle around the centre holding every pixel the object touches."""
        # Strokes reach half_width + 0.5 px past their centre line (anti-aliasing ramp).
        reach = self.half_width + 0.5
        if self.kind == "square":
            return (self.size + reach) * math.sqrt(2.0)
        if self.kind in ("h_bars", "v_bars"):
            return math.hypot(self.size + reach, self.spacing + reach)
        return self.size + reach


def _local_coordinates(centre: tuple[float, float], angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in an object's frame: origin at its centre, axes turned by ``angle``."""
    d_rows = _ROWS - centre[0]
    d_cols = _COLS - centre[1]
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    return cos_a * d_cols + sin_a * d_rows, -sin_a * d_cols + cos_a * d_rows


def _coverage(obj: _PlannedObject, centre: tuple[float, float]) -> np.ndarray:
    """Share in [0, 1] of each pixel covered by the object's strokes (1-px anti-aliasing ramp)."""
    u, v = _local_coordinates(centre, obj.angle)
    if obj.kind == "ring":
        distance = np.abs(np.hypot(u, v) - obj.size)
    elif obj.kind == "square":
        distance = np.abs(np.maximum(np.abs(u), np.abs(v)) - obj.size)
    elif obj.kind in ("plus", "x_cross"):  # two perpendicular bars through the centre
        along_u = np.hypot(np.maximum(np.abs(u) - obj.size, 0.0), v)
        along_v = np.hypot(np.maximum(np.abs(v) - obj.size, 0.0), u)
        distance = np.minimum(along_u, along_v)
    else:  # three parallel bars along the object's u axis (the angle makes them horizontal or vertical)
        beyond_end = np.maximum(np.abs(u) - obj.size, 0.0)
        distance = np.min([np.hypot(beyond_end, v - k * obj.spacing) for k in (-1, 0, 1)], axis=0)
    return np.clip(obj.half_width + 0.5 - distance, 0.0, 1.0)


def _draw_latent_presence(rng: np.random.Generator) -> np.ndarray:
    """The correlated latent presences z (z_3 is likelier when z_1 is 1)."""
    u = rng.random(3)
    z1 = u[0] < LATENT_RATE_1
    z2 = u[1] < LATENT_RATE_2
    z3 = u[2] < (LATENT_RATE_3_GIVEN_1 if z1 else LATENT_RATE_3_GIVEN_NOT_1)
    return np.array([z1, z2, z3], dtype=np.int8)


def _plan_object(kind: str, rng: np.random.Generator) -> _PlannedObject:
    contrast = rng.uniform(*OBJECT_CONTRAST)
    half_width = rng.uniform(*STROKE_HALF_WIDTH)
    if kind == "ring":
        return _PlannedObject(kind, rng.uniform(*RING_RADIUS), half_width, 0.0, 0.0, contrast)
    if kind == "square":
        angle = math.radians(rng.uniform(-SQUARE_ANGLE_JITTER_DEG, SQUARE_ANGLE_JITTER_DEG))
        return _PlannedObject(kind, rng.uniform(*SQUARE_HALF_SIDE), half_width, angle, 0.0, contrast)
    if kind in ("plus", "x_cross"):
        jitter = math.radians(rng.uniform(-CROSS_ANGLE_JITTER_DEG, CROSS_ANGLE_JITTER_DEG))
        angle = jitter if kind == "plus" else math.pi / 4 + jitter
        return _PlannedObject(kind, rng.uniform(*CROSS_ARM), half_width, angle, 0.0, contrast)
    jitter = math.radians(rng.uniform(-BARS_ANGLE_JITTER_DEG, BARS_ANGLE_JITTER_DEG))
    angle = jitter if kind == "h_bars" else math.pi / 2 + jitter
    return _PlannedObject(
        kind, rng.uniform(*BAR_HALF_LENGTH), half_width, angle, rng.uniform(*BAR_SPACING), contrast
    )


def _place(slotted: list[tuple[int, _PlannedObject]], rng: np.random.Generator) -> list[tuple[float, float]]:
    """A centre for each (slot, object): uniform in the slot's jitter box, inside the margin, no overlaps."""
    for _ in range(LAYOUT_ATTEMPTS):
        placed: list[tuple[float, float, float]] = []
        for slot, obj in slotted:
            radius = obj.bounding_radius
            low, high = radius + BORDER_MARGIN, IMAGE_SIZE - radius - BORDER_MARGIN
            (row, col) = (
                rng.uniform(max(low, home - jitter), min(high, home + jitter))
                for home, jitter in zip(SLOT_CENTRES[slot], SLOT_JITTER)
            )
            placed.append((row, col, radius))
        if all(
            math.hypot(row - r, col - c) >= radius + other + OBJECT_GAP
            for i, (row, col, radius) in enumerate(placed)
            for r, c, other in placed[:i]
        ):
            return [(row, col) for row, col, _ in placed]
    raise RuntimeError("no room for the objects in their slots: the size ranges are too large for the image")


def _render_non_black(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One non-black image (uint8, 64x64) showing the target of label k exactly when ``z[k]`` is 1."""
    slotted: list[tuple[int, _PlannedObject]] = []
    for slot, ((target_kind, distractor_kind), present) in enumerate(zip(_FAMILIES, z)):
        if present:
            slotted.append((slot, _plan_object(target_kind, rng)))
        elif rng.random() < DISTRACTOR_PROBABILITY:
            slotted.append((slot, _plan_object(distractor_kind, rng)))
    centres = _place(slotted, rng)

    level = rng.uniform(*BACKGROUND_LEVEL)
    gradient = rng.uniform(*BACKGROUND_GRADIENT)
    direction = rng.uniform(0.0, 2 * math.pi)
    half = IMAGE_SIZE / 2
    image = level + gradient * (math.cos(direction) * (_COLS - half) + math.sin(direction) * (_ROWS - half)) / half
    for (_, obj), centre in zip(slotted, centres):
        image += obj.contrast * _coverage(obj, centre)
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
            "channels; a noisy background with a gradient and up to three light, non-overlapping objects, one per "
            "label in that label's home slot: the label's target shape or its distractor, or nothing."
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
                "slot k shows the target when z_k = 1; when z_k = 0, the distractor with probability "
                f"{DISTRACTOR_PROBABILITY}, else nothing; objects never overlap"
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
            "the shapes, hence the labels, survive flips, rotations up to about 10 degrees, small zooms and "
            f"shifts (objects keep a {BORDER_MARGIN:g}-pixel margin from the border) and contrast changes; "
            "the slot cues do not (a flip swaps the two top slots)"
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
    n_labelled: int = DEFAULT_LABELLED,
    n_test: int = DEFAULT_TEST,
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


def ensure_dataset(out_dir, *, n_labelled: int = DEFAULT_LABELLED, n_test: int = DEFAULT_TEST, seed: int = 0) -> Path:
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
    parser.add_argument(
        "--labelled", type=int, default=DEFAULT_LABELLED, metavar="N", help="train + val images (default %(default)s)"
    )
    parser.add_argument("--test", type=int, default=DEFAULT_TEST, metavar="N", help="unlabelled test images (default %(default)s)")
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

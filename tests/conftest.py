"""Shared test fixtures.

``make_contest_folder`` writes a tiny contest folder (seconds to load, no
dependency on ``contest_study.synthetic``) so every module can be tested on
the real contest layout:

    train.csv / val.csv / test.csv      image_id,label_1,label_2,label_3 (test: image_id only)
    train_images/ val_images/ test_images/   000001.png ... (64x64, 3 equal channels)

Ids are numbered across splits (train first, then val, holdout, test), so no
id appears twice.  Non-black images are learnable: label k is 1 exactly when
a bright patch sits in the k-th corner (labels beyond the fourth are random),
over dim noise.  Black images (every pixel 0) get random labels, as in the
contest.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DEFAULT_LABELS = ("label_1", "label_2", "label_3")


def _image(labels: np.ndarray, black: bool, rng: np.random.Generator, size: int) -> np.ndarray:
    """One grayscale image (size x size, uint8) whose corners encode ``labels``."""
    if black:
        return np.zeros((size, size), np.uint8)
    pixels = rng.integers(10, 60, (size, size)).astype(np.uint8)
    patch = max(2, size // 4)
    corners = [(0, 0), (0, size - patch), (size - patch, 0), (size - patch, size - patch)]
    for (top, left), value in zip(corners, labels):
        if value:
            pixels[top : top + patch, left : left + patch] = 230
    return pixels


def write_contest_folder(
    root: Path,
    *,
    n_train: int = 30,
    n_val: int = 10,
    n_test: int = 8,
    n_holdout: int = 0,
    black_fraction: float = 1 / 3,
    label_names=DEFAULT_LABELS,
    id_column: str = "image_id",
    with_extension: bool = True,
    image_layout: str = "split",
    size: int = 64,
    colour_ids: tuple[int, ...] = (),
    test_labels: bool = False,
    seed: int = 0,
) -> Path:
    """Write a contest folder at ``root`` and return ``root``.

    - ``n_val=0`` / ``n_test=0`` / ``n_holdout=0``: no val.csv / test.csv / holdout.csv.
    - ``black_fraction``: share of each split's images that are totally black
      (the first ones of each split after a seeded shuffle, at least one when > 0).
    - ``label_names`` / ``id_column``: CSV column names.
    - ``with_extension=False``: ids without ``.png`` (files keep it).
    - ``image_layout``: ``"split"`` (``<split>_images/``), ``"images"`` (one
      ``images/`` folder) or ``"root"`` (PNGs beside the CSVs).
    - ``size``: image side in pixels (the loader resizes anything but 64).
    - ``colour_ids``: 1-based image numbers whose three channels differ.
    - ``test_labels=True``: test.csv carries label columns too.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    number = 1
    for split, count in (("train", n_train), ("val", n_val), ("holdout", n_holdout), ("test", n_test)):
        if count == 0:
            continue
        folder = {"split": root / f"{split}_images", "images": root / "images", "root": root}[image_layout]
        folder.mkdir(exist_ok=True)
        n_black = 0 if black_fraction == 0 else max(1, round(count * black_fraction))
        black = np.zeros(count, bool)
        black[rng.permutation(count)[:n_black]] = True
        labels = rng.integers(0, 2, (count, len(label_names)))
        with_labels = split != "test" or test_labels
        with open(root / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([id_column] + (list(label_names) if with_labels else []))
            for row in range(count):
                gray = _image(labels[row], black[row], rng, size)
                pixels = np.stack([gray] * 3, axis=-1)
                if number in colour_ids:
                    pixels[..., 0] = 255 - pixels[..., 0]
                file_name = f"{number:06d}.png"
                Image.fromarray(pixels, "RGB").save(folder / file_name)
                image_id = file_name if with_extension else file_name[: -len(".png")]
                writer.writerow([image_id] + (labels[row].tolist() if with_labels else []))
                number += 1
    return root


@pytest.fixture
def make_contest_folder(tmp_path):
    """Factory: ``make_contest_folder(name="contest", **options) -> Path`` under ``tmp_path``.

    Options are those of :func:`write_contest_folder`; each call with a new
    ``name`` writes a separate folder.
    """

    def make(name: str = "contest", **options) -> Path:
        return write_contest_folder(tmp_path / name, **options)

    return make


def _random_split(name: str, n: int, n_black: int, rng, label_names, labelled: bool = True):
    from contest_study.data import Split

    images = rng.random((n, 64, 64, 1), dtype=np.float32)
    images[:n_black] = 0.0
    labels = rng.integers(0, 2, (n, len(label_names))).astype(np.int8) if labelled else None
    return Split(name=name, ids=np.array([f"{name}_{i:03d}.png" for i in range(n)]), images=images, labels=labels)


def tiny_study(root: Path, label_names=DEFAULT_LABELS):
    """A smoke-profile Study over random 64x64 images (a few black ones), its registry under ``root``.

    Without its black images but one, train holds 32 images: one smoke-profile batch.
    """
    from contest_study.config import PROFILES, StudyContext
    from contest_study.data import ContestData
    from contest_study.registry import Registry
    from contest_study.study import Study

    rng = np.random.default_rng(0)
    label_names = list(label_names)
    data = ContestData(
        data_dir=root / "data",
        label_names=label_names,
        train=_random_split("train", 37, 6, rng, label_names),
        val=_random_split("val", 24, 4, rng, label_names),
        holdout=_random_split("holdout", 16, 2, rng, label_names),
        test=_random_split("test", 12, 2, rng, label_names, labelled=False),
        fingerprint="tiny-random",
        notes=[],
    )
    context = StudyContext(profile=PROFILES["smoke"], workdir=root, data_dir=root / "data", seed=0)
    return Study(context=context, data=data, registry=Registry(context.runs_dir), oracle=None)

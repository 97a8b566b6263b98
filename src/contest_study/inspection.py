"""Data-analysis helpers: black images, exact and near duplicates, pixel statistics.

All functions take the arrays produced by :mod:`contest_study.data`
(float32 images of shape (N, 64, 64, C) in [0, 1]) and stay fast on the
20,000 images of a contest folder.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from contest_study.data import Split, black_mask

# Moments are accumulated over this many images at a time so that the float64
# temporaries stay small (a whole split in float64 would be ~400 MB).
_CHUNK = 2048


def _as_splits(splits) -> list[Split]:
    """A Split, or an iterable of Splits with None entries (e.g. a missing test split) skipped."""
    if isinstance(splits, Split):
        return [splits]
    return [split for split in splits if split is not None]


def find_exact_duplicates(images: np.ndarray, ids, *, exclude_black: bool = True) -> list[list[str]]:
    """Groups of ids whose images are identical pixel for pixel.

    Images are grouped by a hash of their bytes, then checked for equality
    (so a hash collision cannot merge different images).  Each group lists ids
    in input order; groups are ordered by their first member.  Black images are
    all identical to each other, so they are left out unless
    ``exclude_black=False`` (then they form one big group).
    """
    images = np.ascontiguousarray(images)
    ids = np.asarray(ids)
    if len(images) != len(ids):
        raise ValueError(f"{len(images)} images but {len(ids)} ids")
    candidates = np.flatnonzero(~black_mask(images)) if exclude_black else np.arange(len(images))
    by_hash: dict[bytes, list[int]] = defaultdict(list)
    for index in candidates:
        by_hash[hashlib.blake2b(images[index].tobytes(), digest_size=16).digest()].append(int(index))
    groups = []
    for members in by_hash.values():
        while len(members) > 1:
            first = images[members[0]]
            same = [m for m in members if np.array_equal(images[m], first)]
            if len(same) > 1:
                groups.append(same)
            taken = set(same)
            members = [m for m in members if m not in taken]
    groups.sort(key=lambda group: group[0])
    return [[str(ids[m]) for m in group] for group in groups]


def _downsampled_profiles(images: np.ndarray, indices: np.ndarray, downsample: int) -> np.ndarray:
    """``images[indices]`` averaged to ``downsample`` x ``downsample`` gray pixels, z-scored, scaled by 1/sqrt(d).

    With this scaling the Euclidean distance between two rows is the root mean
    square difference of the z-scored images, i.e. sqrt(2 (1 - r)) with r the
    Pearson correlation of the downsampled images: 0 for identical images (up
    to brightness and contrast), about 1.41 for unrelated ones.
    """
    height, width = images.shape[1:3]
    if height % downsample or width % downsample:
        raise ValueError(f"downsample={downsample} must divide the image size {height}x{width}")
    block_h, block_w = height // downsample, width // downsample
    flat = np.empty((len(indices), downsample * downsample))
    # Chunk by chunk, so that no copy of all the selected images is made.
    for start in range(0, len(indices), _CHUNK):
        chunk = images[indices[start : start + _CHUNK]]
        gray = chunk.mean(axis=-1) if chunk.ndim == 4 else chunk
        blocks = gray.reshape(len(chunk), downsample, block_h, downsample, block_w)
        flat[start : start + len(chunk)] = blocks.mean(axis=(2, 4), dtype=np.float64).reshape(len(chunk), -1)
    flat -= flat.mean(axis=1, keepdims=True)
    spread = flat.std(axis=1, keepdims=True)
    # A constant image has no pattern to correlate: it stays the zero vector.
    np.divide(flat, spread, out=flat, where=spread > 0)
    return flat / np.sqrt(flat.shape[1])


def find_near_duplicates(
    images: np.ndarray,
    ids,
    *,
    max_distance: float = 0.15,
    downsample: int = 16,
    exclude_black: bool = True,
) -> pd.DataFrame:
    """Pairs of images that look alike after downsampling, closest first.

    Each image is averaged to ``downsample`` x ``downsample`` gray pixels and
    normalised (mean 0, standard deviation 1), so brightness and contrast
    changes, small noise and sub-block shifts do not hide a duplicate.
    ``distance`` is the RMS difference of the normalised images,
    sqrt(2 (1 - r)) for a Pearson correlation r: the default 0.15 means
    r >= 0.989.  Neighbours within ``max_distance`` are found exactly with
    scikit-learn's brute-force radius search.

    Black images are left out by default; with ``exclude_black=False`` every
    pair of black images is reported (distance 0), which is quadratic in their
    number.  Returns columns ``id_a``, ``id_b``, ``distance`` (``id_a`` comes
    first in the input).
    """
    images = np.asarray(images)
    ids = np.asarray(ids)
    if len(images) != len(ids):
        raise ValueError(f"{len(images)} images but {len(ids)} ids")
    if max_distance < 0:
        raise ValueError(f"max_distance must be >= 0, got {max_distance}")
    columns = {"id_a": pd.Series(dtype=str), "id_b": pd.Series(dtype=str), "distance": pd.Series(dtype=float)}
    candidates = np.flatnonzero(~black_mask(images)) if exclude_black else np.arange(len(images))
    if len(candidates) < 2:
        return pd.DataFrame(columns)
    profiles = _downsampled_profiles(images, candidates, downsample)
    # The search runs in float32 (twice as fast); a small margin keeps pairs that
    # float32 rounding would push just past the radius, and the exact float64
    # distances below decide.
    search = NearestNeighbors(radius=max_distance + 1e-3, algorithm="brute").fit(profiles.astype(np.float32))
    neighbours = search.radius_neighbors(profiles.astype(np.float32), return_distance=False)
    first = np.concatenate([np.full(len(found), row) for row, found in enumerate(neighbours)])
    second = np.concatenate(list(neighbours))
    later = second > first  # each pair once, and not an image with itself
    first, second = first[later], second[later]
    gaps = np.linalg.norm(profiles[first] - profiles[second], axis=1)
    close = gaps <= max_distance
    first, second, gaps = candidates[first[close]], candidates[second[close]], gaps[close]
    pairs = pd.DataFrame({"id_a": ids[first].astype(str), "id_b": ids[second].astype(str), "distance": gaps})
    return pairs.sort_values(["distance", "id_a", "id_b"], kind="stable").reset_index(drop=True)


def _moments(images: np.ndarray, selected: np.ndarray) -> dict[str, float]:
    """Count, mean, standard deviation, min and max of the pixels of ``images[selected]``, chunk by chunk."""
    count = int(selected.sum())
    if count == 0:
        return {"n_images": 0, "mean": np.nan, "std": np.nan, "min": np.nan, "max": np.nan}
    total = squares = 0.0
    low, high = np.inf, -np.inf
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK][selected[start : start + _CHUNK]].astype(np.float64)
        if chunk.size:
            total += chunk.sum()
            squares += np.square(chunk).sum()
            low, high = min(low, chunk.min()), max(high, chunk.max())
    pixels = count * math.prod(images.shape[1:])
    mean = total / pixels
    return {
        "n_images": count,
        "mean": mean,
        "std": float(np.sqrt(max(squares / pixels - mean**2, 0.0))),
        "min": float(low),
        "max": float(high),
    }


def intensity_summary(splits) -> pd.DataFrame:
    """Pixel statistics per split, over all images and over non-black images only.

    ``splits``: a Split or an iterable of them (None entries skipped).  One row
    per (split, subset) with subset ``"all"`` or ``"non_black"``; columns
    ``n_images``, ``mean``, ``std``, ``min``, ``max`` of the pixel values.
    """
    rows = []
    for split in _as_splits(splits):
        black = black_mask(split.images)
        for subset, selected in (("all", np.ones(len(split), bool)), ("non_black", ~black)):
            rows.append({"split": split.name, "subset": subset, **_moments(split.images, selected)})
    return pd.DataFrame(rows, columns=["split", "subset", "n_images", "mean", "std", "min", "max"])


def black_image_summary(splits, label_names: Iterable[str]) -> pd.DataFrame:
    """Per split: how many images are black, and each label's positive rate among black and other images.

    Shows at a glance whether black images carry information (their labels
    are random in the contest, so their positive rates should sit near the
    label's base rate with no pattern).  Unlabelled splits get NaN rates.
    """
    label_names = list(label_names)
    rows = []
    for split in _as_splits(splits):
        black = black_mask(split.images)
        row = {"split": split.name, "n_images": len(split), "n_black": int(black.sum())}
        row["black_share"] = row["n_black"] / len(split) if len(split) else np.nan
        for index, name in enumerate(label_names):
            for subset, mask in (("black", black), ("non_black", ~black)):
                has_labels = split.labels is not None and mask.any()
                row[f"{name}_rate_{subset}"] = float(split.labels[mask, index].mean()) if has_labels else np.nan
        rows.append(row)
    return pd.DataFrame(rows)

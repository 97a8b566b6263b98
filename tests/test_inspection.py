"""Black images, duplicates and pixel statistics for the data analysis."""

from __future__ import annotations

import numpy as np
import pytest

from contest_study.data import Split, load_contest
from contest_study.inspection import (
    black_image_summary,
    find_exact_duplicates,
    find_near_duplicates,
    intensity_summary,
)


def textured_images(count: int, seed: int = 0) -> np.ndarray:
    """Distinct smooth random images (N, 64, 64, 1) in [0, 1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((count, 8, 8))
    return np.kron(coarse, np.ones((8, 8)))[..., np.newaxis].astype(np.float32)


def test_exact_duplicates_grouped_and_black_left_out():
    images = textured_images(8)
    images[5] = images[1]
    images[7] = images[1]
    images[6] = images[2]
    images[3] = 0
    images[4] = 0
    ids = [f"img{number}" for number in range(8)]
    assert find_exact_duplicates(images, ids) == [["img1", "img5", "img7"], ["img2", "img6"]]
    assert find_exact_duplicates(images, ids, exclude_black=False) == [
        ["img1", "img5", "img7"],
        ["img2", "img6"],
        ["img3", "img4"],
    ]
    assert find_exact_duplicates(textured_images(4), list("abcd")) == []


def test_near_duplicates_survive_brightness_contrast_and_noise():
    rng = np.random.default_rng(1)
    images = textured_images(30)
    images[10] = np.clip(0.8 * images[3] + 0.1 + rng.normal(0, 0.01, images[3].shape), 0, 1)
    images[20] = images[3]
    images[25] = 0
    images[26] = 0
    ids = np.array([f"{number:03d}.png" for number in range(30)])

    pairs = find_near_duplicates(images, ids)
    assert list(pairs.columns) == ["id_a", "id_b", "distance"]
    found = {(a, b) for a, b in zip(pairs.id_a, pairs.id_b)}
    assert found == {("003.png", "010.png"), ("003.png", "020.png"), ("010.png", "020.png")}
    assert pairs.distance.iloc[0] == pytest.approx(0, abs=1e-9)  # the exact copy comes first
    assert (pairs.distance <= 0.15).all()

    assert len(find_near_duplicates(images, ids, max_distance=0.0001)) == 1
    with_black = find_near_duplicates(images, ids, exclude_black=False)
    assert ("025.png", "026.png") in set(zip(with_black.id_a, with_black.id_b))


def test_near_duplicates_edge_cases():
    empty = find_near_duplicates(np.zeros((3, 64, 64, 1), np.float32), ["a", "b", "c"])
    assert empty.empty and list(empty.columns) == ["id_a", "id_b", "distance"]
    with pytest.raises(ValueError, match="downsample"):
        find_near_duplicates(textured_images(3), ["a", "b", "c"], downsample=10)
    with pytest.raises(ValueError, match="3 images but 2 ids"):
        find_near_duplicates(textured_images(3), ["a", "b"])
    colour = np.repeat(textured_images(4), 3, axis=-1)
    colour[2] = colour[0]
    assert len(find_near_duplicates(colour, list("abcd"))) == 1


def test_intensity_summary_all_and_non_black():
    images = np.full((4, 64, 64, 1), 0.5, np.float32)
    images[0] = 0
    images[1, :32] = 1.0
    images[1, 32:] = 0.0  # has black pixels but is not a black image
    train = Split(name="train", ids=np.array(list("abcd")), images=images, labels=None)
    table = intensity_summary([train, None]).set_index(["split", "subset"])

    everything = table.loc[("train", "all")]
    assert everything.n_images == 4
    assert everything["mean"] == pytest.approx(images.mean())
    assert everything["std"] == pytest.approx(images.std(), rel=1e-6)
    assert (everything["min"], everything["max"]) == (0.0, 1.0)
    non_black = table.loc[("train", "non_black")]
    assert non_black.n_images == 3
    assert non_black["mean"] == pytest.approx(0.5)


def test_summaries_on_a_loaded_folder(make_contest_folder):
    data = load_contest(make_contest_folder(n_train=30, n_val=9, n_test=6))
    splits = [data.train, data.val, data.holdout, data.test]
    intensity = intensity_summary(splits)
    assert list(intensity.split.unique()) == ["train", "val", "holdout", "test"]
    assert (intensity.loc[intensity.subset == "non_black", "mean"] > 0).all()

    black = black_image_summary(splits, data.label_names).set_index("split")
    assert black.loc["val", "n_black"] == 3 and black.loc["val", "black_share"] == pytest.approx(1 / 3)
    assert black.loc["train", "n_black"] + black.loc["holdout", "n_black"] == 10
    assert np.isnan(black.loc["test", "label_1_rate_black"])
    assert 0 <= black.loc["val", "label_2_rate_non_black"] <= 1

"""The scoring rule every run shares: black images answered by the training base rate."""

import numpy as np
import pytest

from contest_study.baselines import run_classical_baseline
from contest_study.data import ContestData, Split
from contest_study.evaluation import (
    BLACK_IMAGE_SCORES,
    answer_black_images,
    black_label_rate,
    prepare_splits,
    split_hyperparams,
)
from contest_study.registry import Registry

LABELS = ["label_1", "label_2", "label_3"]


def make_split(name, n, n_black, rng):
    images = rng.integers(1, 255, (n, 8, 8, 1)).astype(np.uint8)
    images[:n_black] = 0
    labels = (rng.random((n, len(LABELS))) < 0.4).astype(np.int8)
    return Split(name=name, ids=np.array([f"{name}{i:03d}.png" for i in range(n)]), images=images, labels=labels)


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(1)
    return ContestData(
        data_dir=tmp_path / "data",
        label_names=LABELS,
        train=make_split("train", 80, 20, rng),
        val=make_split("val", 30, 10, rng),
        holdout=make_split("holdout", 30, 10, rng),
        test=make_split("test", 12, 4, rng),
        fingerprint="rule-data",
        notes=[],
    )


def test_black_label_rate_is_the_positive_rate_of_the_black_training_images(data):
    expected = data.train.labels[:20].mean(axis=0)
    np.testing.assert_allclose(black_label_rate(data.train), expected)


def test_without_black_training_images_the_rate_of_all_images_is_used(data):
    no_black = data.train.take(np.arange(20, 80))
    np.testing.assert_allclose(black_label_rate(no_black), no_black.labels.mean(axis=0))


def test_answer_black_images_replaces_only_black_rows_and_keeps_the_input():
    images = np.ones((4, 8, 8, 1), np.uint8)
    images[[1, 3]] = 0
    score = np.full((4, 3), 0.9)
    answered = answer_black_images(score, images, np.array([0.5, 0.4, 0.6]))
    np.testing.assert_allclose(answered[[0, 2]], 0.9)
    np.testing.assert_allclose(answered[[1, 3]], [[0.5, 0.4, 0.6]] * 2)
    assert (score == 0.9).all()


@pytest.mark.parametrize(
    "score, rate",
    [(np.zeros((3, 3)), np.zeros(3)), (np.zeros((4, 2)), np.zeros(3)), (np.zeros(4), np.zeros(3))],
)
def test_answer_black_images_refuses_mismatched_shapes(score, rate):
    with pytest.raises(ValueError, match="one row per image"):
        answer_black_images(score, np.zeros((4, 8, 8, 1)), rate)


def test_the_rule_comes_from_all_black_training_images_even_when_they_are_removed(data):
    splits = prepare_splits(data, black_images="removed", seed=0)
    assert int((splits.train.images.reshape(len(splits.train), -1).max(axis=1) == 0).sum()) == 1
    np.testing.assert_allclose(splits.black_label_rate, data.train.labels[:20].mean(axis=0))


def test_the_rule_is_part_of_every_key():
    assert split_hyperparams("removed", None)["black_image_scores"] == BLACK_IMAGE_SCORES


def test_saved_scores_of_black_images_are_the_training_rate_on_every_split(tmp_path, data):
    record = run_classical_baseline(
        Registry(tmp_path / "runs"), data, name="knn", seed=0, hyperparams={"k": 3, "pca_components": 5}
    )
    predictions = record.predictions()
    rate = data.train.labels[:20].mean(axis=0)
    for split, n_black in (("val", 10), ("holdout", 10), ("test", 4)):
        np.testing.assert_allclose(predictions[f"{split}_score"][:n_black], np.tile(rate, (n_black, 1)))
    # The non-black images keep the model's own scores.
    assert not np.allclose(predictions["val_score"][10:], rate)

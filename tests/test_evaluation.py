"""The scoring rule every run shares: black images answered by the training base rate."""

from dataclasses import replace

import numpy as np
import pytest

from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline

from contest_study.baselines import run_estimator
from contest_study.config import get_profile
from contest_study.data import ContestData, Split
from contest_study.evaluation import (
    BLACK_IMAGE_SCORES,
    answer_black_images,
    black_label_rate,
    compare_runs,
    prepare_splits,
    split_hyperparams,
)
from contest_study.registry import Registry


def knn(registry, data, k=3, seed=0, profile=None):
    """A k-NN on 5 principal components, stored in ``registry`` like every run."""
    estimator = make_pipeline(PCA(5, random_state=0), KNeighborsClassifier(k))
    return run_estimator(
        registry, data, estimator=estimator, name="knn", description=f"{k}-NN", seed=seed, profile=profile
    )

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
    record = knn(Registry(tmp_path / "runs"), data)
    predictions = record.predictions()
    rate = data.train.labels[:20].mean(axis=0)
    for split, n_black in (("val", 10), ("holdout", 10), ("test", 4)):
        np.testing.assert_allclose(predictions[f"{split}_score"][:n_black], np.tile(rate, (n_black, 1)))
    # The non-black images keep the model's own scores.
    assert not np.allclose(predictions["val_score"][10:], rate)


def test_compare_runs_pairs_the_same_images_of_two_runs(tmp_path, data):
    registry = Registry(tmp_path / "runs")
    knn_3, knn_9 = knn(registry, data, k=3), knn(registry, data, k=9)
    result = compare_runs(knn_3, knn_9)
    assert result["split"] == "val" and result["subset"] == "non_black" and result["n_images"] == 20
    assert result["map_a"] == pytest.approx(knn_3.metrics["val"]["non_black"]["map"])
    assert result["map_b"] == pytest.approx(knn_9.metrics["val"]["non_black"]["map"])
    low, high = result["interval"]
    assert low <= result["difference"] <= high and result["measurable"] == (low > 0 or high < 0)
    holdout = compare_runs(knn_3, knn_9, split="holdout", subset="all")
    assert holdout["n_images"] == 30
    assert holdout["map_a"] == pytest.approx(knn_3.metrics["holdout"]["all"]["map"])
    for options, message in (({"split": "test"}, "split must be"), ({"subset": "black"}, "subset must be")):
        with pytest.raises(ValueError, match=message):
            compare_runs(knn_3, knn_9, **options)


def test_compare_runs_refuses_runs_scored_on_other_images(tmp_path, data):
    registry = Registry(tmp_path / "runs")
    full = knn(registry, data)
    subsampled = knn(registry, data, profile=replace(get_profile("smoke"), max_eval_images=20))
    with pytest.raises(ValueError, match="not scored on the same val images"):
        compare_runs(full, subsampled)


def test_every_run_records_bootstrap_intervals_of_its_map(tmp_path, data):
    record = knn(Registry(tmp_path / "runs"), data)
    for split in ("val", "holdout"):
        for subset in ("all", "non_black"):
            scores = record.metrics[split][subset]
            low, high = scores["map_ci95"]
            assert low <= scores["map"] <= high

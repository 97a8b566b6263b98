"""contest_study.metrics against scikit-learn and against values computed by hand."""

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score
from sklearn.model_selection import GridSearchCV
from sklearn.multioutput import MultiOutputClassifier
from sklearn.neighbors import KNeighborsClassifier

from contest_study.metrics import (
    _weighted_average_precision,
    average_precision_per_class,
    bootstrap_counts,
    bootstrap_map_interval,
    compare,
    evaluate,
    evaluate_run,
    mean_average_precision,
    multilabel_average_precision_scorer,
    positive_class_probabilities,
    tune_thresholds,
)

LABELS = ["label_1", "label_2", "label_3"]


def random_predictions(seed, n=200, n_labels=3):
    rng = np.random.default_rng(seed)
    y_true = (rng.random((n, n_labels)) < 0.35).astype(np.int8)
    # Informative but imperfect scores.
    y_score = np.clip(0.3 * y_true + 0.7 * rng.random((n, n_labels)), 0, 1)
    return y_true, y_score


# Label 1 by hand: ranked scores 0.8 (neg), 0.4 (pos), 0.3 (pos), 0.1 (neg).
#   AP = 0.5 * precision@0.4 (1/2) + 0.5 * precision@0.3 (2/3) = 7/12
#   F1 at 0.5: only 0.8 is predicted positive, a false positive -> 0
#   best threshold 0.3: predictions 1,1,1,0 -> precision 2/3, recall 1 -> F1 0.8
# Label 2 has no positive example: AP and F1 are undefined.
HAND_TRUE = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
HAND_SCORE = np.array([[0.4, 0.2], [0.8, 0.7], [0.3, 0.1], [0.1, 0.4]])


def test_hand_computed_case():
    ap = average_precision_per_class(HAND_TRUE, HAND_SCORE)
    assert ap[0] == pytest.approx(7 / 12)
    assert math.isnan(ap[1])
    np.testing.assert_allclose(tune_thresholds(HAND_TRUE, HAND_SCORE), [0.3, 0.5])

    result = evaluate(HAND_TRUE, HAND_SCORE, ["a", "b"])
    assert result["map"] == pytest.approx(7 / 12)  # the undefined label is left out, not counted as 0
    assert result["f1_at_0.5"]["a"] == 0.0
    assert result["f1_tuned"]["a"] == pytest.approx(0.8)
    assert math.isnan(result["f1_tuned"]["b"])
    assert result["f1_macro_tuned"] == pytest.approx(0.8)
    # label a: 1/4 right at 0.5, 3/4 at 0.3; label b: 3/4 right at 0.5 (0.7 is a false positive)
    assert result["accuracy_at_0.5"] == pytest.approx((1 / 4 + 3 / 4) / 2)
    assert result["accuracy_tuned"] == pytest.approx((3 / 4 + 3 / 4) / 2)
    assert result["n_images"] == 4
    assert result["positives"] == {"a": 2, "b": 0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scikit_learn(seed):
    y_true, y_score = random_predictions(seed)
    np.testing.assert_allclose(
        average_precision_per_class(y_true, y_score), average_precision_score(y_true, y_score, average=None)
    )
    assert mean_average_precision(y_true, y_score) == pytest.approx(
        average_precision_score(y_true, y_score, average="macro")
    )
    result = evaluate(y_true, y_score, LABELS, thresholds=[0.5, 0.5, 0.5])
    predicted = (y_score >= 0.5).astype(int)
    np.testing.assert_allclose(list(result["f1_at_0.5"].values()), f1_score(y_true, predicted, average=None))
    assert result["f1_macro_at_0.5"] == pytest.approx(f1_score(y_true, predicted, average="macro"))
    assert result["f1_macro_tuned"] == pytest.approx(result["f1_macro_at_0.5"])
    # Keras binary accuracy: the fraction of right 0/1 decisions over every cell.
    assert result["accuracy_at_0.5"] == pytest.approx(np.mean(predicted == y_true))
    assert result["positives"] == dict(zip(LABELS, y_true.sum(axis=0).tolist()))


@pytest.mark.parametrize("seed", range(5))
def test_tuned_thresholds_never_lose_to_half_on_the_tuning_set(seed):
    y_true, y_score = random_predictions(seed)
    result = evaluate(y_true, y_score, LABELS)
    for name in LABELS:
        assert result["f1_tuned"][name] >= result["f1_at_0.5"][name]
    thresholds = tune_thresholds(y_true, y_score)
    best = f1_score(y_true, (y_score >= thresholds).astype(int), average=None)
    # No other threshold does better (F1 of every distinct score as threshold, computed with numpy).
    for j in range(3):
        candidates = np.unique(y_score[:, j])
        predicted = y_score[:, j][None, :] >= candidates[:, None]
        true_positives = (predicted & (y_true[:, j] == 1)).sum(axis=1)
        f1 = 2 * true_positives / (predicted.sum(axis=1) + y_true[:, j].sum())
        assert f1.max() == pytest.approx(best[j])


def test_label_without_positives_is_nan_and_does_not_crash():
    y_true, y_score = random_predictions(0)
    y_true[:, 1] = 0
    result = evaluate(y_true, y_score, LABELS)
    assert math.isnan(result["ap"]["label_2"])
    assert math.isnan(result["f1_at_0.5"]["label_2"])
    assert result["map"] == pytest.approx(np.mean([result["ap"]["label_1"], result["ap"]["label_3"]]))
    assert tune_thresholds(y_true, y_score)[1] == 0.5
    assert math.isnan(mean_average_precision(np.zeros((3, 2)), np.full((3, 2), 0.5)))


@pytest.mark.parametrize(
    "y_true, y_score, message",
    [
        (np.zeros((4, 3)), np.zeros((4, 2)), "shape"),
        (np.zeros(4), np.zeros(4), "2-D"),
        (np.full((4, 3), 2), np.zeros((4, 3)), "only 0 and 1"),
        (np.zeros((4, 3)), np.full((4, 3), np.nan), "NaN"),
        (np.zeros((0, 3)), np.zeros((0, 3)), "no images"),
    ],
)
def test_bad_inputs_are_named(y_true, y_score, message):
    with pytest.raises(ValueError, match=message):
        evaluate(y_true, y_score, LABELS)


def test_bad_label_names_and_thresholds():
    y_true, y_score = random_predictions(0)
    with pytest.raises(ValueError, match="2 label names"):
        evaluate(y_true, y_score, LABELS[:2])
    with pytest.raises(ValueError, match="3 thresholds"):
        evaluate(y_true, y_score, LABELS, thresholds=[0.5])
    with pytest.raises(ValueError, match="no threshold for label.*label_3"):
        evaluate(y_true, y_score, LABELS, thresholds={"label_1": 0.5, "label_2": 0.5})


def test_thresholds_by_label_name_as_stored_in_records():
    y_true, y_score = random_predictions(0)
    by_name = {"label_3": 0.7, "label_1": 0.2, "label_2": 0.4}
    assert evaluate(y_true, y_score, LABELS, by_name) == evaluate(y_true, y_score, LABELS, [0.2, 0.4, 0.7])


def test_evaluate_run_tunes_on_val_and_applies_to_holdout():
    val_true, val_score = random_predictions(0)
    holdout_true, holdout_score = random_predictions(1, n=150)
    val_black = np.zeros(len(val_true), dtype=bool)
    val_black[:30] = True
    holdout_black = np.zeros(len(holdout_true), dtype=bool)
    holdout_black[-10:] = True
    result = evaluate_run(
        LABELS,
        val_true=val_true,
        val_score=val_score,
        holdout_true=holdout_true,
        holdout_score=holdout_score,
        val_black=val_black,
        holdout_black=holdout_black,
    )
    thresholds = tune_thresholds(val_true, val_score)
    assert result["thresholds"] == dict(zip(LABELS, thresholds.tolist()))
    assert result["oracle"] is None
    holdout = result["metrics"]["holdout"]["all"]
    expected_f1 = f1_score(holdout_true, (holdout_score >= thresholds).astype(int), average=None)
    np.testing.assert_allclose(list(holdout["f1_tuned"].values()), expected_f1)
    interval = holdout.pop("map_ci95")
    assert interval == bootstrap_map_interval(holdout_true, holdout_score)
    assert interval[0] < holdout["map"] < interval[1]
    assert holdout == evaluate(holdout_true, holdout_score, LABELS, thresholds)
    non_black = result["metrics"]["val"]["non_black"]
    assert non_black.pop("map_ci95") == bootstrap_map_interval(val_true[30:], val_score[30:])
    assert non_black == evaluate(val_true[30:], val_score[30:], LABELS, thresholds)
    assert result["metrics"]["holdout"]["non_black"]["n_images"] == 140


def test_evaluate_run_scores_the_oracle_the_same_way():
    val_true, val_score = random_predictions(0)
    holdout_true, holdout_score = random_predictions(1, n=150)
    oracle_val = np.clip(val_true * 0.8 + 0.1, 0, 1)
    oracle_holdout = np.clip(holdout_true * 0.8 + 0.1, 0, 1)
    common = dict(
        val_true=val_true,
        val_score=val_score,
        holdout_true=holdout_true,
        holdout_score=holdout_score,
        val_black=np.zeros(200, dtype=bool),
        holdout_black=np.zeros(150, dtype=bool),
    )
    result = evaluate_run(LABELS, oracle_val=oracle_val, oracle_holdout=oracle_holdout, **common)
    assert set(result["oracle"]) == {"val", "holdout"}
    assert set(result["oracle"]["holdout"]) == {"all", "non_black"}
    assert result["oracle"]["val"]["all"]["map"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="both oracle_val and oracle_holdout"):
        evaluate_run(LABELS, oracle_val=oracle_val, **common)
    with pytest.raises(ValueError, match="val_black"):
        evaluate_run(LABELS, **{**common, "val_black": np.zeros(3, dtype=bool)})


def test_positive_class_probabilities_formats():
    array = np.array([[0.1, 0.9], [0.6, 0.2]])
    np.testing.assert_array_equal(positive_class_probabilities(array), array)
    per_label = [np.array([[0.3, 0.7], [0.9, 0.1]]), np.array([[1.0], [1.0]]), np.array([[1.0], [1.0]])]
    classes = [np.array([0, 1]), np.array([0]), np.array([1])]
    np.testing.assert_array_equal(
        positive_class_probabilities(per_label, classes), [[0.7, 0.0, 1.0], [0.1, 0.0, 1.0]]
    )
    with pytest.raises(ValueError, match="no classes_"):
        positive_class_probabilities(per_label)


class FixedProbabilities:
    """An 'estimator' whose predict_proba returns the (N, L) matrix it was given."""

    def __init__(self, proba):
        self.proba = proba

    def predict_proba(self, X):
        return self.proba


def test_scorer_on_arrays_and_on_multi_output_lists():
    y_true, y_score = random_predictions(3)
    expected = average_precision_score(y_true, y_score, average="macro")
    assert multilabel_average_precision_scorer(FixedProbabilities(y_score), None, y_true) == pytest.approx(expected)

    rng = np.random.default_rng(0)
    X = rng.random((120, 5))
    y = (X[:, :3] + 0.3 * rng.random((120, 3)) > 0.6).astype(int)
    for estimator in (KNeighborsClassifier(5).fit(X, y), MultiOutputClassifier(LogisticRegression()).fit(X, y)):
        proba = np.column_stack([p[:, 1] for p in estimator.predict_proba(X)])
        assert multilabel_average_precision_scorer(estimator, X, y) == pytest.approx(
            average_precision_score(y, proba, average="macro")
        )


def test_scorer_drives_grid_search():
    rng = np.random.default_rng(1)
    X = rng.random((150, 4))
    y = (X[:, :3] > 0.5).astype(int)
    search = GridSearchCV(
        KNeighborsClassifier(), {"n_neighbors": [1, 15]}, scoring=multilabel_average_precision_scorer, cv=3
    ).fit(X, y)
    assert 0.5 < search.best_score_ <= 1.0
    assert search.best_params_ == {"n_neighbors": 15}


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_average_precision_is_scikit_learns_on_each_resample():
    y_true, y_score = random_predictions(3, n=120)
    y_score = np.round(y_score, 1)  # many ties
    y_true[:, 2] = 0
    y_true[0, 2] = 1  # a label whose only positive is missing from some resamples
    counts = bootstrap_counts(len(y_true), 20, seed=5)
    ap = _weighted_average_precision(y_true, y_score, counts)
    for b in range(20):
        drawn = np.repeat(np.arange(len(y_true)), counts[:, b])
        for j in range(3):
            if y_true[drawn, j].any():
                assert ap[b, j] == pytest.approx(average_precision_score(y_true[drawn, j], y_score[drawn, j]))
            else:
                assert math.isnan(ap[b, j])
    assert np.isnan(ap[:, 2]).any() and not np.isnan(ap[:, 2]).all()


def test_bootstrap_interval_is_seeded_and_narrows_with_more_images():
    y_true, y_score = random_predictions(0, n=200)
    interval = bootstrap_map_interval(y_true, y_score)
    assert interval == bootstrap_map_interval(y_true, y_score)
    assert interval[0] < mean_average_precision(y_true, y_score) < interval[1]
    big_true, big_score = random_predictions(0, n=2000)
    big = bootstrap_map_interval(big_true, big_score)
    assert big[1] - big[0] < (interval[1] - interval[0]) / 2
    assert bootstrap_map_interval(y_true, y_score, seed=1) != interval


def test_paired_comparison_tells_a_real_difference_from_noise():
    y_true, y_score = random_predictions(0, n=1000)
    rng = np.random.default_rng(9)
    same = compare(y_score, y_score, y_true)
    assert same["difference"] == 0 and same["interval"] == [0, 0] and not same["measurable"]
    jitter = np.clip(y_score + rng.normal(0, 1e-3, y_score.shape), 0, 1)
    assert not compare(jitter, y_score, y_true)["measurable"]
    better = np.clip(y_score + 0.3 * y_true, 0, 1)
    result = compare(better, y_score, y_true)
    assert result["measurable"] and 0 < result["interval"][0] <= result["difference"] <= result["interval"][1]
    assert result["map_a"] == pytest.approx(mean_average_precision(y_true, better))
    assert result["difference"] == pytest.approx(result["map_a"] - result["map_b"])
    reverse = compare(y_score, better, y_true)
    assert reverse["interval"] == pytest.approx([-result["interval"][1], -result["interval"][0]])
    # Pairing: the interval of the difference is narrower than either run's own interval.
    own = bootstrap_map_interval(y_true, y_score)
    assert result["interval"][1] - result["interval"][0] < own[1] - own[0]


def test_comparison_refuses_scores_of_other_images():
    y_true, y_score = random_predictions(0, n=50)
    with pytest.raises(ValueError, match="shape"):
        compare(y_score[:40], y_score, y_true)

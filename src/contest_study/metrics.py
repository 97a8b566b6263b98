"""Scores of a multi-label classifier, all computed with scikit-learn.

Conventions used everywhere in the study (the notebooks and the registry rely on them):

- ``y_true`` is an (N, L) 0/1 matrix, ``y_score`` an (N, L) matrix of probabilities.
- A prediction is positive when ``score >= threshold``; this is the rule of
  :func:`sklearn.metrics.precision_recall_curve`, so a threshold tuned on its curve
  reproduces exactly the F1 it was chosen for.
- A label with no positive example in the evaluated set has no average precision and
  no F1 (recall has no denominator): both are reported as NaN and left out of the
  macro averages (``nanmean``) instead of being counted as 0. Binary accuracy is still
  defined for such a label and is always averaged over every label.
- Binary accuracy is the Keras ``binary_accuracy``: the fraction of correct 0/1
  decisions, i.e. scikit-learn's accuracy per label averaged over the labels.
- The noise floor of a mAP is a bootstrap over the images (:func:`bootstrap_map_interval`,
  :func:`compare`): 1,000 resamples drawn from a fixed seed, so every run scored on
  the same images is resampled the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, precision_recall_curve

# Used for a label whose threshold cannot be tuned (no positive example in the tuning set).
DEFAULT_THRESHOLD = 0.5

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


def _as_matrices(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert a (labels, scores) pair; fail with the shapes at fault."""
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim != 2 or y_score.ndim != 2:
        raise ValueError(
            f"y_true and y_score must be 2-D (images, labels); got shapes {y_true.shape} and {y_score.shape}"
        )
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_score has shape {y_score.shape}")
    if y_true.shape[0] == 0:
        raise ValueError("no images to evaluate (y_true is empty)")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must contain only 0 and 1")
    if not np.isfinite(y_score).all():
        raise ValueError("y_score contains NaN or infinite values")
    return y_true.astype(np.int8), y_score


def _nanmean(values: np.ndarray) -> float:
    """Mean of the defined values; NaN (without numpy's warning) when none is defined."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def average_precision_per_class(y_true, y_score) -> np.ndarray:
    """Average precision of every label (NaN for a label without positives)."""
    y_true, y_score = _as_matrices(y_true, y_score)
    return np.array(
        [
            average_precision_score(y_true[:, j], y_score[:, j]) if y_true[:, j].any() else np.nan
            for j in range(y_true.shape[1])
        ]
    )


def mean_average_precision(y_true, y_score) -> float:
    """Mean of the per-label average precisions over the labels that have positives."""
    return _nanmean(average_precision_per_class(y_true, y_score))


def tune_thresholds(y_true, y_score) -> np.ndarray:
    """Per label, the score threshold that maximises F1 on the given set.

    Candidates are the thresholds of :func:`sklearn.metrics.precision_recall_curve`
    (every distinct score); ties go to the lowest threshold. A label without positives
    cannot be tuned and keeps :data:`DEFAULT_THRESHOLD` (0.5).
    """
    y_true, y_score = _as_matrices(y_true, y_score)
    thresholds = np.full(y_true.shape[1], DEFAULT_THRESHOLD)
    for j in range(y_true.shape[1]):
        if not y_true[:, j].any():
            continue
        precision, recall, candidates = precision_recall_curve(y_true[:, j], y_score[:, j])
        # The curve's last point (precision 1, recall 0) has no threshold: drop it.
        precision, recall = precision[:-1], recall[:-1]
        denominator = precision + recall
        f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
        thresholds[j] = candidates[int(np.argmax(f1))]
    return thresholds


def binarize(y_score, thresholds) -> np.ndarray:
    """0/1 decisions: ``score >= threshold`` (one threshold per label, or one for all)."""
    return (np.asarray(y_score) >= np.asarray(thresholds, dtype=np.float64)).astype(np.int8)


def _f1_per_label(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    # zero_division=0: a label with positives but no positive decision has F1 0 (recall 0).
    return np.array(
        [
            f1_score(y_true[:, j], y_pred[:, j], zero_division=0.0) if y_true[:, j].any() else np.nan
            for j in range(y_true.shape[1])
        ]
    )


def _binary_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean([accuracy_score(y_true[:, j], y_pred[:, j]) for j in range(y_true.shape[1])]))


def evaluate(y_true, y_score, label_names: Sequence[str], thresholds=None) -> dict:
    """Every score of one set of predictions, as plain Python numbers.

    ``thresholds`` are the tuned decision thresholds, one per label in label order or
    a mapping label name -> threshold (a record's ``thresholds``); when None they are
    tuned on this very set (an optimistic F1, only right for the tuning set itself).
    """
    y_true, y_score = _as_matrices(y_true, y_score)
    label_names = list(label_names)
    if len(label_names) != y_true.shape[1]:
        raise ValueError(f"{len(label_names)} label names given for {y_true.shape[1]} label columns")
    if thresholds is None:
        thresholds = tune_thresholds(y_true, y_score)
    elif isinstance(thresholds, Mapping):
        missing = [name for name in label_names if name not in thresholds]
        if missing:
            raise ValueError(f"no threshold for label(s) {', '.join(missing)}")
        thresholds = [thresholds[name] for name in label_names]
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (y_true.shape[1],):
        raise ValueError(f"expected {y_true.shape[1]} thresholds, got shape {thresholds.shape}")

    ap = average_precision_per_class(y_true, y_score)
    at_half = binarize(y_score, DEFAULT_THRESHOLD)
    tuned = binarize(y_score, thresholds)
    f1_half = _f1_per_label(y_true, at_half)
    f1_tuned = _f1_per_label(y_true, tuned)
    return {
        "ap": {name: float(v) for name, v in zip(label_names, ap)},
        "map": _nanmean(ap),
        "f1_at_0.5": {name: float(v) for name, v in zip(label_names, f1_half)},
        "f1_macro_at_0.5": _nanmean(f1_half),
        "f1_tuned": {name: float(v) for name, v in zip(label_names, f1_tuned)},
        "f1_macro_tuned": _nanmean(f1_tuned),
        "accuracy_at_0.5": _binary_accuracy(y_true, at_half),
        "accuracy_tuned": _binary_accuracy(y_true, tuned),
        "n_images": int(y_true.shape[0]),
        "positives": {name: int(v) for name, v in zip(label_names, y_true.sum(axis=0))},
    }


# ----------------------------------------------------------------------------- bootstrap


@functools.lru_cache(maxsize=8)
def bootstrap_counts(n_images: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(n_images, resamples) counts: how often each image is drawn in each resample (with replacement).

    Read-only and cached: every run scored on the same number of images reuses them.
    One row per image, so that gathering images in score order copies whole rows.
    """
    if n_images < 1 or resamples < 1:
        raise ValueError(f"a bootstrap needs images and resamples, got {n_images} images and {resamples} resamples")
    draws = np.random.default_rng(seed).integers(0, n_images, (resamples, n_images))
    draws += np.arange(resamples)[:, None] * n_images
    counts = np.bincount(draws.ravel(), minlength=resamples * n_images).reshape(resamples, n_images)
    counts = np.ascontiguousarray(counts.T, dtype=np.int32)
    counts.flags.writeable = False
    return counts


def _cumulative_rows(rows: np.ndarray) -> np.ndarray:
    """``np.cumsum(rows, axis=0)`` (a new array), adding whole rows one after another.

    numpy accumulates along axis 0 with a strided inner loop; adding contiguous rows is
    about ten times faster for the (images, resamples) matrices of the bootstrap.
    """
    total = rows.copy()
    for i in range(1, len(total)):
        np.add(total[i], total[i - 1], out=total[i])
    return total


def _weighted_average_precision(y_true: np.ndarray, y_score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(resamples, labels) average precision of every resample, NaN where a label has no positive.

    A resample repeats image i ``counts[:, i]`` times, so its AP is scikit-learn's
    ``average_precision_score`` with those counts as sample weights: over the
    distinct scores in decreasing order, the sum of recall steps times precision.
    """
    counts = np.asarray(counts, dtype=np.int32)  # exact sums up to 2**31 draws
    result = np.empty((counts.shape[1], y_true.shape[1]))
    for j in range(y_true.shape[1]):
        order = np.argsort(-y_score[:, j], kind="stable")
        ranked_score, positive = y_score[order, j], y_true[order, j].astype(bool)
        # One point per distinct score: the last image of each run of equal scores.
        ends = np.flatnonzero(np.r_[ranked_score[1:] != ranked_score[:-1], True])
        predicted = _cumulative_rows(counts[order])[ends]
        positives_so_far = np.cumsum(positive)[ends]
        positive_cumsum = _cumulative_rows(counts[order[positive]])
        true_positives = np.zeros_like(predicted)
        seen = positives_so_far > 0
        true_positives[seen] = positive_cumsum[positives_so_far[seen] - 1]
        precision = np.divide(true_positives, predicted, out=np.zeros(predicted.shape), where=predicted > 0)
        recall_step = np.diff(true_positives, axis=0, prepend=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            result[:, j] = (recall_step * precision).sum(axis=0) / true_positives[-1]
    return result


def _bootstrap_maps(y_true: np.ndarray, y_score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """mAP of every resample (mean over the labels with positives in that resample)."""
    ap = _weighted_average_precision(y_true, y_score, counts)
    defined = ~np.isnan(ap)
    with np.errstate(invalid="ignore"):
        return np.where(defined.any(axis=1), np.nansum(ap, axis=1) / defined.sum(axis=1), np.nan)


def _interval(values: np.ndarray, confidence: float) -> list[float]:
    values = values[~np.isnan(values)]
    if not values.size:
        return [float("nan"), float("nan")]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_map_interval(
    y_true, y_score, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE
) -> list[float]:
    """``[low, high]``: the percentile bootstrap interval of the mAP, resampling the images."""
    y_true, y_score = _as_matrices(y_true, y_score)
    return _interval(_bootstrap_maps(y_true, y_score, bootstrap_counts(len(y_true), resamples, seed)), confidence)


def compare(
    scores_a,
    scores_b,
    labels,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> dict:
    """Paired bootstrap of the mAP difference of two sets of scores of the same images.

    Each resample draws the same images for both, so what the images have in common
    (an easy or a hard draw) cancels out. Returns ``map_a``, ``map_b``,
    ``difference`` (a - b, on the images as given), ``interval`` (its percentile
    confidence interval), ``confidence``, ``resamples`` and ``measurable``: True
    when the interval excludes 0.
    """
    labels, scores_a = _as_matrices(labels, scores_a)
    _, scores_b = _as_matrices(labels, scores_b)
    counts = bootstrap_counts(len(labels), resamples, seed)
    differences = _bootstrap_maps(labels, scores_a, counts) - _bootstrap_maps(labels, scores_b, counts)
    map_a, map_b = mean_average_precision(labels, scores_a), mean_average_precision(labels, scores_b)
    low, high = _interval(differences, confidence)
    return {
        "map_a": map_a,
        "map_b": map_b,
        "difference": map_a - map_b,
        "interval": [low, high],
        "confidence": confidence,
        "resamples": resamples,
        "measurable": bool(low > 0 or high < 0),
    }


# ----------------------------------------------------------------------------- runs


def _split_scores(label_names, y_true, y_score, black, thresholds, split, bootstrap: bool) -> dict:
    black = np.asarray(black, dtype=bool)
    if black.shape != (len(y_true),):
        raise ValueError(f"{split}_black must be a boolean mask of length {len(y_true)}, got shape {black.shape}")
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    scores = {}
    for subset, rows in (("all", slice(None)), ("non_black", ~black)):
        scores[subset] = evaluate(y_true[rows], y_score[rows], label_names, thresholds)
        if bootstrap:
            scores[subset]["map_ci95"] = bootstrap_map_interval(y_true[rows], y_score[rows])
    return scores


def _scores_of(label_names, val_true, val_score, holdout_true, holdout_score, val_black, holdout_black, bootstrap):
    thresholds = tune_thresholds(val_true, val_score)
    metrics = {
        "val": _split_scores(label_names, val_true, val_score, val_black, thresholds, "val", bootstrap),
        "holdout": _split_scores(label_names, holdout_true, holdout_score, holdout_black, thresholds, "holdout", bootstrap),
    }
    return thresholds, metrics


def evaluate_run(
    label_names: Sequence[str],
    *,
    val_true,
    val_score,
    holdout_true,
    holdout_score,
    val_black,
    holdout_black,
    oracle_val=None,
    oracle_holdout=None,
) -> dict:
    """The ``thresholds``, ``metrics`` and ``oracle`` parts of a registry record.

    Thresholds are tuned on the whole validation set (black images included, as the
    contest scores them) and applied unchanged to the holdout, which is never used for
    tuning. ``non_black`` repeats every score without the totally black images, whose
    labels are random. Each mAP of the run (not of the oracle) comes with ``map_ci95``,
    its 95 % bootstrap interval (:func:`bootstrap_map_interval`). The oracle (Bayes-optimal probabilities of the embedded dataset)
    is scored the same way, with its own thresholds tuned on validation.
    """
    label_names = list(label_names)
    if (oracle_val is None) != (oracle_holdout is None):
        raise ValueError("give both oracle_val and oracle_holdout, or neither")
    thresholds, metrics = _scores_of(
        label_names, val_true, val_score, holdout_true, holdout_score, val_black, holdout_black, bootstrap=True
    )
    oracle = None
    if oracle_val is not None:
        _, oracle = _scores_of(
            label_names, val_true, oracle_val, holdout_true, oracle_holdout, val_black, holdout_black, bootstrap=False
        )
    return {
        "thresholds": {name: float(t) for name, t in zip(label_names, thresholds)},
        "metrics": metrics,
        "oracle": oracle,
    }


def positive_class_probabilities(proba, classes=None) -> np.ndarray:
    """(N, L) probabilities of the positive class from any ``predict_proba`` output.

    Accepts an (N, L) array (one probability per label) or scikit-learn's multi-output
    format: a list with one (N, n_classes) array per label. ``classes`` (the estimator's
    ``classes_``, one array per label) locates the column of class 1; without it the
    last column is taken. A label whose training data had a single class gets a
    one-column array: its positive probability is 1 if that class was 1, else 0.
    """
    if not isinstance(proba, list):
        proba = np.asarray(proba, dtype=np.float64)
        if proba.ndim != 2:
            raise ValueError(f"predict_proba output must be (N, labels) or a list per label; got shape {proba.shape}")
        return proba
    columns = []
    for j, label_proba in enumerate(proba):
        label_proba = np.asarray(label_proba, dtype=np.float64)
        label_classes = list(classes[j]) if classes is not None else None
        if label_classes is None:
            if label_proba.shape[1] != 2:
                raise ValueError(
                    f"label {j}: {label_proba.shape[1]} probability columns and no classes_ to find class 1"
                )
            columns.append(label_proba[:, 1])
        elif 1 in label_classes:
            columns.append(label_proba[:, label_classes.index(1)])
        else:
            columns.append(np.zeros(len(label_proba)))
    return np.column_stack(columns)


def multilabel_average_precision_scorer(estimator, X, y) -> float:
    """Mean average precision of a fitted estimator on (X, y), for ``GridSearchCV(scoring=...)``.

    Works with any estimator whose ``predict_proba`` returns (N, L) probabilities or
    scikit-learn's list of per-label (N, 2) arrays (k-NN, ``MultiOutputClassifier``).
    """
    proba = estimator.predict_proba(X)
    return mean_average_precision(y, positive_class_probabilities(proba, getattr(estimator, "classes_", None)))

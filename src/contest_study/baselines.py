"""The classical references of the study: k-NN and logistic regression on the pixels.

Both are scikit-learn estimators fed the flattened images (64 * 64 * channels values
in [0, 1]) and store a complete registry record, like every neural network, so the
comparison tables treat them alike:

- ``knn``: PCA to ``pca_components`` dimensions first (a k-NN search over 4,096 raw
  pixels is slow and distances in that space are dominated by noise), then
  ``KNeighborsClassifier``, which handles the labels natively (multi-output).
- ``logistic_regression``: one ``LogisticRegression`` per label
  (``MultiOutputClassifier``) on the raw pixels (``pca_components`` None).

``params`` counts the numbers the fitted model keeps: the coefficients and intercepts
for logistic regression; for k-NN the stored training vectors (images x PCA
dimensions) plus the PCA's components and mean. A classical model has no epochs
(``epochs_run`` is None), no training curves and no weights file.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.multioutput import MultiOutputClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from contest_study.metrics import evaluate_run, positive_class_probabilities
from contest_study.registry import Registry, RunRecord, save_predictions

FAMILY = "classical"
BLACK_IMAGE_OPTIONS = ("removed", "kept")
DEFAULT_HYPERPARAMS: dict[str, dict] = {
    "knn": {"k": 25, "weights": "distance", "pca_components": 50},
    "logistic_regression": {"C": 1.0, "max_iter": 300, "pca_components": None},
}


def _describe(name: str, hp: dict) -> str:
    reduced = f"{hp['pca_components']} PCA components of the pixels" if hp["pca_components"] else "the raw pixels"
    if name == "knn":
        return f"k-NN (k={hp['k']}, {hp['weights']} weights) on {reduced}"
    return f"Logistic regression (C={hp['C']:g}), one per label, on {reduced}"


def _build(name: str, hp: dict, seed: int) -> Pipeline:
    if name == "knn":
        classifier = KNeighborsClassifier(n_neighbors=hp["k"], weights=hp["weights"])
    else:
        classifier = MultiOutputClassifier(LogisticRegression(C=hp["C"], max_iter=hp["max_iter"]))
    steps = [("pca", PCA(n_components=hp["pca_components"], random_state=seed))] if hp["pca_components"] else []
    return Pipeline([*steps, ("classifier", classifier)])


def _count_params(pipeline: Pipeline, n_train: int) -> int:
    count = 0
    if "pca" in pipeline.named_steps:
        pca = pipeline.named_steps["pca"]
        count += pca.components_.size + pca.mean_.size
    classifier = pipeline.named_steps["classifier"]
    if isinstance(classifier, KNeighborsClassifier):
        count += n_train * classifier.n_features_in_
    else:
        count += sum(e.coef_.size + e.intercept_.size for e in classifier.estimators_)
    return int(count)


def _flatten(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1)


def _predict(pipeline: Pipeline, images: np.ndarray) -> np.ndarray:
    return positive_class_probabilities(pipeline.predict_proba(_flatten(images)), pipeline.classes_)


def _checked_oracle(oracle, data) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The oracle probabilities of val and holdout, checked against the splits."""
    if oracle is None:
        return None, None
    if not isinstance(oracle, Mapping) or not {"val", "holdout"} <= set(oracle):
        raise ValueError("oracle must be None or a mapping with 'val' and 'holdout' probability arrays")
    arrays = []
    for split_name in ("val", "holdout"):
        array = np.asarray(oracle[split_name], dtype=np.float64)
        expected = getattr(data, split_name).labels.shape
        if array.shape != expected:
            raise ValueError(f"oracle[{split_name!r}] has shape {array.shape}, the {split_name} labels {expected}")
        arrays.append(array)
    return arrays[0], arrays[1]


def run_classical_baseline(
    registry: Registry,
    data,
    *,
    name: str,
    seed: int,
    black_images: str = "removed",
    oracle: Mapping[str, np.ndarray] | None = None,
    force: bool = False,
    hyperparams: dict | None = None,
) -> RunRecord:
    """Fit (or reuse) one classical baseline and return its registry record.

    ``data`` is a ``contest_study.data.ContestData``. ``black_images="removed"`` trains
    without the totally black images but one (their labels are random); ``"kept"``
    trains on all of them. Validation and holdout are always scored whole and without
    the black images. ``oracle`` holds the Bayes-optimal probabilities of the embedded
    dataset for the val and holdout splits (``{"val": ..., "holdout": ...}``, aligned
    with their ids, from ``synthetic.load_oracle``), or None. ``hyperparams`` overrides
    entries of :data:`DEFAULT_HYPERPARAMS`; all of them, with ``black_images``, are
    part of the registry key.
    """
    if name not in DEFAULT_HYPERPARAMS:
        raise ValueError(f"unknown classical baseline {name!r}; choose one of {', '.join(DEFAULT_HYPERPARAMS)}")
    if black_images not in BLACK_IMAGE_OPTIONS:
        raise ValueError(f"black_images must be one of {', '.join(BLACK_IMAGE_OPTIONS)}, got {black_images!r}")
    unknown = set(hyperparams or {}) - set(DEFAULT_HYPERPARAMS[name])
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {', '.join(sorted(unknown))} for {name}; "
            f"known: {', '.join(DEFAULT_HYPERPARAMS[name])}"
        )
    hp = {**DEFAULT_HYPERPARAMS[name], **(hyperparams or {})}
    oracle_val, oracle_holdout = _checked_oracle(oracle, data)

    def run(workdir):
        # Imported here: the loader pulls in image decoding the registry and metrics do not need.
        from contest_study.data import black_mask, drop_black_images

        train = drop_black_images(data.train, keep=1) if black_images == "removed" else data.train
        started = time.perf_counter()
        pipeline = _build(name, hp, seed).fit(_flatten(train.images), train.labels)
        val_score = _predict(pipeline, data.val.images)
        holdout_score = _predict(pipeline, data.holdout.images)
        wall_time_s = time.perf_counter() - started

        predictions = {
            "val_ids": data.val.ids,
            "val_true": data.val.labels,
            "val_score": val_score,
            "holdout_ids": data.holdout.ids,
            "holdout_true": data.holdout.labels,
            "holdout_score": holdout_score,
        }
        if data.test is not None and len(data.test):
            predictions.update(test_ids=data.test.ids, test_score=_predict(pipeline, data.test.images))
        save_predictions(workdir, **predictions)

        scores = evaluate_run(
            data.label_names,
            val_true=data.val.labels,
            val_score=val_score,
            holdout_true=data.holdout.labels,
            holdout_score=holdout_score,
            val_black=black_mask(data.val.images),
            holdout_black=black_mask(data.holdout.images),
            oracle_val=oracle_val,
            oracle_holdout=oracle_holdout,
        )
        return {
            "description": _describe(name, hp),
            "label_names": list(data.label_names),
            "black_images": black_images,
            "n_train_images": len(train),
            "params": _count_params(pipeline, len(train)),
            "epochs_run": None,
            "wall_time_s": wall_time_s,
            "history": {},
            **scores,
        }

    return registry.fetch_or_run(
        model=name,
        family=FAMILY,
        hyperparams={**hp, "black_images": black_images},
        data_fingerprint=data.fingerprint,
        seed=seed,
        run_fn=run,
        force=force,
    )

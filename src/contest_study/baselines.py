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

from contest_study.config import Profile
from contest_study.evaluation import prepare_splits, resolve_profile, score_and_save, split_hyperparams
from contest_study.metrics import positive_class_probabilities
from contest_study.registry import Registry, RunRecord

FAMILY = "classical"
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
    profile: Profile | str | None = None,
) -> RunRecord:
    """Fit (or reuse) one classical baseline and return its registry record.

    ``data`` is a ``contest_study.data.ContestData``. ``black_images="removed"`` trains
    without the totally black images but one (their labels are random); ``"kept"``
    trains on all of them. Validation and holdout are always scored whole and without
    the black images. ``oracle`` holds the Bayes-optimal probabilities of the embedded
    dataset for the val and holdout splits (``{"val": ..., "holdout": ...}``, aligned
    with their ids, from ``synthetic.load_oracle``), or None. ``hyperparams`` overrides
    entries of :data:`DEFAULT_HYPERPARAMS`; all of them, with ``black_images`` and the
    ``profile``'s image caps (see ``contest_study.evaluation``), are part of the registry key.
    """
    if name not in DEFAULT_HYPERPARAMS:
        raise ValueError(f"unknown classical baseline {name!r}; choose one of {', '.join(DEFAULT_HYPERPARAMS)}")
    unknown = set(hyperparams or {}) - set(DEFAULT_HYPERPARAMS[name])
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {', '.join(sorted(unknown))} for {name}; "
            f"known: {', '.join(DEFAULT_HYPERPARAMS[name])}"
        )
    hp = {**DEFAULT_HYPERPARAMS[name], **(hyperparams or {})}
    key_hyperparams = {**hp, **split_hyperparams(black_images, profile)}
    splits = prepare_splits(data, black_images=black_images, profile=profile, seed=seed, oracle=oracle)

    def run(workdir):
        train = splits.train
        started = time.perf_counter()
        pipeline = _build(name, hp, seed).fit(_flatten(train.images), train.labels)
        val_score = _predict(pipeline, splits.val.images)
        holdout_score = _predict(pipeline, splits.holdout.images)
        wall_time_s = time.perf_counter() - started
        test_score = _predict(pipeline, splits.test.images) if splits.test is not None else None
        scores = score_and_save(
            workdir, splits, val_score=val_score, holdout_score=holdout_score, test_score=test_score
        )
        return {
            "description": _describe(name, hp),
            "label_names": list(data.label_names),
            "black_images": black_images,
            "profile": resolve_profile(profile).name if profile else None,
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
        hyperparams=key_hyperparams,
        data_fingerprint=data.fingerprint,
        seed=seed,
        run_fn=run,
        force=force,
    )

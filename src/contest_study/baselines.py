"""Classical references on the pixels: a scikit-learn estimator fitted and stored like a network.

The notebook builds the estimator (a ``Pipeline`` of PCA and k-NN, or a logistic regression);
:func:`run_estimator` fits it on the flattened training images, scores every split and keeps a
complete registry record, so the comparison tables treat it like any network. Its key holds
the estimator's parameters (``get_params``), the data and the seed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
from sklearn.base import BaseEstimator, clone

from contest_study.config import Profile
from contest_study.evaluation import prepare_splits, resolve_profile, score_and_save, split_hyperparams
from contest_study.metrics import positive_class_probabilities
from contest_study.registry import Registry, RunRecord

FAMILY = "classical"


def _flatten(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1)


def _predict(estimator: BaseEstimator, images: np.ndarray) -> np.ndarray:
    return positive_class_probabilities(estimator.predict_proba(_flatten(images)), estimator.classes_)


def estimator_hyperparams(estimator: BaseEstimator) -> dict:
    """The estimator's parameters as registry-key values (nested estimators by their repr)."""
    return {
        name: value if isinstance(value, (bool, int, float, str, type(None))) else repr(value)
        for name, value in sorted(estimator.get_params(deep=True).items())
    }


def stored_numbers(estimator: BaseEstimator, n_train: int) -> int:
    """How many numbers the fitted estimator keeps: coefficients, PCA components, stored neighbours."""
    count = 0
    for step in getattr(estimator, "named_steps", {"": estimator}).values():
        for attribute in ("components_", "mean_", "coef_", "intercept_"):
            count += np.size(getattr(step, attribute, ()))
        for inner in getattr(step, "estimators_", ()):
            count += np.size(getattr(inner, "coef_", ())) + np.size(getattr(inner, "intercept_", ()))
        if hasattr(step, "n_samples_fit_"):
            count += step.n_samples_fit_ * step.n_features_in_
    return int(count)


def run_estimator(
    registry: Registry,
    data,
    *,
    estimator: BaseEstimator,
    name: str,
    description: str,
    seed: int,
    black_images: str = "removed",
    oracle: Mapping[str, np.ndarray] | None = None,
    force: bool = False,
    profile: Profile | str | None = None,
) -> RunRecord:
    """Fit (or reuse) ``estimator`` on the training pixels and return its registry record.

    ``estimator`` must predict probabilities for the labels (multi-output ``predict_proba``,
    as ``KNeighborsClassifier`` or ``MultiOutputClassifier`` do). ``black_images`` and the
    profile's image caps select the training images as for the networks
    (``contest_study.evaluation``); a classical model has no epochs and no curves.
    """
    if not hasattr(estimator, "predict_proba"):
        raise TypeError(f"{name}: the estimator {type(estimator).__name__} has no predict_proba")
    key_hyperparams = {**estimator_hyperparams(estimator), **split_hyperparams(black_images, profile)}
    splits = prepare_splits(data, black_images=black_images, profile=profile, seed=seed, oracle=oracle)

    def run(workdir):
        train = splits.train
        started = time.perf_counter()
        fitted = clone(estimator).fit(_flatten(train.images), train.labels)
        val_score = _predict(fitted, splits.val.images)
        holdout_score = _predict(fitted, splits.holdout.images)
        wall_time_s = time.perf_counter() - started
        test_score = _predict(fitted, splits.test.images) if splits.test is not None else None
        scores = score_and_save(
            workdir, splits, val_score=val_score, holdout_score=holdout_score, test_score=test_score
        )
        return {
            "description": description,
            "label_names": list(data.label_names),
            "black_images": black_images,
            "profile": resolve_profile(profile).name if profile else None,
            "n_train_images": len(train),
            "params": stored_numbers(fitted, len(train)),
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

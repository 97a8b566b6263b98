"""scikit-learn's ``GridSearchCV`` over a Keras network (notebook 05: dropout x kernel initializer).

Keras' own scikit-learn wrapper makes the network an estimator; the search cross-validates each
setting on the training images, scores folds by mean average precision over the labels, refits
the best setting on all of them and is stored in the registry as one run.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from contest_study.data import subsample
from contest_study.evaluation import prepare_splits, score_and_save, split_hyperparams
from contest_study.metrics import multilabel_average_precision_scorer
from contest_study.registry import RunRecord
from contest_study.search import TRIAL_FAMILY, quiet_tensorflow


class MultiLabelKerasEstimator(keras.wrappers.SKLearnRegressor):
    """Keras' scikit-learn wrapper for a network with one sigmoid output per label.

    ``SKLearnClassifier`` one-hot encodes a single target and refuses a multi-label one; the
    regressor wrapper keeps the target but validates it as one column. So ``fit`` is the
    wrapper's with ``multi_output=True``; ``predict_proba`` returns the sigmoid outputs, which
    scikit-learn's scorers need, and ``predict`` the 0/1 decisions at 0.5.
    """

    def fit(self, X, y, **kwargs):
        from sklearn.utils.validation import validate_data

        X, y = validate_data(self, X, y, multi_output=True, dtype="float32")
        if y.ndim != 2:
            raise ValueError(f"y must be an (images, labels) 0/1 matrix, got shape {y.shape}")
        model = self._get_model(X, y)
        self.history_ = model.fit(X, y, **{**(self.fit_kwargs or {}), **kwargs})
        self.model_ = model
        return self

    def predict_proba(self, X) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted, validate_data

        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype="float32")
        return np.asarray(self.model_.predict(X, verbose=0), dtype=np.float64)

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X) >= 0.5).astype(np.int8)


def compiled_network(X, y, *, build, image_shape, dropout: float, kernel_initializer: str, learning_rate: float,
                     seed: int) -> keras.Model:
    """``build(image_shape, n_labels, dropout=, kernel_initializer=)`` fed flat pixel rows, compiled with Adam.

    scikit-learn passes images as flat rows; a Reshape in front gives the network its images.
    Seeded: every fit of one setting starts from the same weights.
    """
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(seed)
    keras.initializers.get(kernel_initializer)  # a clear error for an unknown name
    network = build(tuple(image_shape), y.shape[1], dropout=dropout, kernel_initializer=kernel_initializer)
    pixels = keras.Input(shape=(int(np.prod(image_shape)),), name="pixels")
    model = keras.Model(pixels, network(keras.layers.Reshape(tuple(image_shape))(pixels)), name=network.name)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy")
    return model


def _json_number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _architectures(build, image_shape, n_labels, dropouts, initializers) -> str:
    """A short hash of the Keras configs of every candidate network (part of the registry key)."""
    digest = hashlib.sha256()
    for dropout in dropouts:
        for initializer in initializers:
            keras.backend.clear_session(free_memory=False)
            model = build(tuple(image_shape), n_labels, dropout=dropout, kernel_initializer=initializer)
            digest.update(model.to_json().encode())
    keras.backend.clear_session(free_memory=False)
    return digest.hexdigest()[:12]


def sklearn_search(study, build, *, dropouts, initializers, folds: int, epochs: int, train_fraction: float = 1.0,
                   batch_size: int = 64, learning_rate: float = 1e-3, force: bool = False) -> RunRecord:
    """``GridSearchCV`` over dropout x kernel initializer of the network ``build`` makes; a registry run.

    Cross-validated (``KFold``, shuffled, seeded; multi-label targets rule out stratified
    folds) on a seeded ``train_fraction`` of the training images without the black ones, scored
    by mean average precision; the best setting is refit on all of them and scored on
    validation and hold-out like every run. The record adds ``cv_results`` and ``best_params``.
    """
    from sklearn.model_selection import GridSearchCV, KFold

    seed, profile = study.context.seed, study.context.profile
    splits = prepare_splits(study.data, black_images="removed", profile=profile, seed=seed, oracle=study.oracle)
    train = subsample(splits.train, max(folds, round(train_fraction * len(splits.train))), seed)
    image_shape = tuple(train.images.shape[1:])
    n_labels = len(splits.label_names)
    name = build(image_shape, n_labels, dropout=dropouts[0], kernel_initializer=initializers[0]).name

    def flat(images) -> np.ndarray:
        return images.reshape(len(images), -1)

    def run(workdir: Path) -> dict:
        started = time.perf_counter()
        estimator = MultiLabelKerasEstimator(
            model=compiled_network,
            model_kwargs={"build": build, "image_shape": image_shape, "dropout": dropouts[0],
                          "kernel_initializer": initializers[0], "learning_rate": learning_rate, "seed": seed},
        )
        # The wrapper's parameter is the whole model_kwargs dict, so the grid lists whole dicts.
        candidates = [{**estimator.model_kwargs, "dropout": dropout, "kernel_initializer": initializer}
                      for dropout in dropouts for initializer in initializers]
        search = GridSearchCV(estimator, {"model_kwargs": candidates}, scoring=multilabel_average_precision_scorer,
                              cv=KFold(folds, shuffle=True, random_state=seed), refit=True, error_score="raise")
        with quiet_tensorflow():
            search.fit(flat(train.images), train.labels.astype(np.float32), epochs=epochs, batch_size=batch_size,
                       verbose=0)
        best = search.best_estimator_
        test_score = best.predict_proba(flat(splits.test.images)) if splits.test is not None else None
        scores = score_and_save(workdir, splits, val_score=best.predict_proba(flat(splits.val.images)),
                                holdout_score=best.predict_proba(flat(splits.holdout.images)), test_score=test_score)
        best.model_.save_weights(str(workdir / "best.weights.h5"))
        results = search.cv_results_
        cv_rows = [
            {
                "dropout": kwargs["dropout"],
                "kernel_initializer": kwargs["kernel_initializer"],
                "mean CV mAP": _json_number(results["mean_test_score"][index]),
                "std CV mAP": _json_number(results["std_test_score"][index]),
                "mean fit time (s)": float(results["mean_fit_time"][index]),
            }
            for index, kwargs in enumerate(results["param_model_kwargs"])
        ]
        return {
            "description": f"{name} tuned by GridSearchCV over dropout and kernel initializer",
            "profile": profile.name,
            "label_names": splits.label_names,
            "black_images": "removed",
            "n_train_images": len(train),
            "params": best.model_.count_params(),
            "epochs_run": epochs,
            "wall_time_s": time.perf_counter() - started,
            "history": {key: [float(v) for v in values] for key, values in best.history_.history.items()},
            "best_params": {"dropout": search.best_params_["model_kwargs"]["dropout"],
                            "kernel_initializer": search.best_params_["model_kwargs"]["kernel_initializer"]},
            "cv_results": cv_rows,
            **scores,
        }

    hyperparams = {
        "search": "GridSearchCV",
        "dropout": list(dropouts),
        "kernel_initializer": list(initializers),
        "cv": folds,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "optimizer": "adam",
        "loss": "binary_crossentropy",
        "train_fraction": train_fraction,
        "architecture": _architectures(build, image_shape, n_labels, dropouts, initializers),
        **split_hyperparams("removed", profile),
    }
    return study.registry.fetch_or_run(model=name, family=TRIAL_FAMILY, hyperparams=hyperparams,
                                       data_fingerprint=study.data.fingerprint, seed=seed, run_fn=run, force=force)


def cv_results_table(record: RunRecord) -> pd.DataFrame:
    """The cross-validation results of :func:`sklearn_search`, best mean first."""
    table = pd.DataFrame(record.data["cv_results"])
    table[["mean CV mAP", "std CV mAP"]] = table[["mean CV mAP", "std CV mAP"]].astype(float)
    return table.sort_values("mean CV mAP", ascending=False, kind="stable").reset_index(drop=True)

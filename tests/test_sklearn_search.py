"""GridSearchCV over a Keras network through Keras' scikit-learn wrapper, scored by mean average precision."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sklearn.model_selection import GridSearchCV, KFold

from contest_study.metrics import multilabel_average_precision_scorer
from contest_study.sklearn_search import MultiLabelKerasEstimator, compiled_network, cv_results_table, sklearn_search
from contest_study.study import open_study


def build_small_dense(input_shape, n_labels, *, dropout, kernel_initializer):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(8, activation="relu", kernel_initializer=kernel_initializer)(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(n_labels, activation="sigmoid", kernel_initializer=kernel_initializer, name="labels")(x)
    return keras.Model(inputs, outputs, name="small_dense")


def _estimator(initializer="glorot_uniform"):
    return MultiLabelKerasEstimator(
        model=compiled_network,
        model_kwargs={"build": build_small_dense, "image_shape": (8, 8, 1), "dropout": 0.0,
                      "kernel_initializer": initializer, "learning_rate": 1e-3, "seed": 0},
    )


def test_grid_search_cv_scores_the_keras_wrapper_by_mean_average_precision():
    rng = np.random.default_rng(0)
    X = rng.random((48, 64), dtype=np.float32)
    y = (rng.random((48, 3)) < 0.4).astype(np.float32)
    y[:3] = 1  # every label has positives in every fold
    estimator = _estimator()
    candidates = [{**estimator.model_kwargs, "kernel_initializer": name} for name in ("zeros", "he_normal")]
    search = GridSearchCV(estimator, {"model_kwargs": candidates}, scoring=multilabel_average_precision_scorer,
                          cv=KFold(2, shuffle=True, random_state=0), error_score="raise")
    search.fit(X, y, epochs=1, batch_size=16, verbose=0)

    assert len(search.cv_results_["mean_test_score"]) == 2
    fitted = search.best_estimator_
    proba = fitted.predict_proba(X)
    assert proba.shape == (48, 3) and ((proba >= 0) & (proba <= 1)).all()
    assert multilabel_average_precision_scorer(fitted, X, y) == pytest.approx(
        average_precision_score(y, proba, average="macro"))
    assert set(np.unique(fitted.predict(X))) <= {0, 1}

    # All-zero kernels: every image gets the same scores, so AP is each label's positive rate.
    zeros = _estimator("zeros").fit(X, y, epochs=1, batch_size=16, verbose=0)
    constant = zeros.predict_proba(X)
    assert np.allclose(constant, constant[0], atol=1e-6)
    assert multilabel_average_precision_scorer(zeros, X, y) == pytest.approx(y.mean(axis=0).mean())


def test_the_wrapper_rejects_a_single_label_target_and_an_unknown_initializer():
    with pytest.raises(ValueError, match="matrix"):
        _estimator().fit(np.zeros((6, 64), np.float32), np.zeros(6, np.float32), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="initializer|Could not interpret"):
        _estimator("no_such_init").fit(np.zeros((6, 64), np.float32), np.zeros((6, 3), np.float32), epochs=1,
                                       verbose=0)


def test_the_search_is_one_registry_run_found_again_without_training(make_contest_folder, tmp_path):
    study = open_study(profile="smoke", data_dir=make_contest_folder(n_train=40, n_val=16, n_test=4),
                       workdir=tmp_path / "work", seed=3)
    options = dict(dropouts=(0.0,), initializers=("zeros", "he_normal"), folds=2, epochs=1)
    record = sklearn_search(study, build_small_dense, **options)
    table = cv_results_table(record)
    assert list(table["kernel_initializer"].sort_values()) == ["he_normal", "zeros"]
    assert record.data["best_params"]["kernel_initializer"] in {"zeros", "he_normal"}
    assert record.metrics["val"]["all"]["map"] is not None
    again = sklearn_search(study, build_small_dense, **options)
    assert again.key == record.key and again.data["created"] == record.data["created"]

"""contest_study.baselines on tiny random data: complete records, reuse, options."""

import numpy as np
import pytest

from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.multioutput import MultiOutputClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC

from contest_study.baselines import estimator_hyperparams, run_estimator
from contest_study.config import Profile
from contest_study.data import ContestData, Split
from contest_study.registry import FORCE_ENV, Registry

LABELS = ["label_1", "label_2", "label_3"]
ESTIMATORS = {
    "knn": lambda k=3: make_pipeline(PCA(n_components=5, random_state=0), KNeighborsClassifier(n_neighbors=k)),
    "logistic_regression": lambda: MultiOutputClassifier(LogisticRegression(max_iter=50)),
}


def fit(registry, data, name="knn", estimator=None, **options):
    estimator = estimator if estimator is not None else ESTIMATORS[name]()
    return run_estimator(registry, data, estimator=estimator, name=name, description=f"{name} on the pixels",
                         seed=options.pop("seed", 0), **options)


def make_split(name, n, n_black, rng, labelled=True):
    labels = (rng.random((n, 3)) < 0.4).astype(np.int8)
    images = rng.random((n, 16, 16, 1)).astype(np.float32) * 0.5
    # Each label brightens one band of rows, so the baselines have something to learn.
    for j in range(3):
        images[labels[:, j] == 1, 5 * j : 5 * j + 4] += 0.4
    images[:n_black] = 0.0
    ids = np.array([f"{name}_{i:04d}.png" for i in range(n)])
    return Split(name=name, ids=ids, images=images, labels=labels if labelled else None)


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    return ContestData(
        data_dir=tmp_path / "data",
        label_names=LABELS,
        train=make_split("train", 90, 12, rng),
        val=make_split("val", 40, 6, rng),
        holdout=make_split("holdout", 30, 4, rng),
        test=make_split("test", 10, 2, rng, labelled=False),
        fingerprint="tiny-random",
        notes=[],
    )


@pytest.fixture(autouse=True)
def no_forced_retraining(monkeypatch):
    monkeypatch.delenv(FORCE_ENV, raising=False)


@pytest.mark.parametrize("name", ["knn", "logistic_regression"])
def test_record_is_complete(tmp_path, data, name):
    registry = Registry(tmp_path / "runs")
    record = fit(registry, data, name, seed=3)
    assert record.model == name and record.family == "classical"
    assert record.hyperparams == {
        **estimator_hyperparams(ESTIMATORS[name]()),
        "black_images": "removed",
        "max_train_images": None,
        "max_eval_images": None,
        "black_image_scores": "training_black_label_rate",
    }
    assert record.description == f"{name} on the pixels"
    assert record.data["n_train_images"] == 90 - 12 + 1  # the black images but one are dropped
    assert record.data["params"] > 0 and record.data["wall_time_s"] > 0
    assert record.data["epochs_run"] is None
    assert record.history.empty and record.weights_path is None
    assert set(record.thresholds) == set(LABELS)
    for split, n_images, n_black in (("val", 40, 6), ("holdout", 30, 4)):
        assert record.metrics[split]["all"]["n_images"] == n_images
        assert record.metrics[split]["non_black"]["n_images"] == n_images - n_black
        assert 0 <= record.metrics[split]["all"]["map"] <= 1
    assert record.metrics["val"]["all"]["map"] > 0.6  # the bands are easy to see
    assert record.oracle is None

    predictions = record.predictions()
    assert predictions["val_ids"].tolist() == data.val.ids.tolist()
    np.testing.assert_array_equal(predictions["holdout_true"], data.holdout.labels)
    assert predictions["val_score"].shape == (40, 3) and predictions["holdout_score"].shape == (30, 3)
    assert predictions["test_score"].shape == (10, 3)
    assert ((predictions["val_score"] >= 0) & (predictions["val_score"] <= 1)).all()


def test_params_count_what_the_model_keeps(tmp_path, data):
    registry = Registry(tmp_path / "runs")
    knn = fit(registry, data, "knn")
    # 79 stored training vectors of 5 PCA values, plus the 5 x 256 components and the 256-value mean.
    assert knn.data["params"] == 79 * 5 + 5 * 256 + 256
    logistic = fit(registry, data, "logistic_regression")
    assert logistic.data["params"] == 3 * (256 + 1)


def test_a_fitted_estimator_is_reused_and_other_parameters_are_another_run(tmp_path, data, monkeypatch):
    registry = Registry(tmp_path / "runs")
    first = fit(registry, data, "knn")
    fitted = []
    original_fit = KNeighborsClassifier.fit
    monkeypatch.setattr(KNeighborsClassifier, "fit", lambda self, *a: fitted.append(1) or original_fit(self, *a))
    again = fit(registry, data, "knn")
    assert fitted == [] and again.data == first.data
    forced = fit(registry, data, "knn", force=True)
    assert len(fitted) == 1 and forced.key == first.key
    other = fit(registry, data, "knn", estimator=ESTIMATORS["knn"](k=5))
    assert other.key != first.key and len(registry.records()) == 2


def test_black_images_kept_and_oracle(tmp_path, data):
    registry = Registry(tmp_path / "runs")
    oracle = {"val": data.val.labels * 0.8 + 0.1, "holdout": data.holdout.labels * 0.8 + 0.1}
    record = fit(registry, data, "knn", black_images="kept", oracle=oracle)
    assert record.data["n_train_images"] == 90
    assert record.hyperparams["black_images"] == "kept"
    assert record.oracle["val"]["all"]["map"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"estimator": SVC()}, TypeError, "knn: the estimator SVC has no predict_proba"),
        ({"black_images": "some"}, ValueError, "black_images must be one of removed, kept"),
        ({"oracle": {"val": np.zeros((40, 3))}}, ValueError, "'val' and 'holdout'"),
        ({"oracle": {"val": np.zeros((40, 3)), "holdout": np.zeros((3, 3))}}, ValueError, "oracle\\['holdout'\\]"),
    ],
)
def test_bad_options_are_named(tmp_path, data, options, error, message):
    with pytest.raises(error, match=message):
        fit(Registry(tmp_path / "runs"), data, "knn", **options)


def test_profile_caps_subsample_and_enter_the_key(tmp_path, data):
    registry = Registry(tmp_path / "runs")
    capped = Profile(name="capped", max_train_images=20, max_eval_images=15, max_epochs=1)
    full = fit(registry, data, "knn", seed=3)
    small = fit(registry, data, "knn", seed=3, profile=capped)
    assert small.key != full.key
    assert small.data["n_train_images"] == 20 and small.data["profile"] == "capped"
    assert small.metrics["val"]["all"]["n_images"] == 15
    assert small.metrics["holdout"]["all"]["n_images"] == 15

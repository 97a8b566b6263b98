"""contest_study.baselines on tiny random data: complete records, reuse, options."""

import numpy as np
import pytest

from contest_study.config import Profile
from contest_study import baselines
from contest_study.baselines import run_classical_baseline
from contest_study.data import ContestData, Split
from contest_study.registry import FORCE_ENV, Registry

LABELS = ["label_1", "label_2", "label_3"]
FAST = {"knn": {"k": 3, "pca_components": 5}, "logistic_regression": {"max_iter": 50}}


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
    record = run_classical_baseline(registry, data, name=name, seed=3, hyperparams=FAST[name])
    assert record.model == name and record.family == "classical"
    assert record.hyperparams == {
        **baselines.DEFAULT_HYPERPARAMS[name],
        **FAST[name],
        "black_images": "removed",
        "max_train_images": None,
        "max_eval_images": None,
        "black_image_scores": "training_black_label_rate",
    }
    assert record.key == Registry.make_key(name, record.hyperparams, "tiny-random", 3)
    assert record.description
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
    knn = run_classical_baseline(registry, data, name="knn", seed=0, hyperparams=FAST["knn"])
    # 79 stored training vectors of 5 PCA values, plus the 5 x 256 components and the 256-value mean.
    assert knn.data["params"] == 79 * 5 + 5 * 256 + 256
    logistic = run_classical_baseline(
        registry, data, name="logistic_regression", seed=0, hyperparams=FAST["logistic_regression"]
    )
    assert logistic.data["params"] == 3 * (256 + 1)


def test_finished_baseline_is_reused_and_can_be_forced(tmp_path, data, monkeypatch):
    registry = Registry(tmp_path / "runs")
    first = run_classical_baseline(registry, data, name="knn", seed=0, hyperparams=FAST["knn"])
    built = []
    original_build = baselines._build
    monkeypatch.setattr(baselines, "_build", lambda *args: built.append(args) or original_build(*args))
    again = run_classical_baseline(registry, data, name="knn", seed=0, hyperparams=FAST["knn"])
    assert built == [] and again.data == first.data
    forced = run_classical_baseline(registry, data, name="knn", seed=0, hyperparams=FAST["knn"], force=True)
    assert len(built) == 1 and forced.key == first.key
    other = run_classical_baseline(registry, data, name="knn", seed=0, hyperparams={**FAST["knn"], "k": 5})
    assert other.key != first.key and len(registry.records()) == 2


def test_black_images_kept_and_oracle(tmp_path, data):
    registry = Registry(tmp_path / "runs")
    oracle = {"val": data.val.labels * 0.8 + 0.1, "holdout": data.holdout.labels * 0.8 + 0.1}
    record = run_classical_baseline(
        registry, data, name="knn", seed=0, black_images="kept", oracle=oracle, hyperparams=FAST["knn"]
    )
    assert record.data["n_train_images"] == 90
    assert record.hyperparams["black_images"] == "kept"
    assert record.oracle["val"]["all"]["map"] == pytest.approx(1.0)
    assert "oracle val mAP" in registry.table().columns


@pytest.mark.parametrize(
    "options, message",
    [
        ({"name": "svm"}, "unknown classical baseline 'svm'"),
        ({"name": "knn", "black_images": "some"}, "black_images must be one of removed, kept"),
        ({"name": "knn", "hyperparams": {"C": 1.0}}, "unknown hyperparameter.*C for knn"),
        ({"name": "knn", "oracle": {"val": np.zeros((40, 3))}}, "'val' and 'holdout'"),
        ({"name": "knn", "oracle": {"val": np.zeros((40, 3)), "holdout": np.zeros((3, 3))}}, "oracle\\['holdout'\\]"),
    ],
)
def test_bad_options_are_named(tmp_path, data, options, message):
    with pytest.raises(ValueError, match=message):
        run_classical_baseline(Registry(tmp_path / "runs"), data, seed=0, **options)


def test_profile_caps_subsample_and_enter_the_key(tmp_path, data):
    registry = Registry(tmp_path / "runs")
    capped = Profile(name="capped", max_train_images=20, max_eval_images=15, max_epochs=1)
    full = run_classical_baseline(registry, data, name="knn", seed=3, hyperparams=FAST["knn"])
    small = run_classical_baseline(registry, data, name="knn", seed=3, hyperparams=FAST["knn"], profile=capped)
    assert small.key != full.key
    assert small.data["n_train_images"] == 20 and small.data["profile"] == "capped"
    assert small.metrics["val"]["all"]["n_images"] == 15
    assert small.metrics["holdout"]["all"]["n_images"] == 15

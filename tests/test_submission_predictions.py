"""Test-set prediction CSVs: which run, the contest's shape, the threshold rule, bad inputs."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from contest_study.data import load_contest
from contest_study.registry import Registry, save_predictions
from contest_study.submission_predictions import (
    PredictionsError,
    FROM_BEST_RUN,
    FROM_FINAL_MODEL,
    best_run_with_test_scores,
    contest_id_column,
    export_test_predictions,
    runs_of_this_study,
    stale_outputs,
    submission_run,
    write_test_predictions,
)

LABELS = ["label_1", "label_2", "label_3"]
TEST_IDS = np.array(["t1.png", "t2.png", "t3.png", "t4.png"])


def _metrics(val_map: float) -> dict:
    scores = {"map": val_map, "ap": {label: val_map for label in LABELS}}
    return {split: {"all": scores, "non_black": scores} for split in ("val", "holdout")}


def add_run(registry: Registry, model: str, val_map: float, *, test_ids=TEST_IDS, test_score=None,
            thresholds=None, fingerprint="data-A", profile="smoke", seed=0, label_names=LABELS, family="cnn"):
    """A finished registry run with the given validation mAP and test scores (None: no test scores)."""
    rng = np.random.default_rng(abs(hash(model)) % 2**32)

    def run(workdir):
        arrays = {"val_ids": np.array(["v1"]), "val_true": np.zeros((1, 3)), "val_score": np.zeros((1, 3))}
        if test_score is not None:
            arrays.update(test_ids=test_ids, test_score=test_score)
        save_predictions(workdir, **arrays)
        return {
            "label_names": label_names,
            "metrics": _metrics(val_map),
            "thresholds": thresholds or {label: 0.5 for label in label_names},
            "profile": profile,
        }

    return registry.fetch_or_run(model=model, family=family, hyperparams={"n": int(rng.integers(1 << 30))},
                                 data_fingerprint=fingerprint, seed=seed, run_fn=run)


@pytest.fixture
def registry(tmp_path):
    return Registry(tmp_path / "runs")


def _read(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_best_run_is_the_highest_validation_map_among_runs_with_test_scores(registry):
    scores = np.full((4, 3), 0.5)
    add_run(registry, "good", 0.70, test_score=scores)
    add_run(registry, "better_without_test", 0.90, test_score=None)
    best = add_run(registry, "best", 0.80, test_score=scores)
    add_run(registry, "worse", 0.60, test_score=scores)
    assert best_run_with_test_scores(registry.records()).key == best.key


def test_the_final_model_is_submitted_when_the_study_has_one(registry):
    scores = np.full((4, 3), 0.5)
    best = add_run(registry, "best_cnn", 0.90, test_score=scores)
    add_run(registry, "final_without_test", 0.95, test_score=None, family="final")
    assert submission_run(registry.records()) == (best, FROM_BEST_RUN)
    final = add_run(registry, "final_cnn", 0.85, test_score=scores, family="final")
    assert submission_run(registry.records()) == (final, FROM_FINAL_MODEL)


def test_csvs_have_the_contest_shape_and_apply_the_tuned_thresholds(registry, tmp_path):
    scores = np.array([[0.10, 0.30, 0.90], [0.40, 0.30, 0.20], [0.95, 0.05, 0.5], [0.39999, 0.3, 0.0]])
    thresholds = {"label_1": 0.4, "label_2": 0.3, "label_3": 0.5}
    record = add_run(registry, "cnn", 0.8, test_score=scores, thresholds=thresholds)

    written = write_test_predictions(record, tmp_path / "dist", name="DOE_JANE", label_names=LABELS,
                                     id_column="image_id")

    probabilities = _read(written.probabilities_csv)
    labels = _read(written.labels_csv)
    assert written.probabilities_csv.name == "DOE_JANE_test_probabilities.csv"
    assert probabilities[0] == labels[0] == ["image_id", *LABELS]
    assert [row[0] for row in probabilities[1:]] == [row[0] for row in labels[1:]] == list(TEST_IDS)
    assert np.allclose(np.array([row[1:] for row in probabilities[1:]], dtype=float), scores, atol=1e-6)
    # score >= threshold, per label: equality is positive, just below is not.
    assert [row[1:] for row in labels[1:]] == [
        ["0", "1", "1"],
        ["1", "1", "0"],
        ["1", "0", "1"],
        ["0", "1", "0"],
    ]
    assert written.n_images == 4 and written.describe().startswith("4 test images, from the run with the best")
    assert f"run {record.key}" in written.describe()
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == [
        "DOE_JANE_test_labels.csv", "DOE_JANE_test_probabilities.csv"]  # no temporary file left
    assert stale_outputs(tmp_path / "dist", "DOE_JANE") == [written.probabilities_csv, written.labels_csv]


def test_runs_of_this_study_keep_same_data_profile_and_seed(registry):
    scores = np.full((4, 3), 0.5)
    mine = add_run(registry, "mine", 0.5, test_score=scores)
    add_run(registry, "other_data", 0.9, test_score=scores, fingerprint="data-B")
    add_run(registry, "other_profile", 0.9, test_score=scores, profile="default")
    add_run(registry, "other_seed", 0.9, test_score=scores, seed=1)
    kept, left_out = runs_of_this_study(registry.records(), data_fingerprint="data-A", profile="smoke", seed=0)
    assert [record.key for record in kept] == [mine.key]
    assert len(left_out) == 3


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"test_score": np.full((3, 3), 0.5)}, "test_score has shape"),
        ({"test_score": np.full((4, 2), 0.5)}, "test_score has shape"),
        ({"test_score": np.full((4, 3), 1.5)}, r"probabilities in \[0, 1\]"),
        ({"test_score": np.full((4, 3), np.nan)}, r"probabilities in \[0, 1\]"),
        ({"test_score": np.full((4, 3), 0.5), "test_ids": np.array(["a", "a", "b", "c"])}, "not unique"),
        ({"test_score": np.full((4, 3), 0.5), "thresholds": {"label_1": 0.5}}, "no tuned threshold"),
        ({"test_score": np.zeros((0, 3)), "test_ids": np.array([], dtype=str)}, "empty test split"),
    ],
)
def test_bad_predictions_are_refused_before_anything_is_written(registry, tmp_path, options, complaint):
    record = add_run(registry, "bad", 0.5, **options)
    with pytest.raises(PredictionsError, match=complaint) as caught:
        write_test_predictions(record, tmp_path / "dist", name="X")
    assert record.key in str(caught.value)
    assert not (tmp_path / "dist").exists()


def test_labels_of_other_data_are_refused(registry, tmp_path):
    record = add_run(registry, "other", 0.5, test_score=np.full((4, 3), 0.5))
    with pytest.raises(PredictionsError, match="trained on other data"):
        write_test_predictions(record, tmp_path, name="X", label_names=["a", "b", "c"])


def test_no_run_or_no_test_scores_is_a_clear_error(registry):
    with pytest.raises(PredictionsError, match="no run of this study"):
        best_run_with_test_scores([])
    add_run(registry, "no_test", 0.5, test_score=None)
    with pytest.raises(PredictionsError, match=r"none of the 1 runs.*test_ids/test_score"):
        best_run_with_test_scores(registry.records())


def test_export_step_on_a_contest_folder(make_contest_folder, tmp_path):
    folder = make_contest_folder(n_train=12, n_val=6, n_test=5, id_column="name")
    data = load_contest(folder, seed=0)
    registry = Registry(tmp_path / "runs")
    test_ids = data.test.ids
    add_run(registry, "cnn", 0.7, test_ids=test_ids, test_score=np.full((5, 3), 0.25),
            fingerprint=data.fingerprint, seed=0)
    add_run(registry, "stranger", 0.99, test_ids=test_ids, test_score=np.full((5, 3), 0.75),
            fingerprint="other data", seed=0)

    written = export_test_predictions(registry.root, tmp_path / "dist", name="DOE_JANE", data_dir=folder,
                                      cache_dir=None, profile="smoke", seed=0)

    rows = _read(written.probabilities_csv)
    assert rows[0] == ["name", *data.label_names]  # the contest's own id column
    assert [row[0] for row in rows[1:]] == list(test_ids)
    assert {value for row in rows[1:] for value in row[1:]} == {"0.250000"}
    assert written.record.model == "cnn"


def test_export_step_refuses_partial_test_scores_and_missing_test_csv(make_contest_folder, tmp_path):
    folder = make_contest_folder(n_train=12, n_val=6, n_test=5)
    data = load_contest(folder, seed=0)
    registry = Registry(tmp_path / "runs")
    add_run(registry, "cnn", 0.7, test_ids=data.test.ids[:4], test_score=np.full((4, 3), 0.25),
            fingerprint=data.fingerprint, seed=0)
    with pytest.raises(PredictionsError, match="scored 4 test ids.*lists 5"):
        export_test_predictions(registry.root, tmp_path / "dist", name="X", data_dir=folder, cache_dir=None,
                                profile="smoke", seed=0)
    assert not (tmp_path / "dist").exists()

    no_test = make_contest_folder(name="no_test", n_train=12, n_val=6, n_test=0)
    with pytest.raises(PredictionsError, match="no test.csv"):
        export_test_predictions(registry.root, tmp_path / "dist", name="X", data_dir=no_test, cache_dir=None,
                                profile="smoke", seed=0)


def test_contest_id_column(make_contest_folder, tmp_path):
    assert contest_id_column(make_contest_folder(id_column="file")) == "file"
    assert contest_id_column(tmp_path / "nowhere") == "image_id"
    assert contest_id_column(None) == "image_id"

"""The test-set predictions of the submission: two CSVs in the contest's shape.

They come from the study's final model (the registry run of family ``final`` that notebook 05
trains with the chosen configuration) or, without one, from the run of this study with the best
validation mAP; the hold-out never takes part. ``<name>_test_probabilities.csv`` holds each label's
probability, ``<name>_test_labels.csv`` the 0/1 decisions at the thresholds tuned on validation.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contest_study.files import atomic_output
from contest_study.metrics import binarize
from contest_study.registry import FINAL_FAMILY, Registry, RunRecord, latest_runs

DEFAULT_ID_COLUMN = "image_id"
# The registry family of the study's final model (the chosen configuration, retrained by notebook 05).
FROM_FINAL_MODEL = "the study's final model"
FROM_BEST_RUN = "the run with the best validation mAP (no final model in the registry: notebook 05 trains it)"
PROBABILITIES_SUFFIX = "_test_probabilities.csv"
LABELS_SUFFIX = "_test_labels.csv"
# Probabilities are written with this many decimals: more than any ranking metric can tell apart.
PROBABILITY_DECIMALS = 6


class PredictionsError(RuntimeError):
    """No test-set predictions can be written; the message says what is missing."""


@dataclass(frozen=True)
class TestPredictions:
    """What :func:`write_test_predictions` wrote, and from which run."""

    record: RunRecord
    probabilities_csv: Path
    labels_csv: Path
    n_images: int
    source: str = FROM_BEST_RUN  # why this run: FROM_FINAL_MODEL or FROM_BEST_RUN

    def describe(self) -> str:
        val_map = _val_map(self.record)
        return (
            f"{self.n_images} test images, from {self.source}: run {self.record.key} (validation mAP {val_map:.3f})"
        )


# ----------------------------------------------------------------------------- which runs


def runs_of_this_study(
    records: Iterable[RunRecord], *, data_fingerprint: str | None, profile: str | None, seed: int | None
) -> tuple[list[RunRecord], list[RunRecord]]:
    """Split ``records`` into the runs of this study and the others: ``(kept, left_out)``.

    A run belongs to this study when it was trained on the same data (fingerprint),
    in the same profile and with the same seed; None accepts any value. A record
    that does not say its profile is kept (older records).
    """
    kept, left_out = [], []
    for record in records:
        same = (
            (data_fingerprint is None or record.data.get("data_fingerprint") == data_fingerprint)
            and (profile is None or record.data.get("profile", profile) == profile)
            and (seed is None or record.data.get("seed") == seed)
        )
        (kept if same else left_out).append(record)
    return kept, left_out


def _val_map(record: RunRecord) -> float:
    value = record.metrics.get("val", {}).get("all", {}).get("map")
    return -math.inf if value is None else float(value)


def _has_test_scores(record: RunRecord) -> bool:
    try:
        predictions = record.predictions()
    except FileNotFoundError:
        return False
    return "test_ids" in predictions and "test_score" in predictions


def best_run_with_test_scores(records: Sequence[RunRecord]) -> RunRecord:
    """The run with the highest validation mAP among ``records`` that scored the test images."""
    records = list(records)
    if not records:
        raise PredictionsError(
            "no run of this study in the results registry: run the notebooks that train models first "
            "(e.g. scripts/export_submission.py without --notebooks)"
        )
    scored = [record for record in records if _has_test_scores(record)]
    if not scored:
        raise PredictionsError(
            f"none of the {len(records)} runs of this study has test scores (test_ids/test_score in its "
            "predictions.npz): the data has no test.csv, or the runs were trained before test scores were "
            "stored (retrain with --force-retrain)"
        )
    # max() keeps the first of equal scores: records come in key order, so the choice is stable.
    return max(scored, key=_val_map)


def submission_run(records: Sequence[RunRecord]) -> tuple[RunRecord, str]:
    """The run whose test scores are submitted, and why: the final model when the study has one
    that scored the test images (the best of them if several), else :func:`best_run_with_test_scores`."""
    finals = [record for record in records if record.family == FINAL_FAMILY and _has_test_scores(record)]
    if finals:
        return max(finals, key=_val_map), FROM_FINAL_MODEL
    return best_run_with_test_scores(records), FROM_BEST_RUN


# ----------------------------------------------------------------------------- the CSVs


def prediction_frames(record: RunRecord, label_names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, probabilities, labels)`` of ``record`` on the test set, checked.

    ``label_names`` (the data's label columns) must be those the run was trained on,
    in that order; the 0/1 labels apply the run's thresholds tuned on validation.
    """
    run_labels = list(record.label_names)
    if label_names is not None and list(label_names) != run_labels:
        raise PredictionsError(
            f"run {record.key} predicts the labels {run_labels}, the data has {list(label_names)}: "
            "it was trained on other data"
        )
    try:
        predictions = record.predictions()
    except FileNotFoundError as error:
        raise PredictionsError(str(error)) from None
    missing = [name for name in ("test_ids", "test_score") if name not in predictions]
    if missing:
        raise PredictionsError(f"run {record.key} has no {' or '.join(missing)} in {record.path / 'predictions.npz'}")
    ids = np.asarray(predictions["test_ids"]).astype(str)
    scores = np.asarray(predictions["test_score"], dtype=np.float64)
    if scores.ndim != 2 or scores.shape != (len(ids), len(run_labels)):
        raise PredictionsError(
            f"run {record.key}: test_score has shape {scores.shape}, expected ({len(ids)}, {len(run_labels)}) "
            "(one row per test id, one column per label)"
        )
    if len(ids) == 0:
        raise PredictionsError(f"run {record.key} scored an empty test split")
    if len(set(ids.tolist())) != len(ids):
        raise PredictionsError(f"run {record.key}: the test ids are not unique")
    if not np.isfinite(scores).all() or scores.min() < 0 or scores.max() > 1:
        raise PredictionsError(f"run {record.key}: test scores must be probabilities in [0, 1]")
    thresholds = record.thresholds
    unknown = [label for label in run_labels if label not in thresholds]
    if unknown:
        raise PredictionsError(f"run {record.key} has no tuned threshold for {unknown} in {record.record_file}")
    labels = binarize(scores, [thresholds[label] for label in run_labels])
    return ids, scores, labels


def contest_id_column(data_dir: Path | None) -> str:
    """The id column's name in the contest's test.csv (else train.csv), or ``image_id``."""
    for name in ("test.csv", "train.csv"):
        path = Path(data_dir) / name if data_dir is not None else None
        if path is not None and path.is_file():
            with open(path, newline="", encoding="utf-8-sig") as handle:
                header = next(csv.reader(handle), None)
            if header and header[0].strip():
                return header[0].strip()
    return DEFAULT_ID_COLUMN


def output_paths(out_dir: Path, name: str) -> tuple[Path, Path]:
    """Where the probabilities and the 0/1 labels of submission ``name`` go."""
    return Path(out_dir) / f"{name}{PROBABILITIES_SUFFIX}", Path(out_dir) / f"{name}{LABELS_SUFFIX}"


def stale_outputs(out_dir: Path, name: str) -> list[Path]:
    """The prediction CSVs of ``name`` already in ``out_dir`` (from an earlier run)."""
    return [path for path in output_paths(out_dir, name) if path.is_file()]


def _write_csv(path: Path, header: Sequence[str], ids: np.ndarray, values: np.ndarray, number_format: str) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for image_id, row in zip(ids, values):
                writer.writerow([image_id, *(format(value, number_format) for value in row)])


def write_test_predictions(
    record: RunRecord,
    out_dir: Path,
    *,
    name: str,
    label_names: Sequence[str] | None = None,
    id_column: str = DEFAULT_ID_COLUMN,
    source: str = FROM_BEST_RUN,
) -> TestPredictions:
    """Write the probabilities and the thresholded labels of ``record`` as two CSVs in ``out_dir``."""
    ids, scores, labels = prediction_frames(record, label_names)
    header = [id_column, *record.label_names]
    probabilities_csv, labels_csv = output_paths(out_dir, name)
    _write_csv(probabilities_csv, header, ids, scores, f".{PROBABILITY_DECIMALS}f")
    _write_csv(labels_csv, header, ids, labels, "d")
    return TestPredictions(
        record=record, probabilities_csv=probabilities_csv, labels_csv=labels_csv, n_images=len(ids), source=source
    )


def export_test_predictions(
    registry_dir: Path,
    out_dir: Path,
    *,
    name: str,
    data_dir: Path,
    cache_dir: Path | None,
    profile: str,
    seed: int,
) -> TestPredictions:
    """The export's step: load the data's fingerprint, pick this study's run (:func:`submission_run`), write its CSVs."""
    from contest_study.data import DataError, load_contest

    try:
        data = load_contest(data_dir, cache_dir=cache_dir, seed=seed)
    except DataError as error:
        raise PredictionsError(f"cannot read the data the runs were trained on: {error}") from error
    if data.test is None or len(data.test) == 0:
        raise PredictionsError(f"{data_dir} has no test.csv (or it lists no image): there is no test set to predict")
    runs, _ = runs_of_this_study(
        Registry(registry_dir).records(), data_fingerprint=data.fingerprint, profile=profile, seed=seed
    )
    runs = latest_runs(runs)
    record, source = submission_run(runs)
    expected = set(data.test.ids.astype(str).tolist())
    scored = set(np.asarray(record.predictions()["test_ids"]).astype(str).tolist())
    if scored != expected:
        raise PredictionsError(
            f"run {record.key} scored {len(scored)} test ids, the data's test.csv lists {len(expected)} "
            f"({len(expected - scored)} of them unscored): retrain it (--force-retrain)"
        )
    return write_test_predictions(
        record, out_dir, name=name, label_names=data.label_names, id_column=contest_id_column(data_dir), source=source
    )

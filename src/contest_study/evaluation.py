"""The part every experiment shares, whatever model it trains.

Every run of the study, a Keras network or a scikit-learn baseline, trains and is
scored on the same splits built the same way (:func:`prepare_splits`), and scores
and stores its predictions the same way (:func:`score_and_save`), so the records
in the registry compare like with like:

- training images: all black images removed but one (``black_images="removed"``,
  the study's preprocessing) or all kept (``"kept"``, the black-image experiment);
- the profile's image caps subsample train, validation and hold-out (seeded), and
  are part of the registry key, so a smoke run is never reused by a default run;
- validation and hold-out are scored whole and without their black images; the
  per-label thresholds are tuned on validation only;
- every totally black image (validation, hold-out and test) is answered with the
  positive rate of each label among the black *training* images, whatever the
  model says (:func:`answer_black_images`). Their labels are random coins, so no
  model can do better than that base rate; detecting them is exact (every pixel
  is 0). Without the rule a network trained without black images would give them
  whatever score its weights happen to produce for an empty input, and the
  all-images scores would measure that accident instead of the model;
- the oracle probabilities of the embedded dataset follow the subsample;
- two runs are compared on the same images by a paired bootstrap (:func:`compare_runs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from contest_study.config import Profile, get_profile
from contest_study.data import Split, black_mask, drop_black_images, subsample
from contest_study.metrics import compare, evaluate_run
from contest_study.registry import RunRecord, save_predictions

BLACK_IMAGE_OPTIONS = ("removed", "kept")
COMPARISON_SPLITS = ("val", "holdout")
COMPARISON_SUBSETS = ("all", "non_black")
# How black images are scored; part of every run's registry key, so runs scored otherwise are never reused.
BLACK_IMAGE_SCORES = "training_black_label_rate"


@dataclass(frozen=True)
class ExperimentSplits:
    """The images one experiment trains on and is scored on, with the oracle beside them."""

    label_names: list[str]
    train: Split
    val: Split
    holdout: Split
    test: Split | None
    oracle_val: np.ndarray | None
    oracle_holdout: np.ndarray | None
    # Positive rate of each label among the black training images: the answer to every black image.
    black_label_rate: np.ndarray


def resolve_profile(profile: Profile | str | None) -> Profile | None:
    return get_profile(profile) if isinstance(profile, str) else profile


def split_hyperparams(black_images: str, profile: Profile | str | None) -> dict:
    """The part of a run's registry key that says which images it saw."""
    if black_images not in BLACK_IMAGE_OPTIONS:
        raise ValueError(f"black_images must be one of {', '.join(BLACK_IMAGE_OPTIONS)}, got {black_images!r}")
    profile = resolve_profile(profile)
    return {
        "black_images": black_images,
        "max_train_images": profile.max_train_images if profile else None,
        "max_eval_images": profile.max_eval_images if profile else None,
        "black_image_scores": BLACK_IMAGE_SCORES,
    }


def black_label_rate(train: Split) -> np.ndarray:
    """Per-label positive rate among the black images of ``train`` (the training split, before any removal).

    Without black training images there is nothing to learn the rate from, and the
    rate of all training images is the best guess left.
    """
    labels = np.asarray(train.labels, dtype=np.float64)
    black = black_mask(train.images)
    return labels[black].mean(axis=0) if black.any() else labels.mean(axis=0)


def answer_black_images(score: np.ndarray, images: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """``score`` with the rows of totally black ``images`` replaced by ``rate`` (a copy; the input is kept)."""
    score = np.array(score, dtype=np.float64)
    rate = np.asarray(rate, dtype=np.float64)
    if score.ndim != 2 or score.shape[0] != len(images) or rate.shape != (score.shape[1],):
        raise ValueError(
            f"scores {score.shape} must have one row per image ({len(images)}) and one column per label rate {rate.shape}"
        )
    score[black_mask(images)] = rate
    return score


def _checked_oracle(oracle: Mapping[str, np.ndarray] | None, split_name: str, split: Split) -> np.ndarray | None:
    if oracle is None:
        return None
    if not isinstance(oracle, Mapping) or not {"val", "holdout"} <= set(oracle):
        raise ValueError("oracle must be None or a mapping with 'val' and 'holdout' probability arrays")
    array = np.asarray(oracle[split_name], dtype=np.float64)
    if array.shape != split.labels.shape:
        raise ValueError(f"oracle[{split_name!r}] has shape {array.shape}, the {split_name} labels {split.labels.shape}")
    return array


def _rows_for(full_ids: np.ndarray, subset_ids: np.ndarray) -> np.ndarray:
    """Positions of ``subset_ids`` in ``full_ids`` (to carry the oracle along a subsample)."""
    position = {image_id: row for row, image_id in enumerate(full_ids.tolist())}
    return np.array([position[image_id] for image_id in subset_ids.tolist()], dtype=np.intp)


def prepare_splits(
    data,
    *,
    black_images: str = "removed",
    profile: Profile | str | None = None,
    seed: int,
    oracle: Mapping[str, np.ndarray] | None = None,
) -> ExperimentSplits:
    """The training, validation and hold-out images of one experiment (see the module docstring).

    ``data`` is a ``contest_study.data.ContestData``; ``oracle`` is ``{"val": probs,
    "holdout": probs}`` aligned with ``data.val.ids`` and ``data.holdout.ids``, or None.
    """
    split_hyperparams(black_images, profile)  # validates black_images
    profile = resolve_profile(profile)
    oracle_val = _checked_oracle(oracle, "val", data.val)
    oracle_holdout = _checked_oracle(oracle, "holdout", data.holdout)
    train = drop_black_images(data.train, keep=1) if black_images == "removed" else data.train
    val, holdout = data.val, data.holdout
    if profile is not None:
        train = subsample(train, profile.max_train_images, seed)
        val = subsample(val, profile.max_eval_images, seed)
        holdout = subsample(holdout, profile.max_eval_images, seed)
    return ExperimentSplits(
        label_names=list(data.label_names),
        train=train,
        val=val,
        holdout=holdout,
        # The test split is never subsampled: its scores go to the submission.
        test=data.test if data.test is not None and len(data.test) else None,
        oracle_val=None if oracle_val is None else oracle_val[_rows_for(data.val.ids, val.ids)],
        oracle_holdout=None if oracle_holdout is None else oracle_holdout[_rows_for(data.holdout.ids, holdout.ids)],
        # From every black training image, removed or not: the rate is a fact of the training data.
        black_label_rate=black_label_rate(data.train),
    )


def score_and_save(
    workdir,
    splits: ExperimentSplits,
    *,
    val_score: np.ndarray,
    holdout_score: np.ndarray,
    test_score: np.ndarray | None = None,
) -> dict:
    """Write ``predictions.npz`` into the run's ``workdir`` and return the record's scores.

    The scores are the model's, with black images answered by the training base rate
    (:func:`answer_black_images`) before they are saved and scored. The result holds
    ``thresholds`` (tuned on validation), ``metrics`` (validation and hold-out, all
    images and non-black ones) and ``oracle`` (same nesting, or None).
    """
    rate = splits.black_label_rate
    val_score = answer_black_images(val_score, splits.val.images, rate)
    holdout_score = answer_black_images(holdout_score, splits.holdout.images, rate)
    if test_score is not None and splits.test is not None:
        test_score = answer_black_images(test_score, splits.test.images, rate)
    val_black, holdout_black = black_mask(splits.val.images), black_mask(splits.holdout.images)
    predictions = {
        "val_ids": splits.val.ids,
        "val_true": splits.val.labels,
        "val_score": val_score,
        "val_is_black": val_black,
        "holdout_ids": splits.holdout.ids,
        "holdout_true": splits.holdout.labels,
        "holdout_score": holdout_score,
        "holdout_is_black": holdout_black,
    }
    if test_score is not None and splits.test is not None:
        predictions.update(test_ids=splits.test.ids, test_score=test_score)
    save_predictions(workdir, **predictions)
    return evaluate_run(
        splits.label_names,
        val_true=splits.val.labels,
        val_score=val_score,
        holdout_true=splits.holdout.labels,
        holdout_score=holdout_score,
        val_black=val_black,
        holdout_black=holdout_black,
        oracle_val=splits.oracle_val,
        oracle_holdout=splits.oracle_holdout,
    )


def compare_runs(record_a: RunRecord, record_b: RunRecord, split: str = "val", subset: str = "non_black") -> dict:
    """Paired bootstrap of ``record_a``'s mAP minus ``record_b``'s on the same images (:func:`metrics.compare`).

    ``split``: ``"val"`` or ``"holdout"``; ``subset``: ``"non_black"`` (default: the black
    images are answered alike by every run) or ``"all"``. Both runs must have scored the
    same images in the same order (the same data, profile and seed). The result adds
    ``split``, ``subset`` and ``n_images`` to :func:`contest_study.metrics.compare`'s.
    """
    if split not in COMPARISON_SPLITS:
        raise ValueError(f"split must be one of {', '.join(COMPARISON_SPLITS)}, got {split!r}")
    if subset not in COMPARISON_SUBSETS:
        raise ValueError(f"subset must be one of {', '.join(COMPARISON_SUBSETS)}, got {subset!r}")
    a, b = record_a.predictions(), record_b.predictions()
    if not np.array_equal(a[f"{split}_ids"], b[f"{split}_ids"]) or not np.array_equal(
        a[f"{split}_true"], b[f"{split}_true"]
    ):
        raise ValueError(
            f"runs {record_a.key} and {record_b.key} were not scored on the same {split} images "
            "(other data, profile or seed): a paired comparison needs the same images"
        )
    rows = ~a[f"{split}_is_black"].astype(bool) if subset == "non_black" else slice(None)
    labels = a[f"{split}_true"][rows]
    result = compare(a[f"{split}_score"][rows], b[f"{split}_score"][rows], labels)
    return {**result, "split": split, "subset": subset, "n_images": len(labels)}

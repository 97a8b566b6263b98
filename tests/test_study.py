"""The sentences and names the notebooks build from registry records."""

from pathlib import Path

import pandas as pd
import pytest

from contest_study.registry import RunRecord
from contest_study.study import Study, run_name


def record(model="cnn_1e", *, val=0.80, val_all=0.70, holdout=0.78, seconds=60.0, epochs=8, **hyperparams):
    def split(non_black, every):
        return {"non_black": {"map": non_black}, "all": {"map": every}}

    data = {
        "model": model,
        "hyperparams": {"augment": False, "input_channels": 1, "black_images": "removed", **hyperparams},
        "metrics": {"val": split(val, val_all), "holdout": split(holdout, holdout - 0.1)},
        "wall_time_s": seconds,
        "epochs_run": epochs,
    }
    return RunRecord(key=f"{model}-{len(str(hyperparams))}", path=Path("/nowhere"), data=data)


@pytest.mark.parametrize(
    "hyperparams, expected",
    [
        ({}, "cnn_1e"),
        ({"augment": True}, "cnn_1e (augmented)"),
        ({"black_images": "kept", "input_channels": 3}, "cnn_1e (black images kept, 3 channels)"),
    ],
)
def test_run_name_says_what_sets_a_run_apart(hyperparams, expected):
    assert run_name(record(**hyperparams)) == expected


def test_describe_change_reports_the_measured_difference_and_time():
    text = Study.describe_change(
        record(val=0.85, seconds=50, epochs=8), record(val=0.79, holdout=0.75, seconds=90, epochs=8, augment=True),
        "data augmentation",
    )
    assert "With data augmentation, cnn_1e scores a validation mAP of 0.790" in text
    assert "against 0.850 without (-0.060, a loss; hold-out -0.030)" in text
    assert "Training took 90 s against 50 s" in text


def test_describe_change_calls_a_tiny_difference_noise():
    text = Study.describe_change(record(val=0.850), record(val=0.852, augment=True), "data augmentation")
    assert "no change beyond run-to-run noise" in text


def test_describe_black_effect_explains_the_shared_scoring_rule():
    table = pd.DataFrame(
        {
            "val mAP (all)": [0.70, 0.72],
            "val mAP (non-black)": [0.85, 0.88],
            "holdout mAP (all)": [0.69, 0.70],
            "holdout mAP (non-black)": [0.84, 0.86],
            "training images": [7000, 10500],
        },
        index=["black images removed but one", "black images kept"],
    )
    text = Study.describe_black_effect(table)
    assert "by +0.030 on the non-black images and by +0.020 on all images" in text
    assert "7000 images without them and 10500 with them" in text and "keeping them helped" in text
    assert "more weight updates" in text
    assert "positive rate of each label among the black training images" in text

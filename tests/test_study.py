"""The names the notebooks give registry runs, and the runs a study sees."""

from pathlib import Path

import pytest

from contest_study.registry import RunRecord
from contest_study.study import run_name


def record(model="cnn_1e", *, val=0.80, val_all=0.70, holdout=0.78, seconds=60.0, epochs=8, **hyperparams):
    def split(non_black, every):
        return {"non_black": {"map": non_black}, "all": {"map": every}}

    data = {
        "model": model,
        "family": "cnn",
        "hyperparams": {"input_channels": 1, "black_images": "removed", **hyperparams},
        "metrics": {"val": split(val, val_all), "holdout": split(holdout, holdout - 0.1)},
        "wall_time_s": seconds,
        "epochs_run": epochs,
    }
    return RunRecord(key=f"{model}-{len(str(hyperparams))}", path=Path("/nowhere"), data=data)


@pytest.mark.parametrize(
    "hyperparams, expected",
    [
        ({}, "cnn_1e"),
        ({"black_images": "kept", "input_channels": 3}, "cnn_1e (black images kept, 3 channels)"),
        ({"train_fraction": 0.05}, "cnn_1e (5% of the training images)"),
    ],
)
def test_run_name_says_what_sets_a_run_apart(hyperparams, expected):
    assert run_name(record(**hyperparams)) == expected


def test_a_study_sees_only_the_runs_of_its_data_profile_and_seed(tmp_path):
    from conftest import tiny_study

    study = tiny_study(tmp_path)
    mine = {"data_fingerprint": study.data.fingerprint, "profile": study.context.profile.name,
            "seed": study.context.seed, "family": "cnn"}
    others = [{**mine, "data_fingerprint": "other folder"}, {**mine, "profile": "full"}, {**mine, "seed": 1}]

    class FakeRegistry:
        def records(self, family=None):
            return [RunRecord(key=str(i), path=tmp_path, data=data) for i, data in enumerate([mine, *others])]

    study.registry = FakeRegistry()
    assert [record.key for record in study.records("cnn")] == ["0"]
    assert [record.key for record in study.records("cnn", any_seed=True)] == ["0", "3"]

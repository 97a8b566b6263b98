"""The names the notebooks give registry runs, and the runs a study sees."""

from pathlib import Path

import pytest

from contest_study.registry import RunRecord, latest_runs, run_name


def record(model="cnn_1e", *, val=0.80, val_all=0.70, holdout=0.78, seconds=60.0, epochs=8, family="cnn", created="",
           **hyperparams):
    def split(non_black, every):
        return {"non_black": {"map": non_black}, "all": {"map": every}}

    data = {
        "model": model,
        "family": family,
        "created": created,
        "hyperparams": {"input_channels": 1, "black_images": "removed", **hyperparams},
        "metrics": {"val": split(val, val_all), "holdout": split(holdout, holdout - 0.1)},
        "wall_time_s": seconds,
        "epochs_run": epochs,
    }
    return RunRecord(key=f"{model}-{family}-{created}-{len(str(hyperparams))}", path=Path("/nowhere"), data=data)


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


def test_a_newer_run_of_the_same_name_supersedes_the_older_one():
    # cnn_1b edited and trained again; cnn_1a and its black-image variant untouched; two grid trials of cnn_1a.
    old_1b = record("cnn_1b", val=0.95, created="2026-12-01T10:00:00+00:00")
    new_1b = record("cnn_1b", val=0.85, created="2026-12-02T10:00:00+00:00")
    plain_1a = record("cnn_1a", created="2026-12-01T09:00:00+00:00")
    kept_1a = record("cnn_1a", black_images="kept", created="2026-12-01T09:30:00+00:00")
    trials = [record("cnn_1a", family="tuning", learning_rate=rate, created="2026-12-01T11:00:00+00:00")
              for rate in (0.01, 0.001)]
    # The final model is one per study, whatever network 05 chose.
    old_final = record("cnn_1a", family="final", val=0.99, created="2026-12-01T12:00:00+00:00")
    new_final = record("cnn_1c", family="final", created="2026-12-02T12:00:00+00:00")
    runs = [new_1b, plain_1a, old_1b, kept_1a, *trials, new_final, old_final]
    assert latest_runs(runs) == [new_1b, plain_1a, kept_1a, *trials, new_final]


def test_a_study_sees_only_the_runs_of_its_data_profile_and_seed(tmp_path):
    from conftest import tiny_study

    study = tiny_study(tmp_path)
    mine = {"data_fingerprint": study.data.fingerprint, "profile": study.context.profile.name,
            "seed": study.context.seed, "family": "cnn", "model": "cnn_1a", "hyperparams": {}}
    others = [{**mine, "data_fingerprint": "other folder"}, {**mine, "profile": "full"}, {**mine, "seed": 1}]

    class FakeRegistry:
        def records(self, family=None):
            return [RunRecord(key=str(i), path=tmp_path, data=data) for i, data in enumerate([mine, *others])]

    study.registry = FakeRegistry()
    assert [record.key for record in study.records("cnn")] == ["0"]
    assert [record.key for record in study.records("cnn", any_seed=True)] == ["0", "3"]

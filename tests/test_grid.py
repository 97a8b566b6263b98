"""The source grid, the cells each profile runs, trial descriptions and the full plan (dry, no training)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from contest_study import grid
from contest_study.config import PROFILES, get_profile


def test_source_grid_expands_to_144_distinct_cells_with_the_head_of_each_loss():
    cells = grid.expand_grid(grid.SOURCE_GRID)
    assert len(cells) == 2 * 3 * 2 * 2 * 2 * 3 == 144
    assert len({json.dumps(cell, sort_keys=True) for cell in cells}) == 144
    for cell in cells:
        assert cell["output_activation"] == grid.HEAD_FOR_LOSS[cell["loss"]]
    for axis, values in grid.SOURCE_GRID.items():
        counts = {value: sum(cell[axis] == value for cell in cells) for value in values}
        assert set(counts.values()) == {144 // len(values)}


def test_expand_grid_keeps_fixed_settings_and_an_explicit_head():
    cells = grid.expand_grid({"learning_rate": (1e-3, 1e-2)},
                             {"loss": "categorical_crossentropy", "output_activation": "sigmoid"})
    assert cells == [
        {"loss": "categorical_crossentropy", "output_activation": "sigmoid", "learning_rate": 1e-3},
        {"loss": "categorical_crossentropy", "output_activation": "sigmoid", "learning_rate": 1e-2},
    ]


@pytest.mark.parametrize(
    "axes, fixed, message",
    [
        ({"learning_rates": (1e-3,)}, None, "learning_rates"),
        ({"epochs": ()}, None, "'epochs' has no values"),
        ({"epochs": (5, 5)}, None, "repeats a value"),
        ({"epochs": (5,)}, {"epochs": 10}, "both a grid axis and a fixed setting"),
        ({"epochs": (5,)}, {"colour": "red"}, "colour"),
        ({"loss": ("hinge",)}, None, "'hinge' has no head"),
    ],
)
def test_expand_grid_rejects_bad_grids_naming_the_fault(axes, fixed, message):
    with pytest.raises(ValueError, match=message):
        grid.expand_grid(axes, fixed)


def test_the_full_profile_runs_every_cell_of_the_source_grid():
    cells = grid.grid_cells("full")
    assert len(cells) == 144
    assert {json.dumps({k: c[k] for k in grid.SOURCE_GRID}, sort_keys=True) for c in cells} == {
        json.dumps(c, sort_keys=True) for c in ({k: c[k] for k in grid.SOURCE_GRID} for c in grid.expand_grid(grid.SOURCE_GRID))
    }
    assert {cell["lr_schedule"] for cell in cells} == {"constant"}
    # With every cell run, only the schedules are left to vary around the best one.
    assert list(grid.one_setting_variants(cells[0], "full")) == [f"lr_schedule {s}" for s in grid.SCHEDULES]


@pytest.mark.parametrize("name", ["smoke", "default"])
def test_a_reduced_plan_crosses_learning_rate_optimizer_and_loss_then_varies_one_setting(name):
    profile = get_profile(name)
    cells = grid.grid_cells(profile)
    assert len(cells) == len(profile.tuning_learning_rates) * 2 * 2
    assert {(c["epochs"], c["batch_size"], c["train_metric"]) for c in cells} == {
        (min(profile.tuning_epochs), 64, "accuracy")}
    variants = grid.one_setting_variants(cells[0], profile)
    assert set(variants) == {f"epochs {max(profile.tuning_epochs)}", "batch_size 32", "batch_size 128",
                             "train_metric f1", *(f"lr_schedule {s}" for s in grid.SCHEDULES)}
    for label, variant in variants.items():
        changed = [k for k in grid.CONFIG_COLUMNS if variant[k] != cells[0][k]]
        assert changed == [label.split()[0]]


def test_every_profile_plans_distinct_trials():
    for profile in PROFILES.values():
        trials = grid.make_trials("cnn-0123", grid.grid_cells(profile), profile)
        assert len(set(trials)) == len(trials) == len(grid.grid_cells(profile))
        assert {trial.train_fraction for trial in trials} == {profile.tuning_train_fraction}


def test_a_trial_survives_its_trip_through_json():
    trial = grid.TrialSpec("cnn-0123", {"learning_rate": 0.1, "optimizer": "sgd"}, 0.3, "default")
    assert grid.TrialSpec.from_json(trial.to_json()) == trial
    with pytest.raises(ValueError, match="not a trial description"):
        grid.TrialSpec.from_json('{"architecture": "x"}')
    with pytest.raises(ValueError, match="unknown TrainConfig"):
        grid.TrialSpec("x", {"colour": "red"})
    with pytest.raises(ValueError, match="train_fraction"):
        grid.TrialSpec("x", {}, 0)
    with pytest.raises(ValueError, match="unknown profile"):
        grid.TrialSpec("x", {}, 1.0, "huge")


def _run(images, epochs, seconds):
    return SimpleNamespace(data={"n_train_images": images, "epochs_run": epochs, "wall_time_s": seconds})


def test_the_full_plan_lists_144_cells_the_networks_and_a_time_from_measured_throughput(tmp_path):
    twins = tmp_path / "twins"
    twins.mkdir()
    (twins / "02_cnn.py").write_text('def build_cnn_1a(input_shape, n_labels):\n    """A VGG-like stack."""\n')
    (twins / "03_rnn.py").write_text("def build_lstm(input_shape, n_labels):\n    pass\ndef helper():\n    pass\n")
    records = [_run(1000, 10, 10.0), _run(2000, 5, 5.0), _run(1000, 2, 2.0)]  # 22,000 images in 17 s
    cells, summary, networks = grid.describe_full_plan("full", records=records, n_train_images=6000, twins_dir=twins)
    assert len(cells) == summary["grid cells"] == summary["distinct cells"] == 144
    assert set(cells["epochs"]) == {5, 10} and set(cells["patience"]) == {get_profile("full").early_stopping_patience}
    assert list(networks["builder"]) == ["build_cnn_1a", "build_lstm"]
    assert summary["throughput (images/s)"] == round(22000 / 17, 1)
    assert "3 runs" in summary["throughput from"]
    # 72 cells at 5 epochs and 72 at 10 on 6000 images, plus 3 schedules at 10 epochs.
    assert summary["estimated grid time (h)"] == round((72 * 5 + 72 * 10 + 3 * 10) * 6000 / (22000 / 17) / 3600, 2)


def test_without_measurements_the_plan_says_so_and_estimates_nothing(tmp_path):
    cells, summary, _ = grid.describe_full_plan("full", records=[], n_train_images=100, twins_dir=tmp_path)
    assert summary["throughput (images/s)"] is None and "no measurement" in summary["throughput from"]
    assert "estimated grid time (h)" not in summary and cells["estimated s"].isna().all()


def test_the_dry_run_report_reads_the_data_and_the_twins_and_trains_nothing(make_contest_folder, tmp_path):
    text = grid.dry_run_report("full", data_dir=make_contest_folder(n_train=30, n_val=10), workdir=tmp_path / "work")
    assert "grid cells: 144" in text and "distinct cells: 144" in text
    assert "build_dense" in text  # a network of notebook 05, read from its twin
    assert "no measurement" in text
    assert not (tmp_path / "work" / "runs").exists() or not any((tmp_path / "work" / "runs").iterdir())

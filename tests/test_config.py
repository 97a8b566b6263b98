"""Profiles and the context built from a notebook's parameters cell."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from contest_study.config import PROFILE_NAMES, PROFILES, get_profile, repository_root, study_context

REPOSITORY = Path(__file__).resolve().parents[1]


def test_one_profile_per_name():
    assert tuple(PROFILES) == PROFILE_NAMES
    assert all(PROFILES[name].name == name for name in PROFILE_NAMES)


def test_default_profile_trains_until_early_stopping():
    default = get_profile("default")
    assert default.early_stopping_patience == 5
    assert default.max_epochs >= 8 * default.early_stopping_patience
    assert get_profile("full").max_epochs == 100


def test_mixed_precision_is_off_unless_switched_on():
    assert not any(profile.mixed_precision for profile in PROFILES.values())


@pytest.mark.parametrize("name", ["large", None, ""])
def test_unknown_profile_names_the_choices(name):
    with pytest.raises(ValueError, match=r"unknown profile .*smoke, default, full"):
        get_profile(name)


def test_defaults_point_into_the_repository():
    context = study_context()
    assert repository_root() == REPOSITORY
    assert context.profile is PROFILES["default"]
    assert context.workdir == REPOSITORY
    assert context.data_dir == REPOSITORY / "data" / "embedded"
    assert context.seed == 42
    assert context.runs_dir == REPOSITORY / "runs"


def test_parameters_cell_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    context = study_context(profile="smoke", data_dir="contest", workdir="~/work", seed=np.int64(7))
    assert context.profile is PROFILES["smoke"]
    assert context.data_dir == tmp_path / "contest"
    assert context.workdir == Path.home() / "work"
    assert context.seed == 7 and type(context.seed) is int


def test_data_dir_follows_the_workdir(tmp_path):
    assert study_context(workdir=tmp_path).data_dir == tmp_path / "data" / "embedded"


@pytest.mark.parametrize("seed", ["42", 4.2, True, None])
def test_seed_must_be_an_integer(seed):
    with pytest.raises(ValueError, match="parameter seed must be an integer"):
        study_context(seed=seed)


def test_unknown_profile_parameter():
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        study_context(profile="gpu")


def test_outside_a_checkout_the_workdir_is_the_current_folder(tmp_path):
    """An unzipped submission: the package sits beside the notebooks, no src/ and no pyproject.toml."""
    folder = tmp_path / "ISTRATI_LUCIAN"
    shutil.copytree(REPOSITORY / "src" / "contest_study", folder / "contest_study",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'unrelated'\n")  # not this package's checkout
    code = "from contest_study.config import study_context; print(study_context().workdir)"
    result = subprocess.run([sys.executable, "-c", code], cwd=folder, env={"PYTHONPATH": str(folder)},
                            capture_output=True, text=True, check=True)
    assert Path(result.stdout.strip()) == folder

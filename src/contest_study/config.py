"""Profiles and locations shared by the notebooks, the scripts and the tests.

A notebook never hard-codes a path or an epoch count: it asks :func:`study_context`,
which reads the environment variables set by ``scripts/export_submission.py``
(``STUDY_PROFILE``, ``STUDY_DATA_DIR``, ``STUDY_WORKDIR``, ``STUDY_SEED``) and
falls back to sensible defaults when the notebook is opened by hand in JupyterLab.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

PROFILE_NAMES = ("smoke", "default", "full")
SUBMISSION_NAME = "ISTRATI_LUCIAN"


@dataclass(frozen=True)
class Profile:
    """How much work one run of the study does.

    ``smoke`` is for tests (seconds per notebook), ``default`` is the whole study
    sized for a 2-core CPU, ``full`` uses the source documents' epoch counts and
    is meant for a GPU.
    """

    name: str
    # Caps on the number of images per split (None: use everything).
    max_train_images: int | None
    max_eval_images: int | None
    # Upper bound on epochs; early stopping usually ends training sooner.
    max_epochs: int
    batch_size: int = 64
    early_stopping_patience: int = 5
    extra: dict = field(default_factory=dict)
    # Notebook 05's grid: the share of the training images (black ones removed) each trial trains on,
    # the source's epochs axis, the learning rates tried, and whether all 144 cells run (else learning
    # rate x optimizer x loss, then one setting at a time around the best cell).
    tuning_train_fraction: float = 1.0
    tuning_epochs: tuple[int, ...] = (5, 10)
    tuning_learning_rates: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    tuning_full_grid: bool = False
    # Notebook 05's GridSearchCV over dropout x kernel initializer of the small dense network.
    sklearn_dropouts: tuple[float, ...] = (0.0, 0.5)
    sklearn_initializers: tuple[str, ...] = ("zeros", "glorot_uniform", "he_normal")
    sklearn_folds: int = 3
    sklearn_epochs: int = 5


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        max_train_images=256,
        max_eval_images=128,
        max_epochs=1,
        batch_size=32,
        early_stopping_patience=1,
        tuning_epochs=(1, 2),
        tuning_learning_rates=(1e-2,),
        sklearn_dropouts=(0.5,),
        sklearn_initializers=("zeros", "he_normal"),
        sklearn_folds=2,
        sklearn_epochs=1,
    ),
    # 6 epochs: on the embedded data the best CNNs reach their best validation loss by
    # epoch 5-7 (within 0.01 mAP of the oracle on the non-black images), and the
    # notebooks 02-04 must fit in 12 minutes on a 2-core CPU (8 epochs took 15).
    "default": Profile(name="default", max_train_images=None, max_eval_images=None, max_epochs=6,
                       tuning_train_fraction=0.3),
    "full": Profile(name="full", max_train_images=None, max_eval_images=None, max_epochs=100,
                    tuning_full_grid=True, sklearn_dropouts=(0.0, 0.2, 0.4, 0.6),
                    sklearn_initializers=("zeros", "random_normal", "glorot_uniform", "he_normal"), sklearn_epochs=10),
}


def get_profile(name: str) -> Profile:
    """Return the profile called ``name`` or fail with the list of valid names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r} (option --profile / STUDY_PROFILE); choose one of {', '.join(PROFILE_NAMES)}"
        ) from None


def repository_root() -> Path | None:
    """The git checkout holding this package, when it is installed from one (src layout)."""
    candidate = Path(__file__).resolve().parents[2]
    return candidate if (candidate / "pyproject.toml").is_file() else None


def default_workdir() -> Path:
    """Where data, caches, the registry and figures go when nothing else is said.

    In the repository this is the repository root; in an unzipped submission
    folder (no pyproject.toml above the package) it is the current directory.
    """
    env = os.environ.get("STUDY_WORKDIR")
    if env:
        return Path(env).expanduser().resolve()
    return repository_root() or Path.cwd().resolve()


@dataclass(frozen=True)
class StudyContext:
    """Everything a notebook needs to know about the run it is part of."""

    profile: Profile
    workdir: Path
    data_dir: Path
    seed: int = 42

    @property
    def cache_dir(self) -> Path:
        return self.workdir / ".cache"

    @property
    def runs_dir(self) -> Path:
        return self.workdir / "runs"

    @property
    def figures_dir(self) -> Path:
        return self.workdir / "figures"

    @property
    def build_dir(self) -> Path:
        return self.workdir / "build"

    def with_profile(self, name: str) -> "StudyContext":
        return replace(self, profile=get_profile(name))


def study_context() -> StudyContext:
    """Build the context of the current run from the environment (see module docstring)."""
    workdir = default_workdir()
    profile = get_profile(os.environ.get("STUDY_PROFILE", "default"))
    data_dir = Path(os.environ.get("STUDY_DATA_DIR") or workdir / "data" / "embedded").expanduser().resolve()
    seed_text = os.environ.get("STUDY_SEED", "42")
    try:
        seed = int(seed_text)
    except ValueError:
        raise ValueError(f"STUDY_SEED must be an integer, got {seed_text!r}") from None
    return StudyContext(profile=profile, workdir=workdir, data_dir=data_dir, seed=seed)

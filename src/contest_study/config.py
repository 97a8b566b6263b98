"""Profiles and locations shared by the notebooks, the scripts and the tests.

``PROFILES`` is the one table of per-profile settings. :func:`study_context` turns the
values of a notebook's parameters cell (profile, data_dir, workdir, seed) into a
:class:`StudyContext`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
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
    # Upper bound on epochs; early stopping ends training sooner.
    max_epochs: int
    batch_size: int = 64
    early_stopping_patience: int = 5
    # float16 activations with float32 weights: faster on a recent GPU, slower on a CPU.
    mixed_precision: bool = False
    # Notebooks 06-07: the denoising autoencoder pretrains on every non-black image (None) or a seeded
    # cap of them, for at most autoencoder_max_epochs (a cap early stopping should reach first: an encoder
    # cut short would make 07 judge pretraining by an unfinished start); pretrained and from-scratch encoders are compared
    # at each label budget (fractions of the labelled training images); MobileNetV2, the slowest network
    # on a CPU, trains on at most backbone_max_train_images for at most backbone_max_epochs, its input
    # resized to backbone_input_size (None: the 96x96 of the ImageNet weights).
    autoencoder_max_images: int | None = None
    autoencoder_max_epochs: int = 60
    label_budgets: tuple = (0.05, 0.2, 1.0)
    backbone_max_train_images: int | None = 500
    backbone_max_epochs: int = 5
    backbone_input_size: int | None = None
    # Notebook 05's grid: the share of the training images (black ones removed) each trial trains on,
    # the source's epochs axis, the learning rates tried, and whether all 144 cells run (else learning
    # rate x optimizer x loss, then one setting at a time around the best cell).
    tuning_train_fraction: float = 1.0
    tuning_epochs: tuple = (5, 10)
    tuning_learning_rates: tuple = (1e-3, 1e-2, 1e-1)
    tuning_full_grid: bool = False
    # Notebook 05's GridSearchCV over dropout x kernel initializer of the small dense network.
    sklearn_dropouts: tuple = (0.0, 0.5)
    sklearn_initializers: tuple = ("zeros", "glorot_uniform", "he_normal")
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
        autoencoder_max_images=256,
        autoencoder_max_epochs=1,
        label_budgets=(0.25, 1.0),
        backbone_max_train_images=32,
        backbone_max_epochs=1,
        backbone_input_size=32,
        tuning_epochs=(1, 2),
        tuning_learning_rates=(1e-2,),
        # Below 1, so no grid trial is the same run as the final model (a registry key ignores the family).
        tuning_train_fraction=0.5,
        sklearn_dropouts=(0.5,),
        sklearn_initializers=("zeros", "he_normal"),
        sklearn_folds=2,
        sklearn_epochs=1,
    ),
    # The cap is far above the epoch where validation loss stops improving, so every
    # run ends by early stopping: a converged network, not one cut short (the CNNs stop
    # after 10-20 epochs; a row-reading LSTM was still improving at 60 on the embedded data).
    "default": Profile(name="default", max_train_images=None, max_eval_images=None, max_epochs=80,
                       tuning_train_fraction=0.25),
    "full": Profile(name="full", max_train_images=None, max_eval_images=None, max_epochs=100,
                    autoencoder_max_epochs=100, backbone_max_train_images=None, backbone_max_epochs=100,
                    tuning_full_grid=True, sklearn_dropouts=(0.0, 0.2, 0.4, 0.6),
                    sklearn_initializers=("zeros", "random_normal", "glorot_uniform", "he_normal"), sklearn_epochs=10),
}


def get_profile(name: str) -> Profile:
    """Return the profile called ``name`` or fail with the list of valid names."""
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown profile {name!r} (parameter profile / option --profile); choose one of {', '.join(PROFILE_NAMES)}"
        ) from None


def repository_root() -> Path | None:
    """The checkout holding this package when it is installed from one (``<root>/src/contest_study``)."""
    package_dir = Path(__file__).resolve().parent
    root = package_dir.parents[1]
    return root if package_dir.parent.name == "src" and (root / "pyproject.toml").is_file() else None


def default_workdir() -> Path:
    """Where data, caches, the registry and figures go when nothing else is said.

    In the repository this is the repository root; in an unzipped submission
    folder (the package beside the notebooks) it is the current directory.
    """
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


def study_context(
    profile: str = "default",
    data_dir: str | Path | None = None,
    workdir: str | Path | None = None,
    seed: int = 42,
) -> StudyContext:
    """The context of a run from the parameters cell's values.

    ``workdir`` None: :func:`default_workdir`; ``data_dir`` None: the embedded
    dataset, ``<workdir>/data/embedded``.
    """
    try:
        if isinstance(seed, bool):
            raise TypeError
        seed = operator.index(seed)
    except TypeError:
        raise ValueError(f"parameter seed must be an integer, got {seed!r}") from None
    resolved_profile = get_profile(profile)
    resolved_workdir = Path(workdir).expanduser().resolve() if workdir is not None else default_workdir()
    resolved_data = (
        Path(data_dir).expanduser().resolve() if data_dir is not None else resolved_workdir / "data" / "embedded"
    )
    return StudyContext(profile=resolved_profile, workdir=resolved_workdir, data_dir=resolved_data, seed=seed)

"""The source documents' hyperparameter grid, the trials a profile runs from it, and the full plan.

A trial is one network (a registry run whose saved Keras config is the architecture) trained
with a few TrainConfig overrides on a share of the training images. The profile (``config``)
says how much of the 144-cell grid runs; :func:`describe_full_plan` prints what the ``full``
profile would train and how long it would take at this machine's measured speed.
"""

from __future__ import annotations

import ast
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd

from contest_study.config import Profile, get_profile, repository_root

# The grid of 000_…txt (epochs, learning rate, optimizer, loss, training metric) with the batch
# sizes of 001_…txt: 2 * 3 * 2 * 2 * 2 * 3 = 144 cells.
SOURCE_GRID: dict[str, tuple] = {
    "epochs": (5, 10),
    "learning_rate": (1e-3, 1e-2, 1e-1),
    "optimizer": ("adam", "sgd"),
    "loss": ("binary_crossentropy", "categorical_crossentropy"),
    "train_metric": ("f1", "accuracy"),
    "batch_size": (32, 64, 128),
}

# Categorical cross-entropy expects one distribution over the labels, so it gets the softmax
# head it was designed for: the documented failed approach.
HEAD_FOR_LOSS = {"binary_crossentropy": "sigmoid", "categorical_crossentropy": "softmax"}

# The grid isolates what it varies: a constant learning rate (schedules are compared apart)
# and, unless an axis says otherwise, batches of 64 and accuracy as the logged metric.
GRID_DEFAULTS = {"lr_schedule": "constant", "batch_size": 64, "train_metric": "accuracy"}

# The schedules tried on the best cell, besides its own constant rate.
SCHEDULES = ("exponential", "warmup_decay", "plateau")

CONFIG_COLUMNS = ("epochs", "learning_rate", "optimizer", "loss", "output_activation", "train_metric",
                  "batch_size", "lr_schedule")


def _train_config_fields() -> set[str]:
    from contest_study.training import TrainConfig

    return {f.name for f in fields(TrainConfig)}


def expand_grid(axes: Mapping[str, Sequence], fixed: Mapping | None = None) -> list[dict]:
    """Every combination of ``axes`` (``{TrainConfig field: values}``) plus ``fixed``, as overrides.

    The head follows the loss (:data:`HEAD_FOR_LOSS`) unless ``output_activation`` is given.
    Combinations come in :func:`itertools.product` order (the last axis varies fastest).
    """
    fixed = dict(fixed or {})
    names = list(axes)
    known = _train_config_fields()
    unknown = sorted((set(names) | set(fixed)) - known)
    if unknown:
        raise ValueError(f"unknown grid axis or fixed setting {', '.join(unknown)}; "
                         f"TrainConfig fields are {', '.join(sorted(known))}")
    both = sorted(set(names) & set(fixed))
    if both:
        raise ValueError(f"{', '.join(both)} cannot be both a grid axis and a fixed setting")
    for name in names:
        values = list(axes[name])
        if not values:
            raise ValueError(f"grid axis {name!r} has no values")
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"grid axis {name!r} repeats a value: {values!r}")
    combinations = []
    for values in itertools.product(*(axes[name] for name in names)):
        overrides = {**fixed, **dict(zip(names, values))}
        if "output_activation" not in overrides:
            loss = overrides.get("loss", "binary_crossentropy")
            if loss not in HEAD_FOR_LOSS:
                raise ValueError(f"loss {loss!r} has no head to pair with; known losses: {', '.join(HEAD_FOR_LOSS)}")
            overrides["output_activation"] = HEAD_FOR_LOSS[loss]
        combinations.append(overrides)
    return combinations


def profile_grid(profile: Profile | str) -> dict[str, tuple]:
    """The source grid with the profile's epochs axis and learning rates."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    return {**SOURCE_GRID, "epochs": tuple(profile.tuning_epochs), "learning_rate": tuple(profile.tuning_learning_rates)}


def grid_cells(profile: Profile | str) -> list[dict]:
    """The cells of the first search: all of the grid (``tuning_full_grid``), or learning rate x
    optimizer x loss at the shorter epoch count, batches of 64 and accuracy as the logged metric."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    axes = profile_grid(profile)
    fixed = {"lr_schedule": GRID_DEFAULTS["lr_schedule"]}
    if not profile.tuning_full_grid:
        fixed.update(epochs=min(axes["epochs"]), batch_size=GRID_DEFAULTS["batch_size"],
                     train_metric=GRID_DEFAULTS["train_metric"])
        axes = {name: axes[name] for name in ("learning_rate", "optimizer", "loss")}
    return expand_grid(axes, fixed)


def one_setting_variants(best: Mapping, profile: Profile | str) -> dict[str, dict]:
    """The best cell changed in one setting at a time, for the settings the first search kept fixed.

    Keys name the change ("epochs 10", "batch_size 32", "train_metric f1", "lr_schedule plateau").
    With the full grid, epochs, batch sizes and metrics are cells already: only the schedules remain.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    base = {name: best[name] for name in CONFIG_COLUMNS}
    axes = profile_grid(profile)
    variants = {}
    if not profile.tuning_full_grid:
        for name in ("epochs", "batch_size", "train_metric"):
            for value in axes[name]:
                if value != base[name]:
                    variants[f"{name} {value}"] = {**base, name: value}
    for schedule in SCHEDULES:
        variants[f"lr_schedule {schedule}"] = {**base, "lr_schedule": schedule}
    return variants


def cell_of(overrides: Mapping) -> dict:
    """The grid columns of a trial's overrides, with plain Python numbers (a table row -> overrides)."""
    cell = {name: overrides[name] for name in CONFIG_COLUMNS}
    for name in ("epochs", "batch_size"):
        cell[name] = int(cell[name])
    cell["learning_rate"] = float(cell["learning_rate"])
    return cell


@dataclass(frozen=True)
class TrialSpec:
    """One trial: the architecture of a registry run, trained with ``overrides`` on a share of the images.

    ``profile`` names the profile whose image caps and patience the trial runs with (a worker's
    own profile does not matter: its runs land under the chief's keys).
    """

    architecture: str  # registry key of the run whose saved model.json is the network
    overrides: tuple  # sorted (TrainConfig field, value) pairs
    train_fraction: float = 1.0
    profile: str = "default"

    def __post_init__(self):
        overrides = self.overrides.items() if isinstance(self.overrides, Mapping) else self.overrides
        overrides = tuple(sorted((str(name), value) for name, value in overrides))
        unknown = sorted({name for name, _ in overrides} - _train_config_fields())
        if unknown:
            raise ValueError(f"TrialSpec: unknown TrainConfig field(s) {', '.join(unknown)}")
        object.__setattr__(self, "overrides", overrides)
        if isinstance(self.train_fraction, bool) or not 0 < float(self.train_fraction) <= 1:
            raise ValueError(f"TrialSpec.train_fraction must be in (0, 1], got {self.train_fraction!r}")
        object.__setattr__(self, "train_fraction", float(self.train_fraction))
        get_profile(self.profile)

    @property
    def config(self) -> dict:
        return dict(self.overrides)

    def to_json(self) -> str:
        """The trial as canonical JSON: what the keras-tuner oracle sends to a worker."""
        return json.dumps({"architecture": self.architecture, "overrides": self.config,
                           "train_fraction": self.train_fraction, "profile": self.profile}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrialSpec":
        try:
            values = json.loads(text)
            return cls(values["architecture"], values["overrides"], values["train_fraction"], values["profile"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not a trial description: {text[:200]!r} ({error})") from None

    def label(self) -> str:
        """A short readable name of the trial."""
        c = self.config
        return " ".join(f"{name}={c[name]}" for name in CONFIG_COLUMNS if name in c)


def make_trials(architecture: str, cells: Iterable[Mapping], profile: Profile | str) -> list[TrialSpec]:
    """One trial per cell at the profile's share of the training images (duplicates dropped, order kept)."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    trials = [TrialSpec(architecture, dict(cell), profile.tuning_train_fraction, profile.name) for cell in cells]
    return list(dict.fromkeys(trials))


# ----------------------------------------------------------------------------- the full plan, dry


def notebook_networks(twins_dir: Path | None = None) -> pd.DataFrame:
    """Every network the study defines: the ``build_*`` functions of the notebook twins (read, not run)."""
    twins_dir = Path(twins_dir) if twins_dir else (repository_root() or Path.cwd()) / "ISTRATI_LUCIAN"
    rows = []
    for twin in sorted(twins_dir.glob("[0-9][0-9]_*.py")):
        tree = ast.parse(twin.read_text(encoding="utf-8"), filename=str(twin))
        rows += [{"notebook": twin.stem, "builder": node.name} for node in tree.body
                 if isinstance(node, ast.FunctionDef) and node.name.startswith("build_")]
    return pd.DataFrame(rows, columns=["notebook", "builder"])


def measured_throughput(records) -> tuple[float | None, str]:
    """Training images per second on this machine, from the registry's runs, and where it comes from.

    All the runs' training images x epochs over all their wall time, so that long runs weigh
    most: the wall time includes building and predicting, whose fixed cost dominates tiny runs,
    and the figure errs on the slow side. Runs of any engine version count: the speed of the
    machine is what is measured.
    """
    images, seconds, runs = 0.0, 0.0, 0
    for record in records:
        data = record.data
        n_images, epochs, wall = data.get("n_train_images"), data.get("epochs_run"), data.get("wall_time_s")
        if n_images and epochs and wall:
            images, seconds, runs = images + n_images * epochs, seconds + wall, runs + 1
    if not runs:
        return None, ("no measurement: the registry holds no finished run; run a notebook or "
                      "scripts/benchmark_training.py first")
    return images / seconds, (f"{runs} runs in this machine's registry (training images x epochs over wall time, "
                              "which includes building and predicting)")


def describe_full_plan(profile: Profile | str, *, records=(), n_train_images: int, twins_dir: Path | None = None):
    """What ``profile`` trains in notebook 05 and the chapters, and an estimated time.

    Returns ``(cells, summary, networks)``: one row per grid cell (with its epochs and
    estimated seconds), a dict of totals with the throughput used and its source, and the
    networks the notebooks define.
    ``n_train_images``: training images (black ones removed) of the data the plan would run on.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    cells = pd.DataFrame(grid_cells(profile))
    trial_images = round(profile.tuning_train_fraction * n_train_images)
    throughput, source = measured_throughput(records)
    cells["images"] = trial_images
    cells["patience"] = profile.early_stopping_patience
    cells["estimated s"] = cells["epochs"] * trial_images / throughput if throughput else float("nan")
    networks = notebook_networks(twins_dir)
    network_epochs = profile.max_epochs
    summary = {
        "profile": profile.name,
        "grid cells": len(cells),
        "distinct cells": len({json.dumps(row, sort_keys=True) for row in cells[list(CONFIG_COLUMNS)].to_dict("records")}),
        "schedules tried on the best cell": len(SCHEDULES),
        "networks of the chapters": len(networks),
        "epoch cap of the chapters' networks": network_epochs,
        "early-stopping patience": profile.early_stopping_patience,
        "training images per network": n_train_images,
        "training images per grid trial": trial_images,
        "throughput (images/s)": round(throughput, 1) if throughput else None,
        "throughput from": source,
    }
    if throughput:
        grid_s = float(cells["estimated s"].sum()) + len(SCHEDULES) * max(profile.tuning_epochs) * trial_images / throughput
        networks_s = len(networks) * network_epochs * n_train_images / throughput
        summary["estimated grid time (h)"] = round(grid_s / 3600, 2)
        summary["estimated networks time at the epoch cap (h, an upper bound)"] = round(networks_s / 3600, 2)
    return cells, summary, networks


def dry_run_report(profile: str, *, data_dir=None, workdir=None, seed: int = 42) -> str:
    """The text ``export_submission.py --dry-run`` prints: the plan of ``profile`` and its estimated time.

    Reads the data (to count the training images) and the registry (for the throughput); trains nothing.
    """
    from contest_study.data import drop_black_images
    from contest_study.registry import RunRecord
    from contest_study.study import open_study

    study = open_study(profile=profile, data_dir=data_dir, workdir=workdir, seed=seed)
    n_train = len(drop_black_images(study.data.train, keep=1))
    records = [RunRecord.load(path.parent) for path in sorted(study.registry.root.glob("*/record.json"))]
    cells, summary, networks = describe_full_plan(profile, records=records, n_train_images=n_train)
    with pd.option_context("display.max_rows", None, "display.width", 200):
        return "\n\n".join([
            f"Plan of the {profile!r} profile (nothing is trained)",
            "\n".join(f"  {name}: {value}" for name, value in summary.items()),
            "Networks of the chapters (their builders in the notebook twins):\n" + networks.to_string(index=False),
            f"Notebook 05: the {len(cells)} grid cells:\n" + cells.to_string(),
        ])

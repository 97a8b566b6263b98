"""What every notebook opens first: the run's data, registry, profile and oracle.

``study = open_study(profile=..., data_dir=..., workdir=..., seed=...)`` (the notebook's
parameters cell), then ``study.train(build_cnn_1a, family="cnn", ...)`` trains the network a
notebook cell defines, or reads it from the registry.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from contest_study import plots
from contest_study.config import StudyContext, study_context
from contest_study.data import ContestData, load_contest
from contest_study.registry import Registry, RunRecord, best_per_family, latest_runs, run_name
from contest_study.synthetic import ensure_dataset, load_oracle


@dataclass
class Study:
    """One run of the study: where it writes, what it reads, and the shortcuts to train."""

    context: StudyContext
    data: ContestData
    registry: Registry
    # Bayes-optimal probabilities {"val": ..., "holdout": ...} on the embedded data, else None.
    oracle: dict[str, np.ndarray] | None

    @property
    def label_names(self) -> list[str]:
        return self.data.label_names

    def config(self, **overrides):
        """The profile's training configuration with ``overrides`` (TrainConfig fields)."""
        from contest_study.training import config_for_profile

        return config_for_profile(self.context.profile, **overrides)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape of one image as the networks receive it: (height, width, channels)."""
        return tuple(self.data.train.images.shape[1:])

    def train(
        self,
        build,
        *,
        family: str,
        description: str = "",
        black_images: str = "removed",
        input_channels: int | None = None,
        seed: int | None = None,
        force: bool = False,
        fit=None,
        train_fraction: float = 1.0,
        **config_overrides,
    ) -> RunRecord:
        """Train the network ``build(input_shape, n_labels)`` makes, or read its run from the registry.

        ``fit`` is a notebook's own compile-and-fit recipe (None: the engine's, with the same
        settings); ``seed`` None is the study's; ``config_overrides`` are TrainConfig fields.
        """
        from contest_study.training import run_experiment

        return run_experiment(
            self.registry,
            self.data,
            build=build,
            family=family,
            description=description,
            config=self.config(**config_overrides),
            seed=self.context.seed if seed is None else seed,
            black_images=black_images,
            oracle=self.oracle,
            force=force,
            input_channels=input_channels,
            profile=self.context.profile,
            fit_recipe=fit,
            train_fraction=train_fraction,
        )

    @staticmethod
    def builder_from_record(record: RunRecord):
        """A builder of the architecture a registry run trained (from its saved Keras config)."""
        from contest_study.training import builder_from_record

        return builder_from_record(record)

    def records(self, family: str | None = None, *, any_seed: bool = False) -> list[RunRecord]:
        """The registry's runs of this study: this data, this profile and (unless ``any_seed``) this seed.

        A registry shared by several studies (another contest folder, another profile) holds
        runs that must not be compared with this one's; a run superseded by a newer one of the
        same name (a notebook edited since) is left out too (:func:`~contest_study.registry.latest_runs`).
        """
        return latest_runs(
            record
            for record in self.registry.records(family=family)
            if record.data.get("data_fingerprint") == self.data.fingerprint
            and record.data.get("profile") == self.context.profile.name
            and (any_seed or record.data.get("seed") == self.context.seed)
        )

    def table(self, records) -> pd.DataFrame:
        """Comparison table of ``records`` (see :func:`comparison_table`)."""
        return comparison_table(self.registry, records)

    def best(self, records) -> RunRecord:
        """The run with the highest validation mAP among ``records`` (hold-out never decides)."""
        return best_per_family(records)[0]

    def comparison_figures(self, runs: dict[str, RunRecord], prefix: str) -> dict:
        """Draw and save (as ``<prefix>_<figure>.png``) the figures that compare ``runs``.

        Per-class AP bars, learning curves, and precision-recall curves on the
        non-black validation images; the figures are returned for display.
        """
        records = list(runs.values())
        figures = {
            "per_class_ap": plots.per_class_ap_bars(self.table(records), self.label_names, model_column="run"),
            "precision_recall": plots.precision_recall_curves_from_records(records, self.label_names, non_black=True),
        }
        histories = {name: run.history for name, run in runs.items() if not run.history.empty}
        if histories:
            figures["learning_curves"] = plots.learning_curves(histories)
        return self.save_figures(figures, prefix)

    def best_run_figures(self, record: RunRecord, prefix: str) -> dict:
        """Prediction grid (validation) and confusion matrices (hold-out) of one run, saved and returned."""
        figures = {
            "prediction_grid": plots.prediction_grid_from_record(
                record, self.data.val.ids, self.data.val.images, self.label_names, n=16, seed=self.context.seed
            ),
            "confusion_matrices": plots.confusion_matrices_from_record(record, self.label_names, split="holdout"),
        }
        return self.save_figures(figures, prefix)

    def save_figures(self, figures: dict, prefix: str) -> dict:
        """Save each figure as ``figures/<prefix>_<name>.png`` and close it; return ``figures`` for display.

        Closed, a figure is no longer drawn again by the notebook's inline backend at
        the end of the cell; it is shown once, where the notebook displays it.
        """
        for name, figure in figures.items():
            plots.save_figure(figure, f"{prefix}_{name}", self.context.figures_dir)
            plt.close(figure)
        return figures

    def black_image_experiment(self, build, *, family: str, **train_options) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
        """Train the network of ``build`` with all black images removed but one, and with all kept.

        Returns a table (one row per training set) of mAP and per-label AP on all
        validation images and on the non-black ones, with the hold-out beside
        them, and the two records.
        """
        runs = {
            option: self.train(build, family=family, black_images=option, **train_options)
            for option in ("removed", "kept")
        }
        rows = {}
        for option, record in runs.items():
            row = {}
            for split in ("val", "holdout"):
                for subset, subset_name in (("all", "all"), ("non_black", "non-black")):
                    row[f"{split} mAP ({subset_name})"] = record.metrics[split][subset]["map"]
            for label in self.label_names:
                row[f"val AP {label} (non-black)"] = record.metrics["val"]["non_black"]["ap"][label]
            row["training images"] = record.data.get("n_train_images")
            rows["black images " + ("removed but one" if option == "removed" else "kept")] = row
        return pd.DataFrame(rows).T, runs

    def fit_classical(self, estimator, *, name: str, description: str, black_images: str = "removed",
                      force: bool = False) -> RunRecord:
        """Fit a scikit-learn estimator on the training pixels, or read its run from the registry."""
        from contest_study.baselines import run_estimator

        return run_estimator(
            self.registry,
            self.data,
            estimator=estimator,
            name=name,
            description=description,
            seed=self.context.seed,
            black_images=black_images,
            oracle=self.oracle,
            force=force,
            profile=self.context.profile,
        )


def comparison_table(registry: Registry, records) -> pd.DataFrame:
    """The registry's comparison table of ``records``, with a readable ``run`` column first."""
    records = list(records)
    names = {record.key: run_name(record) for record in records}
    table = registry.table(records)
    table.insert(0, "run", table["key"].map(names))
    return table


def load_split_oracle(data: ContestData) -> dict[str, np.ndarray] | None:
    """The oracle probabilities of the validation and hold-out images, or None without an oracle file."""
    val = load_oracle(data.data_dir, data.val.ids)
    if val is None:
        return None
    return {"val": val, "holdout": load_oracle(data.data_dir, data.holdout.ids)}


def open_study(
    profile: str = "default",
    data_dir=None,
    workdir=None,
    seed: int = 42,
    *,
    keep_channels: bool = False,
    context: StudyContext | None = None,
) -> Study:
    """Load the data of this run and open its registry (the arguments of a notebook's parameters cell).

    ``data_dir`` None is the embedded dataset in ``<workdir>/data/embedded``, generated
    there on first use; a folder given by the user is read as it is and never written to.
    """
    context = context or study_context(profile=profile, data_dir=data_dir, workdir=workdir, seed=seed)
    # On a GPU, TensorFlow trains there without being asked; mixed precision is the profile's choice.
    keras.mixed_precision.set_global_policy("mixed_float16" if context.profile.mixed_precision else "float32")
    if data_dir is None and not context.data_dir.exists():
        print(f"generating the embedded dataset in {context.data_dir} (first use, about a minute)")
        ensure_dataset(context.data_dir)
    data = load_contest(context.data_dir, cache_dir=context.cache_dir, seed=context.seed, keep_channels=keep_channels)
    return Study(context=context, data=data, registry=Registry(context.runs_dir), oracle=load_split_oracle(data))

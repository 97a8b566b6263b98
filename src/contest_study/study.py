"""What every notebook opens first: the run's context, its data, the registry and the oracle.

A notebook starts with ``study = open_study()`` and then asks for runs by name,
``study.train("cnn_1b")`` or ``study.baseline("knn")``; the profile's epoch cap,
batch size and image caps, the seed, the oracle and the registry are filled in
here, once, instead of in every notebook.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from contest_study import plots
from contest_study.config import StudyContext, study_context
from contest_study.data import ContestData, load_contest
from contest_study.registry import Registry, RunRecord, best_per_family
from contest_study.synthetic import load_oracle


# Differences of mAP below this are within the run-to-run noise of this study's training.
NEGLIGIBLE_MAP_CHANGE = 0.005


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

    def train(
        self,
        model_name: str,
        *,
        black_images: str = "removed",
        input_channels: int = 1,
        description: str | None = None,
        force: bool = False,
        **config_overrides,
    ) -> RunRecord:
        """Train ``model_name`` with the profile's settings (or reuse the registry's run)."""
        from contest_study.training import run_experiment

        return run_experiment(
            self.registry,
            self.data,
            model_name=model_name,
            config=self.config(**config_overrides),
            seed=self.context.seed,
            black_images=black_images,
            oracle=self.oracle,
            force=force,
            input_channels=input_channels,
            profile=self.context.profile,
            description=description,
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

    def describe_best(self, record: RunRecord, family_name: str) -> str:
        """A sentence (Markdown) with the scores of the best run of a family, built from its record."""
        val, holdout = record.metrics["val"], record.metrics["holdout"]
        text = (
            f"**Best {family_name}: {run_name(record)}** ({record.description}): validation mAP "
            f"{val['all']['map']:.3f} ({val['non_black']['map']:.3f} without the black images), "
            f"hold-out mAP {holdout['all']['map']:.3f} ({holdout['non_black']['map']:.3f} without the black images)."
        )
        if record.oracle:
            gap = record.oracle["val"]["non_black"]["map"] - val["non_black"]["map"]
            text += (
                f" On the non-black validation images the oracle reaches {record.oracle['val']['non_black']['map']:.3f}, "
                f"so this network is {gap:.3f} below the best achievable score."
            )
        return text

    def save_figures(self, figures: dict, prefix: str) -> dict:
        """Save each figure as ``figures/<prefix>_<name>.png`` and close it; return ``figures`` for display.

        Closed, a figure is no longer drawn again by the notebook's inline backend at
        the end of the cell; it is shown once, where the notebook displays it.
        """
        for name, figure in figures.items():
            plots.save_figure(figure, f"{prefix}_{name}", self.context.figures_dir)
            plt.close(figure)
        return figures

    @staticmethod
    def describe_change(baseline: RunRecord, variant: RunRecord, change: str) -> str:
        """What ``change`` did to ``baseline``'s scores and training time, in words, from both records."""
        def scores(record, split):
            return record.metrics[split]["non_black"]["map"], record.metrics[split]["all"]["map"]

        (val_base, val_base_all), (val_variant, val_variant_all) = scores(baseline, "val"), scores(variant, "val")
        holdout_change = scores(variant, "holdout")[0] - scores(baseline, "holdout")[0]
        delta = val_variant - val_base
        verdict = (
            "no change beyond run-to-run noise"
            if abs(delta) < NEGLIGIBLE_MAP_CHANGE
            else ("an improvement" if delta > 0 else "a loss")
        )
        time_base, time_variant = baseline.data.get("wall_time_s"), variant.data.get("wall_time_s")
        text = (
            f"With {change}, {run_name(baseline)} scores a validation mAP of {val_variant:.3f} on the non-black "
            f"images against {val_base:.3f} without ({delta:+.3f}, {verdict}; hold-out {holdout_change:+.3f}); "
            f"over all validation images {val_variant_all:.3f} against {val_base_all:.3f}."
        )
        if time_base and time_variant:
            text += (
                f" Training took {time_variant:.0f} s against {time_base:.0f} s "
                f"({variant.data.get('epochs_run')} and {baseline.data.get('epochs_run')} epochs)."
            )
        return text

    @staticmethod
    def describe_black_effect(black_table: pd.DataFrame) -> str:
        """What keeping the black images did, in words, from :meth:`black_image_experiment`'s table."""
        removed, kept = black_table.iloc[0], black_table.iloc[1]
        change = {column: kept[column] - removed[column] for column in black_table.columns if "mAP" in column}
        n_removed, n_kept = int(removed["training images"]), int(kept["training images"])
        text = (
            f"Keeping the black images changes the validation mAP by {change['val mAP (non-black)']:+.3f} on the "
            f"non-black images and by {change['val mAP (all)']:+.3f} on all images (hold-out: "
            f"{change['holdout mAP (non-black)']:+.3f} and {change['holdout mAP (all)']:+.3f}); the training "
            f"set has {n_removed} images without them and {n_kept} with them. "
        )
        non_black = change["val mAP (non-black)"]
        if abs(non_black) < NEGLIGIBLE_MAP_CHANGE:
            text += "On the non-black images the two training sets are equivalent within run-to-run noise. "
        elif non_black > 0:
            text += "On the non-black images keeping them helped. "
            if n_kept > n_removed:
                text += (
                    "The black images show no shape to learn from, so a likely reason is the larger epoch: "
                    "with the same epoch cap the network makes more weight updates, i.e. trains longer; this "
                    "comparison cannot tell that apart from a regularising effect of the random labels. "
                )
            else:
                text += (
                    "Both training sets have the same size here (the profile caps them), so the difference "
                    "is in which images the network saw, within the noise of such small runs. "
                )
        else:
            text += (
                "On the non-black images keeping them hurt: their random labels are pure label noise for "
                "every weight that looks at shapes. "
            )
        text += (
            "Over all images both runs answer the black validation images alike, with the positive rate of "
            "each label among the black training images (the study's scoring rule; no model can do better on "
            "random coins), so the all-images difference only carries the non-black one, diluted by the "
            "black third."
        )
        return text

    def black_image_experiment(self, model_name: str, **config_overrides) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
        """Train ``model_name`` with all black images removed but one, and with all kept.

        Returns a table (one row per training set) of mAP and per-label AP on all
        validation images and on the non-black ones, with the hold-out beside
        them, and the two records.
        """
        runs = {
            option: self.train(model_name, black_images=option, **config_overrides) for option in ("removed", "kept")
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

    def architectures(self, family: str) -> pd.DataFrame:
        """The architectures of ``family`` with their description and parameter count (built, not trained)."""
        import keras

        from contest_study.models import MODELS

        rows = []
        for name, spec in MODELS.items():
            if spec.family == family:
                model = spec.builder(input_shape=self.data.train.images.shape[1:], n_labels=len(self.label_names))
                rows.append({"model": name, "description": spec.description, "parameters": model.count_params()})
        keras.backend.clear_session()
        return pd.DataFrame(rows).set_index("model")

    def baseline(self, name: str, *, black_images: str = "removed", force: bool = False) -> RunRecord:
        """Fit a classical reference (``"knn"`` or ``"logistic_regression"``) on the pixels."""
        from contest_study.baselines import run_classical_baseline

        return run_classical_baseline(
            self.registry,
            self.data,
            name=name,
            seed=self.context.seed,
            black_images=black_images,
            oracle=self.oracle,
            force=force,
            profile=self.context.profile,
        )


def run_name(record: RunRecord) -> str:
    """The model name plus what sets this run apart from the study's standard setting."""
    hyperparams = record.hyperparams
    variant = []
    if hyperparams.get("black_images") == "kept":
        variant.append("black images kept")
    if hyperparams.get("augment"):
        variant.append("augmented")
    if hyperparams.get("input_channels", 1) != 1:
        variant.append(f"{hyperparams['input_channels']} channels")
    return f"{record.model} ({', '.join(variant)})" if variant else record.model


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


def open_study(context: StudyContext | None = None) -> Study:
    """Load the data of ``context`` (default: from the environment) and open its registry."""
    context = context or study_context()
    data = load_contest(context.data_dir, cache_dir=context.cache_dir, seed=context.seed)
    return Study(context=context, data=data, registry=Registry(context.runs_dir), oracle=load_split_oracle(data))

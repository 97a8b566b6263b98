"""The figures of the study.

Every figure function takes plain arrays / pandas objects and returns a
matplotlib :class:`~matplotlib.figure.Figure`; nothing is shown here, the
notebooks display the figures they get back. The few ``*_from_record(s)``
functions only pull arrays out of registry records and call the array versions,
so the figures stay usable without a registry.

Figures are created through pyplot so that the notebook's inline backend shows
them at the end of the cell; scripts that make many figures should close them
(``plt.close(fig)``) once saved.

Label names always come from the caller (the contest folder's CSV header), and
images may be ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, H, W, 3)`` arrays in
[0, 1] (float) or [0, 255] (integer); they are drawn in grayscale.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, multilabel_confusion_matrix

from contest_study.files import atomic_output

SAVE_DPI = 120
GRID_COLUMNS = 8
CORRECT_COLOR = "tab:blue"
WRONG_COLOR = "tab:red"
NOT_AVAILABLE_COLOR = "0.85"

# Keys of RunRecord.predictions(): "<split>_ids", "<split>_true", "<split>_score", "<split>_is_black".
PREDICTION_SPLITS = ("val", "holdout")


# --------------------------------------------------------------------------- saving


def save_figure(fig: Figure, name: str, figures_dir: str | os.PathLike) -> Path:
    """Write ``fig`` to ``<figures_dir>/<name>.png`` and return that path.

    Written with the study's atomic-write helper: an existing figure is only
    replaced once the new one is complete.
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"save_figure expects a matplotlib Figure, got {type(fig).__name__}")
    stem = str(name).removesuffix(".png")
    if not stem or stem in {".", ".."} or "/" in stem or "\\" in stem:
        raise ValueError(f"figure name {name!r} must be a plain file name without folders")
    target = Path(figures_dir) / f"{stem}.png"
    with atomic_output(target) as temporary:
        fig.savefig(temporary, format="png", dpi=SAVE_DPI, bbox_inches="tight")
    return target


# --------------------------------------------------------------------------- input checks


def _check_images(images, argument: str = "images") -> tuple[np.ndarray, float]:
    """The image batch as an array plus the value of white (1.0 for floats, 255 for integers)."""
    array = np.asarray(images)
    if not (array.ndim == 3 or (array.ndim == 4 and array.shape[-1] in (1, 3))):
        raise ValueError(f"{argument} must have shape (N, H, W), (N, H, W, 1) or (N, H, W, 3); got {array.shape}")
    white = 255.0 if np.issubdtype(array.dtype, np.integer) else 1.0
    return array, white


def _gray(image: np.ndarray) -> np.ndarray:
    """One image as (H, W); converted one at a time so a whole split is never copied to draw a few."""
    if image.ndim == 2:
        return image
    # Grayscale stored as 3 identical channels: their mean is the gray level (and a fair one for colour).
    return image[..., 0] if image.shape[-1] == 1 else image.mean(axis=-1)


def _as_label_matrix(labels, label_names: Sequence[str], argument: str = "labels") -> np.ndarray:
    """A (N, n_labels) array whose width matches ``label_names``."""
    array = np.asarray(labels)
    if array.ndim == 1 and len(label_names) == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] != len(label_names):
        raise ValueError(
            f"{argument} must have shape (N, {len(label_names)}) to match label_names {list(label_names)}; "
            f"got {array.shape}"
        )
    return array


def _as_binary_labels(labels, label_names: Sequence[str], argument: str = "labels") -> np.ndarray:
    array = _as_label_matrix(labels, label_names, argument)
    if array.size and not np.isin(array, (0, 1)).all():
        raise ValueError(f"{argument} must hold only 0/1 values")
    return array.astype(np.int64)


def _check_same_length(**arrays) -> int:
    lengths = {name: len(value) for name, value in arrays.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name}: {length}" for name, length in lengths.items())
        raise ValueError(f"these arrays must have the same number of rows ({described})")
    return next(iter(lengths.values()))


def _check_n(n: int) -> int:
    if int(n) < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return int(n)


def _pick_rows(count: int, n: int, seed: int | None) -> np.ndarray:
    """The first ``n`` rows, or ``n`` rows drawn with ``seed`` (always in increasing order)."""
    n = min(_check_n(n), count)
    if seed is None:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(count, size=n, replace=False))


def _tell_apart(names: Sequence[str], keys: Sequence) -> list[str]:
    """Names for a legend or axis: a name shared by several runs gets the end of each run's key.

    Registry keys are ``<model>-<hash>``, so their end is the part that differs.
    """
    return [name if list(names).count(name) == 1 else f"{name} [{str(key)[-6:]}]" for name, key in zip(names, keys)]


def _message_figure(title: str, message: str) -> Figure:
    """A figure that says why there is nothing to draw, so a notebook never shows a blank cell."""
    fig, ax = plt.subplots(figsize=(6, 2.2), layout="constrained")
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=11)
    return fig


def _image_axes(count: int, title: str, *, cell_width: float = 1.6, cell_height: float = 1.9,
                columns: int = GRID_COLUMNS) -> tuple[Figure, list]:
    """A grid with exactly ``count`` image axes (unused cells removed)."""
    columns = min(columns, count)
    rows = -(-count // columns)
    fig, grid = plt.subplots(rows, columns, figsize=(cell_width * columns, cell_height * rows + 0.5),
                             squeeze=False, layout="constrained")
    axes = list(grid.ravel())
    for ax in axes[count:]:
        fig.delaxes(ax)
    for ax in axes[:count]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    return fig, axes[:count]


def _positive_label_text(row: np.ndarray, label_names: Sequence[str]) -> str:
    positives = [name for name, value in zip(label_names, row) if value]
    return ", ".join(positives) if positives else "no label"


# --------------------------------------------------------------------------- data analysis


def image_grid(images, labels, label_names: Sequence[str], ids=None, n: int = 16,
               title: str = "Example images and their labels", seed: int | None = None) -> Figure:
    """A grid of up to ``n`` grayscale images, each titled with its id and the labels it carries.

    ``labels`` may be None (unlabelled test images). The first ``n`` images are
    shown, or ``n`` drawn with ``seed`` when it is given.
    """
    images, white = _check_images(images)
    arrays = {"images": images}
    if labels is not None:
        labels = _as_binary_labels(labels, label_names)
        arrays["labels"] = labels
    if ids is not None:
        ids = np.asarray(ids)
        arrays["ids"] = ids
    count = _check_same_length(**arrays)
    if count == 0:
        return _message_figure(title, "No images to show.")
    rows = _pick_rows(count, n, seed)
    fig, axes = _image_axes(len(rows), title)
    for ax, row in zip(axes, rows):
        ax.imshow(_gray(images[row]), cmap="gray", vmin=0, vmax=white, interpolation="nearest")
        caption = [str(ids[row]) if ids is not None else f"#{row}"]
        if labels is not None:
            caption.append(_positive_label_text(labels[row], label_names))
        ax.set_title("\n".join(caption), fontsize=8)
    return fig


def _positive_negative_bars(ax, labels: np.ndarray, label_names: Sequence[str]) -> None:
    """Positives and negatives per label side by side, each bar annotated with its count and rate."""
    total = len(labels)
    positives = labels.sum(axis=0)
    negatives = total - positives
    positions = np.arange(len(label_names))
    width = 0.38
    for offset, counts, kind, color in ((-width / 2, positives, "positive", "tab:green"),
                                        (width / 2, negatives, "negative", "tab:gray")):
        bars = ax.bar(positions + offset, counts, width, label=kind, color=color)
        rates = counts / total if total else np.zeros(len(counts))
        ax.bar_label(bars, labels=[f"{count}\n{rate:.1%}" for count, rate in zip(counts, rates)], fontsize=7)
    ax.set_xticks(positions, list(label_names))
    ax.set_xlabel("label")
    ax.set_ylabel("images")
    ax.margins(y=0.2)


def label_balance(labels_by_split: Mapping[str, np.ndarray], label_names: Sequence[str]) -> Figure:
    """Positives and negatives of each label, one panel per split, with the rates annotated."""
    if not labels_by_split:
        raise ValueError("labels_by_split is empty: give at least one split's labels")
    matrices = {}
    for split, labels in labels_by_split.items():
        if labels is None:
            raise ValueError(f"split {split!r} has no labels (an unlabelled split cannot be counted)")
        matrices[split] = _as_binary_labels(labels, label_names, f"labels of split {split!r}")
    fig, axes = plt.subplots(1, len(matrices), figsize=(1.6 + 1.7 * len(label_names) * len(matrices), 4),
                             squeeze=False, sharey=True, layout="constrained")
    for ax, (split, labels) in zip(axes[0], matrices.items()):
        _positive_negative_bars(ax, labels, label_names)
        ax.set_title(f"{split} ({len(labels)} images)")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    fig.suptitle("Label balance per split (count and rate)")
    return fig


def _annotated_heatmap(ax, frame: pd.DataFrame, annotations: np.ndarray, *, cmap: str,
                       value_range: tuple[float, float], colorbar_label: str | None, square: bool = False) -> None:
    """A seaborn heatmap with every cell annotated, NaN cells (left grey by seaborn) included.

    seaborn does not annotate NaN cells, so the annotations are written here,
    dark on light cells and light on dark ones.
    """
    ax.set_facecolor(NOT_AVAILABLE_COLOR)
    low, high = value_range
    sns.heatmap(frame, ax=ax, annot=False, cmap=cmap, vmin=low, vmax=high, square=square, linewidths=0.5,
                cbar=colorbar_label is not None, cbar_kws={"label": colorbar_label} if colorbar_label else None)
    colormap = plt.get_cmap(cmap)
    values = frame.to_numpy(dtype=float)
    for (row, column), value in np.ndenumerate(values):
        if np.isnan(value):
            color, style = "black", "italic"
        else:
            red, green, blue, _ = colormap((value - low) / (high - low) if high > low else 1.0)
            color = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
            style = "normal"
        ax.text(column + 0.5, row + 0.5, annotations[row, column], ha="center", va="center", fontsize=9,
                color=color, fontstyle=style)


def label_cooccurrence(labels, label_names: Sequence[str]) -> Figure:
    """Heatmap of P(label j | label i) (row i, column j), each cell annotated with the co-occurrence count.

    A label with no positives gets an empty row.
    """
    labels = _as_binary_labels(labels, label_names)
    counts = labels.T @ labels
    given = np.diag(counts).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(given[:, None] > 0, counts / given[:, None], np.nan)
    annotations = np.array([[("–" if np.isnan(values[i, j]) else f"{values[i, j]:.2f}") + f"\n(n={counts[i, j]})"
                             for j in range(len(label_names))] for i in range(len(label_names))])
    size = 1.6 + 1.3 * len(label_names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size), layout="constrained")
    _annotated_heatmap(ax, pd.DataFrame(values, index=list(label_names), columns=list(label_names)), annotations,
                       cmap="Blues", value_range=(0.0, 1.0), colorbar_label="conditional probability", square=True)
    ax.set_xlabel("label j (column)")
    ax.set_ylabel("given label i (row)")
    ax.set_title(f"P(column label | row label), {len(labels)} images")
    return fig


def black_image_labels(labels_black, label_names: Sequence[str]) -> Figure:
    """Label distribution of the totally black images: per-label balance and label combinations."""
    title = "Labels of the totally black images"
    labels = _as_binary_labels(labels_black, label_names, "labels_black")
    if len(labels) == 0:
        return _message_figure(title, "There are no totally black images.")
    fig, (balance_ax, combination_ax) = plt.subplots(
        1, 2, figsize=(4 + 3.2 * len(label_names), 4), layout="constrained",
        gridspec_kw={"width_ratios": [len(label_names), max(len(label_names), 3)]},
    )
    _positive_negative_bars(balance_ax, labels, label_names)
    fig.legend(*balance_ax.get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    balance_ax.set_title("positives and negatives per label")

    combinations, counts = np.unique(labels, axis=0, return_counts=True)
    names = [_positive_label_text(combination, label_names) for combination in combinations]
    bars = combination_ax.bar(np.arange(len(names)), counts, color="tab:purple")
    combination_ax.bar_label(bars, labels=[f"{count}\n{count / len(labels):.1%}" for count in counts], fontsize=7)
    combination_ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right", fontsize=8)
    combination_ax.set_xlabel("labels present")
    combination_ax.set_ylabel("images")
    combination_ax.set_title("label combinations")
    combination_ax.margins(y=0.2)
    fig.suptitle(f"{title} ({len(labels)} images)")
    return fig


def intensity_histogram(images_by_split: Mapping[str, np.ndarray], bins: int = 64,
                        exclude_black: bool = True) -> Figure:
    """Pixel-intensity distribution (left) and per-image mean intensity (right), one line per split.

    Histograms are densities so splits of different sizes compare directly.
    With ``exclude_black`` totally black images (every pixel 0) are left out.
    """
    if not images_by_split:
        raise ValueError("images_by_split is empty: give at least one split's images")
    if int(bins) < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    fig, (pixel_ax, mean_ax) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for split, images in images_by_split.items():
        array, white = _check_images(images, f"images of split {split!r}")
        edges = np.linspace(0.0, white, int(bins) + 1)
        pixel_counts = np.zeros(int(bins))
        means = []
        # Chunks keep the memory of a full-size split (tens of millions of pixels) bounded.
        for start in range(0, len(array), 1024):
            chunk = array[start:start + 1024].astype(np.float32)
            flat = chunk.reshape(len(chunk), -1)
            if exclude_black:
                flat = flat[flat.max(axis=1) > 0]
            pixel_counts += np.histogram(flat, bins=edges)[0]
            means.append(flat.mean(axis=1))
        means = np.concatenate(means) if means else np.empty(0)
        if len(means) == 0:
            pixel_ax.plot([], [], label=f"{split} (no images)")
            mean_ax.plot([], [], label=f"{split} (no images)")
            continue
        label = f"{split} ({len(means)} images)"
        pixel_ax.stairs(pixel_counts / (pixel_counts.sum() * np.diff(edges)), edges, label=label, linewidth=1.5)
        mean_counts = np.histogram(means, bins=edges)[0]
        mean_ax.stairs(mean_counts / (mean_counts.sum() * np.diff(edges)), edges, label=label, linewidth=1.5)
    kind = "non-black images" if exclude_black else "all images"
    pixel_ax.set_title(f"pixel intensities ({kind})")
    pixel_ax.set_xlabel("pixel intensity")
    mean_ax.set_title(f"mean intensity per image ({kind})")
    mean_ax.set_xlabel("mean pixel intensity of the image")
    for ax in (pixel_ax, mean_ax):
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    fig.suptitle("Intensity distribution per split")
    return fig


def duplicate_pairs(images_a, images_b, distances, ids_a=None, ids_b=None, n: int = 8) -> Figure:
    """Near-duplicate pairs side by side (one pair per row), titled with their distance.

    Pairs are drawn in the order given (callers pass them closest first); with
    zero pairs the figure says so.
    """
    title = "Near-duplicate pairs"
    distances = np.asarray(distances, dtype=float).reshape(-1)
    if len(distances) == 0 and len(images_a) == 0 and len(images_b) == 0:
        return _message_figure(title, "No near-duplicate pairs were found.")
    images_a, white = _check_images(images_a, "images_a")
    images_b, _ = _check_images(images_b, "images_b")
    arrays = {"images_a": images_a, "images_b": images_b, "distances": distances}
    if ids_a is not None:
        arrays["ids_a"] = ids_a = np.asarray(ids_a)
    if ids_b is not None:
        arrays["ids_b"] = ids_b = np.asarray(ids_b)
    count = min(_check_same_length(**arrays), _check_n(n))
    fig, grid = plt.subplots(count, 2, figsize=(4.2, 2.2 * count + 0.5), squeeze=False, layout="constrained")
    for pair, (left, right) in enumerate(grid):
        for ax, images, ids in ((left, images_a, ids_a), (right, images_b, ids_b)):
            ax.imshow(_gray(images[pair]), cmap="gray", vmin=0, vmax=white, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if ids is not None:
                ax.set_title(str(ids[pair]), fontsize=8)
        left.set_ylabel(f"distance\n{distances[pair]:.4g}", fontsize=8)
    fig.suptitle(f"{title} ({count} of {len(distances)} shown)")
    return fig


# --------------------------------------------------------------------------- model comparison


def per_class_ap_bars(table: pd.DataFrame, label_names: Sequence[str], value_prefix: str = "val AP ",
                      model_column: str = "model") -> Figure:
    """Grouped bars of per-label average precision: models on the x axis, one bar per label.

    ``table`` is the registry table (one row per run) with a column
    ``f"{value_prefix}{label}"`` for every label; the bars are labelled with the
    ``model_column`` values, or with the index when that column is absent, and
    runs of the same model are told apart by the end of their ``key``. A
    black diamond marks each model's mean over the labels (its mAP).
    """
    columns = [f"{value_prefix}{label}" for label in label_names]
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(f"table lacks the columns {missing}; it has {list(table.columns)}")
    if table.empty:
        return _message_figure("Average precision per label", "No runs to compare yet.")
    names = table[model_column] if model_column in table.columns else table.index
    names = [str(name) for name in names]
    if "key" in table.columns:
        names = _tell_apart(names, table["key"])
    values = table[columns].to_numpy(dtype=float)
    positions = np.arange(len(names))
    width = 0.8 / len(label_names)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + 0.55 * len(names) * len(label_names)), 4.5),
                           layout="constrained")
    for index, label in enumerate(label_names):
        offset = (index - (len(label_names) - 1) / 2) * width
        bars = ax.bar(positions + offset, values[:, index], width, label=label)
        ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.2f}" for v in values[:, index]],
                     fontsize=6, rotation=90, padding=2)
    known = ~np.isnan(values)
    # A model without any AP value gets no marker (NaN) rather than a misleading 0.
    means = np.where(known.any(axis=1), np.where(known, values, 0.0).sum(axis=1) / np.maximum(known.sum(axis=1), 1),
                     np.nan)
    ax.scatter(positions, means, marker="D", color="black", zorder=3, label="mean (mAP)")
    ax.set_xticks(positions, names, rotation=30 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center")
    ax.set_xlabel("model")
    ax.set_ylabel(f"{value_prefix.strip()} (average precision)")
    ax.set_ylim(0, 1.05)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    ax.set_title(f"{value_prefix.strip()} per label and model")
    return fig


def precision_recall_curves(curves: Mapping[str, tuple], label_names: Sequence[str]) -> Figure:
    """One panel per label, one precision-recall curve per model, AP in the legend.

    ``curves`` maps a model name to ``(y_true, y_score)``, both (N, n_labels).
    A label without positives has no curve (AP is undefined) and its legend says so.
    """
    if not curves:
        raise ValueError("curves is empty: give at least one model's (y_true, y_score)")
    checked = {}
    for model, pair in curves.items():
        if len(pair) != 2:
            raise ValueError(f"curves[{model!r}] must be a (y_true, y_score) pair")
        y_true = _as_binary_labels(pair[0], label_names, f"y_true of {model!r}")
        y_score = _as_label_matrix(pair[1], label_names, f"y_score of {model!r}").astype(float)
        _check_same_length(**{f"y_true of {model!r}": y_true, f"y_score of {model!r}": y_score})
        checked[model] = (y_true, y_score)
    fig, axes = plt.subplots(1, len(label_names), figsize=(4.6 * len(label_names), 4.6), squeeze=False,
                             layout="constrained")
    for index, (ax, label) in enumerate(zip(axes[0], label_names)):
        chance_drawn = False
        for model, (y_true, y_score) in checked.items():
            if y_true[:, index].sum() == 0:
                ax.plot([], [], linestyle="none", label=f"{model}: no positives, AP undefined")
                continue
            PrecisionRecallDisplay.from_predictions(
                y_true[:, index], y_score[:, index], name=model, ax=ax, plot_chance_level=not chance_drawn,
            )
            chance_drawn = True
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(label)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Precision-recall curves per label")
    return fig


def _metric_names(history: pd.DataFrame) -> list[str]:
    """Training metrics logged in a Keras history, loss first (val_* and learning rate excluded)."""
    ignored = {"epoch", "learning_rate", "lr"}
    names = [column for column in history.columns if not column.startswith("val_") and column not in ignored]
    return sorted(names, key=lambda name: (name != "loss", name))


def _epochs(history: pd.DataFrame) -> np.ndarray:
    """Epoch numbers from 1: Keras CSVLogger's 0-based ``epoch`` column, the registry's ``epoch`` index, or 1..N."""
    if "epoch" in history.columns:
        return history["epoch"].to_numpy() + 1
    if history.index.name == "epoch":
        return history.index.to_numpy()
    return np.arange(1, len(history) + 1)


def learning_curves(histories: Mapping[str, pd.DataFrame]) -> Figure:
    """Loss and the contest's metric per epoch: one panel per quantity, one colour per model.

    When the histories logged ``pr_auc`` (Keras' PR-AUC, an approximation of the
    mean average precision the study scores with), the panels are the loss and the
    PR-AUC; otherwise the loss and every training metric logged. Solid lines are the
    training values, dashed lines the validation values (``val_<name>`` columns); a
    learning-rate panel is added when the histories logged one. Models with an empty
    history (e.g. k-NN baselines) are left out.
    """
    title = "Learning curves"
    usable = {model: history for model, history in histories.items() if history is not None and len(history)}
    if not usable:
        return _message_figure(title, "No model has a training history.")
    quantities: list[str] = []
    for history in usable.values():
        quantities += [name for name in _metric_names(history) if name not in quantities]
    if "pr_auc" in quantities:
        quantities = [name for name in quantities if name in ("loss", "pr_auc")]
    rate_column = next((column for column in ("learning_rate", "lr")
                        if any(column in history.columns for history in usable.values())), None)
    panels = quantities + ([rate_column] if rate_column else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4), squeeze=False, layout="constrained")
    colors = dict(zip(usable, sns.color_palette(n_colors=len(usable))))
    for ax, quantity in zip(axes[0], panels):
        for model, history in usable.items():
            epochs = _epochs(history)
            if quantity in history.columns:
                ax.plot(epochs, history[quantity], color=colors[model], marker=".",
                        label=model if quantity == rate_column else f"{model} train")
            if quantity != rate_column and f"val_{quantity}" in history.columns:
                ax.plot(epochs, history[f"val_{quantity}"], color=colors[model], linestyle="--", marker=".",
                        label=f"{model} validation")
        if quantity == rate_column:
            ax.set_yscale("log")
            ax.set_title("learning rate")
        elif quantity == "pr_auc":
            ax.set_title("PR-AUC (the contest's mAP, approximated)")
        else:
            ax.set_title(quantity)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(quantity.replace("_", " "))
        ax.legend(fontsize=7)
    fig.suptitle(f"{title} (solid: training, dashed: validation)")
    return fig


def confusion_matrices(y_true, y_pred, label_names: Sequence[str]) -> Figure:
    """One annotated 2x2 confusion matrix per label (rows: true value, columns: predicted value).

    ``y_pred`` holds 0/1 predictions: threshold scores first.
    """
    y_true = _as_binary_labels(y_true, label_names, "y_true")
    y_pred = _as_label_matrix(y_pred, label_names, "y_pred")
    if y_pred.size and not np.isin(y_pred, (0, 1)).all():
        raise ValueError("y_pred must hold only 0/1 predictions: threshold the scores first (y_score >= thresholds)")
    y_pred = y_pred.astype(np.int64)
    count = _check_same_length(y_true=y_true, y_pred=y_pred)
    matrices = multilabel_confusion_matrix(y_true, y_pred) if count else np.zeros((len(label_names), 2, 2), dtype=int)
    fig, axes = plt.subplots(1, len(label_names), figsize=(3.4 * len(label_names), 3.4), squeeze=False,
                             layout="constrained")
    for ax, label, matrix in zip(axes[0], label_names, matrices):
        ConfusionMatrixDisplay(matrix, display_labels=[f"not {label}", label]).plot(
            ax=ax, colorbar=False, cmap="Blues", values_format="d")
        ax.set_title(label)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.suptitle(f"Confusion matrices per label ({count} images)")
    return fig


def prediction_grid(images, y_true, y_score, label_names: Sequence[str], thresholds=None, n: int = 16,
                    ids=None, seed: int | None = None,
                    title: str = "Predictions on validation images") -> Figure:
    """Images with, per label, the predicted value and its probability.

    A label's line is blue when the prediction (score >= threshold, 0.5 by
    default) equals the true label and red when it does not. The first ``n``
    images are shown, or ``n`` drawn with ``seed``.
    """
    images, white = _check_images(images)
    y_true = _as_binary_labels(y_true, label_names, "y_true")
    y_score = _as_label_matrix(y_score, label_names, "y_score").astype(float)
    arrays = {"images": images, "y_true": y_true, "y_score": y_score}
    if ids is not None:
        arrays["ids"] = ids = np.asarray(ids)
    count = _check_same_length(**arrays)
    thresholds = np.full(len(label_names), 0.5) if thresholds is None else np.asarray(thresholds, dtype=float)
    if thresholds.shape != (len(label_names),):
        raise ValueError(f"thresholds must hold one value per label ({len(label_names)}); got shape {thresholds.shape}")
    if count == 0:
        return _message_figure(title, "No images to show.")
    y_pred = (y_score >= thresholds).astype(int)
    rows = _pick_rows(count, n, seed)
    line_height = 0.13
    fig, axes = _image_axes(len(rows), title, cell_height=1.9 + 0.22 * len(label_names))
    for ax, row in zip(axes, rows):
        ax.imshow(_gray(images[row]), cmap="gray", vmin=0, vmax=white, interpolation="nearest")
        ax.set_title(str(ids[row]) if ids is not None else f"#{row}", fontsize=8)
        for index, label in enumerate(label_names):
            correct = y_pred[row, index] == y_true[row, index]
            ax.text(0.5, -0.04 - index * line_height, f"{label}: {y_pred[row, index]} ({y_score[row, index]:.2f})",
                    transform=ax.transAxes, ha="center", va="top", fontsize=7,
                    color=CORRECT_COLOR if correct else WRONG_COLOR)
    fig.legend(handles=[Patch(color=CORRECT_COLOR, label="correct prediction"),
                        Patch(color=WRONG_COLOR, label="wrong prediction")],
               loc="outside lower center", ncols=2, fontsize=8,
               title="label: predicted value (probability)", title_fontsize=8)
    return fig


# --------------------------------------------------------------------------- hyperparameters, autoencoder


def heatmap(table: pd.DataFrame, index: str, columns: str, values: str, title: str, fmt: str = ".3f") -> Figure:
    """Annotated heatmap of ``values`` over two hyperparameters of a long table (one row per run).

    Several runs of one cell are averaged. A cell whose runs have no value is
    marked "failed", a combination with no run at all "not run"; both are grey.
    """
    missing = [name for name in (index, columns, values) if name not in table.columns]
    if missing:
        raise ValueError(f"table lacks the columns {missing}; it has {list(table.columns)}")
    if table.empty:
        return _message_figure(title, "No runs to show.")
    grouped = table.groupby([index, columns])[values]
    means = grouped.mean().unstack(columns)
    runs = grouped.size().unstack(columns).reindex(index=means.index, columns=means.columns)
    finite = means.to_numpy(dtype=float)
    annotations = np.empty(finite.shape, dtype=object)
    for i in range(finite.shape[0]):
        for j in range(finite.shape[1]):
            if not np.isnan(finite[i, j]):
                annotations[i, j] = format(finite[i, j], fmt)
            else:
                annotations[i, j] = "failed" if runs.iat[i, j] > 0 else "not run"
    # Rows shrink as they multiply (08 shows every run of the study), down to a legible 0.3 inch.
    row_height = max(0.3, 0.7 - 0.01 * finite.shape[0])
    fig, ax = plt.subplots(figsize=(2.0 + 1.3 * finite.shape[1], 1.4 + row_height * finite.shape[0]),
                           layout="constrained")
    has_values = bool(np.isfinite(finite).any())
    value_range = (float(np.nanmin(finite)), float(np.nanmax(finite))) if has_values else (0.0, 1.0)
    _annotated_heatmap(ax, means.astype(float), annotations, cmap="viridis", value_range=value_range,
                       colorbar_label=values if has_values else None)
    ax.set_xlabel(columns)
    ax.set_ylabel(index)
    ax.set_title(title)
    return fig


def denoising_grid(clean, noisy, denoised, n: int = 8, title: str = "Denoising autoencoder") -> Figure:
    """Rows: clean, noisy and denoised images; each noisy / denoised image shows its MSE to the clean one.

    Each batch is scaled by its own white value, so a uint8 input compares
    with a float model output on the same [0, 1] scale.
    """
    batches = {name: _check_images(images, name) for name, images in
               (("clean", clean), ("noisy", noisy), ("denoised", denoised))}
    count = _check_same_length(**{name: array for name, (array, _) in batches.items()})
    if count == 0:
        return _message_figure(title, "No images to show.")
    sizes = {name: array.shape[1:3] for name, (array, _) in batches.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"clean, noisy and denoised images differ in size: {sizes}")
    shown = min(_check_n(n), count)
    scaled = {name: [_gray(array[column]) / white for column in range(shown)]
              for name, (array, white) in batches.items()}
    fig, grid = plt.subplots(3, shown, figsize=(1.6 * shown + 0.6, 5.6), squeeze=False, layout="constrained")
    for row, name in enumerate(scaled):
        for column in range(shown):
            ax = grid[row, column]
            ax.imshow(scaled[name][column], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if name != "clean":
                error = float(np.mean((scaled[name][column] - scaled["clean"][column]) ** 2))
                ax.set_xlabel(f"MSE {error:.4f}", fontsize=7)
        grid[row, 0].set_ylabel(name, fontsize=10)
    fig.suptitle(f"{title}: clean, noisy and denoised images")
    return fig


# --------------------------------------------------------------------------- registry records


def _record_names(records: Sequence) -> list[str]:
    """Each record's model name, told apart by key where two records share a model name."""
    return _tell_apart([record.model for record in records], [record.key for record in records])


def _record_arrays(record, split: str, non_black: bool) -> dict[str, np.ndarray]:
    """The ids, true labels and scores of one prediction split of a record (optionally non-black only)."""
    if split not in PREDICTION_SPLITS:
        raise ValueError(f"split must be one of {PREDICTION_SPLITS}, got {split!r}")
    predictions = record.predictions()
    wanted = ("ids", "true", "score") + (("is_black",) if non_black else ())
    missing = [f"{split}_{part}" for part in wanted if f"{split}_{part}" not in predictions]
    if missing:
        raise ValueError(f"predictions of run {record.model!r} lack {missing}; they have {sorted(predictions)}")
    arrays = {part: np.asarray(predictions[f"{split}_{part}"]) for part in ("ids", "true", "score")}
    if non_black:
        keep = ~np.asarray(predictions[f"{split}_is_black"], dtype=bool)
        arrays = {part: array[keep] for part, array in arrays.items()}
    return arrays


def precision_recall_curves_from_records(records: Sequence, label_names: Sequence[str], split: str = "val",
                                         non_black: bool = False) -> Figure:
    """:func:`precision_recall_curves` of the stored predictions of registry records."""
    curves = {}
    for name, record in zip(_record_names(records), records):
        arrays = _record_arrays(record, split, non_black)
        curves[name] = (arrays["true"], arrays["score"])
    return precision_recall_curves(curves, label_names)


def _record_thresholds(record, label_names: Sequence[str]) -> np.ndarray:
    """The record's tuned thresholds in ``label_names`` order (a dict by label name, or a list)."""
    thresholds = record.thresholds
    if isinstance(thresholds, Mapping):
        missing = [label for label in label_names if label not in thresholds]
        if missing:
            raise ValueError(f"run {record.model!r} has no threshold for {missing}; it has {sorted(thresholds)}")
        thresholds = [thresholds[label] for label in label_names]
    return np.asarray(thresholds, dtype=float)


def confusion_matrices_from_record(record, label_names: Sequence[str], split: str = "holdout",
                                   non_black: bool = False) -> Figure:
    """:func:`confusion_matrices` of a record's predictions at its thresholds tuned on val.

    The default split is the holdout: on val the tuned thresholds were fitted
    to the very labels they are judged against.
    """
    arrays = _record_arrays(record, split, non_black)
    y_pred = (arrays["score"] >= _record_thresholds(record, label_names)).astype(int)
    fig = confusion_matrices(arrays["true"], y_pred, label_names)
    fig.suptitle(f"{record.model}: confusion matrices on {split} at the tuned thresholds ({len(y_pred)} images)")
    return fig


def prediction_grid_from_record(record, ids, images, label_names: Sequence[str], split: str = "val",
                                n: int = 16, seed: int | None = None, non_black: bool = False) -> Figure:
    """:func:`prediction_grid` of a record's predictions, with the images looked up by id.

    ``ids`` and ``images`` are the split's ids and images (e.g. ``data.val.ids``,
    ``data.val.images``); the record's tuned thresholds decide the predictions.
    """
    arrays = _record_arrays(record, split, non_black)
    position = {str(image_id): row for row, image_id in enumerate(np.asarray(ids))}
    unknown = [str(image_id) for image_id in arrays["ids"] if str(image_id) not in position]
    if unknown:
        raise ValueError(f"{len(unknown)} {split} ids of run {record.model!r} are not among the given ids "
                         f"(first: {unknown[0]!r}); pass the images of the same split and data folder")
    rows = [position[str(image_id)] for image_id in arrays["ids"]]
    return prediction_grid(np.asarray(images)[rows], arrays["true"], arrays["score"], label_names,
                           thresholds=_record_thresholds(record, label_names), n=n, ids=arrays["ids"], seed=seed,
                           title=f"{record.model}: predictions on {split} images")

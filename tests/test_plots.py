"""The study's figures: what each shows, their edge cases, and how they are saved."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from PIL import Image  # noqa: E402

from contest_study import plots  # noqa: E402

LABELS = ["cat", "dog", "bird"]  # deliberately not the contest's names: nothing may be hard-coded


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def images(rng):
    batch = rng.random((20, 64, 64, 1)).astype(np.float32)
    batch[:5] = 0.0  # five totally black images
    return batch


@pytest.fixture
def labels(rng):
    return rng.integers(0, 2, (20, 3)).astype(np.int8)


def texts(fig: Figure) -> list[str]:
    """Every piece of text in the figure: titles, annotations, tick labels, legends."""
    return [artist.get_text() for artist in fig.findobj(Text) if artist.get_text()]


def joined(fig: Figure) -> str:
    return "\n".join(texts(fig))


def image_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images]


# --------------------------------------------------------------------------- save_figure


def test_save_figure_writes_a_png_and_leaves_no_temporary_file(tmp_path, images, labels):
    fig = plots.image_grid(images, labels, LABELS, n=8)
    path = plots.save_figure(fig, "01_examples", tmp_path / "figures")
    assert path == tmp_path / "figures" / "01_examples.png"
    with Image.open(path) as png:
        assert png.format == "PNG" and png.width > 100
    assert sorted(os.listdir(path.parent)) == ["01_examples.png"]


def test_save_figure_does_not_double_the_extension(tmp_path):
    fig, _ = plt.subplots()
    assert plots.save_figure(fig, "curve.png", tmp_path).name == "curve.png"


def test_save_figure_replaces_an_existing_file_only_once_the_new_one_is_complete(tmp_path, monkeypatch):
    target = tmp_path / "figure.png"
    target.write_bytes(b"old figure")
    fig, _ = plt.subplots()
    real_savefig = Figure.savefig
    seen_during_rendering = []

    def checking_savefig(self, *args, **kwargs):
        seen_during_rendering.append(target.read_bytes())
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", checking_savefig)
    plots.save_figure(fig, "figure", tmp_path)
    assert seen_during_rendering == [b"old figure"]
    assert target.read_bytes().startswith(b"\x89PNG")
    assert os.listdir(tmp_path) == ["figure.png"]


def test_save_figure_keeps_the_old_file_and_cleans_up_when_rendering_fails(tmp_path, monkeypatch):
    target = tmp_path / "figure.png"
    target.write_bytes(b"old figure")
    fig, _ = plt.subplots()

    def failing_savefig(self, *args, **kwargs):
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    with pytest.raises(RuntimeError, match="renderer exploded"):
        plots.save_figure(fig, "figure", tmp_path)
    assert target.read_bytes() == b"old figure"
    assert os.listdir(tmp_path) == ["figure.png"]


@pytest.mark.parametrize("name", ["", "sub/figure", "..", "a\\b"])
def test_save_figure_rejects_names_that_are_not_plain_file_names(tmp_path, name):
    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match="plain file name"):
        plots.save_figure(fig, name, tmp_path)


def test_save_figure_rejects_something_that_is_not_a_figure(tmp_path):
    with pytest.raises(TypeError, match="Figure"):
        plots.save_figure("not a figure", "x", tmp_path)


def test_the_same_inputs_give_the_same_png_bytes(tmp_path, images, labels):
    first = plots.save_figure(plots.image_grid(images, labels, LABELS, n=4, seed=3), "a", tmp_path)
    second = plots.save_figure(plots.image_grid(images, labels, LABELS, n=4, seed=3), "b", tmp_path)
    assert first.read_bytes() == second.read_bytes()


# --------------------------------------------------------------------------- data analysis


def test_image_grid_shows_n_images_titled_with_ids_and_label_names(images, labels):
    ids = np.array([f"{index:06d}.png" for index in range(20)])
    fig = plots.image_grid(images, labels, LABELS, ids=ids, n=16, title="Training images")
    axes = image_axes(fig)
    assert len(axes) == 16 == len(fig.axes)
    assert fig._suptitle.get_text() == "Training images"
    first_title = axes[0].get_title()
    assert "000000.png" in first_title
    expected = ", ".join(name for name, value in zip(LABELS, labels[0]) if value) or "no label"
    assert expected in first_title
    assert axes[0].images[0].get_cmap().name == "gray"


def test_image_grid_with_seed_is_reproducible_and_differs_from_the_first_images(images, labels):
    ids = [str(index) for index in range(20)]
    titles = lambda fig: [ax.get_title().splitlines()[0] for ax in image_axes(fig)]  # noqa: E731
    seeded = titles(plots.image_grid(images, labels, LABELS, ids=ids, n=8, seed=7))
    assert seeded == titles(plots.image_grid(images, labels, LABELS, ids=ids, n=8, seed=7))
    assert titles(plots.image_grid(images, labels, LABELS, ids=ids, n=8)) == ids[:8]
    assert seeded != ids[:8]


def test_image_grid_accepts_fewer_images_than_n_three_channels_and_no_labels(rng):
    rgb = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    fig = plots.image_grid(rgb, None, LABELS, n=16)
    assert len(image_axes(fig)) == 5
    assert image_axes(fig)[0].images[0].get_clim() == (0, 255.0)


def test_image_grid_rejects_bad_shapes(images, labels):
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        plots.image_grid(images, labels[:, :2], LABELS)
    with pytest.raises(ValueError, match="same number of rows"):
        plots.image_grid(images, labels[:10], LABELS)
    with pytest.raises(ValueError, match="images must have shape"):
        plots.image_grid(images[0, :, :, 0], labels, LABELS)
    with pytest.raises(ValueError, match="0/1"):
        plots.image_grid(images, labels * 3, LABELS)
    with pytest.raises(ValueError, match="at least 1"):
        plots.image_grid(images, labels, LABELS, n=0)


def test_label_balance_has_one_panel_per_split_with_counts_and_rates():
    train = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0]])
    fig = plots.label_balance({"train": train, "val": train[:2]}, LABELS)
    assert [ax.get_title() for ax in fig.axes] == ["train (4 images)", "val (2 images)"]
    assert [tick.get_text() for tick in fig.axes[0].get_xticklabels()] == LABELS
    annotations = texts(fig)
    assert "3\n75.0%" in annotations  # "cat" positives in train
    assert "0\n0.0%" in annotations  # "bird" has no positives
    assert {"positive", "negative"} <= set(annotations)


def test_label_balance_rejects_unlabelled_and_empty_input(labels):
    with pytest.raises(ValueError, match="'test' has no labels"):
        plots.label_balance({"train": labels, "test": None}, LABELS)
    with pytest.raises(ValueError, match="empty"):
        plots.label_balance({}, LABELS)


def test_label_cooccurrence_annotates_conditional_rates_and_counts():
    labels = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    fig = plots.label_cooccurrence(labels, LABELS)
    heat_ax = fig.axes[0]
    cells = [text.get_text() for text in heat_ax.texts]
    assert len(cells) == 9
    # P(dog | cat) = 2/3, P(cat | dog) = 2/3, and "bird" never occurs so its row is undefined.
    assert cells[1] == "0.67\n(n=2)" and cells[3] == "0.67\n(n=2)"
    assert cells[6].startswith("–")
    assert "P(column label | row label)" in heat_ax.get_title()


def test_black_image_labels_shows_balance_and_combinations(labels):
    fig = plots.black_image_labels(labels[:6], LABELS)
    assert len(fig.axes) == 2
    assert "6 images" in fig._suptitle.get_text()
    combination_names = [tick.get_text() for tick in fig.axes[1].get_xticklabels()]
    assert len(combination_names) == len(np.unique(labels[:6], axis=0))


def test_black_image_labels_without_black_images_says_so():
    fig = plots.black_image_labels(np.zeros((0, 3), dtype=np.int8), LABELS)
    assert "no totally black images" in joined(fig)


def test_intensity_histogram_counts_only_non_black_images_per_split(images, rng):
    as_uint8 = (rng.random((4, 64, 64)) * 255).astype(np.uint8)
    fig = plots.intensity_histogram({"train": images, "val": images[10:], "test": as_uint8})
    assert len(fig.axes) == 2
    legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert legend == ["train (15 images)", "val (10 images)", "test (4 images)"]
    every_image = plots.intensity_histogram({"train": images}, exclude_black=False)
    assert every_image.axes[0].get_legend().get_texts()[0].get_text() == "train (20 images)"


def test_intensity_histogram_handles_a_split_of_only_black_images(images):
    fig = plots.intensity_histogram({"black": images[:5]})
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "black (no images)"


def test_duplicate_pairs_shows_each_pair_side_by_side(images):
    fig = plots.duplicate_pairs(images[5:8], images[8:11], [0.0, 0.1, 0.25], ids_a=["a", "b", "c"],
                                ids_b=["d", "e", "f"])
    assert len(image_axes(fig)) == 6
    assert [ax.get_title() for ax in fig.axes[:2]] == ["a", "d"]
    assert "distance\n0.1" in texts(fig)
    assert "3 of 3" in fig._suptitle.get_text()
    assert len(image_axes(plots.duplicate_pairs(images[5:8], images[8:11], [0, 1, 2], n=2))) == 4


def test_duplicate_pairs_with_zero_pairs_says_so(images):
    fig = plots.duplicate_pairs(images[:0], images[:0], np.array([]))
    assert "No near-duplicate pairs" in joined(fig)
    assert not image_axes(fig)


def test_duplicate_pairs_rejects_mismatched_lengths(images):
    with pytest.raises(ValueError, match="same number of rows"):
        plots.duplicate_pairs(images[:3], images[:2], [0.1, 0.2, 0.3])


# --------------------------------------------------------------------------- model comparison


def ap_table():
    return pd.DataFrame({"model": ["cnn", "rnn"], "val AP cat": [0.9, 0.5], "val AP dog": [0.8, np.nan],
                         "val AP bird": [0.7, 0.4], "val mAP": [0.8, 0.45]})


def test_per_class_ap_bars_has_models_on_x_and_one_bar_per_label():
    fig = plots.per_class_ap_bars(ap_table(), LABELS)
    ax = fig.axes[0]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["cnn", "rnn"]
    assert len(ax.patches) == 2 * len(LABELS)
    assert set(LABELS) <= set(texts(fig))
    assert "0.90" in texts(fig)
    # The mean marker of "rnn" skips its missing "dog" value.
    means = ax.collections[0].get_offsets()[:, 1]
    np.testing.assert_allclose(means, [0.8, 0.45])


def test_per_class_ap_bars_uses_the_index_without_a_model_column_and_another_prefix():
    table = ap_table().set_index("model").rename(columns=lambda c: c.replace("val AP", "holdout AP"))
    fig = plots.per_class_ap_bars(table, LABELS, value_prefix="holdout AP ")
    assert [tick.get_text() for tick in fig.axes[0].get_xticklabels()] == ["cnn", "rnn"]


def test_per_class_ap_bars_names_the_missing_column():
    with pytest.raises(ValueError, match="val AP fish"):
        plots.per_class_ap_bars(ap_table(), ["cat", "fish"])


def test_precision_recall_curves_one_panel_per_label_with_ap_in_the_legend(labels, rng):
    scores = rng.random(labels.shape)
    fig = plots.precision_recall_curves({"cnn": (labels, scores), "knn": (labels, 1 - scores)}, LABELS)
    assert [ax.get_title() for ax in fig.axes] == LABELS
    legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert any(entry.startswith("cnn (AP = ") for entry in legend)
    assert any(entry.startswith("knn (AP = ") for entry in legend)


def test_precision_recall_curves_survive_a_label_without_positives(labels, rng):
    labels = labels.copy()
    labels[:, 2] = 0
    fig = plots.precision_recall_curves({"cnn": (labels, rng.random(labels.shape))}, LABELS)
    legend = [text.get_text() for text in fig.axes[2].get_legend().get_texts()]
    assert legend == ["cnn: no positives, AP undefined"]


def test_precision_recall_curves_reject_bad_input(labels):
    with pytest.raises(ValueError, match="empty"):
        plots.precision_recall_curves({}, LABELS)
    with pytest.raises(ValueError, match="y_score of 'cnn'"):
        plots.precision_recall_curves({"cnn": (labels, np.zeros((20, 2)))}, LABELS)
    with pytest.raises(ValueError, match="same number of rows"):
        plots.precision_recall_curves({"cnn": (labels, np.zeros((19, 3)))}, LABELS)


def test_learning_curves_plot_loss_metric_and_learning_rate_per_model():
    cnn = pd.DataFrame({"loss": [1.0, 0.7, 0.5], "f1": [0.3, 0.5, 0.6], "val_loss": [1.1, 0.8, 0.7],
                        "val_f1": [0.3, 0.4, 0.5], "learning_rate": [1e-3, 1e-3, 5e-4]})
    mlp = pd.DataFrame({"loss": [1.0, 0.9], "val_loss": [1.0, 0.95]})
    fig = plots.learning_curves({"cnn": cnn, "mlp": mlp, "knn": pd.DataFrame()})
    assert [ax.get_title() for ax in fig.axes] == ["loss", "f1", "learning rate"]
    loss_legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert loss_legend == ["cnn train", "cnn validation", "mlp train", "mlp validation"]
    assert len(fig.axes[1].lines) == 2  # only cnn logged f1
    assert fig.axes[2].get_yscale() == "log"


def test_learning_curves_without_any_history_say_so():
    assert "No model has a training history" in joined(plots.learning_curves({"knn": pd.DataFrame()}))


def test_confusion_matrices_one_annotated_matrix_per_label():
    y_true = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]])
    y_pred = np.array([[1, 0, 0], [1, 0, 1], [1, 1, 0], [0, 0, 0]])
    fig = plots.confusion_matrices(y_true, y_pred, LABELS)
    matrix_axes = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in matrix_axes] == LABELS
    # "cat": 1 true negative, 1 false positive, 0 false negatives, 2 true positives.
    assert [text.get_text() for text in matrix_axes[0].texts] == ["1", "1", "0", "2"]
    assert [tick.get_text() for tick in matrix_axes[0].get_xticklabels()] == ["not cat", "cat"]


def test_confusion_matrices_want_thresholded_predictions(labels, rng):
    with pytest.raises(ValueError, match="threshold the scores first"):
        plots.confusion_matrices(labels, rng.random(labels.shape), LABELS)


def test_prediction_grid_colours_correct_labels_blue_and_wrong_ones_red():
    images = np.full((2, 64, 64), 0.5)
    y_true = np.array([[1, 0, 1], [0, 0, 0]])
    y_score = np.array([[0.9, 0.2, 0.3], [0.1, 0.7, 0.4]])
    fig = plots.prediction_grid(images, y_true, y_score, LABELS, ids=["a.png", "b.png"])
    first, second = image_axes(fig)
    assert first.get_title() == "a.png"
    lines = {text.get_text(): to_rgba(text.get_color()) for text in first.texts + second.texts}
    blue, red = to_rgba(plots.CORRECT_COLOR), to_rgba(plots.WRONG_COLOR)
    assert lines["cat: 1 (0.90)"] == blue
    assert lines["bird: 0 (0.30)"] == red  # true 1, predicted 0
    assert lines["dog: 1 (0.70)"] == red  # true 0, predicted 1
    assert lines["bird: 0 (0.40)"] == blue
    assert {"correct prediction", "wrong prediction"} <= set(texts(fig))


def test_prediction_grid_applies_per_label_thresholds():
    fig = plots.prediction_grid(np.zeros((1, 64, 64)), np.array([[1, 1, 1]]), np.array([[0.3, 0.3, 0.3]]),
                                LABELS, thresholds=[0.2, 0.5, 0.3])
    lines = [text.get_text() for text in image_axes(fig)[0].texts]
    assert lines == ["cat: 1 (0.30)", "dog: 0 (0.30)", "bird: 1 (0.30)"]


def test_prediction_grid_rejects_bad_thresholds_and_shapes(images, labels):
    with pytest.raises(ValueError, match="one value per label"):
        plots.prediction_grid(images, labels, labels.astype(float), LABELS, thresholds=[0.5, 0.5])
    with pytest.raises(ValueError, match="same number of rows"):
        plots.prediction_grid(images, labels[:3], labels[:3].astype(float), LABELS)


def test_another_contest_folder_colour_images_and_four_labels(rng):
    """A folder loaded with keep_channels (3 channels) and its own label names draws like the embedded one."""
    names = ["even", "large", "loop", "seven"]
    colour = rng.random((6, 64, 64, 3)).astype(np.float32)
    truth = rng.integers(0, 2, (6, 4))
    scores = rng.random((6, 4))
    grid = plots.prediction_grid(colour, truth, scores, names, n=6)
    assert len(image_axes(grid)) == 6 and "seven: " in joined(grid)
    matrices = plots.confusion_matrices(truth, (scores >= 0.5).astype(int), names)
    assert [ax.get_title() for ax in matrices.axes if ax.get_title()] == names
    assert "loop" in joined(plots.precision_recall_curves({"m": (truth, scores)}, names))


# --------------------------------------------------------------------------- hyperparameters, autoencoder


def test_heatmap_annotates_values_and_marks_failed_and_missing_runs():
    table = pd.DataFrame({"learning rate": [1e-3, 1e-3, 1e-2, 1e-2, 1e-4, 1e-3],
                          "optimizer": ["adam", "sgd", "adam", "sgd", "adam", "adam"],
                          "mAP": [0.70, 0.60, np.nan, 0.50, 0.65, 0.80]})
    fig = plots.heatmap(table, "learning rate", "optimizer", "mAP", "mAP by learning rate and optimizer")
    ax = fig.axes[0]
    assert ax.get_title() == "mAP by learning rate and optimizer"
    assert ax.get_xlabel() == "optimizer" and ax.get_ylabel() == "learning rate"
    cells = [text.get_text() for text in ax.texts]
    # Rows sorted by learning rate (1e-4, 1e-3, 1e-2); two adam runs at 1e-3 are averaged.
    assert cells == ["0.650", "not run", "0.750", "0.600", "failed", "0.500"]


def test_heatmap_with_only_failed_runs_and_bad_columns():
    table = pd.DataFrame({"lr": [0.1, 0.01], "optimizer": ["adam", "adam"], "mAP": [np.nan, np.nan]})
    assert [text.get_text() for text in plots.heatmap(table, "lr", "optimizer", "mAP", "t").axes[0].texts] == [
        "failed", "failed"]
    with pytest.raises(ValueError, match="'batch size'"):
        plots.heatmap(table, "batch size", "optimizer", "mAP", "t")


def test_denoising_grid_has_clean_noisy_and_denoised_rows(rng):
    clean = rng.random((10, 64, 64, 1))
    noisy = np.clip(clean + 0.2, 0, 1)
    fig = plots.denoising_grid(clean, noisy, clean, n=4)
    assert len(image_axes(fig)) == 12
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["clean", "noisy", "denoised"]
    assert "MSE 0.0000" in texts(fig)


def test_denoising_grid_rejects_mismatched_inputs(rng):
    with pytest.raises(ValueError, match="same number of rows"):
        plots.denoising_grid(rng.random((3, 8, 8)), rng.random((2, 8, 8)), rng.random((3, 8, 8)))
    with pytest.raises(ValueError, match="differ in size"):
        plots.denoising_grid(rng.random((3, 8, 8)), rng.random((3, 8, 9)), rng.random((3, 8, 8)))


# --------------------------------------------------------------------------- registry records


class FakeRecord:
    """The RunRecord attributes the plots read, and nothing else."""

    def __init__(self, model, key, predictions, thresholds=None):
        self.model, self.key, self.thresholds = model, key, thresholds
        self._predictions = predictions

    def predictions(self):
        return self._predictions


@pytest.fixture
def record_predictions():
    return {
        "val_ids": np.array(["c.png", "a.png", "b.png"]),
        "val_true": np.array([[1, 0, 1], [0, 1, 0], [1, 1, 1]]),
        "val_score": np.array([[0.9, 0.1, 0.6], [0.2, 0.8, 0.1], [0.0, 0.0, 0.0]]),
        "val_is_black": np.array([False, False, True]),
    }


def test_precision_recall_curves_from_records_name_runs_of_the_same_model_apart(record_predictions):
    records = [FakeRecord("cnn", "cnn-1111aaaa2222", record_predictions),
               FakeRecord("cnn", "cnn-3333bbbb4444", record_predictions),
               FakeRecord("mlp", "mlp-5555cccc6666", record_predictions)]
    legend = [text.get_text() for text in plots.precision_recall_curves_from_records(records, LABELS)
              .axes[0].get_legend().get_texts()]
    assert any(entry.startswith("cnn [aa2222] (AP") for entry in legend)
    assert any(entry.startswith("cnn [bb4444] (AP") for entry in legend)
    assert any(entry.startswith("mlp (AP") for entry in legend)


def test_record_wrappers_name_missing_prediction_arrays(record_predictions):
    record = FakeRecord("cnn", "k", record_predictions)
    with pytest.raises(ValueError, match="holdout_ids"):
        plots.precision_recall_curves_from_records([record], LABELS, split="holdout")
    with pytest.raises(ValueError, match="split must be one of"):
        plots.precision_recall_curves_from_records([record], LABELS, split="train")


def test_confusion_matrices_from_record_use_the_tuned_thresholds_and_can_drop_black_images(record_predictions):
    record = FakeRecord("cnn", "k", record_predictions, thresholds={"cat": 0.5, "dog": 0.5, "bird": 0.65})
    fig = plots.confusion_matrices_from_record(record, LABELS, split="val", non_black=True)
    matrix_axes = [ax for ax in fig.axes if ax.images]
    # On the two non-black images "bird" scores 0.6 and 0.1: both predicted 0 at threshold 0.65.
    assert [text.get_text() for text in matrix_axes[2].texts] == ["1", "0", "1", "0"]
    assert "2 images" in fig._suptitle.get_text()


def test_prediction_grid_from_record_looks_images_up_by_id(record_predictions):
    ids = np.array(["a.png", "b.png", "c.png"])
    images = np.stack([np.full((64, 64), value) for value in (0.1, 0.5, 0.9)])
    record = FakeRecord("cnn", "k", record_predictions, thresholds=[0.5, 0.5, 0.5])
    fig = plots.prediction_grid_from_record(record, ids, images, LABELS, n=3)
    first = image_axes(fig)[0]
    assert first.get_title() == "c.png"
    assert first.images[0].get_array()[0, 0] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="'c.png'"):
        plots.prediction_grid_from_record(record, ids[:2], images[:2], LABELS)


def test_denoising_grid_compares_uint8_and_float_batches_on_one_scale(rng):
    clean = (rng.random((2, 16, 16)) * 255).astype(np.uint8)
    fig = plots.denoising_grid(clean, clean, clean.astype(np.float32) / 255, n=2)
    assert texts(fig).count("MSE 0.0000") == 4


def test_intensity_histogram_names_the_split_with_a_bad_shape(images):
    with pytest.raises(ValueError, match="images of split 'val'"):
        plots.intensity_histogram({"train": images, "val": images[0, :, :, 0]})


def test_per_class_ap_bars_tells_runs_of_the_same_model_apart_by_key():
    table = ap_table().assign(model=["cnn", "cnn"], key=["cnn-0123456789ab", "cnn-ba9876543210"])
    ticks = [tick.get_text() for tick in plots.per_class_ap_bars(table, LABELS).axes[0].get_xticklabels()]
    assert ticks == ["cnn [6789ab]", "cnn [543210]"]


def test_learning_curves_use_the_epoch_index_of_registry_histories():
    history = pd.DataFrame({"loss": [1.0, 0.8], "val_loss": [1.1, 0.9]},
                           index=pd.RangeIndex(1, 3, name="epoch"))
    csv_logger = pd.DataFrame({"epoch": [0, 1], "loss": [1.0, 0.8]})
    fig = plots.learning_curves({"registry": history, "csv": csv_logger})
    assert [list(line.get_xdata()) for line in fig.axes[0].lines] == [[1, 2], [1, 2], [1, 2]]


def test_record_thresholds_must_name_every_label(record_predictions):
    record = FakeRecord("cnn", "k", record_predictions, thresholds={"cat": 0.5, "dog": 0.5})
    with pytest.raises(ValueError, match=r"no threshold for \['bird'\]"):
        plots.confusion_matrices_from_record(record, LABELS, split="val")


def test_learning_curves_show_loss_and_pr_auc_when_logged():
    history = pd.DataFrame({"loss": [0.7, 0.6], "accuracy": [0.6, 0.7], "pr_auc": [0.4, 0.5],
                            "val_loss": [0.7, 0.65], "val_accuracy": [0.6, 0.6], "val_pr_auc": [0.4, 0.45]})
    fig = plots.learning_curves({"cnn": history})
    assert [ax.get_title() for ax in fig.axes] == ["loss", "PR-AUC (the contest's mAP, approximated)"]
    assert [list(line.get_ydata()) for line in fig.axes[1].lines] == [[0.4, 0.5], [0.4, 0.45]]

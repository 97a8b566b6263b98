# %% [markdown]
# # 01 — Data analysis
#
# The contest asks for a multi-label classifier: each image carries several
# yes/no labels, the columns of `train.csv`, any number of which may be true
# at once. Before any model is trained we look at the data of the folder this
# run reads: how many images each split holds, how balanced each label is,
# how the labels occur together, which images are totally black, whether the
# others repeat, and how the pixel intensities are distributed. Each finding
# ends in a preprocessing decision the later notebooks apply, and in the
# choice of the metric by which every model is judged.
#
# Every number quoted below is computed by the cell above it, on the folder
# named in the parameters cell: by default the embedded dataset, generated on
# first use by `contest_study.synthetic`, or the real contest folder.

# %%
# Setup. Locally (`make install`) the package is installed and this cell does nothing. On Kaggle or
# Colab, upload the ISTRATI_LUCIAN/ folder of the submission zip (it holds the contest_study package):
# the cell puts it on the path and installs keras-tuner, the one dependency those images lack.
import importlib.util
import subprocess
import sys
from pathlib import Path

if importlib.util.find_spec("contest_study") is None:
    uploaded = [*Path("/kaggle/input").glob("**/ISTRATI_LUCIAN"), Path("/content/ISTRATI_LUCIAN"), Path.cwd()]
    folder = next((path for path in uploaded if (path / "contest_study").is_dir()), None)
    if folder is None:
        raise ModuleNotFoundError("contest_study: upload the ISTRATI_LUCIAN folder of the submission zip (README: Kaggle and Colab)")
    sys.path.insert(0, str(folder))
if importlib.util.find_spec("keras_tuner") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "keras-tuner"], check=True)

# %% tags=["parameters"]
# Parameters of this run. scripts/export_submission.py sets them (a cell injected below this one);
# by hand, edit them here. data_dir None: the embedded dataset, generated on first use.
profile = "default"  # "smoke" (tests, seconds), "default" (2-core CPU), "full" (GPU: the source's epoch counts)
data_dir = None  # the contest folder, e.g. "/kaggle/input/<contest-dataset>"
workdir = None  # registry, caches and figures; None: the repository root, or the current folder
seed = 42

# %%
# The study's plumbing: the data of this run (decoded once, then cached) and the oracle when there is one.
import json

import numpy as np
import pandas as pd
from IPython.display import display

from contest_study import inspection, plots
from contest_study.data import black_mask
from contest_study.evaluation import black_label_rate
from contest_study.metrics import evaluate
from contest_study.study import open_study

study = open_study(profile=profile, data_dir=data_dir, workdir=workdir, seed=seed)
data, label_names = study.data, study.label_names
labelled_splits = {"train": data.train, "val": data.val, "holdout": data.holdout}
print(f"{len(label_names)} labels: {label_names}; images of shape {study.input_shape} (height, width, channels)")
for note in data.notes:
    print("-", note)

# %% [markdown]
# ## Splits and label balance
#
# The loader reads `train.csv`, `val.csv` and `test.csv` and the images they
# name, and scales the pixels to [0, 1]. It sets aside a labelled **hold-out**
# split (the folder's `holdout.csv`, or else 12 % of the training images,
# stratified on the label combinations) that no model trains on, tunes a
# threshold on, or is chosen by: it gives the unbiased final scores of
# `08_summary`.
#
# For each label the table counts the positives and their rate. A label far
# from 50 % positives is imbalanced: a model can look accurate while never
# predicting the rare class.

# %%
rows = []
for split_name, split in labelled_splits.items():
    row = {"split": split_name, "images": len(split)}
    for index, label in enumerate(label_names):
        row[f"{label} positives"] = int(split.labels[:, index].sum())
        row[f"{label} rate"] = split.labels[:, index].mean() if len(split) else np.nan
    rows.append(row)
if data.test is not None:
    rows.append({"split": "test (unlabelled)", "images": len(data.test)})
pd.DataFrame(rows).set_index("split").round(3)

# %%
# Positives and negatives per label and split, side by side.
figure = plots.label_balance({name: split.labels for name, split in labelled_splits.items()}, label_names)
study.save_figures({"label_balance": figure}, prefix="01")["label_balance"]

# %%
# The rarest label of the training split, and how far it is from balance.
train_rates = pd.Series(data.train.labels.mean(axis=0), index=label_names)
print(f"training positive rates: {train_rates.round(3).to_dict()}")
print(f"rarest label: {train_rates.idxmin()} ({train_rates.min():.1%} positives); "
      f"most frequent: {train_rates.idxmax()} ({train_rates.max():.1%})")
if (train_rates.sub(0.5).abs() > 0.1).any():
    print("at least one label is more than 10 points from balance: accuracy would flatter a model")
else:
    print("every label is within 10 points of balance")

# %% [markdown]
# The rates above decide more than the metric: a label with few positives
# gives a network few examples to learn it from, so its average precision is
# expected to be the lowest, and its score the noisiest from one run to the
# next. Whether the splits agree (train, validation and hold-out come from one
# distribution) is read across the rows of the table; the hold-out is
# stratified, so its rates follow the training split's closely.
#
# ### Label co-occurrence
#
# The labels are separate questions about the same image. If they are
# independent, a model may treat them as unrelated problems; if they are
# correlated, a network with one shared body can use one label's evidence for
# another, and a per-label score carries part of the others. Computed on the
# non-black training images (the black ones are looked at below).

# %%
train_black = black_mask(data.train.images)
visible_labels = data.train.labels[~train_black]
correlation = pd.DataFrame(np.corrcoef(visible_labels.T), index=label_names, columns=label_names)
pairs = correlation.where(np.triu(np.ones(correlation.shape, dtype=bool), k=1)).stack()
if len(pairs):
    strongest = pairs.abs().idxmax()
    print(f"strongest correlation: {strongest[0]} / {strongest[1]}: {pairs[strongest]:+.3f}")
    print("labels correlated (|r| > 0.1)" if abs(pairs[strongest]) > 0.1 else "no pair of labels has |r| > 0.1")
figure = plots.label_cooccurrence(visible_labels, label_names)
study.save_figures({"label_cooccurrence": figure}, prefix="01")
correlation.round(3)

# %% [markdown]
# The heatmap reads row by row: the cell (i, j) is the share of images with
# label i that also have label j. A row whose cells match the label rates of
# the table above says "knowing label i tells nothing about label j"; the
# printed verdict above says whether any pair departs from that.
#
# ## Example images
#
# Sixteen training images drawn with the run's seed, titled with their id and
# the labels they carry. Black images appear in the sample as often as they
# occur.

# %%
figure = plots.image_grid(data.train.images, data.train.labels, label_names, ids=data.train.ids, n=16, seed=seed,
                          title="Training images and their labels")
study.save_figures({"example_images": figure}, prefix="01")["example_images"]

# %% [markdown]
# ## Totally black images
#
# An image whose every pixel is 0 carries no information: whatever labels it
# has cannot be predicted from it. The table counts them per split, with each
# label's positive rate among the black images and among the others.

# %%
splits = [*labelled_splits.values(), data.test]
black_table = inspection.black_image_summary(splits, label_names).set_index("split")
black_table.round(3)

# %%
# If the black images' labels are coin flips, they follow neither the other images' rates nor each other.
all_images = np.concatenate([split.images for split in labelled_splits.values()])
all_labels = np.concatenate([split.labels for split in labelled_splits.values()])
all_black = black_mask(all_images)
print(f"{int(all_black.sum())} of {len(all_black)} labelled images ({all_black.mean():.1%}) are totally black")
if all_black.sum() > 1:
    black_labels = all_labels[all_black]
    comparison = pd.DataFrame({"rate among black": black_labels.mean(axis=0),
                               "rate among the others": all_labels[~all_black].mean(axis=0)}, index=label_names)
    black_correlation = np.corrcoef(black_labels.T)
    largest = np.nanmax(np.abs(black_correlation[np.triu_indices(len(label_names), k=1)]), initial=0.0)
    print(f"largest |correlation| between two labels among the black images: {largest:.3f} "
          f"(among the others: {np.abs(pairs).max() if len(pairs) else float('nan'):.3f})")
    display(comparison.round(3))
    print("verdict: among the black images the labels are " + (
        "nearly uncorrelated (|r| < 0.1): drawn independently of each other" if largest < 0.1
        else "correlated: they follow the labelling of the other images, but no pixel shows it"))
figure = plots.black_image_labels(all_labels[all_black], label_names)
study.save_figures({"black_image_labels": figure}, prefix="01")["black_image_labels"]

# %% [markdown]
# Nothing in a black image can tell one label assignment from another, so
# the best any model can do on them is to answer each label's positive rate
# among the black training images. The verdict above says how those labels
# were drawn. Nearly uncorrelated labels, at rates unlike the others', are
# coin flips drawn apart from everything else: pure label noise for
# training. Correlated labels at the others' rates follow the same labelling
# as the visible images, yet remain unpredictable from an empty picture. For
# the models the conclusion is the same either way: the black images are
# noise for training and a ceiling on any score computed over all images.
#
# ## Duplicates among the other images
#
# Black images are all identical; do the others repeat? Exact copies
# (identical pixels) are found by hashing, near copies by the distance between
# images downsampled to 16×16 and normalised in brightness and contrast.
# A duplicate shared by two splits would leak training images into the
# validation scores.

# %%
visible_images = all_images[~all_black]
visible_ids = np.concatenate([split.ids for split in labelled_splits.values()])[~all_black]
visible_split = np.concatenate([[name] * len(split) for name, split in labelled_splits.items()])[~all_black]
exact_groups = inspection.find_exact_duplicates(visible_images, visible_ids)
near_pairs = inspection.find_near_duplicates(visible_images, visible_ids)
split_of = dict(zip(visible_ids, visible_split))
across = near_pairs[[split_of[a] != split_of[b] for a, b in zip(near_pairs["id_a"], near_pairs["id_b"])]]
print(f"exact duplicate groups: {len(exact_groups)}; near-duplicate pairs: {len(near_pairs)}, "
      f"of which {len(across)} across two splits")
closest = near_pairs.head(6)
position = {image_id: row for row, image_id in enumerate(visible_ids)}
figure = plots.duplicate_pairs(visible_images[[position[i] for i in closest["id_a"]]],
                               visible_images[[position[i] for i in closest["id_b"]]],
                               closest["distance"], ids_a=closest["id_a"], ids_b=closest["id_b"])
study.save_figures({"near_duplicates": figure}, prefix="01")["near_duplicates"]

# %% [markdown]
# With no pair found, validation scores measure images the models never saw.
# Pairs across splits, if the cell above finds some, are shown closest first:
# a few coincidences among simple pictures are harmless, many would inflate
# the validation scores of models that memorise.
#
# ## Pixel intensities
#
# The loader scales pixels to [0, 1]. Statistics per split, over all images
# and over the non-black ones, tell whether a further normalisation is needed
# and whether the splits come from the same distribution.

# %%
intensity = inspection.intensity_summary(labelled_splits.values()).set_index(["split", "subset"])
visible_means = intensity.xs("non_black", level="subset")["mean"]
print(f"mean pixel of the non-black images per split: {visible_means.round(4).to_dict()}; "
      f"largest gap between splits {visible_means.max() - visible_means.min():.4f}")
intensity.round(4)

# %%
figure = plots.intensity_histogram({name: split.images for name, split in labelled_splits.items()})
study.save_figures({"intensity_histogram": figure}, prefix="01")["intensity_histogram"]

# %% [markdown]
# Splits drawn from one distribution have nearly equal means and
# overlapping histograms; a gap of a few hundredths of the [0, 1] range would
# point to a shift between them that validation scores would not reveal.
#
# ## Choosing the metric
#
# Three facts decide how models are compared:
#
# 1. **The labels are imbalanced, each differently** (the label table).
#    Accuracy rewards the majority class: a model that always answers
#    "negative" scores the negative rate without having learned anything.
# 2. **A share of the images is black with unpredictable labels.** On those,
#    every model is reduced to the base rates, which pulls every score
#    computed over all images towards chance by the same amount and hides the
#    differences between models.
# 3. **Each label is a separate yes/no question**, and a model that ranks the
#    positives of a label above its negatives is useful at any operating point.
#
# The primary metric is therefore the **average precision (AP) of each
# label**, scored by scikit-learn, and their mean, the **mAP**: AP summarises
# the whole precision-recall curve without a decision threshold, and a model
# that knows nothing scores the positive rate, so **chance is the mean positive
# rate**, not 50 %. Every score is reported on all validation images and on
# the non-black ones (where the models differ), then on the hold-out. The
# secondary metric is F1 per label at a threshold tuned on validation: how good
# the hard yes/no decisions are.

# %%
# What accuracy hides: always answering the majority class, next to the AP of a constant score.
val_black = black_mask(data.val.images)
val_rates = data.val.labels.mean(axis=0)
pd.DataFrame({
    "positive rate": val_rates,
    "accuracy of always-majority": np.maximum(val_rates, 1 - val_rates),
    "AP of a constant score (chance)": val_rates,
    "chance on non-black images": data.val.labels[~val_black].mean(axis=0),
}, index=label_names).round(3)

# %%
chance_all, chance_visible = val_rates.mean(), data.val.labels[~val_black].mean(axis=0).mean()
print(f"chance mAP on validation: {chance_all:.3f} (all images), {chance_visible:.3f} (non-black images)")

# %% [markdown]
# ## The best achievable score, on the embedded dataset
#
# The embedded dataset comes with a card (`dataset_card.json`) describing how
# it was drawn, and the Bayes-optimal probability of every label of every
# labelled image, kept apart from anything the models read. Ranking the
# validation images by those probabilities gives the **oracle mAP**: the best
# any model can reach on these images, given their label noise and black
# images. A real contest folder has neither file; the cell then says so, and
# the later notebooks compare models with chance and with each other only.

# %%
card_path = data.data_dir / "dataset_card.json"
if card_path.is_file():
    card = json.loads(card_path.read_text(encoding="utf-8"))
    print("on the embedded dataset:", card.get("description", ""))
    print("black images:", card.get("black_images", "not described"))
    meanings = pd.DataFrame(card.get("labels", {})).T
    display(meanings)
if study.oracle is None:
    print("this folder has no oracle probabilities (a real contest folder has none)")
else:
    oracle_rows = {
        "all validation images": evaluate(data.val.labels, study.oracle["val"], label_names),
        "non-black validation images": evaluate(data.val.labels[~val_black], study.oracle["val"][~val_black],
                                                label_names),
    }
    oracle_table = pd.DataFrame({name: {**{f"AP {label}": result["ap"][label] for label in label_names},
                                        "mAP": result["map"]} for name, result in oracle_rows.items()}).T
    display(oracle_table.round(4))

# %% [markdown]
# On the embedded dataset the oracle row above is the ceiling and the chance
# row before it the floor: a model is judged by how much of the gap between
# them it closes on the non-black images. The oracle is not 1.0 because of
# the label noise the card describes: the labels of some images are flipped,
# and no model can know which.
#
# ## Preprocessing decisions
#
# - **Remove every black training image but one.** Their labels cannot be
#   predicted from their pixels, so every gradient step on them pulls the
#   model towards the base rates and away from what the visible images teach.
#   One is kept so the training set still contains the case; notebook 02
#   trains its best network both ways and measures the effect.
# - **Answer every black image with the black training images' label rates:
#   the scoring rule.** A black image is recognised exactly (every pixel 0)
#   and its labels are unpredictable, so the best answer for each label is its
#   positive rate among the black training images (printed below). Every
#   model's scores for black validation, hold-out and test images are
#   replaced by these rates (`contest_study.evaluation.answer_black_images`);
#   otherwise a network trained without black images would answer them with
#   whatever its weights give an empty input, and the scores over all images
#   would measure that accident rather than the model. Every model answers a
#   black image alike, so the differences between models show on the
#   non-black images.
# - **One channel.** The loader checks each image: when its colour channels
#   are equal it keeps one, and a colour image becomes its gray luminance,
#   with a warning (the notes printed at the top say what it found for this
#   folder). Three equal channels would only triple the first layer's
#   weights; notebook 02 compares both inputs once.
# - **Pixels scaled to [0, 1], no further standardisation.** The intensity
#   check above says whether the splits share one distribution; batch
#   normalisation inside the deeper networks takes care of the scale.
# - **Augmentation is a modelling choice, not preprocessing.** Whether a flip
#   or a rotation keeps a label true depends on what the label means; notebook
#   02 states its transformations and tests them on one network.

# %%
# The rule and the decision in numbers.
answer = black_label_rate(data.train)
print("answer to every black image:", {name: round(float(rate), 3) for name, rate in zip(label_names, answer)},
      "(the black training images' positive rates)" if train_black.any()
      else "(no black training image: all training images' rates)")
print(f"training images: {len(data.train)}; black: {int(train_black.sum())}; "
      f"left for training after the removal: {int((~train_black).sum()) + min(1, int(train_black.sum()))}")

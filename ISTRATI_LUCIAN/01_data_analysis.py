# %% [markdown]
# # 01 — Data analysis
#
# The contest asks for a multi-label classifier: each image carries several
# yes/no labels (the columns of `train.csv`), any number of which may be true
# at once. This chapter looks at the data of the folder this run reads (by
# default the embedded dataset, generated on first use) and ends in the
# metric and the preprocessing every later notebook uses, explained here
# once. Every number quoted is computed by the cell above it; label
# co-occurrence, duplicates and pixel intensities are in the appendix.

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
# `08_summary`. The table counts each label's positives and their rate: a
# label with few positives gives a network few examples, so its average
# precision is expected to be the lowest and the noisiest from run to run.

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
# Counts stay integers; a dash where a split has no labels.
split_table = pd.DataFrame(rows).set_index("split").convert_dtypes().round(3)
split_table.astype(object).where(split_table.notna(), "–")

# %% [markdown] tags=["appendix"]
# ### Label balance per split
#
# Positives and negatives of each label in each split, side by side (the
# numbers are in the chapter's table).

# %% tags=["appendix"]
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

# %% [markdown] tags=["appendix"]
# ### Label co-occurrence
#
# The labels are separate questions about the same image. If they are
# correlated, a network with one shared body can use one label's evidence for
# another, and a per-label score carries part of the others. The table gives
# the correlation of each pair of labels on the non-black training images; the
# printed verdict says whether any pair departs from independence.

# %% tags=["appendix"]
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
# ## Example images
#
# Sixteen training images drawn with the run's seed, titled with their id and
# labels; black images appear as often as they occur.

# %%
figure = plots.image_grid(data.train.images, data.train.labels, label_names, ids=data.train.ids, n=16, seed=seed,
                          title="Training images and their labels")
study.save_figures({"example_images": figure}, prefix="01")["example_images"]

# %% [markdown]
# ## Totally black images
#
# An image whose every pixel is 0 carries no information: its labels cannot
# be predicted from it. The cell below counts them and compares each label's
# rate among them and among the other images (per split in the appendix).

# %% [markdown] tags=["appendix"]
# ### Black images per split
#
# The number and share of totally black images in each split, and each
# label's positive rate among the black images and among the others.

# %% tags=["appendix"]
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

# %% [markdown] tags=["appendix"]
# ### Label rates of the black images
#
# Each label's positive rate among the totally black labelled images (the
# numbers are in the chapter's table).

# %% tags=["appendix"]
figure = plots.black_image_labels(all_labels[all_black], label_names)
study.save_figures({"black_image_labels": figure}, prefix="01")["black_image_labels"]

# %% [markdown]
# Nearly uncorrelated labels at rates unlike the others' are coin flips;
# correlated ones follow the labelling of the visible images. Either way no
# pixel predicts them: the black images are noise for training and a ceiling
# on any score over all images (how they are answered: below).

# %% [markdown] tags=["appendix"]
# ### Duplicates among the non-black images
#
# Black images are all identical; do the others repeat? Exact copies
# (identical pixels) are found by hashing, near copies by the distance between
# images downsampled to 16×16 and normalised in brightness and contrast.
# A duplicate shared by two splits would leak training images into the
# validation scores.

# %% tags=["appendix"]
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

# %% [markdown] tags=["appendix"]
# With no pair found, validation scores measure images the models never saw.
# Pairs across splits, if the cell above finds some, are shown closest first:
# a few coincidences among simple pictures are harmless, many would inflate
# the validation scores of models that memorise.
#
# ### Pixel intensities
#
# The loader scales pixels to [0, 1]. Statistics per split, over all images
# and over the non-black ones, tell whether a further normalisation is needed
# and whether the splits come from the same distribution.

# %% tags=["appendix"]
intensity = inspection.intensity_summary(labelled_splits.values()).set_index(["split", "subset"])
visible_means = intensity.xs("non_black", level="subset")["mean"]
print(f"mean pixel of the non-black images per split: {visible_means.round(4).to_dict()}; "
      f"largest gap between splits {visible_means.max() - visible_means.min():.4f}")
intensity.round(4)

# %% tags=["appendix"]
figure = plots.intensity_histogram({name: split.images for name, split in labelled_splits.items()})
study.save_figures({"intensity_histogram": figure}, prefix="01")["intensity_histogram"]

# %% [markdown] tags=["appendix"]
# Splits drawn from one distribution have nearly equal means and
# overlapping histograms; a gap of a few hundredths of the [0, 1] range would
# point to a shift between them that validation scores would not reveal.

# %% [markdown]
# ## Choosing the metric
#
# **The labels are imbalanced**, each differently: accuracy rewards the
# majority class (a model always answering "negative" scores the negative
# rate). **A share of the images is black**: every model answers them alike,
# which pulls every score over all images towards chance and hides the
# differences between models. **Each label is a separate yes/no question**,
# and a model that ranks a label's positives above its negatives is useful at
# any threshold. The primary metric is therefore the **average precision
# (AP)** of each label, scored by scikit-learn, and their mean, the **mAP**:
# it summarises the whole precision-recall curve without a threshold. A model
# that knows nothing scores the positive rate, so **chance is the mean
# positive rate**, not 50 %. Every score is reported on all validation images
# and on the non-black ones (where the models differ), then on the hold-out.
# The secondary metric is F1 per label at a threshold tuned on validation.
# Two models are compared by a **paired bootstrap**: both are scored on the
# same 1,000 resamples of the same images (the non-black validation images
# unless said otherwise), so what the draw has in common cancels out; a 95 %
# interval of their mAP difference that contains zero is no measurable
# difference.

# %% [markdown] tags=["appendix"]
# ### What accuracy hides
#
# Per label, the accuracy of always answering the majority class, next to the
# average precision of a constant score (chance).

# %% tags=["appendix"]
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
# The embedded dataset comes with a card (`dataset_card.json`, in the
# appendix) and the Bayes-optimal probability of every label of every
# labelled image, which no model reads. Ranking the validation images by them
# gives the **oracle mAP**, the best score a model can expect given the label
# noise and the black images: on a finite validation set a model can land a
# little above it by luck, within the noise of that set (the bootstrap
# intervals of the later notebooks). A real contest folder has neither file; the later
# notebooks then compare models with chance and with each other only.

# %% [markdown] tags=["appendix"]
# ### The embedded dataset's card
#
# How the embedded dataset was drawn: what each label means, where its object
# sits, how often its labels are flipped.

# %% tags=["appendix"]
card_path = data.data_dir / "dataset_card.json"
if card_path.is_file():
    card = json.loads(card_path.read_text(encoding="utf-8"))
    print("on the embedded dataset:", card.get("description", ""))
    print("black images:", card.get("black_images", "not described"))
    with pd.option_context("display.max_colwidth", None):
        display(pd.DataFrame(card.get("labels", {})).T)
else:
    print("this folder has no dataset card (a real contest folder has none)")

# %%
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
# On the embedded dataset the oracle is the expected ceiling and chance the
# floor: a model is judged by how much of the gap it closes on the non-black
# images.
# The oracle is below 1.0 because some labels are flipped (the card's label
# noise), and no model can know which.
#
# ## Preprocessing decisions
#
# - **Remove every black training image but one.** Every gradient step on
#   their unpredictable labels pulls the model towards the base rates. One is
#   kept so the training set still contains the case; notebook 02 measures
#   the effect of keeping them all.
# - **The scoring rule: every black image is answered with the black
#   training images' label rates.** A black image is recognised exactly
#   (every pixel 0) and its labels are unpredictable, so the best answer for
#   each label is its positive rate among the black training images (printed
#   below). Every model's scores for black validation, hold-out and test
#   images are replaced by these rates (`evaluation.answer_black_images`);
#   otherwise a network trained without black images would answer them with
#   whatever its weights give an empty input. All models answer a black image
#   alike, so their differences show on the non-black images.
# - **One channel, pixels in [0, 1].** The loader keeps one of equal colour
#   channels (a colour image becomes gray, with a warning in the notes at the
#   top): three equal channels add only first-layer weights (notebook 02
#   tries them once). Batch normalisation takes care of the scale.
# - **Augmentation is a modelling choice**, made in notebook 02: whether a
#   flip keeps a label true depends on what the label means.

# %%
# The rule and the decision in numbers.
answer = black_label_rate(data.train)
print("answer to every black image:", {name: round(float(rate), 3) for name, rate in zip(label_names, answer)},
      "(the black training images' positive rates)" if train_black.any()
      else "(no black training image: all training images' rates)")
print(f"training images: {len(data.train)}; black: {int(train_black.sum())}; "
      f"left for training after the removal: {int((~train_black).sum()) + min(1, int(train_black.sum()))}")

# %% [markdown]
# # 08 — Summary
#
# The seven notebooks before this one each answered one question: what the
# data looks like (01), how well convolutional (02), recurrent (03) and
# fully connected networks and classical references (04) learn it, which
# training choices matter (05), whether a denoising autoencoder can clean the
# images (06) and whether its encoder, or an ImageNet backbone, is a better
# starting point than random weights (07). Every model they trained is a run
# of the results registry, scored the same way on the same images.
#
# This notebook trains nothing. It reads the registry of this run of the
# study and puts every model side by side: per-label average precision on the
# validation set, the mean over the labels (mAP), F1 and accuracy, the hold-out
# score that chose nothing, size and training time, and the oracle's score on
# the embedded dataset as the ceiling. Then it picks the best model of each
# family, looks at the best one's predictions, and says what worked, what did
# not, and why. Every sentence that compares numbers is written by
# `contest_study.summary` from the registry, so it stays true when the data,
# the profile or the seed change.

# %%
# Only the registry is read: open_study gives it with the data (for the images of the prediction grid).
from IPython.display import Markdown, display

from contest_study import plots, summary
from contest_study.registry import best_per_family
from contest_study.study import open_study

study = open_study()
# The runs made on this run's data, profile and seed; the registry's other runs are counted, not mixed in.
runs = summary.require_runs(summary.study_runs(study))
display(Markdown(summary.describe_runs(runs, study)))

# %% [markdown]
# ## How every model was trained and scored
#
# **Data and preprocessing.** Every image is 64×64 grayscale stored as three
# equal channels; the loader keeps one channel and scales pixels to [0, 1].
# About a third of the labelled images are totally black and carry random
# labels: no model can predict those labels from the pixels, so all black
# training images but one are removed before training (the black-image
# experiments of notebooks 02–04 train the best network of each family both
# ways). A seeded, stratified 12 % of the training images is carved out as a
# labelled hold-out split that never takes part in training, early stopping,
# threshold tuning or model choice.
#
# **Augmentation.** Random flips, small rotations, zoom, shifts and contrast
# changes, as Keras preprocessing layers inside the model that are active
# only while training, keep every label of this dataset true. Notebook 02
# trains the best CNN with and without them at the same epoch cap; the
# comparison networks are trained without, because that is what the
# measurement favoured (see the one-setting table below), and the dense and
# recurrent networks never see augmentation, as in the source study.
#
# **Training.** One engine trains every network: Adam with a learning rate of
# 10⁻³, binary cross-entropy on three sigmoid outputs (three independent
# yes/no questions, not one choice among three), batches of 64, early stopping
# on the validation loss with patience 5 that restores the best epoch, and
# ReduceLROnPlateau halving the learning rate when the validation loss stalls,
# within the profile's cap on epochs. Regularisation comes from the
# architecture: batch normalisation, dropout and L2 weight decay where a
# network has them, and early stopping for all. The grid of notebook 05 varied the learning rate
# (10⁻³, 10⁻², 10⁻¹), the optimizer (Adam, SGD), the loss (binary against
# categorical cross-entropy with a softmax head), the training metric, the
# number of epochs and the batch size, then dropout and initializers with
# scikit-learn's `GridSearchCV` and four learning-rate schedules.
#
# **Scoring.** The contest ranks by average precision per label, so each run
# is scored by the AP of every label on the validation images and by their
# mean, once over all images and once without the black ones. Every black
# image is answered with each label's positive rate among the black training
# images, whatever the model says: their labels are coins, so that rate is the
# best any model can do, and the rule keeps an accident (the score a network
# gives an input it never saw) out of the all-images numbers. F1 and accuracy
# use one decision threshold per label, tuned on validation to maximise F1
# and applied unchanged to the hold-out. Two yardsticks place every score.
# *Chance* is what a score that ranks nothing gets: each label's share of
# positives. *The best achievable* is the oracle's score on the embedded
# dataset, computed from the probabilities that generated the labels. The
# column *gap closed* says how far along the way from the first to the
# second a run got on the non-black images, where the shapes decide the
# labels.

# %% [markdown]
# ## Every model side by side
#
# One row per run of this study, best validation mAP first. The per-label AP
# columns are the contest's metric; the hold-out mAP is the unbiased estimate
# to quote; params and wall time are the cost.

# %%
# The comparison table: per-label validation AP, mAP, F1, accuracy, oracle, size and time of every run.
table = summary.summary_table(study, runs)
names = summary.distinct_names(runs.records)
table.round(3)

# %%
# The best run of each family by validation mAP (the hold-out never decides), best family first.
best = best_per_family(runs.records)
display(Markdown(summary.describe_ranking(best, names, runs)))

# %% [markdown]
# ## The best model of each family
#
# Comparing families through their best member removes the differences
# between architectures of one family and keeps the one that matters here:
# how each kind of network sees an image.

# %%
# One row per family: where its best model stands between chance and the best achievable score.
summary.family_table(table, best, names).round(3)

# %%
# Per-label AP of the best model of each family (bars), saved as figures/08_best_per_family_per_class_ap.png.
family_figures = study.comparison_figures({names[record.key]: record for record in best},
                                          prefix="08_best_per_family")
family_figures["per_class_ap"]

# %%
# Precision-recall curves of the same models on the non-black validation images, one panel per label.
family_figures["precision_recall"]

# %%
# Validation AP of every run and label at a glance (the last column is the mAP).
all_runs_ap = plots.heatmap(summary.per_label_ap_long(table, study.label_names), index="run", columns="label",
                            values="val AP", title="Validation average precision of every run")
study.save_figures({"all_runs_per_label_ap": all_runs_ap}, prefix="08")["all_runs_per_label_ap"]

# %%
# Which labels are hard, for every run and for the best one, in words.
display(Markdown(summary.describe_labels(table, study.label_names, best[0], names)))

# %% [markdown]
# ## The best model's predictions
#
# Validation images with the best model's answer and probability for each
# label, blue when right and red when wrong at the thresholds tuned on
# validation; then its confusion matrices on the hold-out split. The black
# images among them show what no model can do: their labels are coin flips.

# %%
# Prediction grid of the best model, saved as figures/08_best_prediction_grid.png.
best_figures = study.best_run_figures(best[0], prefix="08_best")
best_figures["prediction_grid"]

# %%
# Its confusion matrices on the hold-out split, one per label.
best_figures["confusion_matrices"]

# %% [markdown]
# ## What changing one setting did
#
# Pairs of runs of one model that differ in exactly one setting are
# controlled experiments: whatever changed between them, the setting did.
# The table averages each setting's pairs.

# %%
# Every one-setting difference found in the registry, largest effect on the non-black images first.
effects = summary.one_factor_effects(runs.records)
effects.round(3)

# %% [markdown]
# ## Validation, hold-out and cost

# %%
# Is the validation score optimistic, and what did the best model cost?
display(Markdown(summary.describe_holdout(table) + "\n\n" + summary.describe_cost(table, best[0], names)))

# %% [markdown]
# ## What worked, what did not, and why
#
# The list below is built from the measured results: a family or setting is
# put under one heading or the other by its numbers, and the explanation
# beside it is the mechanism that we think produced them.

# %%
# The families and settings that helped, those that did not, and why.
display(Markdown(summary.describe_what_worked(best, effects, runs, names)))

# %% [markdown]
# Some approaches are judged in their own notebooks rather than in this
# table. Categorical cross-entropy with a softmax head (notebook 05) is built
# to pick one class among several: its three outputs must sum to one, so an
# image with two shapes cannot get two high probabilities, and an image with
# none must still put its probability somewhere; notebook 05 measures what
# that costs. A learning rate of 10⁻¹ is the other risk of the grid: steps that
# large can push the sigmoid outputs into saturation, where the gradients
# vanish and the network stays at the base rates; notebook 05 marks every
# trial that failed to learn. The denoising autoencoder (notebook 06) is
# trained to reproduce pixels, not to tell a ring from a square, so whether
# its encoder helps a classifier is a question for the measurements: the
# transfer runs of notebook 07 are in the tables above, in the family
# "transfer", beside the same network trained from scratch. When the ImageNet
# weights are not on the machine, MobileNetV2 starts from random weights; its
# name in the tables (`mobilenetv2_random_init`) says so, and it counts as a
# network trained from scratch, not as transfer learning.

# %% [markdown]
# ## The most interesting insight

# %%
# The largest effect this study measured, and the mechanism behind it.
display(Markdown(summary.most_interesting_insight(best, effects, runs, names)))

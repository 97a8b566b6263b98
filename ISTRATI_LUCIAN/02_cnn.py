# %% [markdown]
# # 02 — Convolutional neural networks
#
# Convolutional networks are the natural first choice for images: the same
# small filters slide over the whole picture, so a shape is recognised
# wherever it appears, with far fewer weights than a dense layer over all
# pixels. Five architectures were tried, from small to deep:
#
# - **1.a** a small baseline: two convolution + pooling blocks and a dense layer;
# - **1.b** the `Conv−Pool−Conv−Pool−Conv−Conv−Pool−Dense−Dense` network of the
#   course assignment;
# - **1.c** a VGG-style stack of paired 3×3 convolutions with batch
#   normalisation and dropout;
# - **1.d** a small residual network (ResNet-style shortcuts, global average pooling);
# - **1.e** an own design with depthwise-separable convolutions and global
#   average pooling, the cheapest in weights.
#
# Every network ends in three sigmoid outputs trained with binary
# cross-entropy (one independent yes/no question per label), is trained by
# the same engine (`contest_study.training`: early stopping with patience 5
# and best weights restored, ReduceLROnPlateau, checkpoints, CSV and
# TensorBoard logs), on the training images with all black images removed
# but one. Data augmentation (flips, small rotations, zoom, shifts, contrast,
# as Keras layers inside the model) is tested separately on the best CNN
# below: at this epoch budget it slowed learning down, so the comparison
# runs without it. Every run is stored in the results registry, so
# re-running this notebook reuses finished runs instead of training again.

# %%
# The shared package does the work; the notebook chooses what to run and explains it.
from IPython.display import Markdown, display

from contest_study.study import open_study

# Data, registry, profile and oracle of this run, as set by scripts/export_submission.py.
study = open_study()
print(f"profile: {study.context.profile.name}; training images: {len(study.data.train)}; "
      f"validation: {len(study.data.val)}; hold-out: {len(study.data.holdout)}")

# %% [markdown]
# ## The five architectures
#
# The parameter count says how much each network can memorise; the
# descriptions say how it sees the image.

# %%
# Build each CNN once (without training) to list its size next to its description.
architectures = study.architectures("cnn")
architectures

# %% [markdown]
# ## Training
#
# Each network is trained up to the profile's epoch cap; early stopping on
# the validation loss usually ends it sooner and restores the best epoch.
# Keras prints one line per epoch.

# %%
# Train (or reuse from the registry) every CNN, all with the same settings.
cnn_runs = {name: study.train(name) for name in architectures.index}

# %% [markdown]
# ## Results
#
# Average precision per label on the validation set is the primary metric
# (see `01_data_analysis`); the table puts the hold-out scores beside it.
# The hold-out split has never been used to choose anything, so the gap
# between the two columns shows how optimistic the validation score is.

# %%
# One row per network, best validation mAP first.
cnn_table = study.table(cnn_runs.values())
cnn_table.drop(columns=["description", "key"]).round(4)

# %%
# Per-class AP bars, learning curves and precision-recall curves, saved to figures/.
cnn_figures = study.comparison_figures(cnn_runs, prefix="02_cnn")
cnn_figures["per_class_ap"]

# %%
# Training and validation loss per epoch: where each network stopped and whether it overfitted.
cnn_figures["learning_curves"]

# %%
# Precision-recall curves of every CNN, one panel per label, on the non-black validation images.
cnn_figures["precision_recall"]

# %%
# The best CNN by validation mAP (the hold-out never takes part in the choice).
best_cnn = study.best(cnn_runs.values())
display(Markdown(study.describe_best(best_cnn, "CNN")))

# %% [markdown]
# ## What the best CNN gets right and wrong
#
# The prediction grid shows validation images with the predicted label and
# probability for each of the three questions, in blue when the prediction
# (at the threshold tuned on validation) is right and in red when it is
# wrong. The confusion matrices count the same decisions on the hold-out
# split.

# %%
# Validation images with the best CNN's predictions: blue right, red wrong.
best_cnn_figures = study.best_run_figures(best_cnn, prefix="02_cnn_best")
best_cnn_figures["prediction_grid"]

# %%
# One confusion matrix per label on the hold-out split, at the thresholds tuned on validation.
best_cnn_figures["confusion_matrices"]

# %% [markdown]
# ## Does data augmentation help?
#
# Random flips, rotations of up to about 11 degrees, zoom and shifts of up to
# 10 % and contrast changes keep every label of this dataset true (see
# `contest_study.models.augmentation_block`), so they show the network more
# varied versions of the same shapes. The price: rotation, zoom and shifts
# resample the image bilinearly, which softens the 2-3 pixel strokes and
# checkerboard cells the labels depend on, and each epoch costs more CPU.
# The best CNN is trained again with the augmentation layers on, with the
# same epoch cap.

# %%
# Same network and settings, augmentation layers active while training.
augmented = study.train(best_cnn.model, augment=True)
augmentation_table = study.table([best_cnn, augmented]).set_index("run")
augmentation_table[["val mAP", "val mAP (non-black)", "holdout mAP", "epochs", "wall time (s)"]].round(4)

# %%
# The comparison in words, from the two records.
display(Markdown(study.describe_change(best_cnn, augmented, "data augmentation")))

# %% [markdown]
# ## One channel or three?
#
# The images are grayscale stored as three equal channels. Feeding the
# three copies cannot add information; it only triples the weights of the
# first convolution, the only layer that sees the channels. We check this
# once, on the cheapest CNN (1.a): the question concerns the first layer
# alone, so the smallest network answers it at the lowest cost.

# %%
# The small baseline CNN again, fed the grayscale image replicated to 3 channels.
three_channels = study.train("cnn_1a", input_channels=3)
channel_table = study.table([cnn_runs["cnn_1a"], three_channels]).set_index("run")
channel_table[["val mAP", "val mAP (non-black)", "holdout mAP", "params", "wall time (s)"]].round(4)

# %% [markdown]
# ## The black-image experiment
#
# About a third of the labelled images are totally black and carry random
# labels. The best CNN is trained twice: with all black images kept, and
# with all of them removed but one. Both are scored on all validation images
# and on the non-black ones. Both answer the black validation images with
# the same base rates (the scoring rule of `01_data_analysis`), so the
# experiment asks one question: do the black training images, whose labels
# are noise, change what the network learns about the visible shapes?

# %%
# Same network, same settings, two training sets.
black_table, black_runs = study.black_image_experiment(best_cnn.model)
black_table.round(4)

# %%
# The effect in words, computed from the two runs.
display(Markdown(study.describe_black_effect(black_table)))

# %% [markdown]
# # 07 — Transfer learning
#
# A network that starts from weights learnt on another task, instead of from
# random numbers, may need fewer labelled images and fewer epochs: its first
# layers already respond to edges, blobs and textures. This notebook tries two
# sources of such weights.
#
# 1. **Self-supervised**: the encoder of the denoising autoencoder of
#    `06_denoising_autoencoder`, trained on the unlabelled images, becomes the
#    backbone of the 3-label classifier (encoder, then a dense layer of 64 units
#    and three sigmoid outputs). It is trained in two stages: first the encoder
#    is **frozen** and only the new head learns; then every layer is
#    **fine-tuned** with a 10 times lower learning rate, so the pretrained
#    filters are adjusted rather than overwritten. The reference is the same
#    network trained from scratch on the same images for as many epochs as both
#    stages together.
# 2. **ImageNet**: MobileNetV2 from Keras Applications, fed the grayscale image
#    resized to its input size and replicated to three channels, with the
#    weights it learnt on ImageNet when they are on this machine. They cannot
#    be downloaded here; when they are missing, the notebook says so and trains
#    the same network from random initialisation instead, labelled as such.
#
# Every run is a classifier of the results registry, trained by the study's
# engine on the training images without black ones and scored like every
# other model: average precision per label on validation, hold-out beside it.

# %%
# The shared package does the work; the notebook chooses what to run and explains it.
import math

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from contest_study import autoencoder, transfer
from contest_study.study import open_study

# Data, registry, profile and oracle of this run, as set by scripts/export_submission.py.
study = open_study()
settings = transfer.settings_for(study.context.profile)
print(f"profile: {study.context.profile.name}; training images: {len(study.data.train)}; "
      f"validation: {len(study.data.val)}; hold-out: {len(study.data.holdout)}")

# %% [markdown]
# ## What this profile trains
#
# Epochs of each stage, learning rates, and the MobileNetV2 configuration.
# MobileNetV2 is by far the slowest network of the study on a CPU, so the
# `default` profile trains it on a seeded subsample of the training images
# (`backbone_max_train_images`) for a few epochs, at its smallest ImageNet
# configuration (width multiplier 0.35, 96×96 input); these are reductions
# for time, not choices that make it better. The `smoke` profile, which only
# checks that the code runs, resizes the images to 32×32 for MobileNetV2
# (`backbone_input_size`, its smallest input) instead of 96×96: the same
# network and code on a ninth of the pixels.

# %%
# Every setting of this run (epochs per stage; the from-scratch references get the sum of both stages).
transfer.settings_table(settings)

# %% [markdown]
# ## Self-supervised transfer: the autoencoder's encoder
#
# The autoencoder run comes from the registry (the same call as in notebook
# 06, so it is trained here only if 06 has not run).

# %%
# The denoising autoencoder of notebook 06, reused from the registry.
autoencoder_run = autoencoder.train_autoencoder(study)
print(f"{autoencoder_run.key}: {autoencoder_run.data['description']}")

# %%
# The frozen/fine-tuned switch: how many weights the optimiser may change in each stage.
encoder = autoencoder.load_autoencoder(autoencoder_run).get_layer("encoder")
classifier = transfer.build_encoder_classifier(encoder, len(study.label_names), hidden_units=settings.hidden_units,
                                               dropout=settings.dropout)
trainable = {}
for stage, flag in (("frozen", False), ("fine-tuned", True)):
    transfer.set_backbone_trainable(classifier, flag)
    trainable[stage] = sum(math.prod(weight.shape) for weight in classifier.trainable_weights)
print(f"{classifier.count_params()} weights; trainable when the encoder is frozen: {trainable['frozen']}, "
      f"when it is fine-tuned: {trainable['fine-tuned']}")

# %%
# Frozen, then fine-tuned, then the same architecture from scratch (or reuse them from the registry).
encoder_runs = transfer.train_encoder_transfer(study, autoencoder_run)

# %%
# One row per run, best validation mAP first; "initialisation" says where each run's weights started.
def comparison(runs):
    table = study.table(runs.values())
    initialisation = {run.key: run.data["initialisation"] for run in runs.values()}
    table.insert(table.columns.get_loc("family") + 1, "initialisation", table["key"].map(initialisation))
    return table


encoder_table = comparison(encoder_runs)
encoder_table.drop(columns=["description", "key"]).round(4)

# %%
# What pretraining changed, in words, from the records.
def non_black_map(run, split):
    return run.metrics[split]["non_black"]["map"]


fine_tuned, scratch, frozen = encoder_runs["fine_tuned"], encoder_runs["from_scratch"], encoder_runs["frozen"]
gain = {split: non_black_map(fine_tuned, split) - non_black_map(scratch, split) for split in ("val", "holdout")}
# A constant score has an average precision equal to the label's positive rate: the no-skill level.
predictions = fine_tuned.predictions()
no_skill = float(predictions["val_true"][~predictions["val_is_black"]].mean(axis=0).mean())
verdict = "helped" if min(gain.values()) > 0 else "hurt" if max(gain.values()) < 0 else "made no consistent difference"
display(Markdown(
    f"On the non-black images, the fine-tuned encoder reaches a validation mAP of "
    f"{non_black_map(fine_tuned, 'val'):.3f} (hold-out {non_black_map(fine_tuned, 'holdout'):.3f}) against "
    f"{non_black_map(scratch, 'val'):.3f} ({non_black_map(scratch, 'holdout'):.3f}) for the same network from "
    f"scratch with the same epoch budget (epochs run: {fine_tuned.data['epochs_run']} and "
    f"{scratch.data['epochs_run']}): pretraining **{verdict}** "
    f"({gain['val']:+.3f} on validation, {gain['holdout']:+.3f} on the hold-out). With the encoder frozen, "
    f"only the head learning, the validation mAP is {non_black_map(frozen, 'val'):.3f}: this measures how much "
    "of what the labels need survives in the autoencoder's bottleneck as it is. For scale, a model that gives "
    f"every image the same score would reach {no_skill:.3f} (the mean positive rate of the labels)."
))

# %% [markdown]
# ## ImageNet transfer: MobileNetV2
#
# The ImageNet weights are looked for on this machine (the Keras cache, or the
# file named by the `STUDY_IMAGENET_WEIGHTS` environment variable), never
# downloaded.

# %%
# Where the ImageNet weights are, or why they are not used.
weights = transfer.find_imagenet_weights(settings.backbone_alpha, settings.backbone_image_size)
display(Markdown(weights.message))

# %%
# Frozen then fine-tuned with ImageNet weights; otherwise the same network from random initialisation.
backbone_runs = transfer.train_backbone_transfer(study, weights)

# %% [markdown]
# ## All runs of this notebook

# %%
# Every run of this notebook, best validation mAP first; the initialisation column says which ones are transfer.
all_runs = {run.model: run for run in [*encoder_runs.values(), *backbone_runs.values()]}
transfer_table = comparison(all_runs)
transfer_table.drop(columns=["key"]).round(4)

# %%
# Per-class AP bars, learning curves and precision-recall curves, saved to figures/ (each shown in its own cell).
transfer_figures = study.comparison_figures(all_runs, prefix="07_transfer_learning")
for figure in transfer_figures.values():
    plt.close(figure)

# %%
# Average precision of every label for every run; the diamond is the run's mAP.
transfer_figures["per_class_ap"]

# %%
# Loss per epoch; a fine-tuned run's curve goes through both stages (the learning rate drops where it is unfrozen).
transfer_figures["learning_curves"]

# %%
# Precision-recall curves per label on the non-black validation images.
transfer_figures["precision_recall"]

# %%
# The best run of this notebook by validation mAP (the hold-out never takes part in the choice).
best_run = study.best(all_runs.values())
text = study.describe_best(best_run, "run of this notebook")
if weights.found:
    text += " MobileNetV2 started from ImageNet weights."
else:
    text += (f" MobileNetV2 could only be trained from random initialisation here ({transfer.RANDOM_INIT_LABEL}), "
             f"on {backbone_runs['random_init'].data['n_train_images']} training images: its row measures that "
             "network from scratch on a small budget, not what ImageNet weights would bring.")
display(Markdown(text))

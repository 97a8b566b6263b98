# %% [markdown]
# # 06 — Denoising autoencoder
#
# An autoencoder squeezes an image through a narrow *bottleneck* and rebuilds
# it from there. Trained to rebuild the **clean** image from a **noisy** copy,
# it has to learn what the images are made of (strokes, outlines, textured
# patches, a smooth background) and to drop what they are not (the noise).
# No label is needed, so it learns from every image we have, the unlabelled
# test images included; black images are left out, there is nothing in them
# to rebuild. Notebook `07_transfer_learning` reuses its encoder as a
# pretrained backbone for the 3-label classifier.
#
# - **Noise**: drawn from a normal distribution of mean 0.1 and variance 0.3
#   (standard deviation √0.3 ≈ 0.55), added to the images in [0, 1] and
#   clipped back to [0, 1]; each image gets one seeded draw.
# - **Network**: stride-2 convolutions halve the image three times, a last
#   convolution reduces it to a few channels (the bottleneck), and stride-2
#   transposed convolutions grow it back to 64×64 with a sigmoid output.
#   It is trained to minimise the mean squared error to the clean image, with
#   early stopping on a seeded tenth of the unlabelled images.
# - **Evaluation**: mean squared error (MSE) and peak signal-to-noise ratio
#   (PSNR, in dB, higher is better) on the validation images, which the
#   autoencoder never saw, against two references: doing nothing (the noisy
#   input itself) and a Gaussian blur whose width is chosen on training images.

# %%
# The shared package does the work; the notebook chooses what to run and explains it.
import math

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from contest_study import autoencoder, plots
from contest_study.data import drop_black_images
from contest_study.study import open_study

# Data, registry, profile and oracle of this run, as set by scripts/export_submission.py.
study = open_study()
settings = autoencoder.settings_for(study.context.profile)
print(f"profile: {study.context.profile.name}; training images: {len(study.data.train)}; "
      f"test images: {len(study.data.test) if study.data.test is not None else 0}; validation: {len(study.data.val)}")

# %% [markdown]
# ## What this profile trains
#
# The autoencoder's settings depend on the profile: the `default` profile
# trains on a seeded subsample of the unlabelled images for a few epochs, so
# that this notebook and the next one run in a few minutes on a 2-core CPU.

# %%
# Every setting of this run, reductions included (max_images: cap on the unlabelled images; None = all).
pd.Series(settings.as_hyperparams(), name=study.context.profile.name).to_frame()

# %% [markdown]
# ## The noise
#
# The noise is checked on a large sample, before it meets an image: its mean
# and variance must match the specification. Clipping to [0, 1] then changes
# what reaches the network (a pixel cannot go below black or above white).

# %%
# Mean and variance of one million noise values, against the specified 0.1 and 0.3.
noise = autoencoder.sample_noise(1_000_000, seed=study.context.seed)
noise_check = pd.DataFrame(
    {"specified": [autoencoder.NOISE_MEAN, autoencoder.NOISE_VARIANCE], "measured": [noise.mean(), noise.var()]},
    index=["mean", "variance"],
)
noise_check.round(4)

# %% [markdown]
# ## The bottleneck and its compression rate
#
# The compression rate is the number of input values per value of the
# bottleneck. It is read from the layer shapes of the network itself, not
# written by hand.

# %%
# Build the network once, untrained, and read the bottleneck's shape from its layers.
input_shape = (*study.data.train.images.shape[1:3], 1)
untrained = autoencoder.build_autoencoder(input_shape, **settings.architecture())
code_shape = autoencoder.bottleneck_shape(untrained)
rate = autoencoder.compression_rate(untrained)
print(f"input {'x'.join(map(str, input_shape))} = {math.prod(input_shape)} values; "
      f"bottleneck {'x'.join(map(str, code_shape))} = {math.prod(code_shape)} values; "
      f"compression rate {rate:g} (at least 10 required)")
untrained.get_layer("encoder").summary()

# %% [markdown]
# ## Training
#
# Keras prints one line per epoch; the run is stored in the results registry
# (in its own folder, `runs/.autoencoder/`, since it has no average precision
# to compare with the classifiers), so re-running this notebook reuses it.

# %%
# Train (or reuse) the autoencoder on the noisy training and test images.
autoencoder_run = autoencoder.train_autoencoder(study)
print(f"{autoencoder_run.data['description']}: {autoencoder_run.data['n_train_images']} training images, "
      f"{autoencoder_run.data['n_monitor_images']} for early stopping, {autoencoder_run.data['epochs_run']} epochs, "
      f"{autoencoder_run.data['wall_time_s']:.0f} s")

# %%
# Reconstruction loss per epoch, on the training images and on the early-stopping images, saved to figures/.
learning_curves = plots.learning_curves({"autoencoder": autoencoder_run.history})
plots.save_figure(learning_curves, "06_denoising_learning_curves", study.context.figures_dir)

# %% [markdown]
# ## Reconstruction quality on the validation images

# %%
# MSE (lower is better) and PSNR (higher is better) of the three ways of cleaning the validation images.
reconstruction = autoencoder.reconstruction_table(autoencoder_run)
reconstruction.round(4)

# %%
# The comparison in words, from the table above.
noisy_row, filter_row, autoencoder_row = reconstruction.iloc[0], reconstruction.iloc[1], reconstruction.iloc[2]
best = reconstruction["MSE"].idxmin()
display(Markdown(
    f"On {autoencoder_run.data['n_val_images']} validation images the autoencoder brings the MSE from "
    f"{noisy_row['MSE']:.4f} (noisy input) to {autoencoder_row['MSE']:.4f}, a PSNR gain of "
    f"{autoencoder_row['PSNR (dB)'] - noisy_row['PSNR (dB)']:+.1f} dB; the Gaussian filter reaches "
    f"{filter_row['MSE']:.4f} ({filter_row['PSNR (dB)'] - noisy_row['PSNR (dB)']:+.1f} dB). "
    f"The best of the three is **{best}**. A blur averages the noise away but also smears every edge and "
    f"keeps the brightness shift of the noise (its mean is {autoencoder.NOISE_MEAN}, not 0); the autoencoder "
    "can learn both what the shapes look like and that shift, but only as well as its bottleneck and its "
    "training time allow."
))

# %% [markdown]
# ## Before and after
#
# Top row: clean validation images; middle: the noisy input; bottom: the
# autoencoder's output. The number under each image is its MSE to the clean
# image.

# %%
# Clean, noisy and denoised validation images side by side, saved to figures/.
examples = autoencoder.denoising_examples(autoencoder_run)
before_after = plots.denoising_grid(examples["clean"], examples["noisy"], examples["denoised"], n=8,
                                    title="Denoising autoencoder")
plots.save_figure(before_after, "06_denoising_before_after", study.context.figures_dir)

# %%
# How strong the noise is next to the images themselves: the ratio of the two standard deviations.
clean_spread = float(np.std(drop_black_images(study.data.val, keep=0).images))
display(Markdown(
    f"The noise's standard deviation, {autoencoder.NOISE_STD:.3f}, is {autoencoder.NOISE_STD / clean_spread:.1f} "
    f"times that of the clean validation pixels ({clean_spread:.3f}): the shapes that carry the labels are faint "
    "in the noisy row, and whatever of them the denoised row shows is what the bottleneck kept. Notebook 07 "
    "tests whether that is enough for the encoder to help the classifier."
))

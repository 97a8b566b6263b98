# %% [markdown]
# # 06 — Denoising autoencoder
#
# Can a network learn to remove heavy noise from the contest's images, better
# than a blur? A denoising autoencoder squeezes a **noisy** image through a
# narrow *bottleneck* and is trained to rebuild the **clean** one, so it must
# learn what the images are made of and drop the noise. It reads no label: it
# learns from every non-black image of the folder, the unlabelled test images
# included, and notebook 07 reuses its encoder as a pretrained backbone.
#
# - **Noise**: normal, of mean 0.1 and variance 0.3 (standard deviation
#   √0.3 ≈ 0.55), added to the images in [0, 1] and clipped back to [0, 1];
#   one seeded draw per image (checked on a large sample in the appendix).
# - **Evaluation**: mean squared error (MSE) and peak signal-to-noise ratio
#   (PSNR, dB, higher is better) on a seeded tenth of the images, never
#   trained on (it only watches early stopping), against the noisy input and
#   a Gaussian blur whose width is chosen on training images.

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
# Data, registry and profile of this run.
import keras
import numpy as np
import pandas as pd
from keras import layers

from contest_study import autoencoder, plots
from contest_study.study import open_study

study = open_study(profile=profile, data_dir=data_dir, workdir=workdir, seed=seed)
settings = study.context.profile
print(f"profile {settings.name}: at most {settings.autoencoder_max_epochs} epochs, "
      f"images capped at {settings.autoencoder_max_images} (None: all)")

# %% [markdown] tags=["appendix"]
# ### The noise, measured
#
# The noise is checked on a large sample, before it meets an image: its mean
# and variance must match the specification. Clipping to [0, 1] then changes
# what reaches the network (a pixel cannot go below black or above white).

# %% tags=["appendix"]
# Mean and variance of one million noise values, against the specified 0.1 and 0.3.
noise = autoencoder.sample_noise(1_000_000, seed=seed)
pd.DataFrame(
    {"specified": [autoencoder.NOISE_MEAN, autoencoder.NOISE_VARIANCE], "measured": [noise.mean(), noise.var()]},
    index=["mean", "variance"],
).round(4)

# %% [markdown]
# ## The network
#
# The encoder halves the image three times with stride-2 3×3 convolutions
# (a learnt downsampling, where pooling would throw positions away); a linear
# 3×3 convolution then maps it to 4 channels, the code. The decoder grows it
# back with stride-2 transposed convolutions and ends in a sigmoid, as the
# clean images live in [0, 1]. Encoder and decoder are nested models, so
# notebook 07 can lift the trained encoder out (layer tables in the
# appendix). The compression rate (input values per code value, at least 10
# required):

# %% [markdown] tags=["appendix"]
# ### Layer tables of the encoder and the decoder

# %% tags=["appendix"]
def build_denoising_autoencoder(input_shape):
    encoder = keras.Sequential([
        keras.Input(shape=input_shape),
        layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
        # The bottleneck: linear, so the code is not clipped at 0.
        layers.Conv2D(4, 3, padding="same", name="bottleneck"),
    ], name="encoder")
    decoder = keras.Sequential([
        keras.Input(shape=encoder.output_shape[1:]),
        # Narrower than the encoder: the full-resolution layers cost the most, and only the encoder is reused.
        layers.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2D(input_shape[-1], 3, padding="same", activation="sigmoid", name="reconstruction"),
    ], name="decoder")
    noisy = keras.Input(shape=input_shape, name="noisy_image")
    return keras.Model(noisy, decoder(encoder(noisy)), name="denoising_autoencoder")


model = build_denoising_autoencoder(study.input_shape)
model.get_layer("encoder").summary()
model.get_layer("decoder").summary()

# %%
code_shape = model.get_layer("encoder").output_shape[1:]
print(f"input {study.input_shape} = {np.prod(study.input_shape)} values; code {code_shape} = "
      f"{np.prod(code_shape)} values; compression rate {autoencoder.compression_rate(model):g}")
assert autoencoder.compression_rate(model) >= 10

# %% [markdown]
# ## Training, in plain view
#
# Adam minimises the pixel MSE to the clean image; early stopping (the
# study's patience) watches it on the held-out tenth and restores the best
# epoch, ReduceLROnPlateau halves the learning rate when it stalls, a
# checkpoint keeps the best weights. The results registry keeps the run (a
# re-run reuses it). Below: the non-black images per split and how training
# ended (a run that hit the epoch cap at its best epoch was still improving).

# %%
recipe = {
    "epochs": settings.autoencoder_max_epochs,
    "batch_size": 64,
    "learning_rate": 1e-3,
    "patience": settings.early_stopping_patience,
}


def fit_denoiser(model, train_pairs, monitor_pairs, directory):
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=recipe["patience"], restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                          patience=max(1, recipe["patience"] // 2), min_lr=1e-5),
        keras.callbacks.ModelCheckpoint(str(directory / "best.weights.h5"), monitor="val_loss",
                                        save_best_only=True, save_weights_only=True),
    ]
    model.compile(optimizer=keras.optimizers.Adam(recipe["learning_rate"]), loss="mse",
                  metrics=[keras.metrics.MeanAbsoluteError(name="mae")])
    noisy, clean = train_pairs
    return model.fit(noisy, clean, validation_data=monitor_pairs, epochs=recipe["epochs"],
                     batch_size=recipe["batch_size"], callbacks=callbacks, verbose=2)


autoencoder_run = autoencoder.pretrain(study, build_denoising_autoencoder, fit_denoiser, recipe=recipe,
                                       max_images=settings.autoencoder_max_images)

# %%
# Where the images came from: every split, labels unread; black images left out.
images_used = pd.Series(autoencoder_run.data["images_per_split"], name="non-black images")
print(images_used.to_string())
print(f"black images left out: {autoencoder_run.data['n_black_dropped']}; trained on "
      f"{autoencoder_run.data['n_train_images']}, early stopping on {autoencoder_run.data['n_monitor_images']}; "
      f"{autoencoder_run.data['epochs_run']} epochs ({autoencoder_run.data['stopped_because']}, best epoch "
      f"{autoencoder_run.data['best_epoch']}), {autoencoder_run.data['wall_time_s']:.0f} s")

# %% [markdown] tags=["appendix"]
# ### Learning curves
#
# The reconstruction loss (MSE) per epoch, on the training images and on the
# held-out tenth that watches early stopping.

# %% tags=["appendix"]
# Reconstruction loss per epoch, on the training images and on the held-out tenth, saved to figures/.
learning_curves = plots.learning_curves({"autoencoder": autoencoder_run.history})
plots.save_figure(learning_curves, "06_denoising_learning_curves", study.context.figures_dir)

# %% [markdown]
# ## Reconstruction quality

# %%
# MSE (lower is better) and PSNR (higher is better) of the three ways of cleaning the held-out images.
reconstruction = autoencoder.reconstruction_table(autoencoder_run)
reconstruction.round(4)

# %% [markdown]
# A blur averages the noise away, but it also smears every edge and keeps
# the brightness shift of the noise (its mean is 0.1, not 0). The autoencoder
# can learn both what the images look like and that shift, but only as well
# as its bottleneck allows. Which of the two wins here:

# %%
noisy_mse, filter_mse, autoencoder_mse = reconstruction["MSE"].to_numpy()
psnr_gain = reconstruction["PSNR (dB)"].iloc[2] - reconstruction["PSNR (dB)"].iloc[0]
print(f"The autoencoder takes the MSE from {noisy_mse:.4f} (noisy input) to {autoencoder_mse:.4f} "
      f"({psnr_gain:+.1f} dB PSNR); the Gaussian filter reaches {filter_mse:.4f}.")
if autoencoder_mse < filter_mse:
    print("The autoencoder restores the images better than the best Gaussian blur.")
else:
    print("The best Gaussian blur restores the images at least as well as the autoencoder: what the "
          "bottleneck keeps is no more than a blur would; notebook 07 still tests whether it helps the labels.")

# %% [markdown]
# **Before and after.** Top row: clean held-out images; middle: the noisy
# input; bottom: the autoencoder's output. The number under each image is its
# MSE to the clean image.

# %%
examples = autoencoder.denoising_examples(autoencoder_run)
before_after = plots.denoising_grid(examples["clean"], examples["noisy"], examples["denoised"], n=8,
                                    title="Denoising autoencoder")
plots.save_figure(before_after, "06_denoising_before_after", study.context.figures_dir)

# %% [markdown] tags=["appendix"]
# ### Noise strength against the images
#
# How strong is the noise next to the images themselves? The ratio of the
# noise's standard deviation to that of the clean pixels says how much of
# each image the network had to guess.

# %% tags=["appendix"]
clean_spread = float(np.std(examples["clean"]))
print(f"noise standard deviation {autoencoder.NOISE_STD:.3f}, clean pixels {clean_spread:.3f}: "
      f"ratio {autoencoder.NOISE_STD / clean_spread:.1f}")

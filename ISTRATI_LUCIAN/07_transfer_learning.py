# %% [markdown]
# # 07 — Transfer learning
#
# A network that starts from weights learnt on another task may need fewer
# labelled images than one starting from random numbers. Two sources of
# such weights, each run trained and scored like the models of 02-04:
# **self-supervised**, the encoder of 06's denoising autoencoder (pretrained
# on every non-black image, test images included: it reads no label) against
# the same network from random weights at several **label budgets**; and
# **ImageNet**, MobileNetV2 from Keras Applications with its ImageNet weights
# when they are available (without them it learns from random weights as
# `mobilenetv2_random_init`, which says nothing about transfer).

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
# Online (Kaggle, Colab, a laptop), True downloads MobileNetV2's ImageNet weights into the Keras cache.
# False: nothing is downloaded; weights already in the cache are used, otherwise the random-init fallback.
download_imagenet_weights = False

# %%
# Data, registry and profile of this run.
import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from keras import layers

from contest_study import autoencoder, evaluation, transfer
from contest_study.data import black_mask
from contest_study.study import open_study

study = open_study(profile=profile, data_dir=data_dir, workdir=workdir, seed=seed)
settings = study.context.profile
n_labels = len(study.label_names)
print(f"profile {settings.name}: label budgets {settings.label_budgets}")

# %% [markdown]
# ## The classifier on top of the pretrained encoder
#
# The encoder of 06's run (from the registry) keeps *where* things are, on a
# grid an eighth of the image's side; the head asks whether each label's
# pattern is *anywhere*: a 3×3 convolution, the maximum over all positions,
# dropout and one sigmoid per label. Pretrained and from scratch differ only
# in the encoder's starting weights. Layer table in the appendix.

# %%
autoencoder_run = autoencoder.latest_run(study)
print(f"encoder of {autoencoder_run.key}, pretrained on {autoencoder_run.data['n_train_images']} images of "
      f"{', '.join(autoencoder_run.data['images_per_split'])}")

# %%
def encoder_classifier(encoder, input_shape, n_labels, name):
    inputs = keras.Input(shape=input_shape, name="image")
    code = encoder(inputs)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(code)
    x = layers.GlobalMaxPooling2D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(n_labels, activation="sigmoid", name="labels")(x)
    return keras.Model(inputs, outputs, name=name)


def build_ae_encoder_pretrained(input_shape, n_labels):
    # Named after its autoencoder run, so that a retrained autoencoder is never mistaken for it in the registry.
    pretrained_tag = autoencoder_run.key.rsplit("-", 1)[1]
    encoder = autoencoder.load_encoder(autoencoder_run, name=f"pretrained_encoder_{pretrained_tag}")
    return encoder_classifier(encoder, input_shape, n_labels, "ae_encoder_pretrained")


def build_ae_encoder_scratch(input_shape, n_labels):
    encoder = autoencoder.load_encoder(autoencoder_run, pretrained=False)
    return encoder_classifier(encoder, input_shape, n_labels, "ae_encoder_scratch")


# %% [markdown] tags=["appendix"]
# ### Layer table of the encoder classifier (pretrained and from scratch alike)

# %% tags=["appendix"]
build_ae_encoder_pretrained(study.input_shape, n_labels).summary()

# %% [markdown]
# ## Training one network in plain view
#
# The pretrained network on every labelled image, with 02's recipe spelled
# out; every other run goes through the engine with the same settings.

# %%
config = study.config()


def fit_in_plain_view(model, train_data, val_data, run):
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(1, config.patience // 2),
                                          min_lr=1e-5),
        keras.callbacks.ModelCheckpoint(str(run.directory / "best.weights.h5"), monitor="val_loss",
                                        save_best_only=True, save_weights_only=True),
    ]
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=keras.losses.BinaryCrossentropy(),
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy"),
                           keras.metrics.AUC(curve="PR", multi_label=True, name="pr_auc")])
    model.fit(train_data, validation_data=val_data, epochs=config.epochs,
              callbacks=callbacks + run.callbacks(watched=callbacks), verbose=2)


pretrained_full = study.train(build_ae_encoder_pretrained, family="transfer", fit=fit_in_plain_view,
                              description="denoising-autoencoder encoder (pretrained) + max-pooled head")

# %% [markdown]
# ## Pretrained against from scratch, at several label budgets
#
# Each budget is a seeded subsample of the labelled non-black training
# images, validated on the same images. The epoch cap counts weight updates:
# a run on a fraction f of the images may take cap / f epochs, as many steps
# as the full run.

# %%
encoder_runs = {("pretrained", 1.0): pretrained_full}
for fraction in settings.label_budgets:
    for start, build, family in (("pretrained", build_ae_encoder_pretrained, "transfer"),
                                 ("from scratch", build_ae_encoder_scratch, "from_scratch")):
        if (start, fraction) not in encoder_runs:
            encoder_runs[start, fraction] = study.train(
                build, family=family, train_fraction=fraction, epochs=round(config.epochs / fraction),
                description=f"denoising-autoencoder encoder ({start}) + max-pooled head, {fraction:.0%} of the labels",
            )

# %%
# Validation mAP on the non-black images per budget, with its 95 % bootstrap interval when the record has one.
def non_black_val(record):
    return record.metrics["val"]["non_black"]


rows = []
for (start, fraction), record in encoder_runs.items():
    scores = non_black_val(record)
    interval = scores.get("map_ci95")
    rows.append({"budget": fraction, "start": start, "training images": record.data["n_train_images"],
                 "val mAP (non-black)": scores["map"],
                 "95% CI low": interval[0] if interval else np.nan, "95% CI high": interval[1] if interval else np.nan,
                 "hold-out mAP (non-black)": record.metrics["holdout"]["non_black"]["map"],
                 "epochs": record.data["epochs_run"], "stopped": record.data.get("stopped_because", "")})
budget_table = pd.DataFrame(rows).sort_values(["budget", "start"]).reset_index(drop=True)
budget_table.set_index(["budget", "start"]).round(3)

# %%
# Both curves against the label budget (log scale: the budgets grow geometrically), saved to figures/.
figure, axis = plt.subplots(figsize=(7, 2.8))
for start, group in budget_table.groupby("start"):
    group = group.sort_values("budget")
    spread = (group["val mAP (non-black)"] - group["95% CI low"], group["95% CI high"] - group["val mAP (non-black)"])
    axis.errorbar(group["budget"] * 100, group["val mAP (non-black)"], marker="o", capsize=4, label=start,
                  yerr=None if group["95% CI low"].isna().any() else spread)
axis.set(xscale="log", xlabel="labelled training images used (%)", ylabel="validation mAP, non-black images",
         title="Pretrained encoder against the same network from scratch")
axis.set_xticks(budget_table["budget"].unique() * 100, [f"{b:.0%}" for b in budget_table["budget"].unique()])
axis.legend()
study.save_figures({"label_budgets": figure}, "07_transfer_learning")
figure

# %% [markdown]
# Where does pretraining help? A paired bootstrap of the non-black validation
# images (08) per budget: an interval containing 0 is no measurable difference.

# %%
verdicts = {}
for fraction in settings.label_budgets:
    comparison = evaluation.compare_runs(encoder_runs["pretrained", fraction], encoder_runs["from scratch", fraction])
    low, high = comparison["interval"]
    if not comparison["measurable"]:
        verdicts[fraction] = "no measurable difference"
    elif comparison["difference"] > 0:
        verdicts[fraction] = "pretraining helps"
    else:
        verdicts[fraction] = "pretraining hurts"
    print(f"{fraction:.0%} of the labels: pretrained - from scratch {comparison['difference']:+.3f} mAP "
          f"(95% CI {low:+.3f} to {high:+.3f}): {verdicts[fraction]}")

# %% [markdown]
# Pretraining can only help where the labels are too few to learn the first
# layers from, so any gain should shrink as the budget grows. Here:

# %%
helped = [fraction for fraction, verdict in verdicts.items() if verdict == "pretraining helps"]
hurt = [fraction for fraction, verdict in verdicts.items() if verdict == "pretraining hurts"]
neutral = [fraction for fraction, verdict in verdicts.items() if verdict == "no measurable difference"]
for outcome, fractions in (("helps", helped), ("hurts", hurt), ("makes no measurable difference", neutral)):
    if fractions:
        print(f"Pretraining {outcome} at {', '.join(f'{fraction:.0%}' for fraction in fractions)} of the labels.")
if helped and max(helped) < 1:
    print("It helps only where the labels are few: there the filters learnt from the unlabelled images stand in "
          "for what the labels cannot teach.")
if not helped:
    print("At these budgets the unlabelled images gave the encoder no head start that the labels could not give it.")
for fraction in hurt:
    pretrained, scratch = encoder_runs["pretrained", fraction], encoder_runs["from scratch", fraction]
    if pretrained.data.get("stopped_because") == "epoch cap":
        print(f"At {fraction:.0%} the pretrained run reached the epoch cap ({pretrained.data.get('epochs_run')} epochs, "
              f"best epoch {pretrained.data.get('best_epoch')}): it was still learning, so part of the gap is training time.")
        continue
    print(f"At {fraction:.0%}, fine-tuned from the autoencoder's filters with the same recipe, the network settles "
          f"lower than from random ones (best epoch {pretrained.data.get('best_epoch')} against "
          f"{scratch.data.get('best_epoch')}), likely because a start made to rebuild pixels through a 4-channel code "
          "is one the fine-tuning does not leave.")

# %% [markdown]
# ## ImageNet transfer: MobileNetV2
#
# Width 0.35, 96×96 input: the image is resized, copied to three channels
# and scaled to [-1, 1] inside the model. With ImageNet weights only the head
# learns; without them every layer does. The slowest network here on a CPU,
# it has capped images and epochs, for time only (layers in the appendix).

# %%
imagenet = transfer.find_imagenet_weights(0.35, 96, download=download_imagenet_weights)
print("MobileNetV2 starts from its ImageNet weights." if imagenet.found else
      "No ImageNet weights of MobileNetV2 (0.35, 96x96) here and download_imagenet_weights is False: it learns "
      f"from random weights as {transfer.RANDOM_INIT_NAME} (online, set download_imagenet_weights = True).")

# %%
backbone_side = settings.backbone_input_size or 96


def build_mobilenetv2(input_shape, n_labels):
    backbone = keras.applications.MobileNetV2(
        input_shape=(backbone_side, backbone_side, 3), alpha=0.35, include_top=False, pooling="avg",
        weights=str(imagenet.path) if imagenet.found else None, name="backbone",
    )
    backbone.trainable = not imagenet.found
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Resizing(backbone_side, backbone_side)(inputs)
    if input_shape[-1] == 1:
        x = layers.Concatenate()([x, x, x])
    # mobilenet_v2.preprocess_input maps [0, 255] to [-1, 1]; these images are in [0, 1].
    x = layers.Rescaling(2.0, offset=-1.0)(x)
    x = backbone(x, training=False) if imagenet.found else backbone(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(n_labels, activation="sigmoid", name="labels")(x)
    return keras.Model(inputs, outputs, name=transfer.IMAGENET_NAME if imagenet.found else transfer.RANDOM_INIT_NAME)


# %% [markdown] tags=["appendix"]
# ### Layer table of the MobileNetV2 classifier

# %% tags=["appendix"]
build_mobilenetv2(study.input_shape, n_labels).summary(line_length=100, expand_nested=False)

# %%
# The profile's cap on MobileNetV2's training images, as a fraction of the non-black training images.
n_non_black = int((~black_mask(study.data.train.images)).sum())
cap = settings.backbone_max_train_images
backbone_fraction = 1.0 if cap is None or cap >= n_non_black else cap / n_non_black
mobilenet_run = study.train(
    build_mobilenetv2, family="transfer" if imagenet.found else "from_scratch", train_fraction=backbone_fraction,
    epochs=settings.backbone_max_epochs,
    description=("MobileNetV2 (0.35, ImageNet weights, frozen) + sigmoid head" if imagenet.found
                 else "MobileNetV2 (0.35) from random initialisation: no ImageNet weights"),
)

# %%
mobile, best_encoder = non_black_val(mobilenet_run)["map"], non_black_val(pretrained_full)["map"]
print(f"{mobilenet_run.model}: non-black validation mAP {mobile:.3f} ({mobilenet_run.data['n_train_images']} images, "
      f"{mobilenet_run.data['epochs_run']} epoch(s), {mobilenet_run.data.get('stopped_because', '')}); "
      f"pretrained encoder on every label: {best_encoder:.3f}.")
print("It measures transfer from ImageNet's photographs." if imagenet.found else
      "Without ImageNet weights it measures that network from scratch on a small budget, not transfer.")

# %% [markdown] tags=["appendix"]
# ### Every run of this notebook, per label
#
# Validation AP per label and the non-black mAP of every run of this
# notebook (budgets in brackets), how long it trained and why it stopped.

# %% tags=["appendix"]
all_runs = {f"{record.model} ({fraction:.0%})": record for (start, fraction), record in encoder_runs.items()}
all_runs[mobilenet_run.model] = mobilenet_run
all_runs_table = study.table(all_runs.values())
all_runs_table["run"] = all_runs_table["run"].str.replace(" of the training images", "", regex=False)
per_label_columns = ["run", "family", *[f"val AP {label}" for label in study.label_names], "val mAP (non-black)",
                     "holdout mAP (non-black)", "epochs", "best epoch", "stopped by"]
all_runs_table[per_label_columns].astype({"epochs": "Int64", "best epoch": "Int64"}).set_index("run").round(3)

# %% [markdown] tags=["appendix"]
# ### Per-label AP, learning curves and precision-recall curves of these runs

# %% tags=["appendix"]
# Per-class AP bars, learning curves and precision-recall curves, saved to figures/.
transfer_figures = study.comparison_figures(all_runs, prefix="07_transfer_learning")
transfer_figures["per_class_ap"]

# %% tags=["appendix"]
transfer_figures["learning_curves"]

# %% tags=["appendix"]
transfer_figures["precision_recall"]

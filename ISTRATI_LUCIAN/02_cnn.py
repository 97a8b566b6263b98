# %% [markdown]
# # 02 — Convolutional neural networks
#
# Which convolutional network recognises the three labels best? A convolution
# slides the same small filters over the whole image, so a pattern is found
# wherever it appears, with far fewer weights than a dense layer over all
# pixels: a prior that should suit small objects placed anywhere in the
# picture. Five architectures are compared, from small to deep, each ending in
# one sigmoid output per label and scored by the contest's mAP as in
# `01_data_analysis`; their layer tables are in the appendix.

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
# The study's plumbing: the data of this run, the results registry and the profile's settings.
import keras
import pandas as pd
from keras import layers

from contest_study.data import black_mask
from contest_study.evaluation import compare_runs
from contest_study.metrics import compare, mean_average_precision
from contest_study.study import open_study
from contest_study.training import model_from_record

study = open_study(profile=profile, data_dir=data_dir, workdir=workdir, seed=seed)
input_shape, n_labels = study.input_shape, len(study.label_names)
print(f"profile {study.context.profile.name}: {len(study.data.train)} training, {len(study.data.val)} validation, "
      f"{len(study.data.holdout)} hold-out images of shape {input_shape}; labels {study.label_names}")

# %% [markdown]
# ## The five architectures
#
# **1.a — a small baseline.** Two convolution + max-pooling blocks (16 and 32
# filters) and one hidden dense layer of 64 units: the smallest network that
# can learn local patterns, the yardstick for the others.

# %% [markdown] tags=["appendix"]
# ### Layer table of 1.a (small baseline)

# %% tags=["appendix"]
def build_cnn_1a(input_shape, n_labels):
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(64, activation="relu")(x)
    # Sigmoid, not softmax: the three labels are independent and may all be present at once.
    outputs = layers.Dense(n_labels, activation="sigmoid", name="labels")(x)
    return keras.Model(inputs, outputs, name="cnn_1a")


build_cnn_1a(input_shape, n_labels).summary()

# %% [markdown]
# **1.b — the course network**, `Conv−Pool−Conv−Pool−Conv−Conv−Pool−Dense−Dense`
# (16, 32, 48 and 48 filters, dense 128): a third stage with two stacked
# convolutions sees patterns about 20 pixels wide before the dense layers.

# %% [markdown] tags=["appendix"]
# ### Layer table of 1.b (the course network)

# %% tags=["appendix"]
def build_cnn_1b(input_shape, n_labels):
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(48, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(48, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.4)(x)
    x = layers.Dense(128, activation="relu")(x)
    outputs = layers.Dense(n_labels, activation="sigmoid", name="labels")(x)
    return keras.Model(inputs, outputs, name="cnn_1b")


build_cnn_1b(input_shape, n_labels).summary()

# %% [markdown]
# **1.c — VGG-style.** VGG's idea: two 3×3 convolutions in a row see as far as
# one 5×5 with fewer weights and one more non-linearity. After a plain
# full-resolution convolution, three such pairs (16, 32, 64 filters) with batch
# normalisation, each closed by max pooling and dropout; batch normalisation
# starts below full resolution, where it costs a quarter as much on a CPU.

# %% [markdown] tags=["appendix"]
# ### Layer table of 1.c (VGG-style)

# %% tags=["appendix"]
def conv_bn_relu(x, filters, strides=1):
    # No bias: the batch normalisation that follows has its own shift.
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    # momentum 0.9 (Keras: 0.99): with ~100 batches an epoch the inference statistics must follow the weights.
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x)


def build_cnn_1c(input_shape, n_labels):
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D()(x)
    for filters in (16, 32, 64):
        x = conv_bn_relu(x, filters)
        x = conv_bn_relu(x, filters)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    # The dense layer holds most of the weights, so it gets the strongest dropout.
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(n_labels, activation="sigmoid", name="labels")(x)
    return keras.Model(inputs, outputs, name="cnn_1c")


build_cnn_1c(input_shape, n_labels).summary()

# %% [markdown]
# **1.d — a small ResNet.** A shortcut adds each block's input to its output,
# so a block learns a correction and the gradient reaches the first layers
# undiminished. Four residual blocks (32, 32, 64, 128 filters) after a
# full-resolution stem; global average pooling replaces the large flatten +
# dense layer, so the features no longer depend on where a pattern sits.

# %% [markdown] tags=["appendix"]
# ### Layer table of 1.d (small ResNet)

# %% tags=["appendix"]
def residual_block(x, filters, strides=1):
    shortcut = x
    y = conv_bn_relu(x, filters, strides=strides)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization(momentum=0.9)(y)
    if strides != 1 or x.shape[-1] != filters:
        # The shortcut must match the block's new shape: a strided 1x1 projection.
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False)(x)
        shortcut = layers.BatchNormalization(momentum=0.9)(shortcut)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def build_cnn_1d(input_shape, n_labels):
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D()(x)
    x = residual_block(x, 32, strides=2)
    x = residual_block(x, 32)
    x = residual_block(x, 64, strides=2)
    x = residual_block(x, 128, strides=2)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(n_labels, activation="sigmoid", name="labels")(x)
    return keras.Model(inputs, outputs, name="cnn_1d")


build_cnn_1d(input_shape, n_labels).summary()

# %% [markdown]
# **1.e — own design: cheap and position-free.** A plain 16-filter convolution
# and max pooling at full resolution, then three convolution + batch
# normalisation + ReLU blocks (32, 64, 64 filters), each closed by max pooling;
# global average pooling, a dense layer of 64 units and dropout 0.2. The
# fewest weights of the five, to see how much capacity the task needs.
#
# *A failed first attempt.* The first 1.e (git history: the parent of commit
# `78b12ef`, `src/contest_study/models.py`) stacked depthwise-separable
# convolutions (`SeparableConv2D`, 32, then 64 and 128 filters with batch
# normalisation) after the same full-resolution stem. In the first default
# runs of the study it learnt too slowly and was replaced by plain `Conv2D`
# blocks with batch normalisation, now in the form above. Its scores were not
# kept: a record of a design decision, not a measured comparison.

# %% [markdown] tags=["appendix"]
# ### Layer table of 1.e (own design)

# %% tags=["appendix"]
def build_cnn_1e(input_shape, n_labels):
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D()(x)
    for filters in (32, 64, 64):
        x = conv_bn_relu(x, filters)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(64, activation="relu")(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(n_labels, activation="sigmoid", name="labels")(x)
    return keras.Model(inputs, outputs, name="cnn_1e")


build_cnn_1e(input_shape, n_labels).summary()

# %% [markdown]
# ## Training one network in plain view
#
# Every network of the study is trained as written out once in the cell below:
# **Adam** at 10⁻³, **binary cross-entropy**, binary accuracy and the **area
# under the precision-recall curve per label** (Keras' estimate of the
# contest's metric, per epoch); **EarlyStopping** on the validation loss with
# patience 5 (the source study's) restoring the best weights,
# **ReduceLROnPlateau** halving the learning rate after 2 epochs without
# progress, **ModelCheckpoint** saving the best weights. The generous epoch cap
# leaves the end to early stopping. The training images are those of `01_data_analysis` (black images
# removed but one). The other four networks go through the engine's
# `training.fit`, which compiles and fits the same way (`run` adds its logging
# and resume).

# %%
config = study.config()
print(f"epoch cap {config.epochs}, batch {config.batch_size}, early-stopping patience {config.patience}")


def compile_and_fit(model, train_data, val_data, run):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(curve="PR", multi_label=True, name="pr_auc"),
        ],
    )
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(1, config.patience // 2), min_lr=1e-5),
        keras.callbacks.ModelCheckpoint(
            run.directory / "best.weights.h5", monitor="val_loss", save_best_only=True, save_weights_only=True
        ),
    ]
    # shuffle=False: the engine's tf.data pipeline already reshuffles the training images every epoch, seeded.
    return model.fit(train_data, validation_data=val_data, epochs=config.epochs, shuffle=False,
                     callbacks=callbacks + run.callbacks(callbacks), verbose=2)


# The registry skips the fit when this network, these settings and this data were trained before.
cnn_1a = study.train(build_cnn_1a, family="cnn", description="small baseline: 2 conv+pool blocks, dense 64",
                     fit=compile_and_fit)
print(f"cnn_1a: {cnn_1a.data['epochs_run']} epochs ({cnn_1a.data.get('stopped_because')}), "
      f"val mAP {cnn_1a.metrics['val']['all']['map']:.3f}")

# %%
builders = {"cnn_1a": build_cnn_1a, "cnn_1b": build_cnn_1b, "cnn_1c": build_cnn_1c, "cnn_1d": build_cnn_1d,
            "cnn_1e": build_cnn_1e}
descriptions = {
    "cnn_1b": "Conv-Pool-Conv-Pool-Conv-Conv-Pool-Dense-Dense",
    "cnn_1c": "VGG-style: 3 blocks of two 3x3 convs, batch norm, dropout",
    "cnn_1d": "small ResNet: 4 residual blocks, global average pooling",
    "cnn_1e": "4 conv blocks, batch norm, global average pooling",
}
cnn_runs = {"cnn_1a": cnn_1a}
for name, description in descriptions.items():
    cnn_runs[name] = study.train(builders[name], family="cnn", description=description)

# %% [markdown]
# ## Results
#
# mAP on all validation images and on the non-black ones (where models differ,
# `01_data_analysis`), the hold-out (which chooses nothing), training length,
# and the gap to the best (non-black mAP) with a 95 % paired-bootstrap interval:
# both networks scored on the same resampled validation images.

# %%
cnn_table = study.table(cnn_runs.values())
# The best CNN by validation mAP (the hold-out never takes part in the choice), against the others.
best_cnn = study.best(cnn_runs.values())
rows = []
for record in cnn_runs.values():
    row = {"network": record.model, "val mAP": record.metrics["val"]["all"]["map"],
           "val mAP (non-black)": record.metrics["val"]["non_black"]["map"],
           "hold-out mAP (non-black)": record.metrics["holdout"]["non_black"]["map"],
           "weights": record.data["params"], "epochs": record.data["epochs_run"],
           "best epoch": record.data.get("best_epoch"), "stopped by": record.data.get("stopped_because"),
           "gap to the best (95% CI)": "best", "measurable": ""}
    if record.key != best_cnn.key:
        effect = compare_runs(best_cnn, record)
        row["gap to the best (95% CI)"] = (f"{effect['difference']:.3f} ({effect['interval'][0]:+.3f} .. "
                                          f"{effect['interval'][1]:+.3f})")
        row["measurable"] = "yes" if effect["measurable"] else "no"
    rows.append(row)
print(f"best CNN: {best_cnn.model} ({best_cnn.description}), non-black val mAP "
      f"{best_cnn.metrics['val']['non_black']['map']:.3f}, hold-out {best_cnn.metrics['holdout']['non_black']['map']:.3f}")
if best_cnn.oracle:
    print(f"oracle on the same images: {best_cnn.oracle['val']['non_black']['map']:.3f}")
pd.DataFrame(rows).set_index("network").sort_values("val mAP", ascending=False).round(3)

# %%
# Loss and PR-AUC per epoch: where each network stopped, and whether it overfitted.
cnn_figures = study.comparison_figures(cnn_runs, prefix="02_cnn")
cnn_figures["learning_curves"]

# %% [markdown]
# A gap whose interval contains zero is within the noise of this validation
# set, no evidence that one architecture is better; where it excludes zero the
# ranking is real for this data. Where the oracle is known, the gap to it is
# what any architecture could still gain. The "best epoch" is the one whose
# weights early stopping kept. A score also depends on the seed (initial
# weights, batch order, dropout): the best CNN trained with two more seeds
# gives the run-to-run noise (the **noise floor**) that the comparisons here and
# in `08_summary` are read against.

# %%
seed_runs = [best_cnn] + [
    study.train(builders[best_cnn.model], family="cnn_seed", seed=seed + k,
                description=f"{best_cnn.model} retrained with seed {seed + k} (noise floor)")
    for k in (1, 2)
]
seed_scores = pd.Series({f"seed {record.seed}": record.metrics["val"]["non_black"]["map"] for record in seed_runs})
print(f"{best_cnn.model}, non-black val mAP over 3 seeds: "
      + ", ".join(f"{name} {score:.3f}" for name, score in seed_scores.items())
      + f"; mean {seed_scores.mean():.3f}, range {seed_scores.max() - seed_scores.min():.3f}")

# %% [markdown] tags=["appendix"]
# ### Every metric of the five CNNs
#
# Validation AP per label, hold-out mAP, F1 (macro, threshold tuned on
# validation), binary accuracy at 0.5 and training time; all images.

# %% tags=["appendix"]
details = [column for column in cnn_table.columns if column.startswith("val AP ")]
details += ["holdout mAP", "val F1 macro (tuned)", "holdout F1 macro (tuned)", "val accuracy", "wall time (s)"]
cnn_table.set_index("run")[details].round(3)

# %% [markdown] tags=["appendix"]
# ### Per-label AP and precision-recall curves of the five CNNs
#
# Validation AP per label, one bar group per network; then the precision-recall
# curves per label on the non-black validation images.

# %% tags=["appendix"]
cnn_figures["per_class_ap"]

# %% tags=["appendix"]
cnn_figures["precision_recall"]

# %% [markdown] tags=["appendix"]
# ### What the best CNN gets right and wrong
#
# Validation images with the predicted probability of each label, blue when the
# decision at the threshold tuned on validation is right and red when it is
# wrong; then one confusion matrix per label on the hold-out split.

# %% tags=["appendix"]
best_cnn_figures = study.best_run_figures(best_cnn, prefix="02_cnn_best")
best_cnn_figures["prediction_grid"]

# %% tags=["appendix"]
best_cnn_figures["confusion_matrices"]

# %% [markdown]
# ## Does data augmentation help?
#
# Augmentation shows the network transformed copies of its training images
# under the same labels, so it is sound only for transformations that keep
# every label true, and that depends on the data: a flip keeps a ring a ring,
# but turns a handwritten 2 into no digit at all. So each candidate is
# checked on this folder before it is used. The best CNN, which never saw a
# transformed image, scores the non-black validation images transformed as
# training would transform them (each candidate alone). If the labels survive
# a transformation and the network learnt what they describe, its mAP barely
# moves; a measurable drop (paired bootstrap, as above) means the labels, or
# the cues the network relies on, do not survive it. The check cannot tell
# those two apart, so a candidate is left out when its drop is measurable and
# larger than one mAP point: on a nearly perfect score the bootstrap finds
# even a drop of a thousandth measurable, and the study resolves no model
# difference that small.

# %%
largest_tolerated_drop = 0.01
candidates = {
    "horizontal flip": layers.RandomFlip("horizontal", seed=seed),
    "vertical flip": layers.RandomFlip("vertical", seed=seed),
    "rotation up to 11 degrees": layers.RandomRotation(0.03, fill_mode="constant", seed=seed),
    "zoom up to 10 %": layers.RandomZoom(0.1, fill_mode="constant", seed=seed),
    "shift up to 10 %": layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
    "contrast up to 20 %": layers.RandomContrast(0.2, value_range=(0.0, 1.0), seed=seed),
}

# %%
# The plain best CNN with its best weights, on the non-black validation images as they are and transformed.
plain_network = model_from_record(best_cnn, weights=True)
non_black = ~black_mask(study.data.val.images)
val_images, val_labels = study.data.val.images[non_black], study.data.val.labels[non_black]
as_they_are = plain_network.predict(val_images, verbose=0)
label_checks = []
for name, transformation in candidates.items():
    transformed = keras.ops.convert_to_numpy(transformation(val_images, training=True))
    effect = compare(plain_network.predict(transformed, verbose=0), as_they_are, val_labels)
    label_checks.append({"transformation": name, "mAP transformed": effect["map_a"],
                         "change": effect["difference"], "95% CI": "{:+.3f} .. {:+.3f}".format(*effect["interval"]),
                         "kept": not (effect["measurable"] and effect["difference"] < -largest_tolerated_drop)})
label_checks = pd.DataFrame(label_checks).set_index("transformation")
print(f"mAP on the images as they are: {mean_average_precision(val_labels, as_they_are):.3f}")
label_checks.round(3)

# %%
# The augmentation is the kept candidates, in front of the best CNN, active in fit only.
kept = [name for name in candidates if label_checks.loc[name, "kept"]]
print("kept: " + (", ".join(kept) or "none") + "; left out: "
      + (", ".join(name for name in candidates if name not in kept) or "none"))
augmentation = keras.Sequential([candidates[name] for name in kept], name="augmentation") if kept else None


def build_augmented(input_shape, n_labels):
    inputs = keras.Input(shape=input_shape, name="image")
    network = builders[best_cnn.model](input_shape, n_labels)
    return keras.Model(inputs, network(augmentation(inputs)), name=f"{best_cnn.model}_augmented")


if augmentation is None:
    print("no candidate keeps the labels here: no augmented run")
else:
    augmented = study.train(build_augmented, family="cnn_experiment",
                            description=f"{best_cnn.model} behind the augmentation layers: {', '.join(kept)}")
    effect = compare_runs(augmented, best_cnn)
    print(f"non-black val mAP: augmented {augmented.metrics['val']['non_black']['map']:.3f}, "
          f"plain {best_cnn.metrics['val']['non_black']['map']:.3f}; difference {effect['difference']:+.3f} "
          f"(95% CI {effect['interval'][0]:+.3f} .. {effect['interval'][1]:+.3f}); "
          f"epochs {augmented.data['epochs_run']} vs {best_cnn.data['epochs_run']}")
    if not effect['measurable']:
        print("verdict: no measurable difference")
    else:
        print("verdict: augmentation " + ("helped" if effect['difference'] > 0 else "hurt"))

# %% [markdown]
# How to read the verdict: with no measurable difference the cheaper plain
# network is kept; if augmentation helped, the network was overfitting and the
# transformed copies acted as extra data; if it hurt although every kept
# transformation passed the check, the harder inputs need more epochs (printed
# above) or blur details the labels depend on. The rest of the study compares
# networks without augmentation.

# %% [markdown]
# ## One channel or three?
#
# Three equal channels add no information (`01_data_analysis`), only weights of
# the first convolution; the cheapest CNN (1.a) checks it.

# %%
if study.data.channels == 1:
    three_channels = study.train(build_cnn_1a, family="cnn_experiment", input_channels=3,
                                 description="cnn_1a fed the grayscale image replicated to 3 channels")
    effect = compare_runs(three_channels, cnn_runs["cnn_1a"])
    print(f"3 channels vs 1: {effect['difference']:+.3f} non-black val mAP (95% CI {effect['interval'][0]:+.3f} .. {effect['interval'][1]:+.3f}), "
          f"{three_channels.data['params']} vs {cnn_runs['cnn_1a'].data['params']} weights -> "
          + ("measurable" if effect['measurable'] else "no measurable difference"))
else:
    print("the images of this folder were loaded with 3 channels (keep_channels): every network already sees 3")

# %% [markdown]
# Training can only learn the sum of the three copies of a first-layer weight:
# a measurable difference would come from the optimisation path, not from
# information. The study keeps one channel.

# %% [markdown]
# ## The black-image experiment
#
# The best CNN is trained with all black images kept and with all of them
# removed but one. Both answer black validation images alike (`01_data_analysis`):
# the question is whether black training images change what is learnt from the
# others.

# %%
black_table, black_runs = study.black_image_experiment(builders[best_cnn.model], family="cnn_experiment",
                                                       description=f"{best_cnn.model}, black images kept or removed")
effect = compare_runs(black_runs["kept"], black_runs["removed"])
print(f"keeping the black images: {effect['difference']:+.3f} non-black val mAP (95% CI {effect['interval'][0]:+.3f} .. "
      f"{effect['interval'][1]:+.3f}) -> " + ("measurable" if effect['measurable'] else "no measurable difference")
      + f"; {black_runs['kept'].data['epochs_run']} vs {black_runs['removed'].data['epochs_run']} epochs")

# %% [markdown] tags=["appendix"]
# ### The black-image experiment, per label
#
# The best CNN trained with all black images removed but one, and with all
# kept: mAP and non-black AP per label.

# %% tags=["appendix"]
black_table.round(3)

# %% [markdown]
# A black image is pure label noise, pulling every output towards the base
# rates; kept, the black images also lengthen an epoch, so more weight updates.
# With no measurable difference, removing them costs nothing and saves training
# time; if keeping them hurt, the noise outweighed the extra updates; if it
# helped, the cause cannot be told apart from the longer training without a run
# at equal step counts.

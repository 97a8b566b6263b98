# %% [markdown]
# # 04 — Fully connected networks and classical references
#
# How far do models get that see the pixels without any notion of
# neighbourhood? A fully connected network gives every pixel its own weight
# into every hidden unit: it can learn what appears at a given place, but a
# pattern that moves is a new input. Two architectures are compared:
#
# - **3.a** the baseline of the source study: four hidden ReLU layers
#   (512-256-128-64);
# - **3.b** a wider, regularised network: 1024-512-256 units with L2 weight
#   decay, batch normalisation and dropout.
#
# Two classical references from scikit-learn put the networks in context:
# **k-nearest neighbours**, swept over k and the distance as in the source's
# k-NN study, and **logistic regression**, one per label, on the pixels.

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
from contest_study.study import open_study

study = open_study(profile=profile, data_dir=data_dir, workdir=workdir, seed=seed)
input_shape, n_labels = study.input_shape, len(study.label_names)
print(f"profile {study.context.profile.name}: {len(study.data.train)} training images of shape {input_shape}")

# %% [markdown]
# ## The two networks
#
# ### 3.a — four hidden layers

# %%
def build_fc_3a(input_shape, n_labels):
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Flatten()(inputs)
    for units in (512, 256, 128, 64):
        x = layers.Dense(units, activation="relu")(x)
    outputs = layers.Dense(n_labels, activation="sigmoid", name="labels")(x)
    return keras.Model(inputs, outputs, name="fc_3a")


build_fc_3a(input_shape, n_labels).summary()

# %% [markdown]
# ### 3.b — wider and regularised
#
# The first layer alone holds millions of weights for a few thousand training
# images: L2 decay and dropout keep it from memorising them, batch
# normalisation keeps the three layers training at the same pace.

# %%
def build_fc_3b(input_shape, n_labels):
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Flatten()(inputs)
    for units in (1024, 512, 256):
        # No bias: the batch normalisation that follows has its own shift.
        x = layers.Dense(units, use_bias=False, kernel_regularizer=keras.regularizers.L2(1e-4))(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
        x = layers.Dropout(0.4)(x)
    outputs = layers.Dense(n_labels, activation="sigmoid", name="labels")(x)
    return keras.Model(inputs, outputs, name="fc_3b")


build_fc_3b(input_shape, n_labels).summary()

# %% [markdown]
# ## Training 3.a in plain view
#
# The study's recipe (see `02_cnn`): Adam at 10⁻³, binary cross-entropy,
# accuracy and PR-AUC per epoch, early stopping with patience 5 and the best
# weights restored, ReduceLROnPlateau and a checkpoint of the best weights.

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
fc_3a = study.train(build_fc_3a, family="fully_connected", description="4 hidden dense layers 512-256-128-64",
                    fit=compile_and_fit)
print(f"fc_3a: {fc_3a.data['epochs_run']} epochs ({fc_3a.data.get('stopped_because')}), "
      f"val mAP {fc_3a.metrics['val']['all']['map']:.3f}")

# %%
# 3.b through the engine, with the same settings.
dense_runs = {
    "fc_3a": fc_3a,
    "fc_3b": study.train(build_fc_3b, family="fully_connected",
                         description="dense 1024-512-256 with L2, batch norm, dropout"),
}

# %% [markdown]
# ## k-nearest neighbours, swept
#
# k-NN labels an image by the labels of its nearest training images. Over
# 4,096 raw pixels, distances are dominated by noise and slow to compute, so
# the pixels are first projected on their 50 principal components (PCA). The
# source's sweep: k ∈ {3, 5, 7, 9, 11} and the Euclidean or Manhattan
# distance, each fitted on the training images and chosen by its validation
# mAP (the hold-out stays out of the choice).

# %%
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.multioutput import MultiOutputClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

knn_runs = {}
for metric in ("euclidean", "manhattan"):
    for k in (3, 5, 7, 9, 11):
        knn = make_pipeline(PCA(n_components=50, random_state=study.context.seed),
                            KNeighborsClassifier(n_neighbors=k, metric=metric, weights="distance"))
        knn_runs[f"knn_k{k}_{metric}"] = study.fit_classical(
            knn, name=f"knn_k{k}_{metric}", description=f"k-NN, k={k}, {metric} distance, on 50 PCA components")
knn_sweep = pd.DataFrame(
    {name: {"k": int(name.split("_")[1][1:]), "distance": name.split("_")[2],
            "val mAP (non-black)": record.metrics["val"]["non_black"]["map"]} for name, record in knn_runs.items()}
).T
knn_sweep.pivot(index="k", columns="distance", values="val mAP (non-black)").astype(float).round(3)

# %%
# The chosen k-NN: the best validation mAP of the sweep.
best_knn = study.best(knn_runs.values())
print(f"chosen: {best_knn.model} ({best_knn.description}), non-black val mAP {best_knn.metrics['val']['non_black']['map']:.3f}")

# %% [markdown]
# A larger k averages more neighbours: smoother probabilities, but
# neighbours further away. The Manhattan distance weighs many small pixel
# differences more than a few large ones. The table shows which way each
# setting moved the score on this data; a spread of a few thousandths is
# within the noise of the validation set (see the interval of the chosen run
# in the results table).

# %% [markdown]
# ## Logistic regression
#
# One linear model per label on the standardised pixels: the most a
# weighted sum of the pixel values can say about each label.

# %%
logistic = make_pipeline(StandardScaler(), MultiOutputClassifier(LogisticRegression(C=0.01, max_iter=300)))
logistic_regression = study.fit_classical(logistic, name="logistic_regression",
                                          description="logistic regression per label on the standardised pixels, C=0.01")

# %% [markdown]
# ## Results

# %%
models_04 = {**dense_runs, best_knn.model: best_knn, "logistic_regression": logistic_regression}
dense_table = study.table(models_04.values())
dense_table.drop(columns=["description", "key"]).round(3)

# %%
dense_figures = study.comparison_figures(models_04, prefix="04_fully_connected")
dense_figures["per_class_ap"]

# %%
# Loss and PR-AUC per epoch of the two networks.
dense_figures["learning_curves"]

# %%
dense_figures["precision_recall"]

# %%
# Where each model sits above chance (the labels' base rates), on the non-black validation images.
non_black_val = ~black_mask(study.data.val.images)
chance = float(study.data.val.labels[non_black_val].mean(axis=0).mean())
print(f"chance (mean positive rate of the non-black validation images): {chance:.3f}")
pd.DataFrame({name: {"val mAP (non-black)": record.metrics["val"]["non_black"]["map"],
                     "above chance": record.metrics["val"]["non_black"]["map"] - chance}
              for name, record in models_04.items()}).T.round(3)

# %% [markdown]
# How far above chance models without a notion of neighbourhood get says how
# much of the labels can be read from fixed pixel positions and overall
# intensity; how far they stay below the CNNs (`08_summary` compares the
# families once every chapter has run) says how much depends on recognising a
# pattern wherever it is. The regularised network
# (3.b) only beats 3.a measurably if 3.a overfits: compare their learning
# curves, where a validation loss rising while the training loss falls is
# overfitting. k-NN and logistic regression need no epochs at all and give the
# floor every network must clear to justify its cost.

# %%
# The best fully connected network by validation mAP (the hold-out never chooses).
best_dense = study.best(dense_runs.values())

# %% [markdown]
# ## The noise floor: the same network, two more seeds
#
# A bootstrap interval says how much a score depends on which validation
# images were scored. A network also depends on its seed: the initial
# weights, the order of the batches, dropout. The best fully connected network is trained
# twice more with two other seeds, by the engine with the same settings; the
# range of the three scores is the run-to-run noise that the comparisons of
# this chapter, and of `08_summary`, are read against.

# %%
dense_builders = {"fc_3a": build_fc_3a, "fc_3b": build_fc_3b}
seed_runs = [best_dense] + [
    study.train(dense_builders[best_dense.model], family="fully_connected_seed", seed=seed + k,
                description=f"{best_dense.model} retrained with seed {seed + k} (noise floor)")
    for k in (1, 2)
]
seed_scores = pd.Series({f"seed {record.seed}": record.metrics["val"]["non_black"]["map"] for record in seed_runs})
print(f"{best_dense.model}, non-black val mAP over 3 seeds: mean {seed_scores.mean():.3f}, "
      f"range {seed_scores.max() - seed_scores.min():.3f}")
seed_scores.round(3)

# %% [markdown]
# ## What the best fully connected network gets right and wrong

# %%
best_dense_figures = study.best_run_figures(best_dense, prefix="04_fully_connected_best")
best_dense_figures["prediction_grid"]

# %%
best_dense_figures["confusion_matrices"]

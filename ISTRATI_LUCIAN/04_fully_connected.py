# %% [markdown]
# # 04 — Fully connected networks and classical references
#
# How far do models get that see the pixels without any notion of
# neighbourhood? A fully connected network gives every pixel its own weight
# into every hidden unit: it can learn what appears at a given place, but a
# pattern that moves is a new input. Two such networks (3.a, 3.b) are compared
# with two classical references from scikit-learn, **k-nearest neighbours**
# and **logistic regression**. Layer tables, the k-NN sweep, the full results
# table and the secondary figures are in the report's appendix.

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
# **3.a**, the baseline of the source study: the image flattened, four hidden
# ReLU layers of 512, 256, 128 and 64 units.

# %% [markdown] tags=["appendix"]
# ### Layer table of 3.a

# %% tags=["appendix"]
def build_fc_3a(input_shape, n_labels):
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Flatten()(inputs)
    for units in (512, 256, 128, 64):
        x = layers.Dense(units, activation="relu")(x)
    outputs = layers.Dense(n_labels, activation="sigmoid", name="labels")(x)
    return keras.Model(inputs, outputs, name="fc_3a")


build_fc_3a(input_shape, n_labels).summary()

# %% [markdown]
# **3.b**, wider and regularised: 1024-512-256 units. The first layer alone
# holds millions of weights for a few thousand training images: L2 weight
# decay and dropout (0.4) keep it from memorising them, batch normalisation
# keeps the three layers training at the same pace.

# %% [markdown] tags=["appendix"]
# ### Layer table of 3.b

# %% tags=["appendix"]
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
# 3.a is compiled and fitted in plain view with the recipe of `02_cnn`; 3.b
# goes through the engine with the same settings.

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
# ## Classical references
#
# **k-NN** labels an image by the labels of its nearest training images, on
# the pixels' 50 principal components (over 4,096 raw pixels distances are
# dominated by noise). As in the source's k-NN study, k ∈ {3, 5, 7, 9, 11}
# and the Euclidean or Manhattan distance are swept, and the best validation
# mAP over all images is kept (the hold-out chooses nothing). **Logistic regression** fits
# one linear model per label on the standardised pixels: the most a weighted
# sum of the pixel values can say about each label.

# %% [markdown] tags=["appendix"]
# ### k-NN sweep: non-black validation mAP per k and distance

# %% tags=["appendix"]
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

# %% [markdown] tags=["appendix"]
# A larger k averages more neighbours: smoother probabilities, but
# neighbours further away. The Manhattan distance weighs many small pixel
# differences more than a few large ones. A spread of a few thousandths is
# within the noise of the validation set. The choice reads the validation mAP
# over all images, so it can differ from the best cell of this non-black
# table.

# %%
logistic = make_pipeline(StandardScaler(), MultiOutputClassifier(LogisticRegression(C=0.01, max_iter=300)))
logistic_regression = study.fit_classical(logistic, name="logistic_regression",
                                          description="logistic regression per label on the standardised pixels, C=0.01")

# %% [markdown]
# ## Results

# %% [markdown] tags=["appendix"]
# ### Results table of the chapter's models

# %% tags=["appendix"]
models_04 = {**dense_runs, best_knn.model: best_knn, "logistic_regression": logistic_regression}
dense_table = study.table(models_04.values())
dense_table.drop(columns=["description", "key"]).round(3)

# %% [markdown] tags=["appendix"]
# ### Validation AP per label and model

# %% tags=["appendix"]
dense_figures = study.comparison_figures(models_04, prefix="04_fully_connected")
dense_figures["per_class_ap"]

# %% [markdown] tags=["appendix"]
# ### Precision-recall curves

# %% tags=["appendix"]
dense_figures["precision_recall"]

# %% [markdown]
# Validation mAP on the non-black images and its distance above chance (as
# in `01_data_analysis`):

# %%
# Where each model sits above chance (the labels' base rates), on the non-black validation images.
non_black_val = ~black_mask(study.data.val.images)
chance = float(study.data.val.labels[non_black_val].mean(axis=0).mean())
print(f"chance (mean positive rate of the non-black validation images): {chance:.3f}")
pd.DataFrame({name: {"val mAP (non-black)": record.metrics["val"]["non_black"]["map"],
                     "above chance": record.metrics["val"]["non_black"]["map"] - chance}
              for name, record in models_04.items()}).T.round(3)

# %%
# Loss and PR-AUC per epoch of the two networks.
dense_figures["learning_curves"]

# %% [markdown]
# How far above chance these models get says how much of the labels can be
# read from fixed pixel positions and overall intensity; how far they stay
# below the CNNs (`08_summary`) says how much depends on recognising a
# pattern wherever it is. Regularisation (3.b) can only pay where 3.a
# overfits: a validation loss rising while the training loss falls. k-NN and
# logistic regression set the floor a network must clear to justify its cost.

# %%
# The best fully connected network by validation mAP (the hold-out never chooses).
best_dense = study.best(dense_runs.values())

# %% [markdown] tags=["appendix"]
# ### Noise floor: the best network with two more seeds
#
# The best fully connected network trained twice more, with two other seeds
# and the same settings; `08_summary` reads the comparisons against the range
# of the three scores.

# %% tags=["appendix"]
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

# %% [markdown] tags=["appendix"]
# ### What the best fully connected network gets right and wrong

# %% tags=["appendix"]
best_dense_figures = study.best_run_figures(best_dense, prefix="04_fully_connected_best")
best_dense_figures["prediction_grid"]

# %% tags=["appendix"]
best_dense_figures["confusion_matrices"]

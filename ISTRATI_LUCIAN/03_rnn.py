# %% [markdown]
# # 03 — Recurrent neural networks
#
# Can a network that reads the image as a sequence do as well as a
# convolutional one? Read row by row, an image is 64 steps of one row of pixels
# each; a recurrent network carries a memory from step to step and must
# assemble a pattern from the rows it has seen. Nothing tells it that a pattern
# one column to the right is the same pattern, but its memory spans the whole
# image. Both networks below end in the same sigmoid outputs and are trained
# like the CNNs of `02_cnn`, on the same images; their layer tables are in the
# appendix.

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

from contest_study.evaluation import compare_runs
from contest_study.study import open_study

study = open_study(profile=profile, data_dir=data_dir, workdir=workdir, seed=seed)
input_shape, n_labels = study.input_shape, len(study.label_names)
print(f"profile {study.context.profile.name}: {len(study.data.train)} training images of shape {input_shape}")

# %% [markdown]
# ## The two architectures
#
# **2.a — LSTM over the rows.** The image (64 × 64 × channels) is reshaped to
# 64 steps of 64 × channels values; an LSTM of 64 units decides at every row
# what to keep in memory, and its last state, after dropout 0.2, feeds the
# outputs.

# %% [markdown] tags=["appendix"]
# ### Layer table of 2.a (LSTM)

# %% tags=["appendix"]
def build_rnn_lstm(input_shape, n_labels):
    height, width, channels = input_shape
    inputs = keras.Input(shape=input_shape, name="image")
    rows = layers.Reshape((height, width * channels), name="rows")(inputs)
    x = layers.LSTM(64)(rows)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(n_labels, activation="sigmoid", name="labels")(x)
    return keras.Model(inputs, outputs, name="rnn_lstm")


build_rnn_lstm(input_shape, n_labels).summary()

# %% [markdown]
# **2.b — bidirectional GRU.** A GRU is a lighter gated cell (two gates
# instead of three). Two GRUs of 48 units read the rows top-down and
# bottom-up, so what the first rows hold need not be carried through the whole
# image: one direction sees it last.

# %% [markdown] tags=["appendix"]
# ### Layer table of 2.b (bidirectional GRU)

# %% tags=["appendix"]
def build_rnn_bigru(input_shape, n_labels):
    height, width, channels = input_shape
    inputs = keras.Input(shape=input_shape, name="image")
    rows = layers.Reshape((height, width * channels), name="rows")(inputs)
    x = layers.Bidirectional(layers.GRU(48))(rows)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(n_labels, activation="sigmoid", name="labels")(x)
    return keras.Model(inputs, outputs, name="rnn_bigru")


build_rnn_bigru(input_shape, n_labels).summary()

# %% [markdown]
# ## Training the LSTM in plain view
#
# The recipe of `02_cnn`, written out again in the cell below: Adam at 10⁻³,
# binary cross-entropy, accuracy and PR-AUC per epoch, EarlyStopping on the
# validation loss (best weights restored), ReduceLROnPlateau and a
# checkpoint; the GRU goes through the engine with the same settings.

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
rnn_lstm = study.train(build_rnn_lstm, family="rnn", description="LSTM(64) reading the image row by row",
                       fit=compile_and_fit)
print(f"rnn_lstm: {rnn_lstm.data['epochs_run']} epochs ({rnn_lstm.data.get('stopped_because')}), "
      f"val mAP {rnn_lstm.metrics['val']['all']['map']:.3f}")

# %%
# The bidirectional GRU through the engine, with the same settings.
rnn_runs = {
    "rnn_lstm": rnn_lstm,
    "rnn_bigru": study.train(build_rnn_bigru, family="rnn", description="bidirectional GRU(48) over the rows"),
}

# %% [markdown]
# ## Results
#
# The columns are those of `02_cnn`: mAP on all and on the non-black
# validation images, the hold-out, training length, and the other network's
# gap to the best (non-black, paired bootstrap, 95 % interval).

# %%
rnn_table = study.table(rnn_runs.values())
# The two recurrent networks against each other (08_summary puts the families side by side).
best_rnn = study.best(rnn_runs.values())
other_rnn = next(record for record in rnn_runs.values() if record.key != best_rnn.key)
between = compare_runs(best_rnn, other_rnn)
rows = []
for record in (best_rnn, other_rnn):
    rows.append({"network": record.model, "val mAP": record.metrics["val"]["all"]["map"],
                 "val mAP (non-black)": record.metrics["val"]["non_black"]["map"],
                 "hold-out mAP (non-black)": record.metrics["holdout"]["non_black"]["map"],
                 "weights": record.data["params"], "epochs": record.data["epochs_run"],
                 "best epoch": record.data.get("best_epoch"), "stopped by": record.data.get("stopped_because")})
rows[0].update({"gap to the best (95% CI)": "best", "measurable": ""})
rows[1].update({"gap to the best (95% CI)": f"{between['difference']:.3f} ({between['interval'][0]:+.3f} .. {between['interval'][1]:+.3f})",
                "measurable": "yes" if between["measurable"] else "no"})
print(f"best RNN: {best_rnn.model}, non-black val mAP {best_rnn.metrics['val']['non_black']['map']:.3f}; {other_rnn.model} "
      + ("measurably below it" if between["measurable"] else "not measurably below it"))
pd.DataFrame(rows).set_index("network").round(3)

# %%
# Loss and PR-AUC per epoch.
rnn_figures = study.comparison_figures(rnn_runs, prefix="03_rnn")
rnn_figures["learning_curves"]

# %% [markdown]
# The printed verdict says whether reading in both directions made a
# measurable difference. Against the CNNs (compared in `08_summary`), a
# recurrent network that reaches them shows that the patterns can be assembled
# row by row; a gap is the price of having no notion of translation: a pattern
# shifted sideways arrives as a different row vector and must be learnt again.
# The learning curves show how many epochs each needed before early stopping.
# As in `02_cnn`, the best recurrent network is trained with two more seeds
# for the noise floor.

# %%
rnn_builders = {"rnn_lstm": build_rnn_lstm, "rnn_bigru": build_rnn_bigru}
seed_runs = [best_rnn] + [
    study.train(rnn_builders[best_rnn.model], family="rnn_seed", seed=seed + k,
                description=f"{best_rnn.model} retrained with seed {seed + k} (noise floor)")
    for k in (1, 2)
]
seed_scores = pd.Series({f"seed {record.seed}": record.metrics["val"]["non_black"]["map"] for record in seed_runs})
print(f"{best_rnn.model}, non-black val mAP over 3 seeds: "
      + ", ".join(f"{name} {score:.3f}" for name, score in seed_scores.items())
      + f"; mean {seed_scores.mean():.3f}, range {seed_scores.max() - seed_scores.min():.3f}")

# %% [markdown] tags=["appendix"]
# ### Every metric of the two recurrent networks
#
# Validation AP per label, hold-out mAP, F1 (macro, threshold tuned on
# validation), binary accuracy at 0.5 and training time; all images.

# %% tags=["appendix"]
details = [column for column in rnn_table.columns if column.startswith("val AP ")]
details += ["holdout mAP", "val F1 macro (tuned)", "holdout F1 macro (tuned)", "val accuracy", "wall time (s)"]
rnn_table.set_index("run")[details].round(3)

# %% [markdown] tags=["appendix"]
# ### Per-label AP and precision-recall curves of the two recurrent networks
#
# Validation AP per label; then the precision-recall curves per label on the
# non-black validation images.

# %% tags=["appendix"]
rnn_figures["per_class_ap"]

# %% tags=["appendix"]
rnn_figures["precision_recall"]

# %% [markdown] tags=["appendix"]
# ### What the best recurrent network gets right and wrong
#
# Validation images with the predicted probability of each label, blue when the
# decision at the threshold tuned on validation is right and red when it is
# wrong; then one confusion matrix per label on the hold-out split.

# %% tags=["appendix"]
best_rnn_figures = study.best_run_figures(best_rnn, prefix="03_rnn_best")
best_rnn_figures["prediction_grid"]

# %% tags=["appendix"]
best_rnn_figures["confusion_matrices"]

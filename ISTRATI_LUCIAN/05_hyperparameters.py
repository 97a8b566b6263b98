# %% [markdown]
# # 05 — Hyperparameters
#
# How much do the training choices matter once the architecture is fixed? The
# source study's grid crosses **epochs** (5, 10), **learning rate** (1e-3,
# 1e-2, 1e-1), **optimizer** (Adam, SGD), **loss** (binary or categorical
# cross-entropy), **training metric** (F1, accuracy) and **batch size** (32,
# 64, 128): 144 cells, the failed ones documented too. It also tuned a dense
# network's **dropout and kernel initializer** with `GridSearchCV`; we add
# **learning-rate schedules**. The networks tuned are the best of 02-04,
# rebuilt from the registry, where every trial is stored too (nothing trains
# twice). Verdicts are paired bootstraps (`01_data_analysis`). The chosen
# configuration trains the **final model**, whose test-set predictions are
# the submission. The grid tables are in the report's appendix.

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
# The study's plumbing: data, registry and profile; grid, search and GridSearchCV from the package.
import keras
import numpy as np
import pandas as pd
from IPython.display import display
from keras import layers

from contest_study import grid, plots
from contest_study.data import black_mask
from contest_study.evaluation import compare_runs
from contest_study.search import TrialRunner, best_row, chance_map, run_search, save_table, spread_table, trials_table
from contest_study.sklearn_search import cv_results_table, sklearn_search
from contest_study.study import open_study

study = open_study(profile=profile, data_dir=data_dir, workdir=workdir, seed=seed)
settings = study.context.profile
figures_dir = study.context.figures_dir
search_dir = study.context.cache_dir / "keras_tuner"  # keras-tuner's bookkeeping; the registry remembers the trials
runner = TrialRunner(study)  # prints one line per trial it trains
written = []  # the tables this notebook saves, listed at the end

# %% [markdown] tags=["appendix"]
# ### The networks tuned
#
# The best network of each family in notebooks 02-04, by validation mAP (the
# hold-out never chooses). Their architectures come back from the registry.

# %% tags=["appendix"]
tuned = {}
for family, notebook in (("cnn", "02_cnn"), ("rnn", "03_rnn"), ("fully_connected", "04_fully_connected")):
    runs = study.records(family=family)
    if not runs:
        raise RuntimeError(f"no {family} run of this study in the registry {study.registry.root}: run {notebook} first")
    tuned[family] = study.best(runs)
pd.DataFrame([{"family": family, "network": record.model, "description": record.description, "key": record.key,
               "val mAP (non-black)": record.metrics["val"]["non_black"]["map"]}
              for family, record in tuned.items()]).round(3)

# %% [markdown]
# ## The grid on the best CNN
#
# All 144 cells on a GPU (`full`); on a 2-core CPU (`default`) learning rate ×
# optimizer × loss on a seeded share of the images, the other settings then
# changed one at a time around the best cell. Trials use a constant learning
# rate and early stopping; chance as in `01_data_analysis`.

# %%
cnn = tuned["cnn"]
cells = grid.grid_cells(settings)
cnn_trials = grid.make_trials(cnn.key, cells, settings)
print(f"profile {settings.name}: {len(cnn_trials)} grid cells on {cnn.model}, each on "
      f"{settings.tuning_train_fraction:.0%} of the training images without the black ones; "
      f"epochs {settings.tuning_epochs}, learning rates {settings.tuning_learning_rates}, "
      f"all 144 cells: {settings.tuning_full_grid}")

# %% [markdown] tags=["appendix"]
# ### The CNN grid: trials trained and the spread of their scores
#
# One line per trial this execution trained (none when the registry already
# held them), then the quantiles of the trials' non-black validation mAP and
# how many lie above chance.

# %% tags=["appendix"]
cnn_outcome = run_search(runner, cnn_trials, directory=search_dir, name="cnn_grid")
cnn_table = trials_table(cnn_outcome)
written.append(save_table(cnn_table, "05_cnn_grid", figures_dir))
chance = chance_map(study.data.val)
spread = spread_table(cnn_table, chance)
print(f"{len(cnn_outcome.failures)} trial(s) raised an error" + "".join(f"\n  {e}" for e in cnn_outcome.failures.values()))
spread.round(3)

# %% [markdown] tags=["appendix"]
# ### The CNN grid: every trial, best non-black validation mAP first

# %% tags=["appendix"]
# Every trial, best non-black validation mAP first.
cnn_table.drop(columns=["key", "error"], errors="ignore").round(3)

# %%
# Is the grid informative? A grid whose trials all sit at chance cannot rank the settings.
above = int(spread.loc[0, "above chance"])
if spread.loc[0, "finished"]:
    best_trial = best_row(cnn_table)
    varied = [name for name in grid.CONFIG_COLUMNS if cnn_table[name].nunique() > 1]
    print(f"{len(cnn_table)} cells, {int(spread.loc[0, 'finished'])} finished; non-black val mAP from "
          f"{spread.loc[0, 'min']:.3f} to {spread.loc[0, 'max']:.3f}, median {spread.loc[0, 'q50']:.3f}, "
          f"chance {chance:.3f}; best cell: " + ", ".join(f"{name} {best_trial[name]}" for name in varied))
if above > len(cnn_table) / 2:
    print(f"{above} of {len(cnn_table)} trials score above chance: the grid ranks settings that all learn something.")
else:
    print(f"only {above} of {len(cnn_table)} trials score above chance: on this data and budget at least half the "
          "settings do not learn, and the ranking among those is noise.")

# %% [markdown]
# The heatmap shows learning rate × optimizer with the sigmoid head and binary
# cross-entropy (the softmax head's is in the appendix); the settings left at
# chance are the ones that break training, as the sections below explain.

# %%
# Learning rate x optimizer, one heatmap per loss, on the cells at the grid's usual epochs, batch and metric:
# binary cross-entropy here, the other losses in the next cell.
usual = cnn_table[(cnn_table["epochs"] == min(settings.tuning_epochs)) & (cnn_table["batch_size"] == 64)
                  & (cnn_table["train_metric"] == "accuracy")]
heatmaps = {}
for loss, rows in usual.groupby("loss"):
    heatmaps[loss] = plots.heatmap(rows, "learning_rate", "optimizer", "val mAP (non-black)",
                                   title=f"{cnn.model}: non-black val mAP, {loss} ({grid.HEAD_FOR_LOSS[loss]} head)")
    written.append(figures_dir / f"05_cnn_heatmap_{loss}.png")
study.save_figures(heatmaps, prefix="05_cnn_heatmap")  # saved and closed: each is shown once, where displayed
heatmaps["binary_crossentropy"]

# %% [markdown] tags=["appendix"]
# ### The CNN grid: learning rate × optimizer with the other losses

# %% tags=["appendix"]
for loss, figure in heatmaps.items():
    if loss != "binary_crossentropy":
        display(figure)

# %% [markdown]
# ## Softmax with categorical cross-entropy: the documented failure
#
# A softmax makes an image's scores sum to 1 (no two confident labels at
# once), and categorical cross-entropy, −Σ y·log p, adds nothing for an image
# with no label: the softmax head should lose where labels co-occur or are
# absent. The cell counts those images and compares the best trials.

# %%
val_labels = study.data.val.labels[~black_mask(study.data.val.images)]
print(f"non-black validation images with two or more labels: {(val_labels.sum(axis=1) >= 2).mean():.0%}, "
      f"with none: {(val_labels.sum(axis=1) == 0).mean():.0%}")
by_head = {head: [r for s, r in cnn_outcome.pairs() if r is not None and s.config["output_activation"] == head]
           for head in ("sigmoid", "softmax")}
if by_head["sigmoid"] and by_head["softmax"]:
    best_sigmoid, best_softmax = study.best(by_head["sigmoid"]), study.best(by_head["softmax"])
    effect = compare_runs(best_sigmoid, best_softmax)
    low, high = effect["interval"]
    print(f"best sigmoid trial minus best softmax trial: {effect['difference']:+.3f} mAP (95% CI {low:+.3f} .. {high:+.3f})")
    if not effect["measurable"]:
        print("no measurable difference on these images")
    elif effect["difference"] > 0:
        print("the sigmoid head is measurably better")
    else:
        print("the softmax head is measurably better on these images")

# %% [markdown]
# ## One setting at a time around the best cell
#
# Each change of one setting of the best cell is measured against it (paired
# bootstrap): learning rate, optimizer and loss from the grid itself, epochs,
# batch size, training metric and schedule as extra trials.

# %% [markdown] tags=["appendix"]
# ### One setting at a time: trials trained and their effects
#
# One line per trial trained, the best cell, then every change with its
# difference from the best cell and the 95 % paired-bootstrap interval.

# %% tags=["appendix"]
best_cell = grid.cell_of(best_row(cnn_table))
variants = grid.one_setting_variants(best_cell, settings)
variant_trials = grid.make_trials(cnn.key, variants.values(), settings)
variant_outcome = run_search(runner, variant_trials, directory=search_dir, name="one_setting")
variant_table = trials_table(variant_outcome)
written.append(save_table(variant_table, "05_one_setting_trials", figures_dir))
records = {spec.to_json(): record for spec, record in (*cnn_outcome.pairs(), *variant_outcome.pairs())
           if record is not None}
best_record = records[grid.make_trials(cnn.key, [best_cell], settings)[0].to_json()]
changes = dict(zip(variants, variant_trials))
for setting in ("learning_rate", "optimizer", "loss"):  # neighbours of the best cell inside the grid
    for spec, record in cnn_outcome.pairs():
        others = [name for name in grid.CONFIG_COLUMNS if spec.config[name] != best_cell[name]]
        if record is not None and others in ([setting], [setting, "output_activation"]):
            changes[f"{setting} {spec.config[setting]}"] = spec
rows = []
for change, spec in changes.items():
    record = records.get(spec.to_json())
    if record is None:
        rows.append({"change": change, "val mAP (non-black)": np.nan, "difference": np.nan, "measurable": False})
        continue
    effect = compare_runs(record, best_record)
    rows.append({"change": change, "val mAP (non-black)": record.metrics["val"]["non_black"]["map"],
                 "difference": effect["difference"], "95% CI low": effect["interval"][0],
                 "95% CI high": effect["interval"][1], "measurable": effect["measurable"]})
effects = pd.DataFrame(rows)
written.append(save_table(effects, "05_one_setting_effects", figures_dir))
print(f"best cell: {best_cell}, non-black val mAP {best_record.metrics['val']['non_black']['map']:.3f}")
effects.round(3)

# %%
# The verdicts, from the intervals above.
for _, row in effects.iterrows():
    if not row["measurable"]:
        print(f"{row['change']}: no measurable difference")
    else:
        print(f"{row['change']}: {'better' if row['difference'] > 0 else 'worse'} by {abs(row['difference']):.3f}")

# %% [markdown]
# The training metric is only logged (gradients come from the loss), so
# `train_metric f1` should make no measurable difference. A learning rate too
# large for the optimizer (SGD's momentum 0.9 multiplies its step up to
# tenfold) makes training diverge or collapse to the base rates.

# %% [markdown]
# ## A smaller grid for the recurrent and the fully connected network
#
# Learning rate × optimizer with the CNN grid's other settings (sigmoid head),
# without its largest rate: the gap between the best and the worst setting
# says how much these choices matter for each family on this data.

# %% [markdown] tags=["appendix"]
# ### Recurrent and fully connected grids: every trial

# %% tags=["appendix"]
small_tables = {}
for family in ("rnn", "fully_connected"):
    small_cells = grid.expand_grid({"learning_rate": settings.tuning_learning_rates[:2], "optimizer": ("adam", "sgd")},
                                   {**grid.GRID_DEFAULTS, "epochs": min(settings.tuning_epochs)})
    outcome = run_search(runner, grid.make_trials(tuned[family].key, small_cells, settings), directory=search_dir,
                         name=f"{family}_grid")
    small_tables[family] = trials_table(outcome)
    written.append(save_table(small_tables[family], f"05_{family}_grid", figures_dir))
pd.concat({f"{family}: {tuned[family].model}": table[["learning_rate", "optimizer", "val mAP (non-black)",
                                                       "95% CI low", "epochs run"]]
           for family, table in small_tables.items()}).round(3)

# %%
for family, table in small_tables.items():
    learnt = int((table["95% CI low"] > chance).sum())
    print(f"{tuned[family].model}: {learnt} of {len(table)} settings above chance ({chance:.3f}); "
          f"best {table['val mAP (non-black)'].max():.3f}, worst {table['val mAP (non-black)'].min():.3f}")

# %% [markdown]
# ## Dropout and kernel initializer with scikit-learn
#
# A small dense network, written here (hidden layers of 128, 64 and 32 units,
# dropout after each), wrapped as a scikit-learn estimator: `GridSearchCV`
# cross-validates every pair of dropout rate and kernel initializer on the
# training images (mAP per fold) and refits the best pair.

# %% [markdown] tags=["appendix"]
# ### Layer table of the GridSearchCV network

# %% tags=["appendix"]
def build_dense(input_shape, n_labels, *, dropout, kernel_initializer):
    """Flatten, three ReLU layers (128, 64, 32) each followed by dropout, sigmoid outputs."""
    inputs = keras.Input(shape=input_shape)
    x = layers.Flatten()(inputs)
    for units in (128, 64, 32):
        x = layers.Dense(units, activation="relu", kernel_initializer=kernel_initializer)(x)
        x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(n_labels, activation="sigmoid", kernel_initializer=kernel_initializer, name="labels")(x)
    return keras.Model(inputs, outputs, name="dense_gridsearch")


build_dense(study.input_shape, len(study.label_names), dropout=0.5, kernel_initializer="he_normal").summary()

# %% [markdown] tags=["appendix"]
# ### GridSearchCV: the best pair, its refit, and the cross-validation results

# %% tags=["appendix"]
sklearn_record = sklearn_search(study, build_dense, dropouts=settings.sklearn_dropouts,
                                initializers=settings.sklearn_initializers, folds=settings.sklearn_folds,
                                epochs=settings.sklearn_epochs, train_fraction=settings.tuning_train_fraction)
cv_table = cv_results_table(sklearn_record)
written.append(save_table(cv_table, "05_sklearn_cv_results", figures_dir))
figure = plots.heatmap(cv_table, "dropout", "kernel_initializer", "mean CV mAP",
                       title="dense network: mean cross-validated mAP (GridSearchCV)")
written.append(plots.save_figure(figure, "05_sklearn_heatmap", figures_dir))
print(f"best: {sklearn_record.data['best_params']}; refit: non-black val mAP "
      f"{sklearn_record.metrics['val']['non_black']['map']:.3f}; the training labels' chance {chance_map(study.data.train):.3f}")
cv_table.round(3)

# %%
# All-zero kernels: every unit of a layer starts identical, and with zero weights after it gets no gradient.
zeros = cv_table[cv_table["kernel_initializer"] == "zeros"]
others = cv_table[cv_table["kernel_initializer"] != "zeros"]
train_chance = chance_map(study.data.train)
if not zeros.empty:
    print(f"zeros: best mean CV mAP {zeros['mean CV mAP'].max():.3f}; constant-score chance on the training "
          f"labels {train_chance:.3f}")
    if zeros["mean CV mAP"].max() <= train_chance + zeros["std CV mAP"].max():
        print("the zero initializer stays at chance, as the mechanism predicts")
    else:
        print("the zero initializer scores above chance within these folds: the mechanism does not show here")
if not others.empty:
    top = others.iloc[0]
    print(f"best other setting: dropout {top['dropout']:g}, {top['kernel_initializer']}: "
          f"{top['mean CV mAP']:.3f} ± {top['std CV mAP']:.3f} over the folds")

# %% [markdown]
# All-zero kernels leave only the biases to learn (each unit gets zero
# gradient through the zero weights after it): every image gets the same
# scores, chance. Between the other pairs, differences smaller than the
# spread of the folds are not evidence.

# %% [markdown]
# ## The final model
#
# The best configuration on validation, over the grid and the one-setting
# trials, trains the best CNN on all the training images, early stopping
# under the profile's epoch cap (the grid's epochs were measured on a share of
# the images).

# %%
all_trials = pd.concat([cnn_table, variant_table], ignore_index=True)
chosen = grid.cell_of(best_row(all_trials))
final_config = {**chosen, "epochs": settings.max_epochs}
description = ("final model: " + cnn.model + ", " + ", ".join(f"{name} {chosen[name]}" for name in grid.CONFIG_COLUMNS
                                                                if name != "epochs")
               + f"; chosen by notebook 05 on {settings.tuning_train_fraction:.0%} of the training images")
final = study.train(study.builder_from_record(cnn), family="final", description=description, **final_config)
print(description)
print(f"final: {final.data['epochs_run']} epochs ({final.data.get('stopped_because')}), non-black val mAP "
      f"{final.metrics['val']['non_black']['map']:.3f}, hold-out {final.metrics['holdout']['non_black']['map']:.3f}")

# %%
# The final model against the untuned run of notebook 02, on validation and on the hold-out.
rows = []
for split in ("val", "holdout"):
    effect = compare_runs(final, cnn, split=split)
    rows.append({"split": split, "final": final.metrics[split]["non_black"]["map"],
                 "untuned": cnn.metrics[split]["non_black"]["map"], "difference": effect["difference"],
                 "95% CI low": effect["interval"][0], "95% CI high": effect["interval"][1],
                 "measurable": effect["measurable"]})
comparison = pd.DataFrame(rows)
for _, row in comparison.iterrows():
    verdict = ("no measurable difference" if not row["measurable"]
               else "the tuned configuration is better" if row["difference"] > 0 else "the untuned run is better")
    print(f"{row['split']}: {verdict}")
comparison.round(3)

# %% [markdown]
# Validation chose the configuration, so the hold-out row is the honest
# answer to "did tuning help"; no measurable gain means the defaults of 02
# were already in the good region of the grid.

# %% [markdown] tags=["appendix"]
# ### Files written by this notebook

# %% tags=["appendix"]
# The tables and figures this notebook wrote.
print("\n".join(f"- {path.name}" for path in written))

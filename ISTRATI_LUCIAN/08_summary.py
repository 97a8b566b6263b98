# %% [markdown]
# # 08 — Summary
#
# Every model of 02-07 is a run of the results registry, scored the same way
# on the same images. This notebook puts them side by side and measures the
# **noise floor** (how much a score moves with the images scored and with the
# seed): a difference inside it is reported as no measurable difference.

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
# The registry of this study: the runs made on this data, with this profile and this seed.
import numpy as np
import pandas as pd
from IPython.display import display
from sklearn.metrics import classification_report

from contest_study import plots, transfer
from contest_study.evaluation import compare_runs
from contest_study.registry import best_per_family, run_name
from contest_study.study import open_study
from contest_study.synthetic import CARD_NAME

study = open_study(profile=profile, data_dir=data_dir, workdir=workdir, seed=seed)
runs = study.records()
if not runs:
    raise RuntimeError("the results registry holds no run of this study (same data, profile and seed): "
                       "run notebooks 02-07 first")
# The trials of 05's grid are shown and judged in 05; here they would bury the study's models.
trials = [record for record in runs if record.family == "tuning"]
runs = [record for record in runs if record.family != "tuning"]
by_key = {record.key: record for record in runs}
print(f"{len(runs)} runs of this study (profile {study.context.profile.name}, seed {seed}; and {len(trials)} grid "
      "trials, shown in 05); families: "
      + ", ".join(f"{family} ({count})" for family, count in pd.Series([r.family for r in runs]).value_counts().items()))

# %% [markdown]
# The networks share the engine's settings below (05's grid varied them).
# Scores are read on the non-black images (01): average precision (AP) per
# label and its mean (mAP).

# %%
config = study.config()
print(f"optimizer {config.optimizer}, learning rate {config.learning_rate}, loss {config.loss}, batch {config.batch_size}, "
      f"epoch cap {config.epochs}, early-stopping patience {config.patience}, schedule {config.lr_schedule}")

# %% [markdown]
# ## Every run side by side
#
# One row per run, best first: mAP on the non-black validation images with
# its 95 % bootstrap interval (1,000 resamples), on the non-black hold-out,
# model size, epochs (and the one kept), why training stopped, wall time. A
# column equal in every run is printed instead; of 04's k-NN sweep only the
# best setting is shown (all in the appendix).

# %%
def interval(record, split):
    low, high = record.metrics[split]["non_black"].get("map_ci95") or (None, None)
    # Word joiners keep the interval on one line of a table cell.
    return "undefined" if low is None or high is None else f"{low:.3f}\u2060–\u2060{high:.3f}"


table = study.table(runs)
master = pd.DataFrame({
    "run": table["run"].str.replace(" of the training images", "", regex=False),
    "family": table["family"],
    "val mAP": table["val mAP (non-black)"],
    "val 95% CI": [interval(by_key[key], "val") for key in table["key"]],
    "hold-out mAP": table["holdout mAP (non-black)"],
    "params": table["params"].astype("Int64"),
    "epochs": table["epochs"].astype("Int64"),
    "best epoch": table["best epoch"].astype("Int64"),
    "stopped by": table["stopped by"],
    "time (s)": table["wall time (s)"].round().astype("Int64"),
}).sort_values("val mAP", ascending=False, kind="stable")
constant = [column for column in master.columns if master[column].nunique(dropna=False) == 1]
for column in constant:
    print(f"{column}: {master[column].iloc[0]} in every run")
master = master.drop(columns=constant).set_index("run").round(3)
knn_sweep = master.index.str.startswith("knn_k")
best_knn = master.index[knn_sweep][:1]  # the table is sorted best first
master[~knn_sweep | master.index.isin(best_knn)]

# %% [markdown] tags=["appendix"]
# ### The k-NN sweep of notebook 04 in the master table's columns

# %% tags=["appendix"]
if knn_sweep.any():
    display(master[knn_sweep])
else:
    print("no k-NN sweep in the registry")

# %% [markdown] tags=["appendix"]
# ### Validation AP of every run and label

# %% tags=["appendix"]
# Validation AP of every run and label at a glance.
names = table["run"].where(~table["run"].duplicated(keep=False), table["run"] + " [" + table["family"] + "]")
names = names.where(~names.duplicated(keep=False), names + " " + table["key"].str[-6:])
per_label = table.assign(run=names).melt(id_vars="run", value_vars=[f"val AP {label}" for label in study.label_names],
                                         var_name="label", value_name="val AP")
per_label["label"] = per_label["label"].str.removeprefix("val AP ")
figure = plots.heatmap(per_label, index="run", columns="label", values="val AP",
                       title="Validation average precision of every run")
study.save_figures({"all_runs_per_label_ap": figure}, prefix="08")["all_runs_per_label_ap"]

# %% [markdown]
# ## The best of each family
#
# Each family through its best member by validation mAP (the hold-out never
# decides; side by side in the appendix), framed by chance and, on the
# embedded dataset only, the oracle (01).

# %%
def chance(record, split="val"):
    scores = record.metrics[split]["non_black"]
    return np.mean(list(scores["positives"].values())) / scores["n_images"]


# Families of models; the experiments of 02 and the final model of 05 are judged against their own references below.
best = best_per_family(record for record in runs if record.family not in ("cnn_experiment", "final"))
family_rows = []
for record in best:
    row = {"family": record.family, "run": record.model, "val mAP (non-black)": record.metrics["val"]["non_black"]["map"],
           "val 95% CI": interval(record, "val"), "holdout mAP (non-black)": record.metrics["holdout"]["non_black"]["map"],
           "chance": chance(record)}
    if record.oracle:
        row["oracle"] = record.oracle["val"]["non_black"]["map"]
    family_rows.append(row)
family_table = pd.DataFrame(family_rows).set_index("family")
if len(family_table):
    print("chance (mean positive rate of the non-black validation images): "
          + ", ".join(f"{value:.3f}" for value in sorted(family_table["chance"].round(3).unique())))
if "oracle" in family_table:
    print("oracle mAP on those images: " + ", ".join(f"{value:.3f}" for value in sorted(family_table["oracle"].dropna().round(3).unique())))

# %% [markdown] tags=["appendix"]
# ### The best of each family

# %% tags=["appendix"]
family_table.round(3)

# %% [markdown] tags=["appendix"]
# ### Per-label AP and precision-recall curves of the best model of each family

# %% tags=["appendix"]
# Per-label AP and precision-recall curves of the best model of each family (non-black validation images).
family_figures = study.comparison_figures({record.family: record for record in best}, prefix="08_best_per_family")
family_figures["per_class_ap"]

# %% tags=["appendix"]
family_figures["precision_recall"]

# %% [markdown]
# Precision, recall and F1 per label (scikit-learn's `classification_report`)
# of each family's best model on the hold-out, each label thresholded where
# its F1 was highest on validation: macro averages and weakest label here,
# full reports in the appendix. The black images add the same errors to every
# model (01's rule).

# %%
def hold_out_report(record):
    """The hold-out labels and ``record``'s answers there, at its thresholds tuned on validation."""
    predictions = record.predictions()
    thresholds = np.array([record.thresholds[label] for label in study.label_names])
    predicted = (predictions["holdout_score"] >= thresholds).astype(int)
    return predictions["holdout_true"], predicted


family_reports = {record.family: hold_out_report(record) for record in best}
report_rows = {}
for record in best:
    scores = classification_report(*family_reports[record.family], target_names=study.label_names,
                                   zero_division=0, output_dict=True)
    weakest = min(study.label_names, key=lambda label: scores[label]["f1-score"])
    report_rows[record.family] = {"run": record.model, "precision": scores["macro avg"]["precision"],
                                  "recall": scores["macro avg"]["recall"], "F1": scores["macro avg"]["f1-score"],
                                  "weakest label": weakest, "its F1": scores[weakest]["f1-score"]}
report_table = pd.DataFrame.from_dict(report_rows, orient="index")
for family, row in report_table.iterrows():
    print(f"{family} ({row['run']}): macro F1 {row['F1']:.2f}, precision {row['precision']:.2f}, "
          f"recall {row['recall']:.2f}; weakest label {row['weakest label']} (F1 {row['its F1']:.2f}).")
if len(report_table):
    favour_recall = report_table["recall"] > report_table["precision"]
    if favour_recall.all():
        print("Every family's thresholds trade precision for recall: F1 is highest where few positives are missed.")
    elif not favour_recall.any():
        print("Every family's thresholds trade recall for precision.")
    if report_table["weakest label"].nunique() == 1:
        print(f"{report_table['weakest label'].iloc[0]} is the weakest label of every family: the hardest label "
              "for every kind of model tried, not a weakness of one architecture.")

# %% [markdown] tags=["appendix"]
# ### Classification report of the best model of each family (hold-out)

# %% tags=["appendix"]
report_table.round(2)

# %% tags=["appendix"]
for record in best:
    print(f"{record.family}: {record.model}")
    print(classification_report(*family_reports[record.family], target_names=study.label_names, zero_division=0))

# %% [markdown]
# ## The noise floor: the same network, other seeds
#
# A score also depends on the seed (initial weights, batch order, dropout):
# the best network of each neural family is trained with two more seeds and
# the same settings (by 02-04; here only if they did not).

# %%
extra_seeds = (seed + 1, seed + 2)
seed_runs = {}
for record in best:
    if record.family in ("cnn", "rnn", "fully_connected"):
        seed_runs[record.family] = [record] + [
            study.train(study.builder_from_record(record), family=record.family + "_seed", seed=other,
                        description=f"{record.model} retrained with seed {other} (noise floor)")
            for other in extra_seeds
        ]

spread_rows = []
for family, records in seed_runs.items():
    row = {"family": family, "run": records[0].model, "seeds": ", ".join(str(r.seed) for r in records)}
    for split in ("val", "holdout"):
        scores = np.array([r.metrics[split]["non_black"]["map"] for r in records], dtype=float)
        row.update({f"{split} mean": scores.mean(), f"{split} std": scores.std(ddof=1),
                    f"{split} range": scores.max() - scores.min()})
    spread_rows.append(row)
spread = pd.DataFrame(spread_rows).set_index("family")
# The noise floor of a family: the range (max - min) of its mAP over the three seeds, per split.
seed_range = {split: spread[f"{split} range"].to_dict() if len(spread) else {} for split in ("val", "holdout")}
for split in ("val", "holdout"):
    print(f"seed range ({split}, non-black mAP over seeds {', '.join(map(str, (seed, *extra_seeds)))}): "
          + (", ".join(f"{family} {value:.3f}" for family, value in seed_range[split].items()) or "no neural family"))

# %% [markdown] tags=["appendix"]
# ### The seed-by-seed spread of the best network of each neural family

# %% tags=["appendix"]
spread.round(3)

# %% [markdown]
# A difference is **no measurable difference** when the 95 % interval of a
# *paired bootstrap* (the same resampled images scored by both runs)
# contains zero, or when it is no larger than the seed range (max − min) of
# the families involved (three seeds understate it).

# %%
def judge(run_a, run_b, split="val"):
    """The paired difference run_a - run_b on the non-black images, and whether it clears the noise floor."""
    effect = compare_runs(run_a, run_b, split=split)
    # 02's experiments are CNNs: the CNN family's seed range is theirs. A family without reruns (k-NN is
    # deterministic, the final model has none) adds nothing to the floor.
    floor = max(seed_range[split].get(run.family.removesuffix("_experiment"), 0.0) for run in (run_a, run_b))
    clears = bool(effect["measurable"]) and abs(effect["difference"]) > floor
    return {"difference": effect["difference"], "95% CI": f"{effect['interval'][0]:+.3f} .. {effect['interval'][1]:+.3f}",
            "seed range": floor, "verdict": "measurable" if clears else "no measurable difference"}


family_verdicts = pd.DataFrame.from_dict({f"{best[0].family} - {other.family}": judge(best[0], other) for other in best[1:]},
                                         orient="index")
print(f"best family: {best[0].family} ({best[0].model})" + ("" if len(best) > 1 else "; no other family to compare"))
family_verdicts.round(3)

# %% [markdown]
# Each row is the best family's best run minus another family's. "No
# measurable difference": the study cannot rank those two families on this
# data, whatever the means say. 02's experiments are judged the same way
# (table in the appendix, verdicts gathered below).

# %% [markdown] tags=["appendix"]
# ### The experiments of notebook 02
#
# Each experiment changed one thing of a CNN of 02 and is judged against the
# same network without the change, with the CNN family's noise floor. A
# positive difference means the change raised the non-black validation mAP.
# Where there is no measurable difference, the simpler setting (no
# augmentation, one channel, black images removed) is the one to keep: it is
# cheaper. A measurable change is discussed in 02 next to its run.

# %% tags=["appendix"]
def without_the_change(experiment):
    """The run of the same network without the experiment's change: its partner run first, else notebook 02's."""
    name = experiment.model.removesuffix("_augmented")
    candidates = [record for record in runs if record.family in ("cnn", "cnn_experiment") and record.key != experiment.key
                  and record.model == name and record.hyperparams.get("black_images") == "removed"
                  and record.hyperparams.get("input_channels") == study.data.channels]
    candidates.sort(key=lambda record: (record.hyperparams.get("fit_recipe") != experiment.hyperparams.get("fit_recipe"),
                                        record.family != experiment.family))
    return candidates[0] if candidates else None


experiment_rows = {}
for experiment in (record for record in runs if record.family == "cnn_experiment"):
    changed = (experiment.hyperparams.get("black_images") == "kept" or experiment.model.endswith("_augmented")
               or experiment.hyperparams.get("input_channels") != study.data.channels)
    base = without_the_change(experiment) if changed else None
    if base is not None:
        experiment_rows[f"{run_name(experiment)} - {run_name(base)}"] = judge(experiment, base)
experiments = pd.DataFrame.from_dict(experiment_rows, orient="index")
if not len(experiments):
    print("no experiment of notebook 02 in the registry")
experiments.round(3)

# %% [markdown]
# ## The final model: the tuned configuration against the untuned run
#
# Did 05's tuning pay? The final model (whose test predictions are
# submitted) against the same architecture's untuned run, on validation
# (where the tuning looked) and on the hold-out (where it did not).

# %%
finals = [record for record in runs if record.family == "final"]
final_rows = {}
if not finals:
    print("no final model in the registry: notebook 05 trains it")
else:
    final = study.best(finals)
    untuned = [record for record in runs if record.family in ("cnn", "rnn", "fully_connected") and record.model == final.model]
    if not untuned:
        print(f"no untuned run of {final.model} in notebooks 02-04 to compare the final model with")
    else:
        reference = study.best(untuned)
        for split in ("val", "holdout"):
            final_rows[split] = {"final": final.metrics[split]["non_black"]["map"],
                                 "untuned": reference.metrics[split]["non_black"]["map"],
                                 **judge(final, reference, split=split)}
        print(f"final model: {final.model} with 05's configuration; untuned run: {reference.model} ({reference.family})")
final_table = pd.DataFrame.from_dict(final_rows, orient="index")
if len(final_table):
    display(final_table.round(3))

# %% [markdown]
# Validation chose the configuration; the hold-out row is the honest one.
# Measurable and positive there: tuning paid; not measurable: 05's grid found
# no setting that matters more than a change of seed.
#
# ## The best model
#
# By validation mAP (its predictions and confusion matrices in the appendix):

# %%
best_run = study.best(runs)
print(f"best run: {best_run.model} ({best_run.family}, {best_run.description}); non-black mAP: validation "
      f"{best_run.metrics['val']['non_black']['map']:.3f}, hold-out {best_run.metrics['holdout']['non_black']['map']:.3f}")

# %% [markdown] tags=["appendix"]
# ### The best run's predictions on validation images and its confusion matrices (hold-out)

# %% tags=["appendix"]
best_figures = study.best_run_figures(best_run, prefix="08_best")
best_figures["prediction_grid"]

# %% tags=["appendix"]
best_figures["confusion_matrices"]

# %% [markdown]
# ## What worked, what did not, and why
#
# The verdicts above, gathered; a gain counts only beyond the noise floor.

# %%
final_verdicts = final_table.drop(columns=["final", "untuned"], errors="ignore").rename(index=lambda split: f"tuning ({split})")
verdicts = pd.concat([frame for frame in (family_verdicts, experiments, final_verdicts) if len(frame)]
                     or [pd.DataFrame(columns=["difference", "95% CI", "seed range", "verdict"])])
worked = verdicts[(verdicts["verdict"] == "measurable") & (verdicts["difference"] > 0)]
hurt = verdicts[(verdicts["verdict"] == "measurable") & (verdicts["difference"] < 0)]
inside = verdicts[verdicts["verdict"] != "measurable"]
print("What worked (a gain beyond the noise floor):", ", ".join(worked.index) or "nothing")
print("What did not work (a measurable loss):", ", ".join(hurt.index) or "nothing")
print("No measurable difference:", ", ".join(inside.index) or "none")

# %% [markdown]
# - **Families.** A convolution recognises a pattern wherever it appears; a
#   dense layer must learn it again at every place; a recurrent network
#   carries a 2-D pattern through a 1-D memory, row by row; k-NN and logistic
#   regression compare raw pixels. All were trained and scored alike, so a
#   measurable gap points to that prior; a gap inside the floor means the
#   data cannot tell those priors apart.
# - **Experiments and tuning.** 02 discusses each experiment next to its run;
#   only the hold-out row says whether 05's configuration generalises.
#
# ## The most interesting insight

# %%
ranked = verdicts.assign(size=verdicts["difference"].abs()).sort_values("size", ascending=False)
clearing = ranked[ranked["verdict"] == "measurable"]
if len(clearing):
    top = clearing.iloc[0]
    print(f"largest effect beyond the noise floor: {clearing.index[0]}: {top['difference']:+.3f} non-black mAP "
          f"(95% CI {top['95% CI']}, seed range {top['seed range']:.3f})")
else:
    print("no comparison of this study clears the noise floor")
widest = spread["val range"].idxmax() if len(spread) else None
if widest is not None:
    print(f"widest seed range: {widest}, {seed_range['val'][widest]:.3f} non-black mAP over seeds {spread.loc[widest, 'seeds']}")

# %% [markdown]
# If the largest effect beyond the floor is a gap between families, the
# prior built into an architecture mattered more than any training setting
# tried; if it is an experiment or the tuning, one training choice outweighed
# the architecture; if nothing clears the floor, one seed and one validation
# set decide a ranking as much as the models do.
#
# ## Limitations and future work
#
# What the numbers cannot say (printed where it depends on this run):

# %%
settings = study.context.profile
n_val = best_run.metrics["val"]["non_black"]["n_images"]
n_holdout = best_run.metrics["holdout"]["non_black"]["n_images"]
print(f"- One validation split ({n_val} non-black images) and one hold-out ({n_holdout}): every interval is a "
      "bootstrap of those images only, and says nothing of how the scores would move with another split of the data.")
print(f"- Profile {settings.name}: epoch cap {config.epochs}, early-stopping patience {config.patience}; "
      f"{len(extra_seeds) + 1} seeds per family for the noise floor.")
capped = [run_name(record) for record in runs if record.data.get("stopped_because") == "epoch cap"]
if capped:
    print(f"- {len(capped)} run(s) stopped at the epoch cap, not by early stopping, and may still have been improving: "
          + ", ".join(capped) + ".")
if settings.tuning_train_fraction < 1:
    print(f"- The tuning grid of 05 trained on {settings.tuning_train_fraction:.0%} of the training images with epoch "
          f"budgets of {', '.join(map(str, settings.tuning_epochs))}: a setting that pays only on the full data or with longer "
          "training could be missed.")
random_mobilenet = [record for record in runs if record.model == transfer.RANDOM_INIT_NAME]
if random_mobilenet:
    print(f"- No ImageNet weights were available offline: MobileNetV2 learnt from random weights on "
          f"{random_mobilenet[0].data['n_train_images']} images, so ImageNet transfer was not measured.")
if (study.data.data_dir / CARD_NAME).is_file():
    print("- The data folder is the embedded dataset, synthetic images drawn by a seeded generator (01): "
          "the conclusions hold for its shapes and noise; a real contest folder must be run to know what carries over.")

# %% [markdown]
# Next steps, in the order they would be done: repeat the study over several
# splits (k-fold cross-validation) and more seeds, so that intervals cover
# the choice of split as well as the images scored; run the grid of 05 on all
# training images without an epoch cap (a GPU, the `full` profile); fine-tune
# MobileNetV2 from its ImageNet weights where they can be downloaded; and
# average the best networks of the leading families, whose errors need not
# coincide. The references of the methods used close the appendix.

# %% [markdown] tags=["appendix"]
# ### References
#
# Software:
#
# - F. Chollet et al. *Keras*, 2015. https://keras.io (every network, its
#   layers, optimiser, callbacks and Keras Applications' MobileNetV2).
# - M. Abadi et al. *TensorFlow: a system for large-scale machine learning.*
#   OSDI 2016 (the backend Keras runs on).
# - F. Pedregosa et al. *Scikit-learn: machine learning in Python.* JMLR 12,
#   2011 (k-NN, logistic regression, `average_precision_score` for every AP
#   and mAP, `classification_report`).
#
# Methods:
#
# - K. Simonyan, A. Zisserman. *Very deep convolutional networks for
#   large-scale image recognition.* ICLR 2015 (the VGG-style CNN 1.c).
# - K. He, X. Zhang, S. Ren, J. Sun. *Deep residual learning for image
#   recognition.* CVPR 2016 (the small ResNet 1.d).
# - S. Hochreiter, J. Schmidhuber. *Long short-term memory.* Neural
#   Computation 9(8), 1997 (the LSTM 2.a).
# - K. Cho et al. *Learning phrase representations using RNN encoder-decoder
#   for statistical machine translation.* EMNLP 2014 (the GRU of 2.b).
# - D. P. Kingma, J. Ba. *Adam: a method for stochastic optimization.* ICLR
#   2015 (the optimiser of every network; 05's grid also tries SGD).
# - N. Srivastava et al. *Dropout: a simple way to prevent neural networks
#   from overfitting.* JMLR 15, 2014.
# - S. Ioffe, C. Szegedy. *Batch normalization: accelerating deep network
#   training by reducing internal covariate shift.* ICML 2015 (1.c, 1.d, 1.e, 3.b).
# - P. Vincent, H. Larochelle, Y. Bengio, P.-A. Manzagol. *Extracting and
#   composing robust features with denoising autoencoders.* ICML 2008 (06,
#   and the pretrained encoder of 07).
# - M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen. *MobileNetV2:
#   inverted residuals and linear bottlenecks.* CVPR 2018 (07).
# - B. Efron. *Bootstrap methods: another look at the jackknife.* Annals of
#   Statistics 7(1), 1979 (every 95 % interval and paired comparison).

# %% [markdown]
# # 08 — Summary
#
# The notebooks before this one each answered one question: what the data
# looks like (01), how well convolutional (02), recurrent (03) and fully
# connected networks and classical references (04) learn it, which training
# choices matter and which configuration becomes the final model (05),
# whether a denoising autoencoder cleans the images (06) and whether a
# pretrained encoder is a better start than random weights (07). Every model
# they trained is a run of the results registry, scored the same way on the
# same images.
#
# This notebook reads the registry and puts every run side by side. Before
# it draws any conclusion it measures the **noise floor**: how much a score
# moves with the validation images scored (bootstrap intervals) and with the
# seed (the best network of each family trained twice more). A difference
# inside that floor is reported as no measurable difference. Then it looks at
# the best model's predictions and says what worked, what did not, and why;
# every sentence that depends on a comparison has the comparison, and its
# `if`, in the cell above it.

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

from contest_study import plots
from contest_study.evaluation import compare_runs
from contest_study.registry import best_per_family
from contest_study.study import open_study, run_name

study = open_study(profile=profile, data_dir=data_dir, workdir=workdir, seed=seed)
runs = study.records()
if not runs:
    raise RuntimeError("the results registry holds no run of this study (same data, profile and seed): "
                       "run notebooks 02-07 first")
# The trials of 05's grid are shown and judged in 05; here they would bury the study's models.
trials = [record for record in runs if record.family == "tuning"]
runs = [record for record in runs if record.family != "tuning"]
by_key = {record.key: record for record in runs}
print(f"{len(trials)} grid trials of notebook 05 (its own tables)")
print(f"{len(runs)} runs of this study (profile {study.context.profile.name}, seed {seed}); families: "
      + ", ".join(f"{family} ({count})" for family, count in pd.Series([r.family for r in runs]).value_counts().items()))

# %% [markdown]
# ## How every run was trained and scored
#
# The networks of notebooks 02-04 and 07 were trained by the same engine,
# with the settings printed below (05's grid varied them): Adam, binary
# cross-entropy on one sigmoid output per label, early stopping on the
# validation loss of the non-black validation images (restoring the best
# epoch), the learning rate halved when that loss stalls, within the
# profile's cap on epochs. All black training images but one were
# removed, and every black validation, hold-out and test image is answered
# with the label rates of the black training images (the scoring rule of
# `01_data_analysis`), so all models answer them alike and differ only on the
# non-black images. Scores are scikit-learn's average precision per label and
# its mean over the labels (mAP); **chance** is the mean positive rate.

# %%
config = study.config()
print(f"optimizer {config.optimizer}, learning rate {config.learning_rate}, loss {config.loss}, batch {config.batch_size}, "
      f"epoch cap {config.epochs}, early-stopping patience {config.patience}, schedule {config.lr_schedule}")

# %% [markdown]
# ## Every run side by side
#
# One row per run, best validation mAP first: on all validation images and on
# the non-black ones with its 95 % bootstrap interval (1,000 resamples of the
# validation images: how much the score would move on another validation set
# of the same size), the same on the hold-out that chose nothing, and how long
# each run trained (the epoch whose weights were kept in brackets) and why it
# stopped.

# %%
def interval(record, split):
    low, high = record.metrics[split]["non_black"].get("map_ci95") or (None, None)
    return "undefined" if low is None or high is None else f"{low:.3f} .. {high:.3f}"


table = study.table(runs)
table["val 95% CI"] = [interval(by_key[key], "val") for key in table["key"]]
table["holdout 95% CI"] = [interval(by_key[key], "holdout") for key in table["key"]]
table["epochs (best)"] = [f"{int(epochs)} ({int(best_epoch)})" if epochs == epochs and best_epoch == best_epoch else ""
                          for epochs, best_epoch in zip(table["epochs"], table["best epoch"])]
columns = ["run", "family", "val mAP", "val mAP (non-black)", "val 95% CI", "holdout mAP", "holdout mAP (non-black)",
           "holdout 95% CI", "epochs (best)", "stopped by"]
table[columns].round(3)

# %%
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
# Comparing families through their best member (by validation mAP; the
# hold-out never decides) keeps the difference that matters: how each kind of
# model sees an image. Chance is each run's mean positive rate on the
# non-black validation images; the oracle column appears only on the embedded
# dataset, whose Bayes-optimal probabilities give the best achievable score.

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
pd.DataFrame(family_rows).set_index("family").round(3)

# %%
# Per-label AP and precision-recall curves of the best model of each family (non-black validation images).
family_figures = study.comparison_figures({record.family: record for record in best}, prefix="08_best_per_family")
family_figures["per_class_ap"]

# %%
family_figures["precision_recall"]

# %% [markdown]
# ## The noise floor: the same network, other seeds
#
# A bootstrap interval says how much a score depends on which images were
# scored. A network also depends on its seed: the initial weights, the
# order of the batches and dropout. To measure that, the best network of each
# neural family is trained twice more, with two other seeds, by the engine's
# own fit with the same settings (the architecture rebuilt from the registry).
# Notebooks 02-04 train these six runs for their own verdicts; this notebook
# finds them in the registry and trains them only if those notebooks did not.

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
                    f"{split} min": scores.min(), f"{split} max": scores.max()})
    spread_rows.append(row)
spread = pd.DataFrame(spread_rows).set_index("family")
# The noise floor of a family: the range (max - min) of its mAP over the three seeds, per split.
seed_range = {split: (spread[f"{split} max"] - spread[f"{split} min"]).to_dict() if len(spread) else {}
              for split in ("val", "holdout")}
spread.round(3)

# %% [markdown]
# The table gives each family's run-to-run spread of the non-black mAP over
# three seeds. A difference between two runs is below the noise floor, and
# reported as **no measurable difference**, when the 95 % interval of the
# paired bootstrap of the difference (the same images scored by both runs)
# contains zero, or when the difference is no larger than the seed range
# (max − min, on the same split) of the families involved: another seed could
# have produced it. Note that the range of three runs understates the spread a
# larger number of seeds would show.

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
# Each row is the best family's best run minus another family's best run on
# the non-black validation images. A "measurable" row is a gap no other seed
# or validation sample would close: that family is behind. A row of "no
# measurable difference" means the study cannot rank those two families on
# this data, whatever the means in the table above say.
#
# ## The experiments of notebook 02
#
# Each experiment changed one thing of a CNN of 02 (augmentation layers in
# front, three input channels, the black images kept) and is judged against
# the same network without the change, with the CNN family's noise floor.

# %%
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
# A positive difference means the change raised the non-black validation mAP.
# Where the verdict is "no measurable difference" the change neither helped
# nor hurt at this data size, and the simpler setting (no augmentation, one
# channel, black images removed) is the one to keep: it is cheaper. Where a
# change is measurable, its reason is discussed in notebook 02 next to the
# run.
#
# ## The final model: the tuned configuration against the untuned run
#
# Notebook 05 chooses a training configuration on validation and retrains the
# chosen architecture with it on the whole training set: the study's final
# model, whose test predictions are submitted. Did tuning pay? The final model
# against the run of the same architecture with the default settings, on
# validation (where the tuning looked) and on the hold-out (where it did not).

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
        print(f"final model: {final.model} ({final.description}); untuned run: {reference.model} ({reference.family})")
final_table = pd.DataFrame.from_dict(final_rows, orient="index")
if len(final_table):
    display(final_table.round(3))

# %% [markdown]
# The validation row is optimistic for the final model: its configuration
# was chosen there. The hold-out row is the honest one. If the hold-out
# difference is measurable and positive, tuning paid beyond the noise floor;
# if it is not measurable, the chosen configuration is as good as the default
# one on images that took no part in the choice, and the grid of 05 found no
# setting that matters more than a change of seed.
#
# ## The best model's predictions
#
# The best run of the study by validation mAP: validation images with its
# answer and the probability of each label, blue when right and red when
# wrong at the thresholds tuned on validation; then its confusion matrices
# and scikit-learn's classification report on the hold-out split.

# %%
best_run = study.best(runs)
print(f"best run: {best_run.model} ({best_run.family}, {best_run.description}); non-black mAP: validation "
      f"{best_run.metrics['val']['non_black']['map']:.3f}, hold-out {best_run.metrics['holdout']['non_black']['map']:.3f}")
best_figures = study.best_run_figures(best_run, prefix="08_best")
best_figures["prediction_grid"]

# %%
best_figures["confusion_matrices"]

# %%
# Precision, recall and F1 per label on the hold-out, at the thresholds tuned on validation.
predictions = best_run.predictions()
thresholds = np.array([best_run.thresholds[label] for label in study.label_names])
print(classification_report(predictions["holdout_true"], (predictions["holdout_score"] >= thresholds).astype(int),
                            target_names=study.label_names, zero_division=0))

# %% [markdown]
# The report's per-label rows show which label the best model finds hardest.
# The black images are part of these hold-out counts: every model answers them
# with the same base rates, so they add the same errors to every model.
#
# ## What worked, what did not, and why
#
# The verdicts above, gathered: a family, an experiment or the tuning is
# listed as having worked only when its gain clears the noise floor.

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
# Why, where the lists above place each comparison:
#
# - **Families.** A convolution applies the same small filters at every
#   position, so a pattern is recognised wherever it appears; a dense layer
#   gives each pixel position its own weights and must learn a pattern again
#   at every place; a recurrent network reads one row at a time and must carry
#   a two-dimensional pattern through a one-dimensional memory; k-NN and
#   logistic regression compare raw pixels. When a family trails the best one
#   measurably, that difference of prior is the likely cause, since all were
#   trained and scored alike. When a gap is inside the noise floor, the data
#   does not let the study tell those priors apart.
# - **Experiments.** Augmentation helps a network that overfits and hurts when
#   a transformation changes what a label means or blurs what it depends on;
#   three equal channels can only change the initialisation, not the
#   information; keeping the black images adds label noise and weight updates
#   at once. Notebook 02 discusses its outcome next to each run.
# - **Tuning.** A configuration chosen on validation is favoured there by
#   construction; only the hold-out row says whether it generalises.
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
widest = spread["val max"].sub(spread["val min"]).idxmax() if len(spread) else None
if widest is not None:
    print(f"widest seed range: {widest}, {seed_range['val'][widest]:.3f} non-black mAP over seeds {spread.loc[widest, 'seeds']}")

# %% [markdown]
# The insight is in what the cell above finds. When the largest effect beyond
# the noise floor is a gap between families, the study's main lesson is that
# the prior built into an architecture matters more than any training
# setting tried here: the same data, the same optimiser and the same scoring
# give measurably different models only because they see the image
# differently. When it is an experiment or the tuning, one training choice
# outweighed the choice of architecture. When nothing clears the floor, the
# lesson is the noise floor itself: at this data size one seed and one
# validation set decide a ranking as much as the models do, and the single-run
# differences a study usually reports as "helped" or "hurt" would be noise.
# The seed range printed last is how much one network moves between seeds
# alone: every difference of this study is read against it.

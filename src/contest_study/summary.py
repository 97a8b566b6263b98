"""What notebook ``08_summary`` reads and says: every run of this study, compared.

Everything here reads the results registry only (no training): the runs of this
study (same data, profile and seed as the notebook's, see
:func:`contest_study.submission_predictions.runs_of_this_study`), put side by side
in tables, and the sentences of the summary, built from those numbers so that they
stay true when the data or the profile changes.

Two yardsticks make the scores of different models readable:

- **chance**: a model that ranks nothing scores, per label, the share of positives
  (the average precision of a constant score); averaged over the labels it is the
  chance mAP (:func:`chance_map`), on the non-black validation images where a shape
  decides the labels;
- **the best achievable** score on the same images: the oracle's (Bayes-optimal
  probabilities of the embedded dataset) when there is one, else the best run's.

The share of the way from the first to the second that a run covers is its
**gap closed** (:func:`gap_closed`); below :data:`~contest_study.metrics.FAILURE_GAP_FRACTION`
the run learnt nothing about the shapes, the threshold notebook 05 uses for its trials.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from contest_study.registry import RunRecord, best_per_family
from contest_study.study import NEGLIGIBLE_MAP_CHANGE, Study, comparison_table, run_name
from contest_study.submission_predictions import runs_of_this_study
from contest_study.metrics import FAILURE_GAP_FRACTION

# How each family is called in sentences.
FAMILY_NAMES = {
    "cnn": "convolutional networks",
    "rnn": "recurrent networks",
    "fully_connected": "fully connected networks",
    "classical": "classical references",
    "transfer": "pretrained backbones",
    "from_scratch": "backbones trained from scratch",
}

# Why a family sees the shapes, or does not: said next to the measured result, never instead of it.
WHY_IT_SEES_SHAPES = {
    "cnn": (
        "a convolution applies the same small filters at every position and pooling keeps where they "
        "fired, so a ring, a cross or a checkerboard is recognised wherever it is drawn, with few weights"
    ),
    "transfer": (
        "the backbone is convolutional too, and starts from filters that already respond to edges and "
        "blobs"
    ),
    "from_scratch": "the backbone is convolutional, with the same translation-invariant filters as the CNNs",
}
WHY_IT_MISSES_SHAPES = {
    "fully_connected": (
        "a dense layer gives every pixel position its own weights, so a shape learnt in one place is "
        "unknown a few pixels away, and the shapes of this task can be anywhere in the image"
    ),
    "rnn": (
        "reading the image one row at a time, the network must carry a two-dimensional shape through a "
        "one-dimensional memory over 64 steps; a ring and a square differ in how successive rows relate, "
        "which that memory does not keep"
    ),
    "classical": (
        "k-NN and logistic regression compare raw pixels, and two images showing the same shape at "
        "different places share almost no bright pixels"
    ),
}

# Hyperparameters that say how a run differs from another: the architecture's fingerprint
# follows from the model and its input channels, so it is never a setting of its own.
DERIVED_HYPERPARAMS = ("architecture",)


def _number(value) -> float:
    """A record's number as float, NaN when it is missing or undefined."""
    return float("nan") if value is None else float(value)


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _signed(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.3f}"


def _family(family: str) -> str:
    return FAMILY_NAMES.get(family, family.replace("_", " "))


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# --------------------------------------------------------------------------- the runs


@dataclass(frozen=True)
class StudyRuns:
    """The registry's runs of this study, and how many of its other runs were left out."""

    records: list[RunRecord]
    left_out: list[RunRecord]

    @property
    def families(self) -> list[str]:
        return sorted({record.family for record in self.records})


def study_runs(study: Study) -> StudyRuns:
    """The runs of ``study``'s registry made on its data, in its profile, with its seed."""
    kept, left_out = runs_of_this_study(
        study.registry.records(),
        data_fingerprint=study.data.fingerprint,
        profile=study.context.profile.name,
        seed=study.context.seed,
    )
    return StudyRuns(records=kept, left_out=left_out)


def require_runs(runs: StudyRuns) -> StudyRuns:
    """``runs``, or an error saying which notebooks to run when there is none to summarise."""
    if not runs.records:
        raise RuntimeError(
            "the results registry holds no run of this study (same data, profile and seed): run notebooks "
            f"02-07 first; {len(runs.left_out)} runs of other data, profiles or seeds were found"
        )
    return runs


def _flat_hyperparams(record: RunRecord) -> dict[str, str]:
    """The run's hyperparameters as ``{"name": canonical JSON}`` (nested dicts flattened with dots)."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, Mapping) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif prefix not in DERIVED_HYPERPARAMS:
            flat[prefix] = json.dumps(value, sort_keys=True)

    walk("", record.hyperparams)
    return flat


def _value_text(text: str) -> str:
    value = json.loads(text)
    return "none" if value is None else str(value)


# Short names of the settings in run names; a setting implied by another one shown beside it is omitted.
_SHORT_SETTING = {"learning_rate": "lr", "batch_size": "batch", "lr_schedule": "schedule", "train_metric": "metric",
                  "input_channels": "channels", "black_images": "black images"}
_IMPLIED_BY = {"output_activation": "loss"}  # the softmax head comes with categorical cross-entropy
MAX_SETTINGS_IN_NAME = 3


def _settings_text(differences: dict[str, str]) -> str:
    shown = [key for key in sorted(differences) if _IMPLIED_BY.get(key) not in differences]
    items = [f"{_SHORT_SETTING.get(key, key)} {_value_text(differences[key])}" for key in shown]
    if len(items) > MAX_SETTINGS_IN_NAME:
        items = items[:MAX_SETTINGS_IN_NAME] + ["…"]
    return ", ".join(items)


def _setting_counts(flats: Sequence[dict[str, str]]) -> dict[str, Counter]:
    """How many runs use each value of each setting (a run without the setting counts as None)."""
    keys = {key for flat in flats for key in flat}
    return {key: Counter(flat.get(key) for flat in flats) for key in keys}


def distinct_names(records: Sequence[RunRecord]) -> dict[str, str]:
    """A readable, unique name per run key.

    :func:`~contest_study.study.run_name`, and where several runs share it, the
    settings in which each differs from the setting most of them use (the run that
    uses it keeps the plain name); runs that still collide get the end of their key.
    """
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(run_name(record), []).append(record)
    overall = _setting_counts([_flat_hyperparams(record) for record in records])
    names = {}
    for base, group in groups.items():
        flats = [_flat_hyperparams(record) for record in group]
        counts = _setting_counts(flats)
        # The group's most common value; a tie goes to the value most runs of the study use.
        usual = {key: max(values, key=lambda value: (values[value], overall[key][value], str(value)))
                 for key, values in counts.items()}
        for record, flat in zip(group, flats):
            differences = {key: flat[key] for key in flat if flat[key] != usual[key]}
            names[record.key] = f"{base} [{_settings_text(differences)}]" if differences else base
    counts = Counter(names.values())
    return {key: (f"{name} #{key[-6:]}" if counts[name] > 1 else name) for key, name in names.items()}


# --------------------------------------------------------------------------- yardsticks


def chance_map(record: RunRecord, split: str = "val", subset: str = "non_black") -> float:
    """mAP of a score that ranks nothing on the images ``record`` was scored on: each label's positive rate."""
    scores = record.metrics[split][subset]
    rates = [positives / scores["n_images"] for positives in scores["positives"].values() if scores["n_images"]]
    rates = [rate for rate in rates if rate > 0]
    return float(np.mean(rates)) if rates else float("nan")


def achievable_map(records: Sequence[RunRecord]) -> tuple[float, str]:
    """Best achievable non-black validation mAP and what it is: the oracle's, else the best run's."""
    for record in records:
        if record.oracle:
            return _number(record.oracle["val"]["non_black"]["map"]), "the oracle"
    scores = [_number(record.metrics["val"]["non_black"]["map"]) for record in records]
    scores = [score for score in scores if not math.isnan(score)]
    return (max(scores), "the best run") if scores else (float("nan"), "no run")


def gap_closed(record: RunRecord, achievable: float) -> float:
    """Share of the way from chance to ``achievable`` covered on the non-black validation images."""
    chance = chance_map(record)
    score = _number(record.metrics["val"]["non_black"]["map"])
    if math.isnan(chance) or math.isnan(achievable) or achievable <= chance:
        return float("nan")
    return (score - chance) / (achievable - chance)


# --------------------------------------------------------------------------- tables


def summary_table(study: Study, runs: StudyRuns) -> pd.DataFrame:
    """Every run of this study: per-label validation AP, mAP, F1, accuracy, oracle, size, time; best first."""
    table = comparison_table(study.registry, runs.records)
    names = distinct_names(runs.records)
    table["run"] = table["key"].map(names)
    achievable, _ = achievable_map(runs.records)
    by_key = {record.key: record for record in runs.records}
    table["chance mAP (non-black)"] = [chance_map(by_key[key]) for key in table["key"]]
    table["gap closed"] = [gap_closed(by_key[key], achievable) for key in table["key"]]
    columns = [
        "run",
        "family",
        *[f"val AP {label}" for label in study.label_names],
        "val mAP",
        "val mAP (non-black)",
        "chance mAP (non-black)",
        "gap closed",
        "holdout mAP",
        "val F1 macro (tuned)",
        "val accuracy",
        *(["oracle val mAP"] if "oracle val mAP" in table.columns else []),
        "params",
        "epochs",
        "wall time (s)",
    ]
    return table[columns].set_index("run")


def family_table(table: pd.DataFrame, best: Sequence[RunRecord], names: Mapping[str, str]) -> pd.DataFrame:
    """The best run of each family (rows of :func:`summary_table`), best family first."""
    rows = table.loc[[names[record.key] for record in best]]
    return rows[["family", "val mAP", "val mAP (non-black)", "chance mAP (non-black)", "gap closed",
                 "holdout mAP", "params", "wall time (s)"]]


def per_label_ap_long(table: pd.DataFrame, label_names: Sequence[str]) -> pd.DataFrame:
    """One row per (run, label) with its validation AP, plus the mAP as a last "label": for a heatmap."""
    columns = {f"val AP {label}": label for label in label_names} | {"val mAP": "mAP"}
    wide = table[list(columns)].rename(columns=columns)
    return wide.reset_index().melt(id_vars="run", var_name="label", value_name="val AP")


def one_factor_effects(records: Sequence[RunRecord]) -> pd.DataFrame:
    """What changing one setting did: every pair of runs of one model that differ in exactly one setting.

    One row per (setting, from, to), averaged over its pairs: how many pairs, which
    models, and the mean change of validation mAP (all images and non-black ones)
    and of hold-out mAP. ``from`` is the value most runs of the study use.
    """
    flats = {record.key: _flat_hyperparams(record) for record in records}
    usual = _setting_counts(list(flats.values()))
    pairs = []
    records = list(records)
    for i, first in enumerate(records):
        for second in records[i + 1:]:
            if first.model != second.model or first.family != second.family:
                continue
            a, b = flats[first.key], flats[second.key]
            differing = [key for key in a.keys() | b.keys() if a.get(key) != b.get(key)]
            if len(differing) != 1:
                continue
            key = differing[0]
            # Orient the pair from the usual value to the other one.
            if usual[key][b.get(key)] > usual[key][a.get(key)] or (
                usual[key][b.get(key)] == usual[key][a.get(key)] and str(b.get(key)) < str(a.get(key))
            ):
                first, second, a, b = second, first, b, a
            pairs.append(
                {
                    "setting": key,
                    "from": _value_text(a[key]) if key in a else "unset",
                    "to": _value_text(b[key]) if key in b else "unset",
                    "model": first.model,
                    "change val mAP": _number(second.metrics["val"]["all"]["map"])
                    - _number(first.metrics["val"]["all"]["map"]),
                    "change val mAP (non-black)": _number(second.metrics["val"]["non_black"]["map"])
                    - _number(first.metrics["val"]["non_black"]["map"]),
                    "change holdout mAP": _number(second.metrics["holdout"]["all"]["map"])
                    - _number(first.metrics["holdout"]["all"]["map"]),
                }
            )
    columns = ["setting", "from", "to", "pairs", "models", "change val mAP", "change val mAP (non-black)",
               "change holdout mAP"]
    if not pairs:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(pairs)
    grouped = frame.groupby(["setting", "from", "to"], sort=True)
    effects = grouped[["change val mAP", "change val mAP (non-black)", "change holdout mAP"]].mean()
    effects["pairs"] = grouped.size()
    effects["models"] = grouped["model"].agg(lambda models: ", ".join(sorted(set(models))))
    effects = effects.reset_index()
    order = effects["change val mAP (non-black)"].abs().sort_values(ascending=False, kind="stable").index
    return effects.loc[order, columns].reset_index(drop=True)


# --------------------------------------------------------------------------- sentences


def describe_runs(runs: StudyRuns, study: Study) -> str:
    """What the summary compares, and what of the registry it leaves out."""
    counts = Counter(record.family for record in runs.records)
    families = _join([f"{count} {_family(family)}" for family, count in sorted(counts.items(), key=lambda x: -x[1])])
    text = (
        f"This run of the study (profile `{study.context.profile.name}`, seed {study.context.seed}) left "
        f"**{len(runs.records)} trained models** in the results registry: {families}. "
        f"They were all scored on the same {_validation_size(runs.records)} validation images and the same "
        "hold-out images, with the same metric, so every number below compares like with like."
    )
    if runs.left_out:
        text += (
            f" The registry holds {len(runs.left_out)} other runs (another data subsample, such as the "
            "hyperparameter search of notebook 05 on its tuning subsample, another profile or another seed); "
            "their scores come from other images and are left out here."
        )
    return text


def _validation_size(records: Sequence[RunRecord]) -> str:
    sizes = sorted({record.metrics["val"]["all"]["n_images"] for record in records})
    return str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"


def describe_ranking(best: Sequence[RunRecord], names: Mapping[str, str], runs: StudyRuns) -> str:
    """The best model overall, then how far the best of every other family is behind it."""
    if not best:
        return "No run of this study is in the registry yet: run notebooks 02-07 first."
    top = best[0]
    top_map = _number(top.metrics["val"]["all"]["map"])
    text = (
        f"The best model of the study is **{names[top.key]}** ({_family(top.family)}): validation mAP "
        f"{_fmt(top_map)}, {_fmt(_number(top.metrics['val']['non_black']['map']))} on the non-black images, "
        f"hold-out mAP {_fmt(_number(top.metrics['holdout']['all']['map']))}."
    )
    others = [
        f"{names[record.key]} ({_family(record.family)}, {_fmt(_number(record.metrics['val']['all']['map']))}, "
        f"{_signed(_number(record.metrics['val']['all']['map']) - top_map)})"
        for record in best[1:]
    ]
    if others:
        text += " The best of each other family, in order: " + "; ".join(others) + "."
    achievable, source = achievable_map(runs.records)
    if source == "the oracle":
        oracle_all = _number(top.oracle["val"]["all"]["map"]) if top.oracle else float("nan")
        text += (
            f" The oracle, the Bayes-optimal probabilities of the embedded dataset, reaches {_fmt(oracle_all)} "
            f"on all validation images and {_fmt(achievable)} on the non-black ones"
            + (": the totally black images, whose labels are random, cap every model's score over all images."
               if oracle_all < achievable else ".")
        )
    return text


def describe_labels(table: pd.DataFrame, label_names: Sequence[str], best: RunRecord, names: Mapping[str, str]) -> str:
    """Which label is hardest, over all runs and for the best one."""
    columns = [f"val AP {label}" for label in label_names]
    means = table[columns].mean(axis=0)
    if means.isna().all():
        return "No label has a defined average precision yet (no positives in the validation images)."
    hardest, easiest = means.idxmin().removeprefix("val AP "), means.idxmax().removeprefix("val AP ")
    best_ap = best.metrics["val"]["all"]["ap"]
    best_hardest = min((label for label in label_names if best_ap.get(label) is not None),
                       key=lambda label: best_ap[label], default=None)
    text = (
        f"Averaged over every run, **{hardest}** is the hardest label (mean validation AP "
        f"{_fmt(means[f'val AP {hardest}'])}) and **{easiest}** the easiest ({_fmt(means[f'val AP {easiest}'])})."
    )
    if best_hardest is not None:
        text += (
            f" For the best model, {names[best.key]}, the weakest label is {best_hardest} "
            f"(AP {_fmt(_number(best_ap[best_hardest]))})"
            + (", the same one." if best_hardest == hardest else ", not the one most runs find hardest.")
        )
    positives = best.metrics["val"]["all"]["positives"]
    n_images = best.metrics["val"]["all"]["n_images"]
    rates = ", ".join(f"{label} {positives[label] / n_images:.0%}" for label in label_names if n_images)
    text += (
        f" Part of the difference is the labels' base rates ({rates} of the validation images are positive): "
        "average precision starts from the positive rate, so a rare label starts lower."
    )
    return text


def _learnt_and_failed(best: Sequence[RunRecord], achievable: float) -> tuple[list, list]:
    learnt, failed = [], []
    for record in best:
        share = gap_closed(record, achievable)
        if math.isnan(share):
            continue
        (learnt if share >= FAILURE_GAP_FRACTION else failed).append((record, share))
    # Each list best first by the share of the gap closed.
    return (sorted(learnt, key=lambda pair: -pair[1]), sorted(failed, key=lambda pair: -pair[1]))


def _family_finding(record: RunRecord, share: float, names: Mapping[str, str], achievable: float, source: str) -> str:
    """One family's result through its best run, with the mechanism that explains it."""
    learnt = share >= FAILURE_GAP_FRACTION
    text = (
        f"**{_family(record.family).capitalize()}**, best run {names[record.key]}, close {'' if learnt else 'only '}"
        # A share a hair below 0 (a run scoring under chance by noise) reads as 0%, not -0%.
        f"{max(share, 0.0):.0%} of the gap between chance ({_fmt(chance_map(record))}) and {source} ({_fmt(achievable)}) on "
        f"the non-black validation images (mAP {_fmt(_number(record.metrics['val']['non_black']['map']))})"
    )
    if learnt:
        why = WHY_IT_SEES_SHAPES.get(record.family)
        return text + (f": {why}." if why else ".")
    why = WHY_IT_MISSES_SHAPES.get(record.family)
    return text + ": they learnt little beyond the labels' base rates, not the shapes" + (f"; {why}." if why else ".")


def describe_what_worked(best: Sequence[RunRecord], effects: pd.DataFrame, runs: StudyRuns,
                         names: Mapping[str, str]) -> str:
    """Markdown: what worked, what did not, and why, from the best run of each family and the one-setting pairs."""
    achievable, source = achievable_map(runs.records)
    learnt, failed = _learnt_and_failed(best, achievable)
    worked = [_family_finding(record, share, names, achievable, source) for record, share in learnt]
    did_not = [_family_finding(record, share, names, achievable, source) for record, share in failed]
    for _, row in effects.iterrows():
        change = row["change val mAP (non-black)"]
        if math.isnan(change):
            continue
        sentence = (
            f"Changing **{row['setting']}** from {row['from']} to {row['to']} ({row['models']}, "
            f"{row['pairs']} pair{'s' if row['pairs'] != 1 else ''}): validation mAP {_signed(row['change val mAP'])}, "
            f"{_signed(change)} on the non-black images, hold-out {_signed(row['change holdout mAP'])}"
        )
        if abs(change) < NEGLIGIBLE_MAP_CHANGE:
            did_not.append(sentence + ": no effect beyond run-to-run noise on the images that carry a shape.")
        elif change > 0:
            worked.append(sentence + ".")
        else:
            did_not.append(sentence + ": it hurt.")
    parts = ["**What worked**", ""]
    parts += [f"- {item}" for item in worked] or ["- Nothing beat chance clearly in this run (too few images or epochs)."]
    parts += ["", "**What did not work**", ""]
    parts += [f"- {item}" for item in did_not] or ["- Every family and setting compared here learnt the shapes."]
    return "\n".join(parts)


def describe_holdout(table: pd.DataFrame) -> str:
    """How validation and hold-out scores compare over all runs (is the model choice optimistic?)."""
    gaps = (table["val mAP"] - table["holdout mAP"]).dropna()
    if gaps.empty:
        return "No run has both a validation and a hold-out mAP."
    mean, worst = gaps.mean(), gaps.abs().max()
    if mean > NEGLIGIBLE_MAP_CHANGE:
        verdict = (
            f"validation mAP is higher by {mean:.3f} on average: it is optimistic, as expected of the split that "
            "chose the thresholds, the early-stopping epochs and the best model"
        )
    elif mean < -NEGLIGIBLE_MAP_CHANGE:
        verdict = (
            f"hold-out mAP is even higher by {-mean:.3f} on average, so the validation images were not the easy "
            "ones and the choices made on them did not overfit them"
        )
    else:
        verdict = (
            f"the two differ by {mean:+.3f} on average, within run-to-run noise: the choices made on the "
            "validation set did not overfit it"
        )
    return (
        f"Over the {len(gaps)} runs, {verdict} (the largest difference for one run is {worst:.3f}). The hold-out "
        "split chose nothing, so its scores are the unbiased estimate to quote."
    )


def describe_cost(table: pd.DataFrame, best: RunRecord, names: Mapping[str, str]) -> str:
    """Size and training time of the best model against the largest and the slowest run."""
    row = table.loc[names[best.key]]
    largest = table["params"].idxmax() if table["params"].notna().any() else None
    slowest = table["wall time (s)"].idxmax() if table["wall time (s)"].notna().any() else None
    text = (
        f"The best model has {int(row['params']):,} parameters and trained in {_fmt(row['wall time (s)'], 0)} s."
        if not math.isnan(row["params"]) else ""
    )
    if largest is not None and largest != names[best.key]:
        ratio = table.at[largest, "params"] / row["params"] if row["params"] else float("nan")
        text += (
            f" The largest, {largest}, has {int(table.at[largest, 'params']):,} ({_fmt(ratio, 1)} times as many) "
            f"for a validation mAP of {_fmt(table.at[largest, 'val mAP'])}: size is not what decides."
        )
    if slowest is not None and slowest not in (names[best.key], largest):
        text += (
            f" The slowest to train was {slowest} ({_fmt(table.at[slowest, 'wall time (s)'], 0)} s, validation mAP "
            f"{_fmt(table.at[slowest, 'val mAP'])})."
        )
    return text.strip()


def most_interesting_insight(best: Sequence[RunRecord], effects: pd.DataFrame, runs: StudyRuns,
                             names: Mapping[str, str]) -> str:
    """The largest effect this study measured, in words, with the mechanism behind it.

    Candidates, each measured in mAP on the non-black validation images: the gap between
    the family that learnt the shapes best and the best family that did not, and every
    one-setting effect. The largest wins; when the best model is within noise of the
    oracle, that is said as well.
    """
    if not best:
        return "No run of this study yet, so no insight."
    achievable, source = achievable_map(runs.records)
    learnt, failed = _learnt_and_failed(best, achievable)
    candidates = []
    if learnt and failed:
        top, bottom = learnt[0][0], failed[0][0]
        size = _number(top.metrics["val"]["non_black"]["map"]) - _number(bottom.metrics["val"]["non_black"]["map"])
        bottom_all = _number(bottom.metrics["val"]["all"]["map"])
        bottom_nb = _number(bottom.metrics["val"]["non_black"]["map"])
        text = (
            f"**The kind of model decides.** Only the {_family(top.family)} learnt "
            f"the shapes: {names[top.key]} closes {learnt[0][1]:.0%} of the gap between chance and {source} on "
            f"the non-black validation images, while the best of the {_join([_family(r.family) for r, _ in failed])} "
            f"closes at most {max(0.0, max(share for _, share in failed)):.0%}. "
            f"The headline validation mAP hides this: {names[bottom.key]} scores {_fmt(bottom_all)} over all images "
            f"but {_fmt(bottom_nb)} on the non-black ones, so "
            + ("what lifts it over all images is the black images, answered with their labels' base rates, not "
               "the shapes. " if bottom_all > bottom_nb else "its score owes nothing to the shapes. ")
            + "Looking at the non-black images and at chance beside every score is what told these apart."
        )
        candidates.append((size, text))
    for _, row in effects.iterrows():
        change_nb, change_all = row["change val mAP (non-black)"], row["change val mAP"]
        if math.isnan(change_nb) or math.isnan(change_all):
            continue
        size = max(abs(change_nb), abs(change_all))
        where = (
            "almost all of it over all images rather than on the non-black ones, i.e. on the black images, "
            "whose labels are random and only their base rates can be learnt"
            if abs(change_all) - abs(change_nb) > NEGLIGIBLE_MAP_CHANGE
            else "on the images that carry a shape as much as over all images"
        )
        text = (
            f"**{row['setting']} matters most.** Changing it from {row['from']} to {row['to']} ({row['models']}) "
            f"moved validation mAP by {_signed(change_all)} ({_signed(change_nb)} on the non-black images): "
            f"{where}."
        )
        candidates.append((size, text))
    if not candidates:
        text = describe_ranking(best, names, runs)
    else:
        text = max(candidates, key=lambda candidate: candidate[0])[1]
    top = best[0]
    if source == "the oracle":
        distance = achievable - _number(top.metrics["val"]["non_black"]["map"])
        if distance < NEGLIGIBLE_MAP_CHANGE:
            reach = (
                f"is within {distance:.3f} of the oracle"
                if distance > 0
                else f"matches the oracle ({_fmt(_number(top.metrics['val']['non_black']['map']))} against {_fmt(achievable)})"
            )
            text += (
                f" And the best model, {names[top.key]}, {reach} on the "
                "non-black images: what it still gets wrong there is the label noise of the data (labels flipped at "
                "random, which no model can predict), not the network."
            )
    return text

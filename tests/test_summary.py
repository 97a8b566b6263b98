"""The summary of notebook 08: run names, yardsticks, one-setting effects and the sentences built from them."""

from __future__ import annotations

import numpy as np
import pytest

from contest_study.registry import Registry, best_per_family, save_predictions
from contest_study.summary import (
    StudyRuns,
    achievable_map,
    chance_map,
    describe_holdout,
    describe_ranking,
    describe_what_worked,
    distinct_names,
    gap_closed,
    most_interesting_insight,
    one_factor_effects,
    require_runs,
)

LABELS = ["label_1", "label_2", "label_3"]


def _scores(mean_ap: float, n_images: int = 100) -> dict:
    # Positive rates 0.4, 0.3, 0.2: chance mAP 0.3.
    return {"ap": {label: mean_ap for label in LABELS}, "map": mean_ap, "n_images": n_images,
            "positives": {"label_1": 40, "label_2": 30, "label_3": 20}}


def add(registry, model, family, *, val_all, val_non_black, holdout=None, oracle=0.9, **hyperparams):
    def run(workdir):
        save_predictions(workdir, val_ids=np.array(["v"]))
        metrics = {
            "val": {"all": _scores(val_all), "non_black": _scores(val_non_black)},
            "holdout": {"all": _scores(holdout if holdout is not None else val_all),
                        "non_black": _scores(val_non_black)},
        }
        return {"label_names": LABELS, "metrics": metrics, "thresholds": {label: 0.5 for label in LABELS},
                "oracle": None if oracle is None else {"val": {"all": _scores(0.8), "non_black": _scores(oracle)}},
                "params": 1000, "wall_time_s": 1.0, "profile": "smoke"}

    settings = {"learning_rate": 0.001, "black_images": "removed", "architecture": model, **hyperparams}
    return registry.fetch_or_run(model=model, family=family, hyperparams=settings, data_fingerprint="d", seed=0,
                                 run_fn=run)


@pytest.fixture
def registry(tmp_path):
    registry = Registry(tmp_path / "runs")
    add(registry, "cnn_1e", "cnn", val_all=0.75, val_non_black=0.85)
    add(registry, "cnn_1e", "cnn", val_all=0.80, val_non_black=0.86, black_images="kept")
    add(registry, "cnn_1a", "cnn", val_all=0.60, val_non_black=0.70)
    add(registry, "fc_3a", "fully_connected", val_all=0.45, val_non_black=0.31)
    add(registry, "fc_3a", "fully_connected", val_all=0.44, val_non_black=0.30, learning_rate=0.1)
    add(registry, "knn", "classical", val_all=0.46, val_non_black=0.33)
    return registry


def test_distinct_names_say_how_runs_of_one_model_differ(registry):
    names = sorted(distinct_names(registry.records()).values())
    assert names == ["cnn_1a", "cnn_1e", "cnn_1e (black images kept)", "fc_3a", "fc_3a [lr 0.1]", "knn"]


def test_yardsticks(registry):
    records = registry.records()
    assert achievable_map(records) == (0.9, "the oracle")
    best_cnn = max(records, key=lambda record: record.metrics["val"]["all"]["map"])
    assert chance_map(best_cnn) == pytest.approx(0.3)
    assert gap_closed(best_cnn, 0.9) == pytest.approx((0.86 - 0.3) / 0.6)


def test_one_factor_effects_orient_from_the_usual_setting(registry):
    effects = one_factor_effects(registry.records()).set_index("setting")
    assert set(effects.index) == {"black_images", "learning_rate"}
    black = effects.loc["black_images"]
    assert (black["from"], black["to"], black["pairs"], black["models"]) == ("removed", "kept", 1, "cnn_1e")
    assert black["change val mAP"] == pytest.approx(0.05)
    assert black["change val mAP (non-black)"] == pytest.approx(0.01)
    assert effects.loc["learning_rate", "to"] == "0.1"


def test_sentences_follow_the_numbers(registry):
    records = registry.records()
    runs = StudyRuns(records=records, left_out=[])
    best = best_per_family(records)
    names = distinct_names(records)
    effects = one_factor_effects(records)

    ranking = describe_ranking(best, names, runs)
    assert ranking.startswith("The best model of the study is **cnn_1e (black images kept)**")
    assert "0.800" in ranking and "knn (classical references, 0.460, -0.340)" in ranking

    worked = describe_what_worked(best, effects, runs, names)
    worked_part, failed_part = worked.split("**What did not work**")
    assert "**Convolutional networks**" in worked_part and "93%" in worked_part
    assert "**Fully connected networks**" in failed_part and "**Classical references**" in failed_part
    assert "learning_rate" in failed_part and "it hurt" in failed_part

    insight = most_interesting_insight(best, effects, runs, names)
    assert insight.startswith("**The kind of model decides.** Only the convolutional networks learnt the shapes")
    assert "knn scores 0.460 over all images but 0.330 on the non-black ones" in insight


def test_sentences_without_an_oracle_and_without_runs(tmp_path):
    registry = Registry(tmp_path / "runs")
    add(registry, "cnn_1e", "cnn", val_all=0.7, val_non_black=0.8, holdout=0.6, oracle=None)
    records = registry.records()
    runs = StudyRuns(records=records, left_out=[])
    assert "oracle" not in describe_ranking(records, distinct_names(records), runs)
    assert describe_holdout(__import__("pandas").DataFrame({"val mAP": [0.7], "holdout mAP": [0.6]})).startswith(
        "Over the 1 runs, validation mAP is higher by 0.100")
    with pytest.raises(RuntimeError, match="run notebooks 02-07 first"):
        require_runs(StudyRuns(records=[], left_out=records))

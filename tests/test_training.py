"""The training engine: config, input pipeline, schedules, callbacks, and whole experiments."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import pytest

from contest_study import training
from contest_study.config import PROFILES, Profile
from contest_study.data import Split, black_mask, load_contest
from contest_study.registry import Registry
from contest_study.training import (
    TrainConfig,
    build_optimizer,
    config_for_profile,
    fit,
    make_dataset,
    run_experiment,
)

TINY = TrainConfig(epochs=1, batch_size=16, patience=1)


def _split(name: str, n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    return Split(
        name=name,
        ids=np.array([f"{name}{i:04d}.png" for i in range(n)]),
        images=rng.random((n, 64, 64, 1), dtype=np.float32),
        labels=rng.integers(0, 2, (n, 3)).astype(np.int8),
    )


@pytest.fixture(scope="module")
def splits():
    return _split("train", 64, 0), _split("val", 32, 1)


def _tiny_model(trainable: bool = True) -> keras.Model:
    inputs = keras.Input((64, 64, 1))
    x = keras.layers.AveragePooling2D(8)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, activation="sigmoid", name="labels")(x)
    model = keras.Model(inputs, outputs)
    model.trainable = trainable
    return model


# ----------------------------------------------------------------------------- TrainConfig


def test_config_defaults_and_hyperparams():
    config = TrainConfig()
    assert (config.optimizer, config.loss, config.train_metric) == ("adam", "binary_crossentropy", "accuracy")
    assert config.lr_schedule == "plateau" and config.output_activation == "sigmoid"
    hp = config.as_hyperparams()
    assert hp["learning_rate"] == 1e-3
    assert set(hp) == {f for f in TrainConfig.__dataclass_fields__}


def test_config_normalises_what_would_split_one_run_into_two_keys():
    a = TrainConfig(learning_rate=1)
    b = TrainConfig(learning_rate=1.0)
    assert a == b and hash(a) == hash(b)
    assert a.as_hyperparams() == b.as_hyperparams()
    assert isinstance(a.learning_rate, float)


@pytest.mark.parametrize(
    "field, value",
    [
        ("epochs", 0),
        ("epochs", 2.5),
        ("epochs", True),
        ("batch_size", 0),
        ("patience", -1),
        ("learning_rate", 0.0),
        ("learning_rate", float("nan")),
        ("learning_rate", "fast"),
        ("optimizer", "rmsprop"),
        ("loss", "mse"),
        ("train_metric", "auc"),
        ("lr_schedule", "cyclic"),
        ("output_activation", "relu"),
    ],
)
def test_config_refuses_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig(**{field: value})


def test_config_for_profile_takes_epochs_batch_and_patience_from_the_profile():
    smoke = PROFILES["smoke"]
    config = config_for_profile("smoke", learning_rate=3e-4)
    assert (config.epochs, config.batch_size, config.patience) == (
        smoke.max_epochs,
        smoke.batch_size,
        smoke.early_stopping_patience,
    )
    assert config.learning_rate == 3e-4
    assert config_for_profile(PROFILES["default"]).epochs == PROFILES["default"].max_epochs == 80
    assert config_for_profile("default", epochs=3).epochs == 3
    with pytest.raises(ValueError, match="lerning_rate"):
        config_for_profile("default", lerning_rate=1e-3)
    with pytest.raises(ValueError, match="unknown profile"):
        config_for_profile("huge")


# ----------------------------------------------------------------------------- input pipeline


def _epoch_labels(dataset) -> np.ndarray:
    return np.concatenate([labels.numpy() for _, labels in dataset])


def test_make_dataset_batches_and_shuffles_reproducibly(splits):
    train, _ = splits
    dataset = make_dataset(train.images, train.labels, 16, shuffle=True, seed=3)
    first_epoch, second_epoch = _epoch_labels(dataset), _epoch_labels(dataset)
    again = _epoch_labels(make_dataset(train.images, train.labels, 16, shuffle=True, seed=3))
    assert first_epoch.shape == (64, 3) and first_epoch.dtype == np.float32
    np.testing.assert_array_equal(first_epoch, again)  # same seed, same order
    assert not np.array_equal(first_epoch, second_epoch)  # reshuffled every epoch
    np.testing.assert_array_equal(np.sort(first_epoch, axis=0), np.sort(train.labels.astype(np.float32), axis=0))
    images, _ = next(iter(dataset))
    assert images.shape == (16, 64, 64, 1)

    ordered = make_dataset(train.images, None, 64, shuffle=False)
    np.testing.assert_array_equal(next(iter(ordered)).numpy(), train.images)


def test_make_dataset_refuses_bad_input(splits):
    train, _ = splits
    with pytest.raises(ValueError, match="seed"):
        make_dataset(train.images, train.labels, 16, shuffle=True, seed=None)
    with pytest.raises(ValueError, match="labels"):
        make_dataset(train.images, train.labels[:10], 16, shuffle=False)
    with pytest.raises(ValueError, match="images"):
        make_dataset(train.images[0], None, 16, shuffle=False)
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(train.images, None, 0, shuffle=False)


# ----------------------------------------------------------------------------- optimizer


def _rate(optimizer, step: int) -> float:
    rate = optimizer._learning_rate
    return float(rate(step)) if callable(rate) else float(rate)


def test_learning_rate_schedules_follow_the_documented_shapes():
    steps = 10
    constant = build_optimizer(TrainConfig(lr_schedule="constant"))
    assert _rate(constant, 0) == pytest.approx(1e-3)
    exponential = build_optimizer(TrainConfig(lr_schedule="exponential"), steps)
    assert _rate(exponential, steps) == pytest.approx(1e-3 * training.EXPONENTIAL_DECAY_PER_EPOCH)
    warmup = build_optimizer(TrainConfig(lr_schedule="warmup_decay", epochs=5), steps)
    assert _rate(warmup, 0) == pytest.approx(1e-4)
    assert _rate(warmup, steps) == pytest.approx(1e-3)  # the warm-up ends after one epoch
    assert _rate(warmup, 5 * steps) == pytest.approx(1e-5)  # then decays to 1%
    sgd = build_optimizer(TrainConfig(optimizer="sgd"))
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == training.SGD_MOMENTUM
    with pytest.raises(ValueError, match="steps_per_epoch"):
        build_optimizer(TrainConfig(lr_schedule="exponential"))


# ----------------------------------------------------------------------------- fit


def test_fit_writes_weights_log_and_tensorboard(splits, tmp_path):
    train, val = splits
    keras.utils.set_random_seed(0)
    model = _tiny_model()
    outcome = fit(model, train, val, TrainConfig(epochs=2, batch_size=16, patience=5), tmp_path, seed=0, verbose=0)
    assert outcome["epochs_run"] == 2  # the cap on epochs comes from the config
    assert outcome["params"] == model.count_params()
    assert outcome["wall_time_s"] > 0
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(outcome["history"])
    assert all(len(values) == 2 for values in outcome["history"].values())
    assert (tmp_path / "best.weights.h5").is_file()
    assert (tmp_path / "history.csv").read_text().startswith("epoch,")
    assert any((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (tmp_path / "backup").exists()  # removed once training finished
    # The weights file holds the model's final (best) weights.
    reloaded = _tiny_model()
    reloaded.load_weights(tmp_path / "best.weights.h5")
    for kept, loaded in zip(model.get_weights(), reloaded.get_weights()):
        np.testing.assert_array_equal(kept, loaded)


@pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")
def test_early_stopping_ends_training_after_patience_epochs_without_progress(splits, tmp_path):
    train, val = splits
    # A frozen model cannot improve its validation loss: training stops after 1 + patience epochs.
    config = TrainConfig(epochs=10, patience=2)
    outcome = fit(_tiny_model(trainable=False), train, val, config, tmp_path, seed=0, verbose=0)
    assert outcome["epochs_run"] == 3


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_epoch: int):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt


class _EpochRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_an_interrupted_fit_resumes_after_its_last_finished_epoch(splits, tmp_path):
    train, val = splits
    config = TrainConfig(epochs=3, batch_size=32, patience=5)
    with pytest.raises(KeyboardInterrupt):
        fit(_tiny_model(), train, val, config, tmp_path, seed=0, verbose=0, extra_callbacks=[_Interrupt(2)])
    assert (tmp_path / "backup").is_dir()
    recorder = _EpochRecorder()
    outcome = fit(_tiny_model(), train, val, config, tmp_path, seed=0, verbose=0, extra_callbacks=[recorder])
    assert recorder.epochs == [2]  # only the missing epoch was trained
    assert outcome["epochs_run"] == 3  # the history still has all of them
    assert not (tmp_path / "backup").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        {"lr_schedule": "constant"},
        {"lr_schedule": "exponential"},
        {"lr_schedule": "warmup_decay"},
        {"lr_schedule": "plateau", "optimizer": "sgd"},
        # The documented failed approach: softmax head, categorical cross-entropy, F1 as training metric.
        {"loss": "categorical_crossentropy", "output_activation": "softmax", "train_metric": "f1"},
    ],
)
def test_every_schedule_loss_and_metric_trains_one_epoch(splits, tmp_path, overrides):
    train, val = splits
    config = TrainConfig(epochs=1, batch_size=32, **overrides)
    outcome = fit(_tiny_model(), train, val, config, tmp_path, seed=0, verbose=0)
    assert outcome["epochs_run"] == 1
    metric = "f1" if config.train_metric == "f1" else "accuracy"
    assert math.isfinite(outcome["history"][f"val_{metric}"][0])
    assert ("learning_rate" in outcome["history"]) == (config.lr_schedule == "plateau")


def test_fit_refuses_a_split_without_labels(splits, tmp_path):
    train, val = splits
    unlabelled = Split("test", val.ids, val.images, None)
    with pytest.raises(ValueError, match="val_split.*no labels"):
        fit(_tiny_model(), train, unlabelled, TINY, tmp_path, seed=0, verbose=0)


# ----------------------------------------------------------------------------- run_experiment


@pytest.fixture
def contest(make_contest_folder):
    folder = make_contest_folder(n_train=72, n_val=24, n_holdout=24, n_test=8)
    return load_contest(folder)


def _perfect_oracle(data):
    return {"val": data.val.labels.astype(float), "holdout": data.holdout.labels.astype(float)}


def build_small_cnn(input_shape, n_labels):
    """A notebook-style builder: a named network whose output layer is "labels"."""
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(n_labels, activation="sigmoid", name="labels")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def build_other_cnn(input_shape, n_labels):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(n_labels, activation="sigmoid", name="labels")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def _run(registry, data, **options):
    arguments = {"build": build_small_cnn, "family": "cnn", "config": TINY, "seed": 0, "verbose": 0, **options}
    return run_experiment(registry, data, **arguments)


def test_run_experiment_stores_a_complete_record_and_reuses_it(contest, tmp_path, monkeypatch):
    registry = Registry(tmp_path / "runs")
    caps = Profile(name="tiny", max_train_images=40, max_eval_images=16, max_epochs=1)
    record = _run(registry, contest, seed=7, oracle=_perfect_oracle(contest), profile=caps, description="tiny CNN")
    data = record.data
    assert record.model == "small_cnn" and record.family == "cnn"
    assert data["description"] == "tiny CNN"
    assert data["profile"] == "tiny" and data["black_images"] == "removed"
    assert data["n_train_images"] == 40
    assert data["epochs_run"] == 1 and data["wall_time_s"] > 0
    assert data["params"] == build_small_cnn((64, 64, 1), 3).count_params()
    assert set(data["history"]) >= {"loss", "val_loss"}
    assert record.hyperparams["architecture"] == training.architecture_fingerprint(
        training.build_for_run(build_small_cnn, (64, 64, 1), 3, seed=0)
    )
    assert record.hyperparams["fit_recipe"] == "engine"
    for split in ("val", "holdout"):
        for subset in ("all", "non_black"):
            scores = record.metrics[split][subset]
            assert set(scores["ap"]) == set(contest.label_names)
            assert {"map", "f1_macro_tuned", "accuracy_at_0.5"} <= set(scores)
        assert record.metrics[split]["all"]["n_images"] == 16
        # The oracle follows the subsample: a perfect oracle still scores a perfect mAP.
        assert record.oracle[split]["all"]["map"] == pytest.approx(1.0)
    assert set(record.thresholds) == set(contest.label_names)

    predictions = record.predictions()
    assert predictions["val_score"].shape == (16, 3)
    rows = {image_id: row for row, image_id in enumerate(contest.val.ids)}
    chosen = [rows[image_id] for image_id in predictions["val_ids"]]
    np.testing.assert_array_equal(predictions["val_true"], contest.val.labels[chosen])
    np.testing.assert_array_equal(predictions["val_is_black"], black_mask(contest.val.images[chosen]))
    np.testing.assert_array_equal(predictions["test_ids"], contest.test.ids)  # the test split is never capped
    for name in ("best.weights.h5", "history.csv", "tensorboard", "model.json"):
        assert (record.path / name).exists()

    def no_training(*args, **kwargs):
        raise AssertionError("a stored run must not be trained again")

    monkeypatch.setattr(training, "fit", no_training)
    again = _run(registry, contest, seed=7, oracle=_perfect_oracle(contest), profile=caps, description="tiny CNN")
    assert again.key == record.key and again.data == record.data


def test_the_saved_architecture_rebuilds_the_network_with_its_weights(contest, tmp_path):
    record = _run(Registry(tmp_path / "runs"), contest)
    rebuilt = training.model_from_record(record, weights=True)
    assert rebuilt.to_json() == training.build_for_run(build_small_cnn, (64, 64, 1), 3, seed=0).to_json()
    scores = rebuilt.predict(contest.val.images, verbose=0)
    predictions = record.predictions()
    rows = {image_id: row for row, image_id in enumerate(contest.val.ids)}
    non_black = ~predictions["val_is_black"].astype(bool)
    chosen = [rows[image_id] for image_id in predictions["val_ids"][non_black]]
    np.testing.assert_allclose(scores[chosen], predictions["val_score"][non_black], atol=1e-5)
    # A later notebook retrains the same architecture from the record: the same key.
    again = _run(Registry(tmp_path / "runs"), contest, build=training.builder_from_record(record))
    assert again.key == record.key


def test_the_key_follows_the_architecture_the_settings_and_a_notebooks_recipe(contest, tmp_path):
    registry = Registry(tmp_path / "runs")
    first = _run(registry, contest)
    other_network = _run(registry, contest, build=build_other_cnn)
    other_settings = _run(registry, contest, config=dataclasses.replace(TINY, learning_rate=1e-2))

    def compile_and_fit(model, train_data, val_data, run):
        model.compile(optimizer="adam", loss="binary_crossentropy")
        callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=1)]
        return model.fit(train_data, validation_data=val_data, epochs=1, verbose=0,
                         callbacks=callbacks + run.callbacks(callbacks))

    recipe = _run(registry, contest, fit_recipe=compile_and_fit)
    assert len({first.key, other_network.key, other_settings.key, recipe.key}) == 4
    assert recipe.hyperparams["fit_recipe"] != "engine"
    assert (recipe.path / "history.csv").exists() and recipe.data["epochs_run"] == 1
    assert recipe.data["best_epoch"] == 1 and recipe.data["stopped_because"] == "epoch cap"


def test_same_seed_same_metrics(contest, tmp_path):
    first = _run(Registry(tmp_path / "a"), contest, seed=3)
    second = _run(Registry(tmp_path / "b"), contest, seed=3)
    assert first.key == second.key
    for split in ("val", "holdout"):
        for label, ap in first.metrics[split]["all"]["ap"].items():
            assert second.metrics[split]["all"]["ap"][label] == pytest.approx(ap, abs=1e-5)
    np.testing.assert_allclose(first.predictions()["val_score"], second.predictions()["val_score"], atol=1e-5)


def test_kept_black_images_three_channels_and_a_label_budget_are_other_runs(contest, tmp_path, monkeypatch):
    monitored = []

    def watching_fit(model, train_split, val_split, *args, **kwargs):
        monitored.append(black_mask(val_split.images).sum())
        return fit(model, train_split, val_split, *args, **kwargs)

    monkeypatch.setattr(training, "fit", watching_fit)
    registry = Registry(tmp_path / "runs")
    removed = _run(registry, contest)
    kept = _run(registry, contest, black_images="kept")
    assert removed.key != kept.key
    n_black = int(black_mask(contest.train.images).sum())
    assert kept.data["n_train_images"] == len(contest.train)
    assert removed.data["n_train_images"] == len(contest.train) - n_black + 1  # one black image is kept
    # Early stopping watches validation images of the kind trained on; scores cover all of them.
    n_val_black = int(black_mask(contest.val.images).sum())
    assert monitored == [0, n_val_black]
    assert removed.metrics["val"]["all"]["n_images"] == kept.metrics["val"]["all"]["n_images"] == len(contest.val)
    rgb = _run(registry, contest, input_channels=3)
    assert rgb.hyperparams["input_channels"] == 3 and rgb.data["input_channels"] == 3
    assert rgb.predictions()["holdout_score"].shape == (len(contest.holdout), 3)
    budget = _run(registry, contest, train_fraction=0.5)
    assert budget.data["n_train_images"] == round(0.5 * removed.data["n_train_images"])
    assert len({removed.key, kept.key, rgb.key, budget.key}) == 4


def test_a_softmax_head_changes_only_the_output_activation(contest, tmp_path):
    sigmoid = training.build_for_run(build_small_cnn, (64, 64, 1), 3, seed=0)
    softmax = training.build_for_run(build_small_cnn, (64, 64, 1), 3, seed=0, output_activation="softmax")
    assert softmax.get_layer("labels").activation.__name__ == "softmax"
    assert softmax.count_params() == sigmoid.count_params()

    def no_labels_layer(input_shape, n_labels):
        inputs = keras.Input(shape=input_shape)
        return keras.Model(inputs, keras.layers.Dense(n_labels)(keras.layers.Flatten()(inputs)), name="anonymous")

    with pytest.raises(ValueError, match="no output layer named 'labels'"):
        training.build_for_run(no_labels_layer, (64, 64, 1), 3, seed=0, output_activation="softmax")


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"black_images": "some"}, ValueError, "black_images"),
        ({"input_channels": 2}, ValueError, "input_channels"),
        ({"config": {"epochs": 1}}, TypeError, "TrainConfig"),
        ({"oracle": {"val": np.zeros((3, 3))}}, ValueError, "oracle"),
        ({"oracle": "oracle"}, ValueError, "oracle"),
        ({"profile": "huge"}, ValueError, "unknown profile"),
        ({"train_fraction": 0}, ValueError, "train_fraction"),
        ({"build": lambda input_shape, n_labels: "not a model"}, TypeError, "must return a keras.Model"),
    ],
)
def test_run_experiment_refuses_bad_options_before_training(contest, tmp_path, options, error, message):
    with pytest.raises(error, match=message):
        _run(Registry(tmp_path / "runs"), contest, **options)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_oracle_of_the_wrong_size_is_refused(contest, tmp_path):
    oracle = _perfect_oracle(contest)
    oracle["holdout"] = oracle["holdout"][:-1]
    with pytest.raises(ValueError, match="oracle\\['holdout'\\]"):
        _run(Registry(tmp_path), contest, oracle=oracle)

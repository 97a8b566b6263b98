"""The training engine: config, input pipeline, schedules, callbacks, and whole experiments."""

from __future__ import annotations

import dataclasses
import hashlib
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
    experiment_hyperparams,
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
    assert hp["learning_rate"] == 1e-3 and hp["model_options"] == {}
    assert set(hp) == {f for f in TrainConfig.__dataclass_fields__}


def test_config_normalises_what_would_split_one_run_into_two_keys():
    a = TrainConfig(learning_rate=1, model_options={"units": 32, "dropout": 0.5})
    b = TrainConfig(learning_rate=1.0, model_options={"dropout": 0.5, "units": 32})
    assert a == b and hash(a) == hash(b)
    assert a.as_hyperparams() == b.as_hyperparams()
    assert a.as_hyperparams()["model_options"] == {"dropout": 0.5, "units": 32}
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
        ("augment", "yes"),
        ("model_options", 3),
        ("model_options", {"augment": True}),
    ],
)
def test_config_refuses_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig(**{field: value})


def test_config_for_profile_takes_epochs_batch_and_patience_from_the_profile():
    smoke = PROFILES["smoke"]
    config = config_for_profile("smoke", learning_rate=3e-4, augment=True)
    assert (config.epochs, config.batch_size, config.patience) == (
        smoke.max_epochs,
        smoke.batch_size,
        smoke.early_stopping_patience,
    )
    assert config.learning_rate == 3e-4 and config.augment
    assert config_for_profile(PROFILES["default"]).epochs == PROFILES["default"].max_epochs == 40
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


def test_run_experiment_stores_a_complete_record_and_reuses_it(contest, tmp_path, monkeypatch):
    registry = Registry(tmp_path / "runs")
    caps = Profile(name="tiny", max_train_images=40, max_eval_images=16, max_epochs=1)
    record = run_experiment(
        registry,
        contest,
        model_name="cnn_1a",
        config=TINY,
        seed=7,
        oracle=_perfect_oracle(contest),
        profile=caps,
        verbose=0,
    )
    data = record.data
    assert record.model == "cnn_1a" and record.family == "cnn"
    assert data["description"] == training.get_model_spec("cnn_1a").description
    assert data["profile"] == "tiny" and data["black_images"] == "removed"
    assert data["n_train_images"] == 40
    assert data["epochs_run"] == 1 and data["wall_time_s"] > 0
    assert data["params"] == training.get_model_spec("cnn_1a").builder().count_params()
    assert set(data["history"]) >= {"loss", "val_loss"}
    assert record.hyperparams == experiment_hyperparams(TINY, model_name="cnn_1a", profile=caps)
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
    assert ((predictions["val_score"] >= 0) & (predictions["val_score"] <= 1)).all()
    rows = {image_id: row for row, image_id in enumerate(contest.val.ids)}
    chosen = [rows[image_id] for image_id in predictions["val_ids"]]
    np.testing.assert_array_equal(predictions["val_true"], contest.val.labels[chosen])
    np.testing.assert_array_equal(predictions["val_is_black"], black_mask(contest.val.images[chosen]))
    np.testing.assert_array_equal(predictions["test_ids"], contest.test.ids)  # the test split is never capped
    for name in ("best.weights.h5", "history.csv", "tensorboard"):
        assert (record.path / name).exists()

    def no_training(*args, **kwargs):
        raise AssertionError("a stored run must not be trained again")

    monkeypatch.setattr(training, "fit", no_training)
    again = run_experiment(
        registry,
        contest,
        model_name="cnn_1a",
        config=TINY,
        seed=7,
        oracle=_perfect_oracle(contest),
        profile=caps,
        verbose=0,
    )
    assert again.key == record.key and again.data == record.data


def test_same_seed_same_metrics(contest, tmp_path):
    # Augmentation and dropout on: their random draws must follow the seed too.
    config = TrainConfig(epochs=1, batch_size=16, augment=True)
    first = run_experiment(Registry(tmp_path / "a"), contest, model_name="cnn_1a", config=config, seed=3, verbose=0)
    second = run_experiment(Registry(tmp_path / "b"), contest, model_name="cnn_1a", config=config, seed=3, verbose=0)
    assert first.key == second.key
    for split in ("val", "holdout"):
        for label, ap in first.metrics[split]["all"]["ap"].items():
            assert second.metrics[split]["all"]["ap"][label] == pytest.approx(ap, abs=1e-5)
    np.testing.assert_allclose(first.predictions()["val_score"], second.predictions()["val_score"], atol=1e-5)
    for name, values in first.data["history"].items():
        np.testing.assert_allclose(second.data["history"][name], values, atol=1e-5)


def test_kept_black_images_and_three_channels_are_other_runs(contest, tmp_path, monkeypatch):
    monitored = []

    def watching_fit(model, train_split, val_split, *args, **kwargs):
        monitored.append(black_mask(val_split.images).sum())
        return fit(model, train_split, val_split, *args, **kwargs)

    monkeypatch.setattr(training, "fit", watching_fit)
    registry = Registry(tmp_path / "runs")
    removed = run_experiment(registry, contest, model_name="cnn_1a", config=TINY, seed=0, verbose=0)
    kept = run_experiment(registry, contest, model_name="cnn_1a", config=TINY, seed=0, black_images="kept", verbose=0)
    assert removed.key != kept.key
    n_black = int(black_mask(contest.train.images).sum())
    assert kept.data["n_train_images"] == len(contest.train)
    assert removed.data["n_train_images"] == len(contest.train) - n_black + 1  # one black image is kept
    # Early stopping watches validation images of the kind trained on; scores cover all of them.
    n_val_black = int(black_mask(contest.val.images).sum())
    assert monitored == [0, n_val_black]
    assert removed.data["n_monitored_val_images"] == len(contest.val) - n_val_black
    assert kept.data["n_monitored_val_images"] == len(contest.val)
    assert removed.metrics["val"]["all"]["n_images"] == kept.metrics["val"]["all"]["n_images"] == len(contest.val)
    rgb = run_experiment(registry, contest, model_name="cnn_1a", config=TINY, seed=0, input_channels=3, verbose=0)
    assert rgb.hyperparams["input_channels"] == 3 and rgb.data["input_channels"] == 3
    assert rgb.predictions()["holdout_score"].shape == (len(contest.holdout), 3)
    assert len({removed.key, kept.key, rgb.key}) == 3


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"model_name": "cnn_9"}, ValueError, "unknown model"),
        ({"black_images": "some"}, ValueError, "black_images"),
        ({"input_channels": 2}, ValueError, "input_channels"),
        ({"config": {"epochs": 1}}, TypeError, "TrainConfig"),
        ({"oracle": {"val": np.zeros((3, 3))}}, ValueError, "oracle"),
        ({"oracle": "oracle"}, ValueError, "oracle"),
        ({"profile": "huge"}, ValueError, "unknown profile"),
    ],
)
def test_run_experiment_refuses_bad_options_before_training(contest, tmp_path, options, error, message):
    arguments = {"model_name": "fc_3a", "config": TINY, "seed": 0, **options}
    with pytest.raises(error, match=message):
        run_experiment(Registry(tmp_path / "runs"), contest, **arguments)
    assert not (tmp_path / "runs").exists()


def test_oracle_of_the_wrong_size_is_refused(contest, tmp_path):
    oracle = _perfect_oracle(contest)
    oracle["holdout"] = oracle["holdout"][:-1]
    with pytest.raises(ValueError, match="oracle\\['holdout'\\]"):
        run_experiment(Registry(tmp_path), contest, model_name="fc_3a", config=TINY, seed=0, oracle=oracle)


def test_architecture_fingerprint_is_stable_and_follows_the_network():
    config = TrainConfig()
    first = training.architecture_fingerprint("cnn_1a", config)
    assert training.architecture_fingerprint("cnn_1a", config) == first
    assert training.architecture_fingerprint("cnn_1b", config) != first
    assert training.architecture_fingerprint("cnn_1a", TrainConfig(model_options={"dropout": 0.1})) != first


def test_architecture_fingerprint_builds_each_architecture_once(monkeypatch):
    spec = training.get_model_spec("fc_3a")
    built = []

    def counting_builder(**arguments):
        built.append(arguments)
        return spec.builder(**arguments)

    monkeypatch.setattr(training, "get_model_spec", lambda name: dataclasses.replace(spec, builder=counting_builder))
    config = TrainConfig()
    first = training.architecture_fingerprint("fc_3a", config)
    # Training settings do not change the network: looked up again, it is not rebuilt.
    for other in (TrainConfig(epochs=3, learning_rate=1e-2, optimizer="sgd", batch_size=32), config):
        assert training.architecture_fingerprint("fc_3a", other) == first
    assert len(built) == 1
    # The value is the hash of the network's Keras config, as computed without the cache.
    keras.backend.clear_session()
    model = spec.builder(input_shape=(64, 64, 1), n_labels=3, augment=False, output_activation="sigmoid")
    assert first == hashlib.sha256(model.to_json().encode()).hexdigest()[:12]
    # Whatever changes the network gives another fingerprint, each built once.
    others = [
        training.architecture_fingerprint("fc_3a", TrainConfig(model_options={"dropout": 0.1})),
        training.architecture_fingerprint("fc_3a", TrainConfig(augment=True)),
        training.architecture_fingerprint("fc_3a", config, input_shape=(64, 64, 3)),
        training.architecture_fingerprint("fc_3a", config, n_labels=4),
    ]
    assert len({first, *others}) == 5 and len(built) == 5
    assert training.architecture_fingerprint("fc_3a", TrainConfig(model_options={"dropout": 0.1})) == others[0]
    assert len(built) == 5

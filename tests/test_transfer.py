"""contest_study.transfer: the frozen/fine-tuned switch, the ImageNet weights lookup and the registry records."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from contest_study import autoencoder, transfer
from contest_study.autoencoder import AutoencoderSettings, build_encoder
from conftest import tiny_study
from contest_study.training import TrainConfig, compile_model, make_dataset
from contest_study.transfer import TransferSettings

LABELS = ["label_1", "label_2", "label_3"]
TINY_AUTOENCODER = AutoencoderSettings(
    max_images=40, epochs=1, batch_size=16, patience=1, filters=(4, 4, 4), decoder_filters=(4, 4, 4),
    bottleneck_channels=2,
)
# Eager training steps, as in the smoke profile: tracing them would take most of these tests' time.
TINY = TransferSettings(
    frozen_epochs=1, fine_tune_epochs=2, backbone_frozen_epochs=1, backbone_fine_tune_epochs=1,
    backbone_max_train_images=16, hidden_units=8, eager_training=True,
)
ALPHA, SIZE = 0.35, 96


@pytest.fixture
def no_weights_anywhere(tmp_path, monkeypatch):
    """An empty Keras cache (home and KERAS_HOME in tmp_path) and no STUDY_IMAGENET_WEIGHTS."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.delenv(transfer.WEIGHTS_ENV, raising=False)
    return tmp_path


def _tiny_backbone_classifier(input_shape=(64, 64, 1), n_labels=3, *, alpha, image_size, weights_path=None,
                              dropout=0.3):
    """Stands in for MobileNetV2 (seconds instead of a minute) with the same nested "backbone" layer."""
    inputs = keras.Input(shape=input_shape)
    backbone = keras.Sequential([keras.layers.AveragePooling2D(8), keras.layers.Flatten()], name="backbone")
    outputs = keras.layers.Dense(n_labels, activation="sigmoid", name="labels")(backbone(inputs))
    return keras.Model(inputs, outputs)


def _weights(layer) -> list[np.ndarray]:
    return [np.array(weight) for weight in layer.get_weights()]


def _changed(before, after) -> bool:
    return any(not np.array_equal(a, b) for a, b in zip(before, after))


# ----------------------------------------------------------------------------- frozen / fine-tuned


def test_frozen_encoder_does_not_learn_and_fine_tuned_encoder_does():
    keras.utils.set_random_seed(0)
    model = transfer.build_encoder_classifier(build_encoder(filters=(4, 4, 4), bottleneck_channels=2), hidden_units=8)
    encoder, head = model.get_layer("encoder"), model.get_layer("labels")
    rng = np.random.default_rng(0)
    batch = make_dataset(rng.random((16, 64, 64, 1)), rng.integers(0, 2, (16, 3)), 16, shuffle=False)
    config = TrainConfig(epochs=1, batch_size=16, learning_rate=0.05)

    transfer.set_backbone_trainable(model, False)
    head_only = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    assert head_only == model.count_params() - encoder.count_params()
    encoder_before, head_before = _weights(encoder), _weights(head)
    compile_model(model, config).fit(batch, epochs=1, shuffle=False, verbose=0)
    assert not _changed(encoder_before, _weights(encoder))
    assert _changed(head_before, _weights(head))

    transfer.set_backbone_trainable(model, True)
    assert sum(int(np.prod(weight.shape)) for weight in model.trainable_weights) == model.count_params()
    encoder_before = _weights(encoder)
    compile_model(model, config).fit(batch, epochs=1, shuffle=False, verbose=0)
    assert _changed(encoder_before, _weights(encoder))


# ----------------------------------------------------------------------------- ImageNet weights


def test_missing_weights_are_reported_in_plain_words(no_weights_anywhere):
    lookup = transfer.find_imagenet_weights(ALPHA, SIZE)
    assert not lookup.found and lookup.fingerprint() is None
    assert lookup.searched[0] == no_weights_anywhere / "keras_home" / "models"
    message = lookup.message
    assert "No ImageNet weights were found" in message
    assert transfer.imagenet_weights_file_name(ALPHA, SIZE) in message
    assert transfer.RANDOM_INIT_LABEL in message and transfer.WEIGHTS_ENV in message


def test_weights_in_the_keras_cache_are_found_and_loaded(no_weights_anywhere):
    cache = no_weights_anywhere / "keras_home" / "models"
    cache.mkdir(parents=True)
    name = transfer.imagenet_weights_file_name(ALPHA, SIZE)
    assert name == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    # A stand-in for the real file: a randomly initialised backbone saved in Keras' legacy .h5 format.
    saved = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=ALPHA, include_top=False, weights=None)
    saved.save(cache / name)

    lookup = transfer.find_imagenet_weights(ALPHA, SIZE)
    assert lookup.found and lookup.source == "Keras cache" and lookup.path == cache / name
    assert "found" in lookup.message and "transfer learning" in lookup.message
    assert lookup.fingerprint()["file_name"] == name
    model = transfer.build_backbone_classifier(alpha=ALPHA, image_size=SIZE, weights_path=lookup.path)
    assert not _changed(_weights(saved), _weights(model.get_layer("backbone")))


def test_weights_at_the_path_of_the_option_are_used_first(no_weights_anywhere, monkeypatch):
    backbone = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=ALPHA, include_top=False,
                                              weights=None)
    path = no_weights_anywhere / "my_weights.weights.h5"
    backbone.save_weights(path)
    monkeypatch.setenv(transfer.WEIGHTS_ENV, str(path))
    lookup = transfer.find_imagenet_weights(ALPHA, SIZE)
    assert lookup.found and lookup.source == transfer.WEIGHTS_ENV and lookup.path == path
    assert transfer.find_imagenet_weights(ALPHA, SIZE, path=path).source == "path argument"

    monkeypatch.setenv(transfer.WEIGHTS_ENV, str(no_weights_anywhere / "nowhere.h5"))
    with pytest.raises(FileNotFoundError, match=f"{transfer.WEIGHTS_ENV} points to .*nowhere.h5"):
        transfer.find_imagenet_weights(ALPHA, SIZE)


def test_a_weights_file_that_does_not_fit_is_an_error_naming_it(tmp_path):
    garbage = tmp_path / "broken.h5"
    garbage.write_text("not an HDF5 file")
    with pytest.raises(ValueError, match="broken.h5"):
        transfer.build_backbone_classifier(alpha=ALPHA, image_size=SIZE, weights_path=garbage)


def test_settings_refuse_a_configuration_without_imagenet_weights():
    with pytest.raises(ValueError, match="ImageNet weights"):
        dataclasses.replace(TINY, backbone_image_size=64)
    with pytest.raises(ValueError, match="backbone_input_size .* >= 32"):
        dataclasses.replace(TINY, backbone_input_size=16)


def test_only_the_smoke_profile_resizes_to_another_side_than_the_weights():
    for name in ("default", "full"):
        settings = transfer.settings_for(name)
        assert settings.input_size == settings.backbone_image_size
    smoke = transfer.settings_for("smoke")
    assert (smoke.backbone_image_size, smoke.input_size) == (96, 32)
    assert transfer.settings_table(smoke).loc["backbone_input_size", "value"] == 32
    assert transfer.settings_table(transfer.settings_for("default")).loc["backbone_input_size", "value"] == 96


def test_imagenet_weights_fit_a_smaller_input_side(no_weights_anywhere):
    # No-top weights are convolutions only: the 96x96 file loads into the smoke profile's 32x32 network.
    path = no_weights_anywhere / transfer.imagenet_weights_file_name(ALPHA, SIZE)
    saved = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=ALPHA, include_top=False, weights=None)
    saved.save(path)
    model = transfer.build_backbone_classifier(alpha=ALPHA, image_size=32, weights_path=path)
    assert model.get_layer("backbone").input.shape[1:3] == (32, 32)
    assert not _changed(_weights(saved), _weights(model.get_layer("backbone")))
    with pytest.raises(ValueError, match="no transfer settings for profile 'huge'"):
        transfer.settings_for("huge")


# ----------------------------------------------------------------------------- registry records


def _assert_standard_classifier_record(record):
    assert set(record.metrics) == {"val", "holdout"}
    assert set(record.metrics["val"]["non_black"]["ap"]) == set(LABELS)
    assert set(record.thresholds) == set(LABELS)
    assert {"val_score", "holdout_score", "test_score"} <= set(record.predictions())
    assert record.weights_path is not None and not record.history.empty


def test_missing_weights_give_a_run_labelled_random_init(tmp_path, no_weights_anywhere, monkeypatch):
    monkeypatch.setattr(transfer, "build_backbone_classifier", _tiny_backbone_classifier)
    study = tiny_study(tmp_path / "study")
    runs = transfer.train_backbone_transfer(study, transfer.find_imagenet_weights(ALPHA, SIZE), settings=TINY,
                                            verbose=0)
    assert not tf.config.functions_run_eagerly()  # eager execution is switched off again after training
    assert list(runs) == ["random_init"]
    record = runs["random_init"]
    assert record.model == "mobilenetv2_random_init" and record.family == "from_scratch"
    assert transfer.RANDOM_INIT_LABEL in record.description
    assert record.data["initialisation"] == transfer.RANDOM_INIT_LABEL
    assert record.hyperparams["imagenet_weights"] is None
    assert record.data["n_train_images"] == 16  # the backbone's own cap on training images
    _assert_standard_classifier_record(record)
    table = study.table(runs.values())
    assert table.loc[0, "model"] == "mobilenetv2_random_init" and "random init" in table.loc[0, "description"]


def test_the_backbone_input_side_is_the_one_built_and_described(tmp_path, no_weights_anywhere, monkeypatch):
    sides = []

    def recording_builder(*args, image_size, **options):
        sides.append(image_size)
        return _tiny_backbone_classifier(*args, image_size=image_size, **options)

    monkeypatch.setattr(transfer, "build_backbone_classifier", recording_builder)
    study = tiny_study(tmp_path / "study")
    settings = dataclasses.replace(TINY, backbone_input_size=32)
    # The weights looked for are still those of the 96x96 configuration.
    record = transfer.train_backbone_transfer(study, transfer.find_imagenet_weights(ALPHA, SIZE), settings=settings,
                                              verbose=0)["random_init"]
    assert set(sides) == {32}
    assert record.hyperparams["image_size"] == 32 and "32x32 input" in record.description


def test_found_weights_give_frozen_then_fine_tuned_transfer_runs(tmp_path, no_weights_anywhere, monkeypatch):
    fake = no_weights_anywhere / "fake.h5"
    fake.write_bytes(b"stand-in weights")  # the stand-in builder does not read it; its hash goes into the key
    monkeypatch.setenv(transfer.WEIGHTS_ENV, str(fake))
    monkeypatch.setattr(transfer, "build_backbone_classifier", _tiny_backbone_classifier)
    study = tiny_study(tmp_path / "study")
    runs = transfer.train_backbone_transfer(study, transfer.find_imagenet_weights(ALPHA, SIZE), settings=TINY,
                                            verbose=0)
    assert [run.model for run in runs.values()] == ["mobilenetv2_imagenet_frozen", "mobilenetv2_imagenet_finetuned"]
    assert {run.family for run in runs.values()} == {"transfer"}
    assert all("random" not in run.description for run in runs.values())
    assert len(runs["frozen"].hyperparams["imagenet_weights"]["sha256"]) == 64
    assert runs["fine_tuned"].hyperparams["starts_from"] == runs["frozen"].key
    for record in runs.values():
        _assert_standard_classifier_record(record)


def test_encoder_transfer_runs_land_in_the_registry_and_are_reused(tmp_path):
    study = tiny_study(tmp_path)
    autoencoder_run = autoencoder.train_autoencoder(study, settings=TINY_AUTOENCODER, verbose=0)
    runs = transfer.train_encoder_transfer(study, autoencoder_run, settings=TINY, verbose=0)

    frozen, fine_tuned, scratch = runs["frozen"], runs["fine_tuned"], runs["from_scratch"]
    assert (frozen.family, fine_tuned.family, scratch.family) == ("transfer", "transfer", "from_scratch")
    assert frozen.hyperparams["autoencoder_run"] == autoencoder_run.key
    assert fine_tuned.hyperparams["starts_from"] == frozen.key
    assert fine_tuned.hyperparams["learning_rate"] < frozen.hyperparams["learning_rate"]
    # The same budget: the from-scratch run gets as many epochs as both stages together.
    assert scratch.hyperparams["epochs"] == TINY.frozen_epochs + TINY.fine_tune_epochs
    assert fine_tuned.data["epochs_run"] == frozen.data["epochs_run"] + fine_tuned.data["stage_epochs"][1]
    assert len(fine_tuned.history) == fine_tuned.data["epochs_run"]
    assert frozen.data["trainable_params"] < fine_tuned.data["trainable_params"] == fine_tuned.data["params"]
    assert frozen.data["n_train_images"] == scratch.data["n_train_images"]
    for record in runs.values():
        _assert_standard_classifier_record(record)
    assert len(study.table(runs.values())) == 3
    # The encoder really starts from the autoencoder's weights.
    frozen_model = transfer.build_encoder_classifier(
        build_encoder(filters=(4, 4, 4), bottleneck_channels=2), hidden_units=TINY.hidden_units
    )
    frozen_model.load_weights(frozen.weights_path)
    trained_encoder = autoencoder.load_autoencoder(autoencoder_run).get_layer("encoder")
    assert not _changed(_weights(trained_encoder), _weights(frozen_model.get_layer("encoder")))

    stamps = {record.key: record.record_file.stat().st_mtime_ns for record in runs.values()}
    again = transfer.train_encoder_transfer(study, autoencoder_run, settings=TINY, verbose=0)
    assert {record.key: record.record_file.stat().st_mtime_ns for record in again.values()} == stamps

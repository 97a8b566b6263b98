"""The architectures: every builder gives a trainable multi-label model with the agreed head."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from contest_study.data import black_mask
from contest_study.models import MODELS, ModelSpec, augmentation_block, get_model_spec

N_IMAGES = 8


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    images = rng.random((N_IMAGES, 64, 64, 1), dtype=np.float32)
    labels = rng.integers(0, 2, (N_IMAGES, 3)).astype(np.float32)
    return images, labels


def test_the_study_has_five_cnns_two_rnns_and_two_fully_connected_networks():
    families = [spec.family for spec in MODELS.values()]
    assert families.count("cnn") == 5
    assert families.count("rnn") == 2
    assert families.count("fully_connected") == 2
    for name, spec in MODELS.items():
        assert isinstance(spec, ModelSpec)
        assert spec.name == name
        assert spec.description
        assert spec.builder.__name__ == f"build_{name}"


@pytest.mark.parametrize("name", list(MODELS))
def test_builder_gives_a_sigmoid_head_that_trains(name, batch):
    images, labels = batch
    keras.utils.set_random_seed(0)
    model = MODELS[name].builder()
    head = model.get_layer("labels")
    assert head is model.layers[-1]
    assert head.activation is keras.activations.sigmoid
    assert model.input_shape == (None, 64, 64, 1)
    assert model.count_params() > 0

    scores = np.asarray(model(images, training=False))
    assert scores.shape == (N_IMAGES, 3)
    assert ((scores >= 0) & (scores <= 1)).all()
    # Independent labels: the scores of one image are not tied to sum to 1.
    assert not np.allclose(scores.sum(axis=1), 1.0)

    # Eagerly: tracing the training step of nine networks would cost more than the step itself.
    model.compile(optimizer="adam", loss="binary_crossentropy", run_eagerly=True)
    head_before = head.get_weights()[0].copy()
    loss = model.train_on_batch(images, labels)
    assert np.isfinite(loss)
    assert not np.array_equal(head.get_weights()[0], head_before)


@pytest.mark.parametrize("name", list(MODELS))
def test_softmax_switch_and_three_channels_and_augmentation(name, batch):
    images, _ = batch
    model = MODELS[name].builder(
        input_shape=(64, 64, 3), n_labels=4, output_activation="softmax", augment=True
    )
    assert model.input_shape == (None, 64, 64, 3)
    assert model.get_layer("labels").activation is keras.activations.softmax
    assert model.get_layer("augmentation") is not None
    scores = np.asarray(model(np.repeat(images, 3, axis=-1), training=False))
    assert scores.shape == (N_IMAGES, 4)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["rnn_lstm", "rnn_bigru"])
@pytest.mark.parametrize("channels", [1, 3])
def test_recurrent_networks_read_one_row_per_step(name, channels):
    model = MODELS[name].builder(input_shape=(64, 64, channels))
    assert model.get_layer("rows").output.shape == (None, 64, 64 * channels)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"output_activation": "relu"}, "output_activation"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"input_shape": (64, 64)}, "input_shape"),
        ({"n_labels": 0}, "n_labels"),
    ],
)
@pytest.mark.parametrize("name", list(MODELS))
def test_bad_builder_options_are_refused_with_their_name(name, options, message):
    with pytest.raises(ValueError, match=message):
        MODELS[name].builder(**options)


def test_a_misspelt_hyperparameter_is_an_error_not_ignored():
    with pytest.raises(TypeError, match="dropuot"):
        MODELS["cnn_1a"].builder(dropuot=0.5)
    with pytest.raises(ValueError, match="weight_decay"):
        MODELS["fc_3b"].builder(weight_decay=-1.0)


def test_unknown_model_name_lists_the_known_ones():
    assert get_model_spec("cnn_1d") is MODELS["cnn_1d"]
    with pytest.raises(ValueError, match="cnn_9.*cnn_1a.*fc_3b"):
        get_model_spec("cnn_9")


def test_augmentation_acts_only_in_training(batch):
    images, _ = batch
    keras.utils.set_random_seed(1)
    block = augmentation_block()
    np.testing.assert_array_equal(np.asarray(block(images, training=False)), images)
    augmented = np.asarray(block(images, training=True))
    assert augmented.shape == images.shape
    assert not np.allclose(augmented, images)
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0  # contrast stays in the images' [0, 1] range


def test_augmentation_keeps_a_black_image_black():
    # Fill with 0 and contrast around the mean: a totally black image stays totally black,
    # so the black-image rule (labels are coins) still holds for augmented images.
    keras.utils.set_random_seed(2)
    black = np.zeros((4, 64, 64, 1), np.float32)
    augmented = np.asarray(augmentation_block()(black, training=True))
    assert black_mask(augmented).all()


def test_fused_batch_normalization_trains_and_infers_exactly_like_keras():
    import tensorflow as tf

    from contest_study.models import FusedBatchNormalization

    images = np.random.default_rng(0).normal(2.0, 3.0, (8, 6, 6, 4)).astype("float32")
    fused = FusedBatchNormalization(momentum=0.9)
    reference = keras.layers.BatchNormalization(momentum=0.9)
    for layer in (fused, reference):
        layer.build(images.shape)
        layer.gamma.assign(np.linspace(0.5, 2.0, 4))
        layer.beta.assign(np.linspace(-1.0, 1.0, 4))
    # Random weights: a loss linear per channel would give gamma a gradient of exactly 0 (float noise).
    weights = tf.constant(np.random.default_rng(1).normal(size=images.shape).astype("float32"))
    gradients = []
    for layer in (fused, reference):
        with tf.GradientTape() as tape:
            x = tf.constant(images)
            tape.watch(x)
            outputs = layer(x, training=True)
            loss = tf.reduce_sum(outputs * weights)
        gradients.append((outputs, *tape.gradient(loss, [x, layer.gamma, layer.beta])))
    for ours, theirs in zip(*gradients):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    # Same moving statistics (Keras' biased batch variance), hence the same inference.
    np.testing.assert_allclose(fused.moving_mean, reference.moving_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance, reference.moving_variance, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused(images, training=False), reference(images, training=False), rtol=1e-5, atol=1e-5)


def test_fused_batch_normalization_falls_back_to_keras_on_dense_features():
    from contest_study.models import FusedBatchNormalization

    features = np.random.default_rng(1).normal(size=(16, 5)).astype("float32")
    fused, reference = FusedBatchNormalization(), keras.layers.BatchNormalization()
    np.testing.assert_allclose(fused(features, training=True), reference(features, training=True), rtol=1e-5, atol=1e-5)

"""The architectures of the study: one builder function per network.

Every builder has the same signature::

    build_<name>(input_shape=(64, 64, 1), n_labels=3, *, augment=False,
                 output_activation="sigmoid", dropout=<its own default>) -> keras.Model

and returns an *uncompiled* model whose last layer is ``Dense(n_labels, name="labels")``.
A few builders take one more hyperparameter (``units`` of the recurrent networks,
``weight_decay`` of ``fc_3b``); a misspelt one is a ``TypeError``, never ignored.
The head is sigmoid because the three labels are independent yes/no questions;
``output_activation="softmax"`` exists only so the hyperparameter study can show
why a softmax over independent labels fails (the scores of one image are forced
to sum to 1, so two present labels can never both score high).

The networks are sized for the default profile on a 2-core CPU (about 8,000
training images, at most 6 epochs): one epoch takes from about 1 s (``fc_3a``)
to about 8 s (``cnn_1d``, the deepest). :data:`MODELS` gives the family and a
one-line description of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
from keras import layers

OUTPUT_ACTIVATIONS = ("sigmoid", "softmax")


@dataclass(frozen=True)
class ModelSpec:
    """One architecture of the study: how the registry files it and how to build it."""

    name: str
    family: str  # "cnn" | "rnn" | "fully_connected"
    description: str
    builder: Callable[..., keras.Model]


def augmentation_block(
    *,
    rotation: float = 0.03,
    zoom: float = 0.1,
    translation: float = 0.1,
    contrast: float = 0.2,
    name: str = "augmentation",
) -> keras.Sequential:
    """Random flips, small rotations, zoom, shifts and contrast changes, as Keras layers.

    Keras preprocessing layers act only when the model is called with
    ``training=True`` (inside ``fit``); ``predict`` and ``evaluate`` see the image
    unchanged, so the block can live inside the model.

    Use it only where the transformations keep the labels true. The labels of the
    embedded dataset describe what the image contains, not where or which way up,
    so they are invariant to these transformations. For a real contest folder
    this is an assumption to check: a label about orientation or about an object
    touching the border would be broken by flips or shifts.

    Empty areas uncovered by rotation/zoom/shifts are filled with 0 (black)
    rather than reflected: a reflection could duplicate an object near the border
    and change what the image contains. ``rotation`` is a fraction of a full turn
    (0.03 is about +-11 degrees). Images are expected in [0, 1], which is the
    contrast layer's value range.
    """
    fill = {"fill_mode": "constant", "fill_value": 0.0}
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal_and_vertical"),
            layers.RandomRotation(rotation, **fill),
            layers.RandomZoom(zoom, **fill),
            layers.RandomTranslation(translation, translation, **fill),
            layers.RandomContrast(contrast, value_range=(0.0, 1.0)),
        ],
        name=name,
    )


def _check_options(input_shape, n_labels: int, output_activation: str, dropout: float) -> None:
    if len(tuple(input_shape)) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    if n_labels < 1:
        raise ValueError(f"n_labels must be at least 1, got {n_labels}")
    if output_activation not in OUTPUT_ACTIVATIONS:
        raise ValueError(
            f"output_activation must be one of {', '.join(OUTPUT_ACTIVATIONS)}, got {output_activation!r}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def _inputs(input_shape, augment: bool):
    """The model input and the tensor the network starts from (augmented when asked)."""
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = augmentation_block()(inputs) if augment else inputs
    return inputs, x


def _labels_head(x, n_labels: int, output_activation: str):
    return layers.Dense(n_labels, activation=output_activation, name="labels")(x)


# Keras' default momentum (0.99) lets the inference statistics lag far behind the
# training ones when an epoch is only ~100 batches: validation scores then swing
# while training looks fine. 0.9 follows the weights within a few dozen batches.
BATCH_NORM_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="contest_study")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' batch normalisation, computed by TensorFlow's fused kernel while training on images.

    Keras 3 normalises with separate TensorFlow ops (moments, then the affine
    transform), several passes over the feature map; on a 2-core CPU a batch norm
    after a 64x64x16 convolution then costs more than the convolution. The fused
    kernel (``FusedBatchNormV3``, the one ``tf.keras`` 2 used) does it in one pass.
    The weights, the moving statistics (with Keras' biased batch variance) and
    inference are exactly Keras'; any other input than a channels-last 4-D tensor
    in training goes through Keras' own code.
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None or len(inputs.shape) != 4 or self.axis not in (-1, 3):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        # Keras keeps the statistics in float32 even under mixed precision.
        inputs32 = tf.cast(inputs, "float32")
        outputs, mean, unbiased_variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs32,
            scale=self.gamma if self.scale else tf.ones_like(self.moving_mean),
            offset=self.beta if self.center else tf.zeros_like(self.moving_mean),
            # Ignored while training (the kernel uses the batch's own statistics).
            mean=tf.zeros_like(self.moving_mean),
            variance=tf.ones_like(self.moving_variance),
            epsilon=self.epsilon,
            is_training=True,
            data_format="NHWC",
        )
        count = tf.cast(tf.reduce_prod(tf.shape(inputs32)[:3]), "float32")
        variance = unbiased_variance * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)


def _batch_norm():
    return FusedBatchNormalization(momentum=BATCH_NORM_MOMENTUM)


def _conv_bn_relu(x, filters: int, *, strides=1):
    # No bias: the batch normalisation that follows has its own shift.
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    x = _batch_norm()(x)
    return layers.ReLU()(x)


def build_cnn_1a(
    input_shape=(64, 64, 1), n_labels=3, *, augment=False, output_activation="sigmoid", dropout=0.3
) -> keras.Model:
    """Small baseline CNN: two conv + pool blocks, one hidden dense layer."""
    _check_options(input_shape, n_labels, output_activation, dropout)
    inputs, x = _inputs(input_shape, augment)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, _labels_head(x, n_labels, output_activation), name="cnn_1a")


def build_cnn_1b(
    input_shape=(64, 64, 1), n_labels=3, *, augment=False, output_activation="sigmoid", dropout=0.4
) -> keras.Model:
    """The ``Conv-Pool-Conv-Pool-Conv-Conv-Pool-Dense-Dense`` network, 16-32-48-48 filters.

    The last Dense is the head; 48 rather than 64 filters in the third stage keeps
    its epochs cheap on a 2-core CPU.
    """
    _check_options(input_shape, n_labels, output_activation, dropout)
    inputs, x = _inputs(input_shape, augment)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(48, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(48, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(128, activation="relu")(x)
    return keras.Model(inputs, _labels_head(x, n_labels, output_activation), name="cnn_1b")


# Batch normalisation is the costliest layer on a CPU at full resolution (even fused, it
# is memory-bound). The networks below therefore normalise only at 16x16 and below,
# and start with a plain conv + pool at full resolution, which keeps the 2-3 pixel
# details (checkerboard cells, strokes).


def _full_resolution_stem(x, filters: int = 16):
    x = layers.Conv2D(filters, 3, padding="same", activation="relu", name="stem_conv")(x)
    return layers.MaxPooling2D(name="stem_pool")(x)


def build_cnn_1c(
    input_shape=(64, 64, 1), n_labels=3, *, augment=False, output_activation="sigmoid", dropout=0.25
) -> keras.Model:
    """VGG-style: a conv stem, then three blocks of two 3x3 convs (16-32-64 filters), each closed
    by max pooling and dropout; batch norm after every conv of the 16x16 and 8x8 blocks."""
    _check_options(input_shape, n_labels, output_activation, dropout)
    inputs, x = _inputs(input_shape, augment)
    x = _full_resolution_stem(x)
    for filters in (16, 32, 64):
        for _ in range(2):
            if x.shape[1] <= 16:
                x = _conv_bn_relu(x, filters)
            else:
                x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(dropout)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, use_bias=False)(x)
    x = _batch_norm()(x)
    x = layers.ReLU()(x)
    # The dense layer holds most of the weights, so it gets twice the conv blocks' dropout.
    x = layers.Dropout(min(2 * dropout, 0.5))(x)
    return keras.Model(inputs, _labels_head(x, n_labels, output_activation), name="cnn_1c")


def _residual_block(x, filters: int, *, strides: int = 1):
    """Two 3x3 conv + batch norm and a shortcut; the shortcut is a 1x1 projection when the shape changes."""
    shortcut = x
    y = _conv_bn_relu(x, filters, strides=strides)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = _batch_norm()(y)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False)(x)
        shortcut = _batch_norm()(shortcut)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def build_cnn_1d(
    input_shape=(64, 64, 1), n_labels=3, *, augment=False, output_activation="sigmoid", dropout=0.3
) -> keras.Model:
    """Small ResNet, the deepest network: a conv stem, four residual blocks (32-32-64-128 filters,
    16x16 down to 4x4), global average pooling."""
    _check_options(input_shape, n_labels, output_activation, dropout)
    inputs, x = _inputs(input_shape, augment)
    x = _full_resolution_stem(x)
    x = _residual_block(x, 32, strides=2)
    x = _residual_block(x, 32)
    x = _residual_block(x, 64, strides=2)
    x = _residual_block(x, 128, strides=2)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _labels_head(x, n_labels, output_activation), name="cnn_1d")


def build_cnn_1e(
    input_shape=(64, 64, 1), n_labels=3, *, augment=False, output_activation="sigmoid", dropout=0.2
) -> keras.Model:
    """Own design: four conv + batch norm + max pooling blocks (16-32-64-64 filters), then
    global average pooling and a small dense layer.

    Unlike the other networks it normalises at full resolution too: the costliest layer
    on a CPU, but it lets the first filters learn the 2-3 pixel strokes and cells fast.
    (A first version used depthwise-separable convs in the last two blocks; on this
    data it learnt markedly slower for the same time, so they were dropped.)
    Global average pooling replaces the large flatten + dense layer of the other CNNs
    and makes the features independent of where a shape sits.
    """
    _check_options(input_shape, n_labels, output_activation, dropout)
    inputs, x = _inputs(input_shape, augment)
    for filters in (16, 32, 64, 64):
        x = _conv_bn_relu(x, filters)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(64, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _labels_head(x, n_labels, output_activation), name="cnn_1e")


def _rows_as_sequence(x, input_shape):
    """Turn an image into a sequence: one step per row, each step the row's pixels (all channels)."""
    height, width, channels = tuple(input_shape)
    return layers.Reshape((height, width * channels), name="rows")(x)


def build_rnn_lstm(
    input_shape=(64, 64, 1), n_labels=3, *, augment=False, output_activation="sigmoid", dropout=0.2, units=64
) -> keras.Model:
    """An LSTM that reads the image row by row (64 steps of 64 pixels; 192 values with 3 channels)."""
    _check_options(input_shape, n_labels, output_activation, dropout)
    inputs, x = _inputs(input_shape, augment)
    x = _rows_as_sequence(x, input_shape)
    x = layers.LSTM(units)(x)
    x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _labels_head(x, n_labels, output_activation), name="rnn_lstm")


def build_rnn_bigru(
    input_shape=(64, 64, 1), n_labels=3, *, augment=False, output_activation="sigmoid", dropout=0.2, units=48
) -> keras.Model:
    """A bidirectional GRU over the rows: reads the image top-down and bottom-up, joins both summaries."""
    _check_options(input_shape, n_labels, output_activation, dropout)
    inputs, x = _inputs(input_shape, augment)
    x = _rows_as_sequence(x, input_shape)
    x = layers.Bidirectional(layers.GRU(units))(x)
    x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _labels_head(x, n_labels, output_activation), name="rnn_bigru")


def build_fc_3a(
    input_shape=(64, 64, 1), n_labels=3, *, augment=False, output_activation="sigmoid", dropout=0.0
) -> keras.Model:
    """Fully connected baseline: the flattened pixels through 4 hidden ReLU layers (512-256-128-64)."""
    _check_options(input_shape, n_labels, output_activation, dropout)
    inputs, x = _inputs(input_shape, augment)
    x = layers.Flatten()(x)
    for units in (512, 256, 128, 64):
        x = layers.Dense(units, activation="relu")(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _labels_head(x, n_labels, output_activation), name="fc_3a")


def build_fc_3b(
    input_shape=(64, 64, 1),
    n_labels=3,
    *,
    augment=False,
    output_activation="sigmoid",
    dropout=0.4,
    weight_decay=1e-4,
) -> keras.Model:
    """Wider regularised fully connected net: 1024-512-256 units, each with L2, batch norm and dropout."""
    _check_options(input_shape, n_labels, output_activation, dropout)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    inputs, x = _inputs(input_shape, augment)
    x = layers.Flatten()(x)
    for units in (1024, 512, 256):
        x = layers.Dense(units, use_bias=False, kernel_regularizer=keras.regularizers.L2(weight_decay))(x)
        x = _batch_norm()(x)
        x = layers.ReLU()(x)
        x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _labels_head(x, n_labels, output_activation), name="fc_3b")


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("cnn_1a", "cnn", "small baseline CNN: 2 conv+pool blocks, dense 64", build_cnn_1a),
        ModelSpec("cnn_1b", "cnn", "Conv-Pool-Conv-Pool-Conv-Conv-Pool-Dense-Dense", build_cnn_1b),
        ModelSpec("cnn_1c", "cnn", "VGG-style: 3 blocks of two 3x3 convs, batch norm, dropout", build_cnn_1c),
        ModelSpec("cnn_1d", "cnn", "small ResNet: 4 residual blocks, global average pooling", build_cnn_1d),
        ModelSpec("cnn_1e", "cnn", "4 conv+batch norm+pool blocks from full resolution, global average pooling", build_cnn_1e),
        ModelSpec("rnn_lstm", "rnn", "LSTM(64) reading the image row by row", build_rnn_lstm),
        ModelSpec("rnn_bigru", "rnn", "bidirectional GRU(48) over the rows", build_rnn_bigru),
        ModelSpec("fc_3a", "fully_connected", "4 hidden dense layers 512-256-128-64", build_fc_3a),
        ModelSpec("fc_3b", "fully_connected", "dense 1024-512-256 with L2, batch norm, dropout", build_fc_3b),
    )
}


def get_model_spec(name: str) -> ModelSpec:
    """The spec called ``name`` or a clear error listing the known architectures."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None

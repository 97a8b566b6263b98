"""contest_study.autoencoder: the noise, the images, the scores, and a tiny registry run reused by notebook 07."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from keras import layers

from contest_study import autoencoder
from contest_study.autoencoder import add_noise, sample_noise
from contest_study.data import black_mask
from conftest import tiny_study

RECIPE = {"epochs": 1, "batch_size": 16}


def build_tiny_autoencoder(input_shape):
    """The structure notebook 06 builds (nested "encoder" and "decoder"), with few filters."""
    encoder = keras.Sequential([
        keras.Input(shape=input_shape),
        layers.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2D(2, 3, strides=4, padding="same"),
    ], name="encoder")
    decoder = keras.Sequential([
        keras.Input(shape=encoder.output_shape[1:]),
        layers.Conv2DTranspose(4, 3, strides=8, padding="same", activation="relu"),
        layers.Conv2D(input_shape[-1], 3, padding="same", activation="sigmoid"),
    ], name="decoder")
    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, decoder(encoder(inputs)), name="tiny_autoencoder")


def fit_tiny(model, train_pairs, monitor_pairs, directory):
    model.compile(optimizer="adam", loss="mse")
    return model.fit(*train_pairs, validation_data=monitor_pairs, epochs=RECIPE["epochs"],
                     batch_size=RECIPE["batch_size"], verbose=0)


# ----------------------------------------------------------------------------- noise


def test_noise_has_mean_0_1_and_variance_0_3_on_a_large_sample():
    noise = sample_noise((4_000_000,), seed=1)
    assert noise.dtype == np.float32
    # Standard errors: sqrt(0.3 / 4e6) ~ 2.7e-4 for the mean, 0.3 * sqrt(2 / 4e6) ~ 2.1e-4 for the variance.
    assert noise.mean() == pytest.approx(0.1, abs=2e-3)
    assert noise.var() == pytest.approx(0.3, abs=2e-3)
    assert autoencoder.NOISE_STD == pytest.approx(math.sqrt(0.3))


def test_noise_is_seeded():
    assert np.array_equal(sample_noise((100,), seed=(3, 1)), sample_noise((100,), seed=(3, 1)))
    assert not np.array_equal(sample_noise((100,), seed=(3, 1)), sample_noise((100,), seed=(3, 2)))


def test_add_noise_adds_that_noise_then_clips_to_the_unit_range():
    images = np.random.default_rng(0).random((50, 64, 64, 1), dtype=np.float32)
    noisy = add_noise(images, seed=7)
    expected = np.clip(images + sample_noise(images.shape, seed=7), 0.0, 1.0)
    assert noisy.dtype == np.float32 and noisy.shape == images.shape
    np.testing.assert_array_equal(noisy, expected)
    assert noisy.min() == 0.0 and noisy.max() == 1.0  # the noise is strong enough to hit both bounds
    np.testing.assert_array_equal(images, np.random.default_rng(0).random((50, 64, 64, 1), dtype=np.float32))


def test_add_noise_refuses_images_outside_the_unit_range():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        add_noise(np.full((2, 8, 8, 1), 255.0), seed=0)


# ----------------------------------------------------------------------------- scores


def test_compression_rate_is_read_from_the_layer_shapes():
    model = build_tiny_autoencoder((64, 64, 1))
    assert autoencoder.compression_rate(model) == 64 * 64 / (8 * 8 * 2)


def test_psnr_and_reconstruction_scores():
    clean = np.zeros((2, 4, 4, 1))
    restored = clean + 0.1  # MSE 0.01 -> PSNR 20 dB
    np.testing.assert_allclose(autoencoder.psnr(clean, restored), [20.0, 20.0])
    scores = autoencoder.reconstruction_scores(clean, restored)
    assert scores["mse"] == pytest.approx(0.01) and scores["psnr"] == pytest.approx(20.0)
    assert np.isfinite(autoencoder.psnr(clean, clean)).all()
    with pytest.raises(ValueError, match="differ in shape"):
        autoencoder.psnr(clean, restored[:1])


def test_gaussian_reference_picks_the_blur_that_restores_best():
    clean = np.full((8, 32, 32, 1), 0.5, np.float32)  # flat images: the widest blur removes the most noise
    noisy = clean + 0.2 * np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    assert autoencoder.choose_gaussian_sigma(clean, noisy) == max(autoencoder.GAUSSIAN_SIGMAS)
    assert autoencoder.gaussian_filter_images(noisy, 1.0).shape == noisy.shape


# ----------------------------------------------------------------------------- images


def test_denoising_images_are_every_non_black_image_of_every_split(tmp_path):
    data = tiny_study(tmp_path).data
    splits = [data.train, data.val, data.holdout, data.test]
    images = autoencoder.denoising_images(data, None, seed=3)
    expected = {split.name: int((~black_mask(split.images)).sum()) for split in splits}
    assert images.sources == expected  # the unlabelled test images included
    assert images.n_black_dropped == sum(int(black_mask(split.images).sum()) for split in splits)
    assert len(images.train) + len(images.monitor) == sum(expected.values())
    assert len(images.monitor) == round(autoencoder.MONITOR_FRACTION * sum(expected.values()))
    everything = np.concatenate([images.train, images.monitor])
    assert not black_mask(everything).any()
    # Seeded: the same call gives the same parts.
    again = autoencoder.denoising_images(data, None, seed=3)
    assert np.array_equal(again.train, images.train) and np.array_equal(again.monitor, images.monitor)


def test_denoising_images_cap_is_a_seeded_choice(tmp_path):
    data = tiny_study(tmp_path).data
    capped = autoencoder.denoising_images(data, 20, seed=3)
    assert len(capped.train) + len(capped.monitor) == sum(capped.sources.values()) == 20
    with pytest.raises(ValueError, match="at least 2"):
        autoencoder.denoising_images(data, 1, seed=3)


# ----------------------------------------------------------------------------- registry run


def test_pretrain_stores_a_reusable_run_apart_from_the_classifiers_and_07_finds_its_encoder(tmp_path):
    study = tiny_study(tmp_path)
    with pytest.raises(LookupError, match="run notebook 06"):
        autoencoder.latest_run(study)
    record = autoencoder.pretrain(study, build_tiny_autoencoder, fit_tiny, recipe=RECIPE)

    assert record.family == "autoencoder" and record.path.parent == study.registry.root / ".autoencoder"
    assert record.data["compression_rate"] == 32
    assert record.data["stopped_because"] == "epoch cap" and record.data["epochs_run"] == 1
    assert set(record.data["images_per_split"]) == {"train", "val", "holdout", "test"}
    assert set(record.data["reconstruction"]) == {"noisy input", "Gaussian filter", "autoencoder"}
    assert list(autoencoder.reconstruction_table(record).columns) == ["MSE", "PSNR (dB)"]
    examples = autoencoder.denoising_examples(record)
    assert examples["clean"].shape == examples["noisy"].shape == examples["denoised"].shape
    # The classifier registry does not see it: its tables only hold runs with average precision.
    assert study.registry.records() == []

    # The same call returns the stored run, untouched; a changed recipe is another run.
    stamp = record.record_file.stat().st_mtime_ns
    again = autoencoder.pretrain(study, build_tiny_autoencoder, fit_tiny, recipe=RECIPE)
    assert again.key == record.key and again.record_file.stat().st_mtime_ns == stamp
    assert autoencoder.latest_run(study).key == record.key

    trained = keras.models.model_from_json((record.path / autoencoder.MODEL_FILE).read_text())
    trained.load_weights(str(record.path / autoencoder.WEIGHTS_FILE))
    pretrained = autoencoder.load_encoder(record, name="pretrained_encoder_x")
    fresh = autoencoder.load_encoder(record, pretrained=False)
    for expected, loaded, random in zip(trained.get_layer("encoder").get_weights(), pretrained.get_weights(),
                                        fresh.get_weights()):
        np.testing.assert_array_equal(loaded, expected)
        assert random.shape == expected.shape
    assert not all(np.array_equal(a, b) for a, b in zip(pretrained.get_weights(), fresh.get_weights()))
    # The new name reaches the Keras config of a model built on it (so the registry key names the source run).
    inputs = keras.Input(shape=(64, 64, 1))
    assert "pretrained_encoder_x" in keras.Model(inputs, pretrained(inputs)).to_json()


def test_load_encoder_refuses_a_classifier_run(tmp_path):
    study = tiny_study(tmp_path)
    record = autoencoder.pretrain(study, build_tiny_autoencoder, fit_tiny, recipe=RECIPE)
    record.data["family"] = "cnn"
    with pytest.raises(ValueError, match="not an autoencoder"):
        autoencoder.load_encoder(record)

"""contest_study.autoencoder: the noise, the compression rate, the scores and a tiny cached run."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from contest_study import autoencoder
from contest_study.autoencoder import (
    AutoencoderSettings,
    add_noise,
    build_autoencoder,
    compression_rate,
    sample_noise,
)
from contest_study.data import black_mask
from conftest import tiny_study

TINY = AutoencoderSettings(
    max_images=40, epochs=1, batch_size=16, patience=1, filters=(4, 4, 4), decoder_filters=(4, 4, 4),
    bottleneck_channels=2,
)


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


# ----------------------------------------------------------------------------- architecture


def test_compression_rate_is_read_from_the_layer_shapes():
    model = build_autoencoder()
    assert autoencoder.bottleneck_shape(model) == (8, 8, 4)
    assert compression_rate(model) == 64 * 64 / (8 * 8 * 4) == 16
    assert model.output.shape[1:] == (64, 64, 1)
    two_stages = build_autoencoder(filters=(8, 8), decoder_filters=(8, 8), bottleneck_channels=2)
    assert compression_rate(two_stages) == 64 * 64 / (16 * 16 * 2)


def test_architecture_fingerprint_follows_the_network_not_the_session():
    fingerprint = autoencoder.architecture_fingerprint(build_autoencoder)
    build_autoencoder()  # advances Keras' layer-name counters
    assert autoencoder.architecture_fingerprint(build_autoencoder) == fingerprint
    assert autoencoder.architecture_fingerprint(lambda: build_autoencoder(bottleneck_channels=2)) != fingerprint


@pytest.mark.parametrize("profile", sorted(autoencoder.SETTINGS))
def test_every_profile_compresses_at_least_ten_times(profile):
    model = build_autoencoder(**autoencoder.settings_for(profile).architecture())
    assert compression_rate(model) >= 10


def test_bad_architectures_and_settings_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        build_autoencoder((60, 60, 1))
    with pytest.raises(ValueError, match="decoder_filters"):
        build_autoencoder(decoder_filters=(8, 8))
    with pytest.raises(ValueError, match="decoder_filters"):
        AutoencoderSettings(max_images=None, epochs=1, batch_size=8, patience=1, decoder_filters=(4,))
    with pytest.raises(ValueError, match="epochs"):
        AutoencoderSettings(max_images=None, epochs=0, batch_size=8, patience=1)
    with pytest.raises(ValueError, match="no autoencoder settings for profile 'huge'"):
        autoencoder.settings_for("huge")


# ----------------------------------------------------------------------------- scores


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


def test_denoising_images_are_the_seeded_choice_among_non_black_train_and_test_images(tmp_path):
    data = tiny_study(tmp_path).data
    for cap in (None, 40, 12):
        settings = dataclasses.replace(TINY, max_images=cap)
        images = autoencoder.denoising_images(data, settings, None, seed=3)
        # The same choice, made on all the images copied into one array first.
        pool = np.concatenate([data.train.images, data.test.images])
        pool = pool[~black_mask(pool)]
        generator = np.random.default_rng(3)
        if cap is not None and len(pool) > cap:
            pool = pool[np.sort(generator.choice(len(pool), cap, replace=False))]
        order = generator.permutation(len(pool))
        n_monitor = max(1, round(autoencoder.MONITOR_FRACTION * len(pool)))
        assert np.array_equal(images.train, pool[np.sort(order[n_monitor:])])
        assert np.array_equal(images.monitor, pool[np.sort(order[:n_monitor])])


# ----------------------------------------------------------------------------- cached run


def test_train_autoencoder_stores_a_reusable_record_apart_from_the_classifiers(tmp_path):
    study = tiny_study(tmp_path)
    record = autoencoder.train_autoencoder(study, settings=TINY, verbose=0)

    assert record.family == "autoencoder" and record.path.parent == study.registry.root / ".autoencoder"
    assert record.data["compression_rate"] == 64 * 64 / (8 * 8 * 2)
    # Black images are left out: 31 + 10 non-black training and test images, capped at 40.
    assert record.data["n_train_images"] + record.data["n_monitor_images"] == 40
    assert record.data["n_val_images"] == 20
    scores = record.data["reconstruction"]["val"]
    assert set(scores) == {"noisy input", "Gaussian filter", "autoencoder"}
    assert all(set(score) == {"mse", "psnr"} for score in scores.values())
    assert record.hyperparams["noise_mean"] == 0.1 and record.hyperparams["noise_variance"] == 0.3
    examples = autoencoder.denoising_examples(record)
    assert examples["clean"].shape == examples["noisy"].shape == examples["denoised"].shape == (16, 64, 64, 1)
    table = autoencoder.reconstruction_table(record)
    assert list(table.columns) == ["MSE", "PSNR (dB)"] and len(table) == 3

    # The classifier registry does not see it: its tables only hold runs with average precision.
    assert study.registry.records() == [] and study.registry.table().empty

    # The same call returns the stored run (notebook 07 finds the encoder this way), untouched.
    stamp = record.record_file.stat().st_mtime_ns
    again = autoencoder.train_autoencoder(study, settings=TINY, verbose=0)
    assert again.key == record.key and again.record_file.stat().st_mtime_ns == stamp

    model = autoencoder.load_autoencoder(record)
    assert compression_rate(model) == record.data["compression_rate"]

"""contest_study.transfer: MobileNetV2's ImageNet weights found, not asked for, or refused by the network."""

from __future__ import annotations

import keras
import pytest

from contest_study import transfer

FILE_NAME = transfer.imagenet_weights_file_name(0.35, 96)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """A Keras cache folder without any weights, the only one looked in."""
    folder = tmp_path / "keras" / "models"
    monkeypatch.setattr(transfer, "keras_cache_dirs", lambda: [folder])
    return folder


def test_weights_file_name_is_keras_own_and_unknown_configurations_are_refused():
    assert FILE_NAME == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    with pytest.raises(ValueError, match="alpha in"):
        transfer.imagenet_weights_file_name(0.3, 96)
    with pytest.raises(ValueError, match="input sides"):
        transfer.imagenet_weights_file_name(0.35, 64)


def test_weights_in_the_keras_cache_are_found(empty_cache):
    empty_cache.mkdir(parents=True)
    (empty_cache / FILE_NAME).write_bytes(b"weights")
    lookup = transfer.find_imagenet_weights(0.35, 96)
    assert lookup.found and lookup.path == empty_cache / FILE_NAME
    assert "found in the Keras cache" in lookup.message


def test_nothing_is_downloaded_unless_asked(empty_cache, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("download attempted without download_imagenet_weights")

    monkeypatch.setattr(keras.utils, "get_file", refuse)
    lookup = transfer.find_imagenet_weights(0.35, 96)
    assert not lookup.found
    assert "download_imagenet_weights is False" in lookup.message
    assert transfer.RANDOM_INIT_NAME in lookup.message and FILE_NAME in lookup.message


def test_download_refused_by_the_network_falls_back_and_says_what_is_missing(empty_cache, monkeypatch):
    # An unreachable proxy: the download fails at once, as on a machine without internet.
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    lookup = transfer.find_imagenet_weights(0.35, 96, download=True)
    assert not lookup.found and lookup.path is None
    assert "failed" in lookup.message
    assert FILE_NAME in lookup.message and transfer.IMAGENET_WEIGHTS_URL in lookup.message
    assert transfer.RANDOM_INIT_NAME in lookup.message  # and carries on with the fallback
    assert not (empty_cache / FILE_NAME).exists()  # no partial file left in the cache


def test_a_download_that_succeeds_is_used(empty_cache, monkeypatch):
    def fake_download(file_name, origin, cache_dir, cache_subdir):
        assert origin == transfer.IMAGENET_WEIGHTS_URL + file_name
        target = empty_cache.parent.joinpath(cache_subdir)
        target.mkdir(parents=True, exist_ok=True)
        (target / file_name).write_bytes(b"weights")
        return str(target / file_name)

    monkeypatch.setattr(keras.utils, "get_file", fake_download)
    lookup = transfer.find_imagenet_weights(0.35, 96, download=True)
    assert lookup.found and lookup.path == empty_cache / FILE_NAME
    assert "downloaded" in lookup.message

"""The decode-once CelebA image cache (halitool/data/cache.py) on generated CelebA trees."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from helpers import run_cli
from halitool.data import folder, open_dataset
from halitool.data.cache import ImageCache, cache_wanted
from halitool.errors import UsageError


@pytest.fixture
def counted_decodes(monkeypatch):
    """Counts calls of the one JPEG decoder every file-based reader uses."""
    calls = []
    real = folder.decode_image

    def decode(path, mode, crop, size):
        calls.append(path)
        return real(path, mode, crop, size)

    monkeypatch.setattr(folder, "decode_image", decode)
    return calls


def open_cached(root, cache_dir, **options):
    return open_dataset(f"celeba:{root}", cache=True, cache_dir=cache_dir, **options)


def test_cache_equals_direct_decode_bit_for_bit(celeba_dir, tmp_path):
    direct = open_dataset(f"celeba:{celeba_dir}", cache=False)
    cached = open_cached(celeba_dir, tmp_path / "cache")
    rows = np.array([7, 2, 2, 9, 0])  # any order, repeats
    assert np.array_equal(cached.images(rows), direct.images(rows))
    everything = direct.images(direct.indices())
    assert np.array_equal(cached.images(cached.indices()), everything)
    on_disk = np.load(cached.image_cache.path)
    assert on_disk.dtype == np.uint8 and np.array_equal(on_disk, everything)
    marker = json.loads(cached.image_cache.marker.read_text())
    assert marker["shape"] == [10, 3, 64, 64] and marker["bytes"] == cached.image_cache.path.stat().st_size
    assert not list((tmp_path / "cache").glob("*partial*"))


def test_second_open_reads_the_cache_without_decoding(celeba_dir, tmp_path, counted_decodes):
    first = open_cached(celeba_dir, tmp_path / "cache")
    images = first.images([3])
    assert len(counted_decodes) == 10  # the first request builds the whole cache
    assert first.image_cache.built
    counted_decodes.clear()
    second = open_cached(celeba_dir, tmp_path / "cache")
    assert np.array_equal(second.images([3]), images)
    for _, batch in second.iter_batches(second.indices(), 4, workers=2):
        assert batch.shape[1:] == (3, 64, 64)
    assert counted_decodes == [] and not second.image_cache.built


def test_truncated_cache_is_rebuilt_with_a_log_line(celeba_dir, tmp_path, counted_decodes, caplog):
    caplog.set_level(logging.INFO, logger="halitool")
    expected = open_cached(celeba_dir, tmp_path / "cache").images(np.arange(10))
    path = open_cached(celeba_dir, tmp_path / "cache").image_cache.path
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)
    counted_decodes.clear()
    again = open_cached(celeba_dir, tmp_path / "cache")
    assert np.array_equal(again.images(np.arange(10)), expected)
    assert len(counted_decodes) == 10
    assert "truncated" in caplog.text


@pytest.mark.parametrize("damage", ["marker", "shape", "stale"])
def test_damaged_or_stale_cache_is_rebuilt(celeba_dir, tmp_path, counted_decodes, damage, caplog):
    caplog.set_level(logging.INFO, logger="halitool")
    ds = open_cached(celeba_dir, tmp_path / "cache")
    expected = ds.images(np.arange(10))
    cache = ds.image_cache
    if damage == "marker":
        cache.marker.unlink()
    elif damage == "shape":  # a valid .npy of the right size but another shape, with its marker
        np.save(cache.path, expected.reshape(10, 3, 32, 128))
        marker = json.loads(cache.marker.read_text())
        marker["bytes"] = cache.path.stat().st_size
        cache.marker.write_text(json.dumps(marker))
    else:  # one image rewritten: its size or mtime changes the key
        image = celeba_dir / "img_align_celeba" / "000004.jpg"
        data = image.read_bytes()
        image.write_bytes(data)
        os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    counted_decodes.clear()
    again = open_cached(celeba_dir, tmp_path / "cache")
    assert np.array_equal(again.images(np.arange(10)), expected)
    assert len(counted_decodes) == 10 and again.image_cache.built
    assert {"marker": "no completion marker", "shape": "wrong array", "stale": "stale"}[damage] in caplog.text


def test_other_preprocessing_has_another_key_and_file(celeba_dir, tmp_path):
    a = open_cached(celeba_dir, tmp_path / "cache")
    b = open_cached(celeba_dir, tmp_path / "cache", crop=100)
    c = open_cached(celeba_dir, tmp_path / "cache", size=32)
    assert len({a.image_cache.key(), b.image_cache.key(), c.image_cache.key()}) == 3
    assert len({a.image_cache.path, b.image_cache.path, c.image_cache.path}) == 3
    direct = open_dataset(f"celeba:{celeba_dir}", crop=100, cache=False)
    assert np.array_equal(b.images(np.arange(10)), direct.images(np.arange(10)))
    assert not np.array_equal(a.images(np.arange(10)), b.images(np.arange(10)))


def test_missing_image_fails_the_build_and_leaves_no_cache(celeba_dir, tmp_path):
    (celeba_dir / "img_align_celeba" / "000005.jpg").unlink()
    ds = open_cached(celeba_dir, tmp_path / "cache")
    with pytest.raises(Exception, match="000005.jpg"):
        ds.images([0])
    assert not list((tmp_path / "cache").iterdir())


def test_setting_from_environment(monkeypatch):
    monkeypatch.delenv("HALITOOL_CACHE", raising=False)
    assert cache_wanted(None, 10) is False and cache_wanted(None, 200_000) is True
    assert cache_wanted(True, 10) is True and cache_wanted(False, 200_000) is False
    monkeypatch.setenv("HALITOOL_CACHE", "on")
    assert cache_wanted(None, 10) is True
    monkeypatch.setenv("HALITOOL_CACHE", "off")
    assert cache_wanted(None, 200_000) is False
    monkeypatch.setenv("HALITOOL_CACHE", "sometimes")
    with pytest.raises(UsageError, match="HALITOOL_CACHE"):
        cache_wanted(None, 10)


def test_environment_turns_the_cache_on_for_every_command(celeba_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HALITOOL_CACHE", "on")
    monkeypatch.setenv("HALITOOL_CACHE_DIR", str(tmp_path / "env-cache"))
    ds = open_dataset(f"celeba:{celeba_dir}")
    assert isinstance(ds.image_cache, ImageCache) and ds.image_cache.path.parent == tmp_path / "env-cache"
    ds.images([0])
    assert ds.image_cache.marker.is_file()


def test_data_cache_command(celeba_dir, tmp_path, mnist_dir, monkeypatch):
    monkeypatch.setenv("HALITOOL_CACHE_DIR", str(tmp_path / "cli-cache"))
    code, out, err = run_cli(["data", "cache", f"celeba:{celeba_dir}", "--format", "json"])
    assert code == 0, err
    first = json.loads(out)
    assert first["cache"].startswith(str(tmp_path / "cli-cache"))
    assert first["built"] is True and first["n_images"] == 10 and first["shape"] == [10, 3, 64, 64]
    code, out, _ = run_cli(["data", "cache", f"celeba:{celeba_dir}", "--format", "json"])
    assert code == 0 and json.loads(out)["built"] is False and json.loads(out)["cache"] == first["cache"]
    code, out, _ = run_cli(["data", "cache", f"celeba:{celeba_dir}", "--rebuild", "--format", "json"])
    assert code == 0 and json.loads(out)["built"] is True
    code, _, err = run_cli(["data", "cache", f"mnist:{mnist_dir}"])
    assert code == 2 and "only celeba" in err


@pytest.mark.slow
def test_extract_builds_the_cache_before_encoding_and_reuses_it(celeba_dir, tmp_path, counted_decodes):
    from helpers import write_tiny_checkpoint
    from halitool.extract import extract_features
    from halitool.features import open_features

    checkpoint = write_tiny_checkpoint(tmp_path / "c.safetensors", arch="celeba64")
    direct = extract_features(checkpoint, open_dataset(f"celeba:{celeba_dir}", cache=False), tmp_path / "d.h5")
    counted_decodes.clear()
    for out in ("a.h5", "b.h5"):
        extract_features(checkpoint, open_cached(celeba_dir, tmp_path / "cache"), tmp_path / out, workers=2)
    assert len(counted_decodes) == 10  # decoded once, for the first run only
    with open_features(direct["output"]) as d, open_features(tmp_path / "b.h5") as b:
        for name in d.levels:
            np.testing.assert_array_equal(b.read_level(name), d.read_level(name))

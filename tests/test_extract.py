"""extract: read-back equals the model's own outputs; latents, splits, levels, labels and the torchrun path."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_cli
from halitool.checkpoint import load_checkpoint
from halitool.data import open_dataset
from halitool.extract import extract_features
from halitool.features import open_features


def _model_outputs(checkpoint: Path, images: np.ndarray):
    """The model's own posterior means and (mean, logvar) pairs for uint8 ``images``."""
    model = load_checkpoint(checkpoint, "cpu").model
    x = torch.from_numpy(images).float() / 255.0
    with torch.no_grad():
        return model.encode(x, "mean"), model.encode_stats(x, "mean")


def test_read_back_equals_model_encode(tiny_checkpoint, mnist_dir, tmp_path):
    out = tmp_path / "f.h5"
    code, stdout, stderr = run_cli(["extract", str(tiny_checkpoint), "--data", f"mnist:{mnist_dir}", "-o", str(out),
                                    "--batch-size", "64", "--with-logvar", "--format", "json"])
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["n_samples"] == 250 and summary["levels"] == {"z1": [2, 7, 7], "z2": [8]}
    assert summary["output"] == str(out) and summary["device"] == "cpu" and summary["images_per_second"] > 0
    ds = open_dataset(f"mnist:{mnist_dir}")
    zs, stats = _model_outputs(tiny_checkpoint, ds.images(np.arange(len(ds))))
    with open_features(out) as f:
        assert f.complete and f.levels == ["z1", "z2"] and f.level_shape("z1") == (2, 7, 7)
        for name in ("z1", "z2"):
            np.testing.assert_allclose(f.read_level(name), zs[name].reshape(250, -1).numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(f.read_level(name, kind="logvar"), stats[name][1].reshape(250, -1).numpy(),
                                       rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(f.labels, ds.labels)
        np.testing.assert_array_equal(f.split, ds.split)
        np.testing.assert_array_equal(f.sample_ids, ds.sample_ids)
        attrs = f.attrs
        assert attrs["latent"] == "mean" and attrs["dataset"] == "mnist"
        assert attrs["model_config"]["arch"] == "tiny" and len(attrs["checkpoint_sha256"]) == 64
        assert attrs["preprocessing"]["dataset"]["source"] == "idx"
        assert attrs["splits"]["rows"] == {"train": 200, "valid": 0, "test": 50}
        for key in ("halitool_version", "dataset_root", "seed", "created_utc", "command", "library_versions"):
            assert key in attrs
    assert not (tmp_path / "f.h5.partial").exists()


def test_attribute_table_for_mnist(tiny_checkpoint, mnist_dir, tmp_path):
    out = extract_features(tiny_checkpoint, f"mnist:{mnist_dir}", tmp_path / "f.h5", batch_size=100)["output"]
    ds = open_dataset(f"mnist:{mnist_dir}")
    with open_features(out) as f:
        assert f.attribute_names == list(ds.attribute_names) and len(f.attribute_names) >= 5
        np.testing.assert_array_equal(f.attributes, ds.attributes)
        assert set(np.unique(f.attributes)) <= {0, 1}
        assert f.class_names == [str(c) for c in range(10)]


def test_mnist_factors_are_the_measurements_the_attributes_threshold(tiny_checkpoint, mnist_dir, tmp_path):
    from halitool.data.attributes import FACTOR_NAMES, MEASURED, measure_shapes

    out = extract_features(tiny_checkpoint, f"mnist:{mnist_dir}", tmp_path / "f.h5", batch_size=100)["output"]
    ds = open_dataset(f"mnist:{mnist_dir}")
    shapes = measure_shapes(ds.images(ds.indices("all")))
    with open_features(out) as f:
        assert f.factor_names == list(FACTOR_NAMES) == ["thickness", "slant", "width", "vertical_spread", "ink_area"]
        assert f.factor_discrete == [False] * 5
        np.testing.assert_array_equal(f.factors, np.stack([shapes[name] for name in FACTOR_NAMES], axis=1))
        # Each measured attribute is its factor above the training median: one definition, two views.
        train = f.split == 0
        for name, column in zip(MEASURED, f.factors.T):
            expected = (column > np.median(column[train])).astype(np.int8)
            np.testing.assert_array_equal(f.attributes[:, f.attribute_names.index(name)], expected)


def test_a_split_keeps_the_factors_of_its_rows(tiny_checkpoint, mnist_dir, tmp_path):
    full = extract_features(tiny_checkpoint, f"mnist:{mnist_dir}", tmp_path / "all.h5", batch_size=100)["output"]
    test = extract_features(tiny_checkpoint, f"mnist:{mnist_dir}", tmp_path / "test.h5", split="test")["output"]
    with open_features(full) as f, open_features(test) as t:
        np.testing.assert_array_equal(t.factors, f.factors[f.rows("test")])


def test_sample_latent_differs_from_mean_and_follows_the_seed(tiny_checkpoint, mnist_dir, tmp_path):
    spec = f"mnist:{mnist_dir}"
    files = {}
    for name, latent, seed, batch in (("mean", "mean", 0, 50), ("s0", "sample", 0, 50), ("s0again", "sample", 0, 50),
                                      ("s1", "sample", 1, 50)):
        files[name] = extract_features(tiny_checkpoint, spec, tmp_path / f"{name}.h5", latent=latent, seed=seed,
                                       batch_size=batch, split="test")["output"]
    read = {}
    for name, path in files.items():
        with open_features(path) as f:
            read[name] = f.read_level("z2")
            assert f.attrs["latent"] == ("mean" if name == "mean" else "sample")
    np.testing.assert_array_equal(read["s0"], read["s0again"])
    assert not np.allclose(read["s0"], read["mean"], atol=1e-3)
    assert not np.allclose(read["s0"], read["s1"], atol=1e-3)


def test_split_and_level_selection(tiny_checkpoint, mnist_dir, tmp_path):
    out = tmp_path / "test_z2.h5"
    code, _, stderr = run_cli(["extract", str(tiny_checkpoint), "--data", f"mnist:{mnist_dir}", "-o", str(out),
                               "--split", "test", "--levels", "z2", "--format", "json"])
    assert code == 0, stderr
    ds = open_dataset(f"mnist:{mnist_dir}")
    test_rows = ds.indices("test")
    zs, _ = _model_outputs(tiny_checkpoint, ds.images(test_rows))
    with open_features(out) as f:
        assert f.levels == ["z2"] and f.n_samples == len(test_rows) == 50
        assert f.split_counts() == {"train": 0, "valid": 0, "test": 50}
        np.testing.assert_array_equal(f.sample_ids, ds.sample_ids[test_rows])
        np.testing.assert_array_equal(f.labels, ds.labels[test_rows])
        np.testing.assert_allclose(f.read_level("z2"), zs["z2"].numpy(), rtol=1e-5, atol=1e-6)
    code, _, stderr = run_cli(["extract", str(tiny_checkpoint), "--data", f"mnist:{mnist_dir}",
                               "-o", str(tmp_path / "x.h5"), "--levels", "z1,z7"])
    assert code == 2 and "z7" in stderr and "z1, z2" in stderr


def test_bf16_is_close_to_fp32(tiny_checkpoint, mnist_dir, tmp_path):
    a = extract_features(tiny_checkpoint, f"mnist:{mnist_dir}", tmp_path / "a.h5", split="test")["output"]
    b = extract_features(tiny_checkpoint, f"mnist:{mnist_dir}", tmp_path / "b.h5", split="test",
                         precision="bf16")["output"]
    with open_features(a) as fa, open_features(b) as fb:
        x, y = fa.read_level("z2"), fb.read_level("z2")
        assert fb.attrs["precision"] == "bf16"
    assert not np.array_equal(x, y)  # bf16 really was used
    np.testing.assert_allclose(y, x, atol=0.1 * np.abs(x).max())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_equals_single_process(tiny_checkpoint, mnist_dir, tmp_path):
    single = extract_features(tiny_checkpoint, f"mnist:{mnist_dir}", tmp_path / "single.h5", batch_size=32,
                              latent="sample", seed=5, with_logvar=True)["output"]
    out = tmp_path / "ddp.h5"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HALITOOL_QUIET": "1"}
    proc = subprocess.run(
        [str(torchrun), "--nproc-per-node=2", f"--master-port={_free_port()}", "-m", "halitool", "extract", str(tiny_checkpoint),
         "--data", f"mnist:{mnist_dir}", "-o", str(out), "--batch-size", "32", "--latent", "sample", "--seed", "5",
         "--with-logvar", "--device", "cpu", "--format", "json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ddp")) == ["ddp.h5"]
    with open_features(single) as a, open_features(out) as b:
        assert a.levels == b.levels and a.n_samples == b.n_samples == 250
        for name in a.levels:
            for kind in ("mean", "logvar"):
                np.testing.assert_array_equal(a.read_level(name, kind=kind), b.read_level(name, kind=kind))
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.attributes, b.attributes)
        np.testing.assert_array_equal(a.sample_ids, b.sample_ids)
        assert b.attrs["command"].startswith("halitool extract ") and b.attrs["seed"] == 5

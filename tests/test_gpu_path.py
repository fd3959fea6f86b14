"""The accelerator path of extract, checked on the CPU: bf16 autocast within a documented tolerance of fp32,
torch.compile accepted or falling back cleanly, and the one-batch-in-flight pipeline giving the model's own
outputs. (Pinned buffers and CUDA events run only on a GPU; docs/benchmarks.md has the commands.)

Tolerance of bf16 (docs/benchmarks.md): per level, relative error ||z_bf16 - z_fp32|| / ||z_fp32|| <= 0.02 over
the whole matrix and cosine similarity >= 0.999 for every row. Measured on CPU: relative error 0.003-0.008,
smallest row cosine 0.9999 (tiny and mnist architectures, random weights).
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch

from helpers import write_tiny_checkpoint
from halitool.checkpoint import load_checkpoint
from halitool.data import open_dataset
from halitool.extract import _Encoder, extract_features

BF16_MAX_RELATIVE_ERROR = 0.02
BF16_MIN_COSINE = 0.999


def _levels(path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        return {name: h5["levels"][name]["mean"][()] for name in h5["levels"]}


@pytest.mark.parametrize("arch", ["tiny", "mnist"])
def test_bf16_features_agree_with_fp32(arch, mnist_dir, tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / f"{arch}.safetensors", arch=arch)
    spec = f"mnist:{mnist_dir}"
    fp32 = _levels(extract_features(checkpoint, spec, tmp_path / "fp32.h5", batch_size=128)["output"])
    bf16 = _levels(extract_features(checkpoint, spec, tmp_path / "bf16.h5", batch_size=128,
                                    precision="bf16")["output"])
    assert fp32.keys() == bf16.keys() and len(fp32) >= 2
    for name in fp32:
        a, b = fp32[name].reshape(len(fp32[name]), -1), bf16[name].reshape(len(bf16[name]), -1)
        assert a.dtype == b.dtype == np.float32
        assert not np.array_equal(a, b)  # bf16 really ran
        relative = np.linalg.norm(a - b) / np.linalg.norm(a)
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert relative <= BF16_MAX_RELATIVE_ERROR, (name, relative)
        assert cosine.min() >= BF16_MIN_COSINE, (name, cosine.min())


def test_pipelined_batches_equal_the_models_own_outputs(tiny_checkpoint, mnist_dir, tmp_path):
    """Batch k+1 is submitted before batch k is written: rows must still land where they belong, the last
    (short) batch included."""
    ds = open_dataset(f"mnist:{mnist_dir}")
    out = extract_features(tiny_checkpoint, ds, tmp_path / "f.h5", batch_size=64, workers=2)["output"]
    model = load_checkpoint(tiny_checkpoint, "cpu").model.eval()
    with torch.inference_mode():
        expected = model.encode(torch.from_numpy(ds.images(ds.indices())).float() / 255, "mean")
    for name, values in _levels(out).items():
        np.testing.assert_allclose(values, expected[name].reshape(len(values), -1).numpy(), rtol=1e-5, atol=1e-5)


def test_encoder_submit_then_result(tiny_checkpoint, mnist_dir):
    ds = open_dataset(f"mnist:{mnist_dir}")
    model = load_checkpoint(tiny_checkpoint, "cpu").model.eval()
    encoder = _Encoder(model, torch.device("cpu"), model.level_names, "mean", 0, True, "fp32")
    first, second = encoder.submit(ds.images(np.arange(10)), 0), encoder.submit(ds.images(np.arange(10, 13)), 10)
    means, logvars = second.result()
    assert {k: v.shape[0] for k, v in means.items()} == {k: 3 for k in model.level_names}
    assert logvars is not None and logvars.keys() == means.keys()
    assert all(v.shape[0] == 10 for v in first.result()[0].values())


def test_compile_failure_falls_back_to_eager(tiny_checkpoint, mnist_dir, tmp_path, monkeypatch, caplog):
    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("no C compiler for inductor\nmore detail")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    spec = f"mnist:{mnist_dir}"
    plain = _levels(extract_features(tiny_checkpoint, spec, tmp_path / "plain.h5")["output"])
    compiled = _levels(extract_features(tiny_checkpoint, spec, tmp_path / "c.h5", compile=True)["output"])
    assert "torch.compile failed (RuntimeError: no C compiler for inductor); encoding without it" in caplog.text
    for name in plain:
        np.testing.assert_array_equal(compiled[name], plain[name])


def test_compile_is_used_when_it_works(tiny_checkpoint, mnist_dir, tmp_path, monkeypatch):
    wrapped = []

    def counting_compile(fn, **kwargs):
        wrapped.append(fn.__name__)

        def run(*args, **kw):
            wrapped.append("call")
            return fn(*args, **kw)
        return run

    monkeypatch.setattr(torch, "compile", counting_compile)
    extract_features(tiny_checkpoint, f"mnist:{mnist_dir}", tmp_path / "c.h5", compile=True, batch_size=100)
    assert wrapped[:1] == ["encode_chain"] and wrapped.count("call") == 3  # 250 rows, 3 batches, one pass each


@pytest.mark.skipif(os.environ.get("HALITOOL_TEST_COMPILE") != "1",
                    reason="a real torch.compile takes minutes on two shared CPU cores; set HALITOOL_TEST_COMPILE=1")
def test_real_compile_matches_eager(tiny_checkpoint, mnist_dir, tmp_path):
    spec = f"mnist:{mnist_dir}"
    plain = _levels(extract_features(tiny_checkpoint, spec, tmp_path / "plain.h5")["output"])
    compiled = _levels(extract_features(tiny_checkpoint, spec, tmp_path / "c.h5", compile=True)["output"])
    for name in plain:
        np.testing.assert_allclose(compiled[name], plain[name], rtol=1e-4, atol=1e-4)

"""extract under faults: interrupts, kills, resume checks, bad inputs. Nothing but a complete file is ever at OUT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from helpers import run_cli, write_mnist, write_tiny_checkpoint
from halitool.data import open_dataset
from halitool.extract import extract_features
from halitool.features import open_features


def _levels(path: Path) -> dict[str, np.ndarray]:
    with open_features(path) as f:
        return {name: f.read_level(name) for name in f.levels}


def _interrupting(ds, after_batches: int):
    """The same data set, whose loader raises KeyboardInterrupt (as Ctrl-C does) on batch ``after_batches``."""
    calls = {"n": 0}

    def loader(indices):
        calls["n"] += 1
        if calls["n"] > after_batches:
            raise KeyboardInterrupt
        return ds.loader(indices)

    return replace(ds, loader=loader)


def test_interrupt_keeps_a_partial_that_only_a_matching_resume_finishes(tiny_checkpoint, mnist_dir, tmp_path):
    spec = f"mnist:{mnist_dir}"
    clean = extract_features(tiny_checkpoint, spec, tmp_path / "clean.h5", batch_size=40)["output"]
    out = tmp_path / "f.h5"
    partial = tmp_path / "f.h5.partial"
    with pytest.raises(KeyboardInterrupt):
        extract_features(tiny_checkpoint, _interrupting(open_dataset(spec), 3), out, batch_size=40)
    assert not out.exists() and partial.exists()
    with open_features(partial, allow_incomplete=True) as f:
        assert not f.complete and f.rows_done == 120
    with pytest.raises(Exception, match="incomplete"):
        open_features(partial)

    base = ["extract", str(tiny_checkpoint), "--data", spec, "-o", str(out), "--batch-size", "40"]
    code, _, stderr = run_cli(base)
    assert code == 4 and "--resume" in stderr and not out.exists()
    other = write_tiny_checkpoint(tmp_path / "other.safetensors", seed=1)
    code, _, stderr = run_cli(["extract", str(other), *base[2:], "--resume"])
    assert code == 3 and "checkpoint_sha256" in stderr and not out.exists()
    code, _, stderr = run_cli([*base, "--resume", "--latent", "sample"])
    assert code == 3 and "latent" in stderr and not out.exists()
    code, _, stderr = run_cli([*base, "--resume", "--split", "test"])
    assert code == 3 and "split" in stderr
    code, _, stderr = run_cli([*base, "--resume", "--format", "json"])
    assert code == 0, stderr
    assert "resuming at row 120" in stderr
    assert out.exists() and not partial.exists()
    for name, clean_values in _levels(clean).items():
        np.testing.assert_array_equal(_levels(out)[name], clean_values)


def test_unreadable_partial_restarts_from_scratch(tiny_checkpoint, mnist_dir, tmp_path):
    out = tmp_path / "f.h5"
    (tmp_path / "f.h5.partial").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # a writer killed mid-header
    code, _, stderr = run_cli(["extract", str(tiny_checkpoint), "--data", f"mnist:{mnist_dir}", "-o", str(out),
                               "--resume", "--format", "json"])
    assert code == 0, stderr
    assert "unreadable partial" in stderr and "from scratch" in stderr
    with open_features(out) as f:
        assert f.complete and f.n_samples == 250


def _rows_done(partial: Path) -> int:
    try:
        with h5py.File(partial, "r", locking=False) as h5:
            return int(h5.attrs.get("rows_done", 0))
    except (OSError, KeyError, RuntimeError):  # the writer is in the middle of a flush
        return 0


def _start_slow_run(checkpoint: Path, data: Path, out: Path) -> subprocess.Popen:
    # Batch size 1 makes the run long enough to be stopped in the middle, by a real signal.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "halitool", "-q", "extract", str(checkpoint), "--data", f"mnist:{data}", "-o", str(out),
         "--batch-size", "1", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _wait_for_rows(proc: subprocess.Popen, partial: Path, rows: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and _rows_done(partial) >= rows:
            return
        time.sleep(0.1)
    raise AssertionError(f"the run did not reach {rows} rows (exit {proc.poll()})")


@pytest.fixture(scope="module")
def big_mnist(tmp_path_factory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("big") / "mnist", n_train=2000, n_test=100)


@pytest.mark.slow
def test_sigkill_leaves_nothing_at_out_and_resume_completes(tiny_checkpoint, big_mnist, tmp_path):
    out, partial = tmp_path / "f.h5", tmp_path / "f.h5.partial"
    proc = _start_slow_run(tiny_checkpoint, big_mnist, out)
    try:
        _wait_for_rows(proc, partial, 20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and partial.exists()
    # Mean latents do not depend on the batching, so the rest can go at full speed.
    code, _, stderr = run_cli(["extract", str(tiny_checkpoint), "--data", f"mnist:{big_mnist}", "-o", str(out),
                               "--resume", "--batch-size", "256", "--format", "json"])
    assert code == 0, stderr
    assert "resuming at row" in stderr or "unreadable partial" in stderr
    assert not partial.exists()
    clean = extract_features(tiny_checkpoint, f"mnist:{big_mnist}", tmp_path / "clean.h5", batch_size=256)["output"]
    resumed = _levels(out)
    for name, values in _levels(clean).items():
        # Rows encoded one at a time may differ from batched ones in the last float bits (other conv kernels).
        np.testing.assert_allclose(resumed[name], values, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_sigint_exits_130_after_saving_progress(tiny_checkpoint, big_mnist, tmp_path):
    out, partial = tmp_path / "f.h5", tmp_path / "f.h5.partial"
    proc = _start_slow_run(tiny_checkpoint, big_mnist, out)
    try:
        _wait_for_rows(proc, partial, 5)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert not out.exists()
    with open_features(partial, allow_incomplete=True) as f:
        assert 5 <= f.rows_done < f.n_samples
        done = f.rows_done
        assert np.isfinite(f.read_level("z2", rows=np.arange(done))).all()


# ------------------------------------------------------------------------------------------------- bad input
def test_missing_checkpoint_exits_3(mnist_dir, tmp_path):
    out = tmp_path / "f.h5"
    code, _, stderr = run_cli(["extract", str(tmp_path / "nope.safetensors"), "--data", f"mnist:{mnist_dir}",
                               "-o", str(out)])
    assert code == 3 and "nope.safetensors" in stderr and "not found" in stderr
    assert not out.exists() and not (tmp_path / "f.h5.partial").exists()


def test_missing_output_folder_exits_2(tiny_checkpoint, mnist_dir, tmp_path):
    out = tmp_path / "no" / "such" / "f.h5"
    code, _, stderr = run_cli(["extract", str(tiny_checkpoint), "--data", f"mnist:{mnist_dir}", "-o", str(out)])
    assert code == 2 and "does not exist" in stderr


def test_existing_output_needs_force(tiny_checkpoint, mnist_dir, tmp_path):
    out = tmp_path / "f.h5"
    out.write_bytes(b"precious")
    args = ["extract", str(tiny_checkpoint), "--data", f"mnist:{mnist_dir}", "-o", str(out), "--split", "test"]
    code, _, stderr = run_cli(args)
    assert code == 2 and "--force" in stderr and out.read_bytes() == b"precious"
    code, _, stderr = run_cli([*args, "--force", "--format", "json"])
    assert code == 0, stderr
    with open_features(out) as f:
        assert f.n_samples == 50


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_usage_error(tiny_checkpoint, mnist_dir, tmp_path):
    code, _, stderr = run_cli(["extract", str(tiny_checkpoint), "--data", f"mnist:{mnist_dir}",
                               "-o", str(tmp_path / "f.h5"), "--device", "cuda"])
    assert code == 2 and "CUDA" in stderr
    assert not (tmp_path / "f.h5").exists()


def test_images_of_another_shape_exit_3(tiny_checkpoint, celeba_dir, tmp_path):
    code, _, stderr = run_cli(["extract", str(tiny_checkpoint), "--data", f"celeba:{celeba_dir}",
                               "-o", str(tmp_path / "f.h5")])
    assert code == 3 and "(3, 64, 64)" in stderr and "(1, 28, 28)" in stderr


def test_corrupt_celeba_image_names_the_file(celeba_dir, tmp_path):
    from halitool.models.config import ARCHITECTURES, Architecture, register_architecture

    # A test-sized architecture for CelebA's 3x64x64 images (the registry is how architectures are added).
    if "test_rgb64" not in ARCHITECTURES:
        register_architecture(Architecture(name="test_rgb64", image_shape=(3, 64, 64), x_widths=(4, 8),
                                           z1_channels=2, down_widths=(8,), hidden=16, z_dims=(8,),
                                           d_z1_widths=(8,), d_hidden=16))
    checkpoint = write_tiny_checkpoint(tmp_path / "rgb.safetensors", arch="test_rgb64")
    bad = celeba_dir / "img_align_celeba" / "000007.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    out = tmp_path / "f.h5"
    code, _, stderr = run_cli(["extract", str(checkpoint), "--data", f"celeba:{celeba_dir}", "-o", str(out),
                               "--batch-size", "4"])
    assert code == 3 and "000007.jpg" in stderr, stderr
    assert not out.exists()

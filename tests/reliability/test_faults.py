"""Fault injection: extract and train killed (SIGKILL) or interrupted (SIGINT) at seeded random moments, then
resumed; the result must equal an uninterrupted run's, and nothing half-written may ever sit at an output
path. A full disk during extract ends with one clear error and no file at the target path.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers import run_cli, write_mnist, write_tiny_checkpoint
from halitool.checkpoint import load_checkpoint
from halitool.features import open_features

from .conftest import assert_refused, error_lines

TRIALS = 20  # per command: half SIGKILL, half SIGINT
EXTRACT_BATCH = 2  # small, so that a run takes a while; fixed: mean latents are then bit-identical whatever the resume point
TRAIN_ARGS = ["--arch", "tiny", "--batch-size", "20", "--seed", "3", "--steps", "10", "--checkpoint-every", "2",
              "--sample-every", "1000", "--log-every", "1", "--device", "cpu"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _start(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "halitool", "-q", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), **kw)


def _kill_at(proc: subprocess.Popen, sig: int, delay: float, after: Path | None = None) -> tuple[int, str]:
    """Send ``sig`` ``delay`` seconds after the start, or after ``after`` appears (unless the run ended first);
    returns (exit status, stderr)."""
    if after is not None:
        deadline = time.monotonic() + 60
        while not after.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    try:
        _, stderr = proc.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
    return proc.returncode, stderr


def _plan(seed: int, low: float, high: float) -> list[tuple[int, float]]:
    rng = random.Random(seed)
    sigs = [signal.SIGKILL, signal.SIGINT] * (TRIALS // 2)
    return [(sig, rng.uniform(low, high)) for sig in sigs]


def _levels(path: Path) -> dict[str, np.ndarray]:
    with open_features(path) as f:
        return {name: f.read_level(name) for name in f.levels}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    mnist = write_mnist(root / "mnist", n_train=400, n_test=100)
    ckpt = write_tiny_checkpoint(root / "tiny.safetensors")
    return root, mnist, ckpt


# ------------------------------------------------------------------------------------------------- extract
@pytest.mark.slow
def test_extract_killed_at_random_moments_resumes_to_identical_features(small, tmp_path):
    root, mnist, ckpt = small
    clean = tmp_path / "clean.h5"
    code, _, stderr = run_cli(["-q", "extract", str(ckpt), "--data", f"mnist:{mnist}", "-o", str(clean),
                               "--batch-size", str(EXTRACT_BATCH), "--format", "json"])
    assert code == 0, stderr
    expected = _levels(clean)
    outcomes = {"before-any-row": 0, "partial": 0, "finished": 0}
    for trial, (sig, delay) in enumerate(_plan(seed=9, low=0.0, high=0.8)):
        out = tmp_path / f"t{trial}.h5"
        partial = out.with_name(out.name + ".partial")
        proc = _start(["extract", str(ckpt), "--data", f"mnist:{mnist}", "-o", str(out),
                       "--batch-size", str(EXTRACT_BATCH), "--device", "cpu", "--workers", "0"])
        # the moment: a seeded delay once the partial exists, so that most trials land while rows are written
        status, stderr = _kill_at(proc, sig, delay, after=partial)
        if status == 0:
            outcomes["finished"] += 1
        else:
            assert status in (-signal.SIGKILL, 130, -signal.SIGINT), (status, stderr)
            if sig == signal.SIGINT and status == 130:
                assert len(error_lines(stderr)) == 1 and "interrupted" in stderr
            if out.exists():  # stopped after the rename: what is at OUT is the complete file
                assert not partial.exists()
                outcomes["finished"] += 1
            else:
                outcomes["partial" if partial.exists() else "before-any-row"] += 1
                code, _, stderr = run_cli(["-q", "extract", str(ckpt), "--data", f"mnist:{mnist}", "-o", str(out),
                                           "--batch-size", str(EXTRACT_BATCH), "--resume", "--format", "json"])
                assert code == 0, stderr
        assert out.exists() and not partial.exists()
        got = _levels(out)
        assert got.keys() == expected.keys()
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=f"trial {trial} level {name}")
    assert outcomes["partial"] > 0, outcomes  # the plan must really interrupt some runs in the middle


def test_full_disk_during_extract_leaves_no_file_at_target(small, tmp_path):
    root, mnist, ckpt = small
    out = tmp_path / "f.h5"

    def small_disk():
        # Writes past 64 KiB fail with EFBIG (SIGXFSZ ignored), as they would on a full disk.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    proc = _start(["extract", str(ckpt), "--data", f"mnist:{mnist}", "-o", str(out), "--device", "cpu"],
                  preexec_fn=small_disk)
    stdout, stderr = proc.communicate(timeout=120)
    line = assert_refused((proc.returncode, stdout, stderr), 1, [])
    # The disk blocks are reserved when the file is created, so a full disk is reported there, with the reason.
    assert "cannot create the features file" in line and "too large" in line.lower(), line
    assert not out.exists()
    assert not Path(f"{out}.partial").exists()  # it held no rows: nothing to resume, nothing left behind


# --------------------------------------------------------------------------------------------------- train
@pytest.mark.slow
def test_train_killed_at_random_moments_resumes_to_identical_weights(small, tmp_path):
    root, mnist, _ = small
    mnist = write_mnist(tmp_path / "mnist", n_train=100, n_test=20)  # train takes only its first 100 images
    full = tmp_path / "full"
    code, _, stderr = run_cli(["-q", "train", "--data", f"mnist:{mnist}", "--out", str(full), *TRAIN_ARGS])
    assert code == 0, stderr
    expected = load_file(str(full / "model.safetensors"))
    outcomes = {"no-checkpoint": 0, "resumed": 0, "finished": 0}
    for trial, (sig, delay) in enumerate(_plan(seed=11, low=1.0, high=6.0)):
        run = tmp_path / f"run{trial}"
        proc = _start(["train", "--data", f"mnist:{mnist}", "--out", str(run), *TRAIN_ARGS])
        status, stderr = _kill_at(proc, sig, delay)
        if status != 0:
            assert status in (-signal.SIGKILL, 130, -signal.SIGINT), (status, stderr)
            if (run / "model.safetensors").exists():
                # whatever the moment, the checkpoint on disk loads and the state says where it stopped
                loaded = load_checkpoint(run / "model.safetensors")
                assert 1 <= loaded.training["steps"] <= 10
                assert (run / "state.safetensors").exists(), f"trial {trial}: a checkpoint without its state"
                code, _, stderr = run_cli(["-q", "train", "--data", f"mnist:{mnist}", "--out", str(run),
                                           *TRAIN_ARGS, "--resume"])
                outcomes["resumed"] += 1
            else:
                code, _, stderr = run_cli(["-q", "train", "--data", f"mnist:{mnist}", "--out", str(run), *TRAIN_ARGS])
                outcomes["no-checkpoint"] += 1
            assert code == 0, stderr
        else:
            outcomes["finished"] += 1
        got = load_file(str(run / "model.safetensors"))
        assert got.keys() == expected.keys()
        for name in expected:
            assert torch.equal(got[name], expected[name]), f"trial {trial}: {name} differs"
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, 11)), f"trial {trial}: metrics steps {steps}"
    assert outcomes["resumed"] > 0, outcomes


def test_train_killed_between_its_first_state_and_checkpoint_resumes_exactly(small, tmp_path, monkeypatch):
    """The first checkpoint writes the state, then the model file: a kill between them must leave a run that
    --resume continues (a model file without a state would be refused both with and without --resume)."""
    import halitool.train

    root, mnist, _ = small
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run_cli(["-q", "train", "--data", f"mnist:{mnist}", "--out", str(full), *TRAIN_ARGS])[0] == 0

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C right after the state's rename

    with monkeypatch.context() as patch:
        patch.setattr(halitool.train, "save_checkpoint", killed)
        code, _, _ = run_cli(["-q", "train", "--data", f"mnist:{mnist}", "--out", str(cut), *TRAIN_ARGS])
    assert code == 130 and (cut / "state.safetensors").exists() and not (cut / "model.safetensors").exists()
    code, _, stderr = run_cli(["-q", "train", "--data", f"mnist:{mnist}", "--out", str(cut), *TRAIN_ARGS, "--resume"])
    assert code == 0, stderr
    expected, got = load_file(str(full / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), f"{name}: the resumed run differs"


@pytest.mark.parametrize("older", ["model.safetensors", "state.json"])
def test_train_torn_between_checkpoint_and_state_still_resumes_exactly(small, tmp_path, older):
    """A kill between the renames of the state and model files (or of the readable state.json) leaves files of
    two steps; the resume must still equal an uninterrupted run (it reads state.safetensors alone)."""
    root, mnist, _ = small
    args = [a if a != "10" else "6" for a in TRAIN_ARGS]
    full, torn, early = tmp_path / "full", tmp_path / "torn", tmp_path / "early"
    assert run_cli(["-q", "train", "--data", f"mnist:{mnist}", "--out", str(full), *args])[0] == 0
    four = [a if a != "6" else "4" for a in args]
    two = [a if a != "6" else "2" for a in args]
    assert run_cli(["-q", "train", "--data", f"mnist:{mnist}", "--out", str(torn), *four])[0] == 0
    assert run_cli(["-q", "train", "--data", f"mnist:{mnist}", "--out", str(early), *two])[0] == 0
    (torn / older).write_bytes((early / older).read_bytes())  # step 2's file beside step 4's others
    code, _, stderr = run_cli(["-q", "train", "--data", f"mnist:{mnist}", "--out", str(torn), *args, "--resume"])
    assert code == 0, stderr
    expected, got = load_file(str(full / "model.safetensors")), load_file(str(torn / "model.safetensors"))
    for name in expected:
        assert torch.equal(got[name], expected[name]), f"{name}: a torn resume trained from mixed states"

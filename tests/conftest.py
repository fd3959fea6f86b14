"""Fixtures that write small data sets in the real on-disk layouts."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from halitool.data.idx import encode_idx


def digit_like_images(labels: np.ndarray, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """uint8 images whose class is visible: a bright bar whose position and angle depend on the label."""
    n = len(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.zeros((n, size, size), dtype=np.float32)
    for i, label in enumerate(labels):
        angle = np.pi * label / 10 + rng.normal(0, 0.05)
        cx, cy = size / 2 + rng.normal(0, 1), size / 2 + rng.normal(0, 1)
        dist = np.abs((xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle))
        along = np.abs((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle))
        images[i] = np.clip(2.0 - dist, 0, 1) * (along < 4 + label * 0.8)
    return (images * 255).astype(np.uint8)


def write_mnist(root: Path, n_train: int = 200, n_test: int = 50, gz: bool = False, seed: int = 0,
                classes: tuple[str, ...] | list[str] | None = tuple(str(d) for d in range(10))) -> Path:
    """Four IDX files in MNIST's layout with digit-like, class-dependent images, and ``classes.txt`` naming the
    classes (the digits unless told otherwise; None writes no such file)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = digit_like_images(labels, rng)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = encode_idx(array)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
    if classes is not None:
        (root / "classes.txt").write_text("".join(name + "\n" for name in classes))
    return root


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    return write_mnist(tmp_path / "mnist")


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread: the machine's cores are shared, small problems run steadier on one, and
    in-process results then sum in the same order as subprocesses started with OMP_NUM_THREADS=1."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run_cli(args: list[str], env: dict | None = None):
    """Run ``halitool`` in-process through its real entry point; returns (exit code, stdout, stderr)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from halitool.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def celeba_dir(tmp_path) -> Path:
    """A CelebA tree in the official txt layout (10 JPEGs; tests/datasets.py: celeba_truth(10))."""
    from datasets import write_celeba

    return write_celeba(tmp_path / "celeba", n=10, variant="txt")


@pytest.fixture
def celeba_csv_dir(tmp_path) -> Path:
    """The same CelebA tree in the CSV redistribution's layout (nested image folder)."""
    from datasets import write_celeba

    return write_celeba(tmp_path / "celeba_csv", n=10, variant="csv")


@pytest.fixture
def image_folder_dir(tmp_path) -> Path:
    """Six solid-colour 40x30 images with attributes.csv (tests/datasets.py: folder_truth(6))."""
    from datasets import write_image_folder

    return write_image_folder(tmp_path / "images", n=6)


def write_tiny_checkpoint(path: Path, seed: int = 0, arch: str = "tiny") -> Path:
    """A checkpoint of architecture ``arch`` with weights ~ N(0, 0.3) from ``seed`` (distinct, non-trivial latents)."""
    import torch

    from halitool.checkpoint import save_checkpoint
    from halitool.models import ModelConfig, build_model

    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch=arch))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return save_checkpoint(Path(path), model, preprocessing={"value_range": [0, 1]}, training={"seed": seed}, metrics={})


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    return write_tiny_checkpoint(tmp_path / "tiny.safetensors")


def record_reads(monkeypatch, module) -> tuple[list[int], dict]:
    """Make ``module.open_dataset`` hand out data sets that record every row index whose images are read.

    Returns (the row indices read, in order; a dict whose "ds" is the last data set opened)."""
    from halitool.data import open_dataset

    read: list[int] = []
    opened: dict = {}

    def recording_open(spec):
        ds = open_dataset(spec)
        loader = ds.loader

        def load(idx):
            read.extend(int(i) for i in idx)
            return loader(idx)

        ds.loader = load
        opened["ds"] = ds
        return ds

    monkeypatch.setattr(module, "open_dataset", recording_open)
    return read, opened


@pytest.fixture
def no_matplotlib(monkeypatch):
    """Make ``import matplotlib`` (and its submodules, even ones already imported) fail, as where the ``plot``
    extra is not installed."""
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)

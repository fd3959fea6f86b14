"""Fixtures shared by the tests; the plain functions they use are in helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import write_celeba, write_image_folder, write_mnist, write_tiny_checkpoint


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


@pytest.fixture
def celeba_dir(tmp_path) -> Path:
    """A CelebA tree in the official txt layout (10 JPEGs; helpers.py: celeba_truth(10))."""
    return write_celeba(tmp_path / "celeba", n=10, variant="txt")


@pytest.fixture
def celeba_csv_dir(tmp_path) -> Path:
    """The same CelebA tree in the CSV redistribution's layout (nested image folder)."""
    return write_celeba(tmp_path / "celeba_csv", n=10, variant="csv")


@pytest.fixture
def image_folder_dir(tmp_path) -> Path:
    """Six solid-colour 40x30 images with attributes.csv (helpers.py: folder_truth(6))."""
    return write_image_folder(tmp_path / "images", n=6)


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    return write_tiny_checkpoint(tmp_path / "tiny.safetensors")


@pytest.fixture
def no_matplotlib(monkeypatch):
    """Make ``import matplotlib`` (and its submodules, even ones already imported) fail, as where the ``plot``
    extra is not installed."""
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)

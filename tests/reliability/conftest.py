"""Shared assets of the reliability suite (built once per session) and the checks every refusal must pass."""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import write_celeba, write_image_folder, write_mnist, write_tiny_checkpoint

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Assets:
    """Valid inputs of every kind; cases copy and damage them, never change them in place."""

    mnist: Path
    tiny: Path  # tiny-architecture checkpoint
    features: Path  # complete features file of ``tiny`` on ``mnist`` (classes and attributes)
    bare_features: Path  # complete features file with neither classes nor attributes
    celeba_txt: Path
    celeba_csv: Path
    folder: Path


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Assets:
    import numpy as np

    from halitool.extract import extract_features
    from halitool.features import write_features

    root = tmp_path_factory.mktemp("assets")
    mnist = write_mnist(root / "mnist", n_train=60, n_test=20)
    tiny = write_tiny_checkpoint(root / "tiny.safetensors")
    features = Path(extract_features(tiny, f"mnist:{mnist}", root / "features.h5", device="cpu")["output"])
    rng = np.random.default_rng(0)
    bare = write_features(root / "bare.h5", {"z1": rng.normal(size=(30, 4)).astype(np.float32)},
                          np.array([0] * 20 + [2] * 10, dtype=np.int8))
    return Assets(
        mnist=mnist, tiny=tiny, features=features, bare_features=bare,
        celeba_txt=write_celeba(root / "celeba_txt", n=5, variant="txt"),
        celeba_csv=write_celeba(root / "celeba_csv", n=5, variant="csv"),
        folder=write_image_folder(root / "folder", n=4),
    )


@pytest.fixture(autouse=True)
def private_data_home(tmp_path_factory, monkeypatch):
    # Caches (reference classifier, semisup features) must never land in the user's folders.
    monkeypatch.setenv("HALITOOL_DATA", str(tmp_path_factory.getbasetemp() / "data-home"))


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every file and folder under ``folder``: kind, size, content hash and modification time."""
    state = {}
    for path in sorted(Path(folder).rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_dir():
            state[rel] = ("dir",)
        else:
            data = path.read_bytes()
            state[rel] = ("file", len(data), hashlib.sha256(data).hexdigest(), path.stat().st_mtime_ns)
    return state


def error_lines(stderr: str) -> list[str]:
    return [line for line in ANSI.sub("", stderr).splitlines() if line.startswith("Error:")]


def assert_refused(result, code: int, mentions=(), stdout_ok: bool = False) -> str:
    """``result`` of run_cli/subprocess is a clean refusal: exit ``code``, exactly one ``Error:`` line that
    contains every string of ``mentions``, no traceback, nothing on stdout. Returns the Error line."""
    got, stdout, stderr = result
    assert got == code, f"exit {got}, expected {code}; stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1, f"expected one Error: line, got {lines}; stderr:\n{stderr}"
    for text in mentions:
        assert str(text) in lines[0], f"{text!r} not in {lines[0]!r}"
    if not stdout_ok:
        assert stdout == "", stdout
    return lines[0]


def copy(src: Path, dst: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    return dst


__all__ = ["Assets", "assert_refused", "copy", "error_lines", "snapshot"]

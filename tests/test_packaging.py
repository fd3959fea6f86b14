"""The shipped models are package data: every install (wheel, ``pip install .``, editable, a checkout) finds them."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from halitool.checkpoint import resolve_checkpoint, shipped_model_dirs
from halitool.fileio import sha256_file

REPO = Path(__file__).resolve().parents[1]
SOURCE_MODELS = REPO / "pretrained"
# What pretrained/README.md and the CLI's defaults name; the tests also cover any other *.safetensors shipped there.
NAMED = ("hali-mnist", "hali-mnist-ssl100", "hali-mnist-6level", "hali-mnist-cluster")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _shipped_files() -> list[Path]:
    """The files that must install with the package: every model in pretrained/ and the model card."""
    files = sorted(SOURCE_MODELS.glob("*.safetensors")) + [SOURCE_MODELS / "README.md"]
    assert {f"{name}.safetensors" for name in NAMED} <= {p.name for p in files}
    assert all(p.is_file() for p in files)
    return files


@pytest.mark.parametrize("name", NAMED)
def test_a_shipped_name_resolves_to_the_source_trees_file(name, monkeypatch):
    monkeypatch.delenv("HALITOOL_PRETRAINED", raising=False)
    found = resolve_checkpoint(name)
    assert found.parent in shipped_model_dirs()
    assert sha256_file(found) == sha256_file(SOURCE_MODELS / f"{name}.safetensors")


def test_the_package_list_covers_every_package_and_maps_the_models():
    setuptools_config = _pyproject()["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "halitool").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert set(setuptools_config["packages"]) == on_disk | {"halitool.pretrained"}
    assert setuptools_config["package-dir"] == {"halitool.pretrained": "pretrained"}
    assert (SOURCE_MODELS / "__init__.py").is_file()
    patterns = setuptools_config["package-data"]["halitool.pretrained"]
    unshipped = [p.name for p in SOURCE_MODELS.iterdir() if p.is_file() and p.name != "__init__.py"
                 and not any(fnmatch.fnmatch(p.name, pattern) for pattern in patterns)]
    assert unshipped == [], f"pretrained/ holds files that would not install: {unshipped}"


def _floor(requirements: list[str], name: str) -> tuple[int, ...]:
    """The version floor of ``name>=X.Y`` among ``requirements``."""
    floors = [m.group(1) for r in requirements if (m := re.fullmatch(rf"\s*{name}\s*>=\s*([\d.]+)\s*", r))]
    assert len(floors) == 1, f"no single {name}>=X among {requirements}"
    return tuple(int(part) for part in floors[0].split("."))


def test_the_test_extra_can_build_the_wheel_without_isolation():
    doc = _pyproject()
    assert _floor(doc["project"]["optional-dependencies"]["test"], "setuptools") >= \
        _floor(doc["build-system"]["requires"], "setuptools")


def _copy_source(dest: Path) -> Path:
    """The source tree without version control, virtual environments, build outputs or local data: building from
    a copy leaves no build/ or *.egg-info in the checkout, and no stale build/lib file can enter the wheel."""
    top_level = {".git", ".venv", "venv", "build", "dist", "runs", "data"}
    anywhere = {"__pycache__", ".pytest_cache", ".hypothesis"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in anywhere or n.endswith(".egg-info")}
        return skip | (top_level & set(names) if Path(folder) == REPO else set())

    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


@pytest.mark.slow
def test_the_wheel_ships_the_models_and_an_install_of_it_finds_them(tmp_path):
    source = _copy_source(tmp_path / "source")
    wheels = tmp_path / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "--check-build-dependencies", "--no-index", "-q", "-w", str(wheels)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = wheels.glob("halitool-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        sizes = {info.filename: info.file_size for info in zf.infolist()}
        for path in _shipped_files():
            member = f"halitool/pretrained/{path.name}"
            assert member in sizes, f"{member} is not in {wheel.name}"
            assert sizes[member] == path.stat().st_size, member
        modules = {str(p.relative_to(REPO)) for p in (REPO / "halitool").rglob("*.py") if "__pycache__" not in p.parts}
        assert modules <= set(sizes), f"modules missing from the wheel: {sorted(modules - set(sizes))}"
        assert not any(name.startswith("pretrained/") for name in sizes)  # no top-level package "pretrained"
        # A pure-Python wheel unpacked is what pip installs; run the lookup there, away from any source tree.
        installed = tmp_path / "site"
        zf.extractall(installed)
    env = {**os.environ, "PYTHONPATH": str(installed)}
    env.pop("HALITOOL_PRETRAINED", None)
    work = tmp_path / "elsewhere"
    work.mkdir()
    probe = ("import sys, halitool\nfrom halitool.checkpoint import resolve_checkpoint\n"
             "assert halitool.__file__.startswith(sys.argv[1]), halitool.__file__\n"
             "for name in sys.argv[2:]: sys.stdout.write(str(resolve_checkpoint(name)) + '\\n')\n")
    proc = subprocess.run([sys.executable, "-c", probe, str(installed), *NAMED], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = [Path(line) for line in proc.stdout.splitlines()]
    assert found == [installed / "halitool" / "pretrained" / f"{name}.safetensors" for name in NAMED]
    assert [sha256_file(p) for p in found] == [sha256_file(SOURCE_MODELS / p.name) for p in found]


@pytest.mark.slow
def test_the_sdist_carries_the_models(tmp_path):
    source = _copy_source(tmp_path / "source")
    out = tmp_path / "sdist"
    build = "import sys\nfrom setuptools import build_meta\nbuild_meta.build_sdist(sys.argv[1])\n"
    proc = subprocess.run([sys.executable, "-c", build, str(out)], cwd=source, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (sdist,) = out.glob("halitool-*.tar.gz")
    with tarfile.open(sdist) as tf:
        sizes = {m.name.split("/", 1)[1]: m.size for m in tf.getmembers() if m.isfile()}
    for path in _shipped_files() + [SOURCE_MODELS / "__init__.py"]:
        member = f"pretrained/{path.name}"
        assert sizes.get(member) == path.stat().st_size, f"{member} missing or of another size in {sdist.name}"

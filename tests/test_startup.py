"""Start-up stays light: the CLI, its help and ``inspect`` run without importing torch (not timed: each case runs
in a fresh interpreter and reads ``sys.modules`` at its end; benchmarks/startup.py measures the seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import halitool
from halitool.features import write_features

# Run halitool's entry point on argv[2:] in this fresh interpreter, then write to argv[1] which of the watched
# packages it imported (every module whose top-level name is one of them) and its exit code.
CHILD = """
import json, sys
out, args = sys.argv[1], sys.argv[2:]
code = None
if args == ["--import-only"]:
    import halitool.cli
else:
    from halitool.cli import main
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code
watched = {"torch", "numpy", "h5py", "sklearn", "scipy", "pandas", "matplotlib", "PIL", "safetensors"}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in watched or m in ("rich.progress", "rich.table"))
with open(out, "w") as f:
    json.dump({"code": code, "loaded": loaded, "halitool": sys.modules["halitool"].__path__[0]}, f)
"""

# What neither the CLI's import nor any --help may cost.
NOT_AT_START = ("torch", "numpy", "h5py", "sklearn", "scipy", "pandas", "matplotlib", "PIL", "safetensors",
                "rich.progress", "rich.table")


def run_child(args: list[str], tmp_path: Path) -> tuple[int | None, set[str], str]:
    """(exit code, modules loaded, stdout) of ``halitool ARGS`` in a fresh interpreter using this halitool."""
    out = tmp_path / "modules.json"
    root = Path(halitool.__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    env["NO_COLOR"] = "1"
    # In root too: `python -c` puts the working folder before PYTHONPATH, and another checkout may be there.
    done = subprocess.run([sys.executable, "-c", CHILD, str(out), *args], env=env, cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and out.is_file(), done.stderr
    doc = json.loads(out.read_text())
    assert Path(doc["halitool"]).resolve() == root / "halitool"  # this checkout's, not another installed one
    return doc["code"], set(doc["loaded"]), done.stdout


def top_level(modules: set[str]) -> set[str]:
    return {m.split(".")[0] if not m.startswith("rich.") else m for m in modules}


def test_importing_the_cli_imports_nothing_heavy(tmp_path):
    _, loaded, _ = run_child(["--import-only"], tmp_path)
    assert not top_level(loaded) & set(NOT_AT_START), sorted(loaded)


@pytest.mark.parametrize("args", [
    ["--help"], ["train", "--help"], ["extract", "--help"], ["inspect", "--help"], ["semisup", "--help"],
    ["probe-attributes", "--help"], ["disentanglement", "--help"], ["predict", "--help"], ["reconstruct", "--help"],
    ["data", "info", "--help"],
    ["info", "--help"],
], ids=lambda a: " ".join(a))
def test_help_imports_nothing_heavy(tmp_path, args):
    code, loaded, stdout = run_child(args, tmp_path)
    assert code == 0 and "Usage:" in stdout
    assert not top_level(loaded) & set(NOT_AT_START), sorted(loaded)


def test_inspect_reads_hdf5_without_torch(tmp_path):
    path = write_features(tmp_path / "f.h5", {"z1": np.zeros((6, 2, 3), np.float32)},
                          np.array([0, 0, 0, 1, 2, 2], np.int8), labels=np.array([0, 1, 0, 1, 0, 1]))
    code, loaded, stdout = run_child(["inspect", str(path), "--format", "json"], tmp_path)
    assert code == 0 and json.loads(stdout)["splits"] == {"train": 3, "valid": 1, "test": 2}
    assert {"h5py", "numpy"} <= top_level(loaded)  # it did read the file
    assert not top_level(loaded) & {"torch", "sklearn", "scipy", "pandas", "matplotlib", "PIL", "safetensors"}, \
        sorted(loaded)


def test_the_check_sees_torch_when_a_command_needs_it(tmp_path):
    """The control: --version reports torch's version, so the same check must find torch loaded."""
    code, loaded, stdout = run_child(["--version"], tmp_path)
    assert code == 0 and "torch " in stdout
    assert "torch" in top_level(loaded)


def test_the_light_choices_are_the_librarys():
    """halitool.choices holds the values the CLI offers at start-up; the modules that act on them agree."""
    from halitool import choices
    from halitool.data import base
    from halitool.probe import CLASS_WEIGHTS, DEFAULT_C_GRID, METRICS, SOLVERS

    assert tuple(SOLVERS) == choices.PROBE_SOLVERS
    assert (METRICS, CLASS_WEIGHTS, DEFAULT_C_GRID) == (choices.PROBE_METRICS, choices.CLASS_WEIGHTS,
                                                        choices.DEFAULT_C_GRID)
    assert (base.SPLITS, base.SPLIT_NAMES, base.SPLIT_CHOICES) == (choices.SPLITS, choices.SPLIT_NAMES,
                                                                   choices.SPLIT_CHOICES)


def test_the_lazy_group_lists_and_loads_every_command():
    """Commands load on first use; the help lists all of them and a typo still gets Click's suggestion."""
    import click

    from helpers import run_cli
    from halitool.cli import COMMANDS, cli

    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        assert cli.get_command(ctx, name).name == name
    assert cli.get_command(ctx, "no-such-command") is None
    code, stdout, _ = run_cli(["--help"])
    listed = stdout.split("Commands:", 1)[1].split()
    assert code == 0 and all(name in listed for name in COMMANDS)
    code, _, stderr = run_cli(["inspec"])
    assert code == 2 and "No such command 'inspec'. Did you mean 'inspect'?" in stderr

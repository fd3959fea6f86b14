"""Benchmark of the command line's start-up: wall and CPU seconds of whole ``halitool`` processes, against the floor.

Each case runs ``--repeats`` times in a fresh subprocess, the cases interleaved (one run of each per round) so
that a change in the machine's load weighs on all of them alike; the result is each case's median (and min and
max) in seconds. The baselines run in the same rounds: ``python -c pass`` (the interpreter's own start-up, the
floor), ``python -c "import h5py"`` (the floor of ``inspect``, which reads HDF5) and ``python -c "import torch"``
(what every command paid before start-up became lazy). Wall time is what a person waits; CPU time (user + system
of the child) moves less with the machine's load. For each halitool case the result also says whether the process
imported torch.

Cases: ``halitool --help``; ``halitool inspect FILE --format json`` on a small features file written here with
halitool.features.write_features; ``halitool data info mnist:DIR --format json`` on a small synthetic MNIST in
IDX layout written here (opening MNIST measures the digits' attributes in torch, so this one imports torch).

Prints one JSON line. Usage: python benchmarks/startup.py [--repeats N] [--mnist SPEC] [--no-data-info]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from halitool.data.idx import encode_idx  # noqa: E402
from halitool.features import write_features  # noqa: E402

# Run a halitool command in this interpreter as ``python -m halitool`` would, then say whether torch came in.
PROBE_TORCH = (
    "import runpy, sys\n"
    "sys.argv = ['halitool', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('halitool', run_name='__main__', alter_sys=True)\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "else:\n"
    "    code = 0\n"
    "sys.stdout.flush()\n"
    "sys.stderr.write('\\nHALITOOL=%s TORCH_IMPORTED=%s EXIT=%s\\n'\n"
    "                 % (sys.modules['halitool'].__path__[0], 'torch' in sys.modules, code))\n"
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_small_mnist(root: Path, n_train: int = 100, n_test: int = 20) -> Path:
    """Four IDX files in MNIST's layout with random uint8 images (enough for ``data info``)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(encode_idx(images))
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(encode_idx(labels))
    return root


def write_small_features(path: Path, n: int = 100) -> Path:
    rng = np.random.default_rng(0)
    split = np.repeat(np.array([0, 1, 2], np.int8), [n - 2 * (n // 5), n // 5, n // 5])
    return write_features(path, {"z1": rng.normal(size=(n, 2, 7, 7)).astype(np.float32),
                                 "z2": rng.normal(size=(n, 8)).astype(np.float32)},
                          split, labels=np.arange(n) % 10)


def child_env() -> dict:
    """This checkout's halitool first on the path; no colour, so that output does not depend on the terminal.
    (The children also run in this checkout: ``python -c``/``-m`` put the working folder before PYTHONPATH.)"""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["NO_COLOR"] = "1"
    return env


def time_once(argv: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the child and its threads) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def imports_torch(args: list[str], env: dict) -> bool:
    """Whether ``halitool ARGS`` imports torch (checked to run this checkout's halitool)."""
    done = subprocess.run([sys.executable, "-c", PROBE_TORCH, *args], env=env, cwd=ROOT, capture_output=True,
                          text=True)
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    if not last.startswith("HALITOOL=") or not last.endswith("EXIT=0"):
        raise RuntimeError(f"halitool {' '.join(args)}: {done.stderr[-2000:]}")
    package, torch_imported, _ = last.split()
    if Path(package.split("=", 1)[1]).resolve() != ROOT / "halitool":
        raise RuntimeError(f"the child ran {package}, not {ROOT / 'halitool'}")
    return torch_imported == "TORCH_IMPORTED=True"


def run(argv: list[str] | None = None) -> dict:
    """Run the benchmark with command-line ``argv``; the result document."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="runs of each case [default: 15]")
    parser.add_argument("--mnist", default=None, help="SPEC for `data info` [default: a small synthetic MNIST]")
    parser.add_argument("--no-data-info", action="store_true", help="leave out `halitool data info`")
    args = parser.parse_args(argv)

    env = child_env()
    py = sys.executable
    load_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="halitool-startup-") as tmp:
        features = write_small_features(Path(tmp) / "f.h5")
        halitool_cases = {"help": ["--help"], "inspect": ["inspect", str(features), "--format", "json"]}
        if not args.no_data_info:
            spec = args.mnist or f"mnist:{write_small_mnist(Path(tmp) / 'mnist')}"
            halitool_cases["data_info"] = ["data", "info", spec, "--format", "json"]
        cases = {
            "python_pass": [py, "-c", "pass"],
            "import_h5py": [py, "-c", "import h5py"],
            "import_torch": [py, "-c", "import torch"],
            **{name: [py, "-m", "halitool", *a] for name, a in halitool_cases.items()},
        }
        for argv_ in cases.values():  # warm the page cache and the .pyc files; not timed
            time_once(argv_, env)
        times: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, argv_ in cases.items():
                wall, used = time_once(argv_, env)
                times[name].append(wall)
                cpu[name].append(used)
        torch_used = {name: imports_torch(a, env) for name, a in halitool_cases.items()}

    medians = {name: round(statistics.median(t), 4) for name, t in times.items()}
    return {
        "benchmark": "startup",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1min_start": load_start,
        "load_average_1min_end": round(os.getloadavg()[0], 2),
        "repeats": args.repeats,
        "median_seconds": medians,
        "min_seconds": {name: round(min(t), 4) for name, t in times.items()},
        "max_seconds": {name: round(max(t), 4) for name, t in times.items()},
        # Above the interpreter's own start-up: what halitool (and its imports) add.
        "median_over_python_seconds": {name: round(medians[name] - medians["python_pass"], 4)
                                       for name in halitool_cases},
        # CPU seconds (user + system, all threads): less sensitive than wall time to other work on the machine.
        "median_cpu_seconds": {name: round(statistics.median(t), 4) for name, t in cpu.items()},
        "imports_torch": torch_used,
    }


def main() -> None:
    print(json.dumps(run()))


if __name__ == "__main__":
    main()

"""Run the extract, probe, semisup, startup and train benchmarks, each against its baseline and its limit, in this
process (startup times child processes); print one JSON document (machine, date, commit, device, and per benchmark
its numbers).

    python benchmarks/run_all.py                 # quick sizes (about 5-10 minutes on two busy CPU cores)
    python benchmarks/run_all.py --full          # full sizes: MNIST 70,000, CelebA-sized probe, 60,000-row semisup
    python benchmarks/run_all.py --only extract_mnist,probe --device cuda --mnist mnist:/data/mnist

Quick: extract --quick (10,000 MNIST images from IDX) and --celeba-synthetic 2,000; probe --quick
--sklearn-subset 4 (50,000 x 256, 40 attributes x 8 C; scikit-learn timed on 4 attributes, scaled);
semisup --quick (10,000 + 2,000 synthetic rows, 10 seeds, scikit-learn LabelSpreading on 2 seeds); startup
(`halitool --help`, `inspect`, `data info` in fresh processes against `python -c pass` and `import torch`) 10 runs
each; train --quick (halitool train vs a plain loop of the same model: mnist 30 steps at batch 100, celeba64 4
steps at batch 32 on synthetic images, one torch thread).
Full: extract (70,000 MNIST) and --celeba-synthetic 202,599; probe at CelebA's sizes (162,770 x 1,024,
40 attributes x 10 C, scikit-learn on 2 attributes); semisup on 60,000 + 10,000 rows, 10 seeds (scikit-learn on 2
seeds); startup 30 runs each; train: mnist 200 steps, celeba64 20 steps at batch 64.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import extract as extract_benchmark  # noqa: E402
import probe as probe_benchmark  # noqa: E402
import semisup as semisup_benchmark  # noqa: E402
import startup as startup_benchmark  # noqa: E402
import train as train_benchmark  # noqa: E402
import torch  # noqa: E402
from limits import machine  # noqa: E402

from halitool.runtime import library_versions, resolve_device  # noqa: E402


def commit() -> str:
    """The checked-out commit, with ``+`` when the tree has changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def plan(full: bool, device: str, threads: int, mnist: str) -> dict[str, tuple]:
    """name -> (module, argv) of every benchmark run."""
    dev = ["--device", device]
    data = ["--data", mnist]
    thread = ["--threads", str(threads)] if threads else []
    if full:
        return {
            "extract_mnist": (extract_benchmark, [*data, *dev]),
            "extract_celeba_cache": (extract_benchmark, ["--celeba-synthetic", "202599", *dev]),
            "probe": (probe_benchmark, ["--sklearn-subset", "2", "--c-values", "10", *thread, *dev]),
            "semisup": (semisup_benchmark, ["--seeds", "10", "--baseline-seeds", "2"]),
            "startup": (startup_benchmark, ["--repeats", "30"]),
            "train": (train_benchmark, [*data, *dev]),
        }
    return {
        "extract_mnist": (extract_benchmark, ["--quick", *data, *dev]),
        "extract_celeba_cache": (extract_benchmark, ["--celeba-synthetic", "2000", "--batch-size", "256", *dev]),
        "probe": (probe_benchmark, ["--quick", "--sklearn-subset", "4", *thread, *dev]),
        "semisup": (semisup_benchmark, ["--quick", "--seeds", "10", "--baseline-seeds", "2"]),
        "startup": (startup_benchmark, ["--repeats", "10"]),
        "train": (train_benchmark, ["--quick", *data, *dev]),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="full sizes instead of the quick ones")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda [default: auto]")
    parser.add_argument("--only", default=None, help="comma-separated subset of: extract_mnist, "
                        "extract_celeba_cache, probe, semisup, startup, train")
    parser.add_argument("--mnist", default="mnist", help="SPEC of the MNIST IDX files [default: mnist]")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the probe solver [default: torch's]")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    runs = plan(args.full, args.device, args.threads, args.mnist)
    if args.only:
        wanted = [name.strip() for name in args.only.split(",")]
        unknown = sorted(set(wanted) - set(runs))
        if unknown:
            parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(runs)}")
        runs = {name: runs[name] for name in wanted}
    document = {
        "suite": "halitool benchmarks",
        "full": args.full,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit(),
        "node": platform.node(),
        **machine(device),
        "library_versions": library_versions(),
        "benchmarks": {},
    }
    for name, (module, module_argv) in runs.items():
        print(f"{name}: {' '.join(module_argv)}", file=sys.stderr)
        t0 = time.perf_counter()
        result = module.run(module_argv)
        result["argv"] = module_argv
        result["wall_seconds"] = round(time.perf_counter() - t0, 1)
        document["benchmarks"][name] = result
        torch.set_num_threads(document["torch_threads"])  # a benchmark may have changed it
    document["load_average_1min_end"] = machine(device)["load_average_1min"]
    print(json.dumps(document, indent=1, default=str))


if __name__ == "__main__":
    main()

"""The paper's CelebA probe at full size on one machine: ``probe-attributes`` of z1, z2 and z1+z2 over 40 attributes
on a CelebA-shaped features file, as a separate process, with its peak memory and time.

The file has CelebA's 202,599 rows in its train/valid/test split sizes (162,770 / 19,867 / 19,962), the shapes of
``celeba64``'s levels (z1 64 x 16 x 16 = 16,384 columns, z2 256) and 40 binary attributes planted at CelebA's
positive rates: each attribute thresholds a linear function of a 32-dimensional latent that z1 (through a fixed
random map, plus noise) and z2 (its first half, plus noise) both carry, so the probes have something to find.
It is 13.5 GB; it is built once under ``--out`` and reused.

Accuracy check: the same probes on a subsample that the in-memory solver can hold (``--subsample`` rows in the
same split proportions, the projections computed in memory with the same seed), run through the in-memory path
and through the streamed path; the result reports the largest difference of test accuracy.

    python benchmarks/scale.py --out /work/runs/scale                      # full size (about 13.5 GB of disk)
    python benchmarks/scale.py --out /tmp/scale --rows 20000 --quick       # a small run of the same code

Prints one JSON line: rows, dims, file_gib, peak_rss_gib, seconds, accuracy_difference (and details).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from halitool.features import FeaturesWriter, LevelLayout, open_features  # noqa: E402
from halitool.probe_features import CELEBA_ATTRIBUTES  # noqa: E402

SPLITS = (162_770, 19_867, 19_962)  # CelebA's recommended partition
Z1_SHAPE, Z2_DIM, LATENT = (64, 16, 16), 256, 32
# Positive rate of each CelebA attribute over the 202,599 images (list_attr_celeba.txt, Liu et al. 2015; three
# digits, in CELEBA_ATTRIBUTES' order).
POSITIVE_RATES = (
    0.111, 0.267, 0.513, 0.205, 0.022, 0.152, 0.241, 0.235, 0.239, 0.148, 0.051, 0.205, 0.142, 0.058, 0.047,
    0.065, 0.063, 0.042, 0.387, 0.455, 0.417, 0.483, 0.042, 0.115, 0.835, 0.284, 0.043, 0.277, 0.080, 0.066,
    0.057, 0.482, 0.208, 0.320, 0.189, 0.048, 0.472, 0.123, 0.073, 0.774,
)


def split_sizes(rows: int) -> tuple[int, int, int]:
    """CelebA's proportions for ``rows`` rows (exactly CelebA's sizes at 202,599)."""
    valid = round(rows * SPLITS[1] / sum(SPLITS))
    test = round(rows * SPLITS[2] / sum(SPLITS))
    return rows - valid - test, valid, test


def build(path: Path, rows: int, z1_dim: int, seed: int = 0, block: int = 2048) -> None:
    """Write the CelebA-shaped features file block by block (the whole never exists in memory)."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((LATENT, z1_dim), dtype=np.float32) / np.float32(np.sqrt(LATENT))
    directions = rng.standard_normal((LATENT, len(POSITIVE_RATES)))
    sizes = split_sizes(rows)
    split = np.repeat([0, 1, 2], sizes).astype(np.int8)
    # Thresholds at the attribute's rate: a score is Gaussian (latent . direction + noise of std 0.5), so its
    # quantile gives the rate exactly in expectation.
    from scipy.stats import norm

    thresholds = norm.ppf(1 - np.asarray(POSITIVE_RATES)) * np.sqrt((directions ** 2).sum(axis=0) + 0.25)
    attributes = np.empty((rows, len(POSITIVE_RATES)), dtype=np.int8)
    shape = Z1_SHAPE if z1_dim == int(np.prod(Z1_SHAPE)) else (z1_dim,)
    tmp = path.with_name(path.name + ".partial")
    with FeaturesWriter.create(tmp, levels=[LevelLayout("z1", shape), LevelLayout("z2", (Z2_DIM,))], split=split,
                               sample_ids=np.arange(rows), provenance={"dataset": "", "dataset_root": ""},
                               attributes=np.zeros((rows, len(POSITIVE_RATES)), np.int8),
                               attribute_names=list(CELEBA_ATTRIBUTES)) as writer:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            latent = rng.standard_normal((n, LATENT)).astype(np.float32)
            z1 = latent @ mixing + 0.5 * rng.standard_normal((n, z1_dim), dtype=np.float32)
            z2 = np.concatenate([latent[:, : LATENT // 2], np.zeros((n, Z2_DIM - LATENT // 2), np.float32)], axis=1)
            z2 += 0.5 * rng.standard_normal((n, Z2_DIM), dtype=np.float32)
            scores = latent @ directions + 0.5 * rng.standard_normal((n, len(POSITIVE_RATES)))
            attributes[start: start + n] = scores > thresholds
            writer.write(start, {"z1": z1, "z2": z2})
        writer.h5["labels/attributes"][...] = attributes
        writer.finish()
    os.replace(tmp, path)


def subsample(source: Path, target: Path, n: int, seed: int = 0) -> None:
    """The first rows of each split of ``source``, ``n`` in all in the same proportions, as a features file."""
    with open_features(source) as ff:
        sizes = split_sizes(n)
        rows = np.concatenate([ff.rows(s)[:k] for s, k in zip(("train", "valid", "test"), sizes)])
        levels = {name: ff.read_level(name, rows).reshape(len(rows), *ff.level_shape(name)) for name in ff.levels}
        from halitool.features import write_features

        write_features(target, levels, ff.split[rows], attributes=ff.attributes[rows],
                       attribute_names=ff.attribute_names, sample_ids=ff.sample_ids[rows])


def probe(path: Path, output: Path, budget: str, project: int | None, c_grid: str) -> dict:
    """``halitool probe-attributes`` as its own process: (result, seconds, the child's peak RSS in bytes)."""
    cmd = [sys.executable, "-m", "halitool", "probe-attributes", str(path), "--levels", "z1,z2,z1+z2",
           "--memory-budget", budget, "--no-pixel-baseline", "--C-grid", c_grid, "--format", "json", "-o",
           str(output), "--force", "--device", "cpu", *(["--project", str(project)] if project else [])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    # ru_maxrss of the children: the largest child so far (this is the first large one). A forked child starts
    # from this process's RSS, which is small here (no features are held).
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"result": json.loads(output.read_text()), "seconds": round(seconds, 1), "peak_rss_bytes": peak,
            "parent_rss_before_bytes": before * 1024}


def accuracy_difference(path: Path, project: int | None, c_grid: str) -> dict:
    """In-memory against streamed on the same (small) file and projections: the largest |test accuracy|
    difference over levels and attributes, in points."""
    from halitool.probe_features import probe_attributes

    options = dict(levels="z1,z2,z1+z2", c_grid=c_grid, pixel_baseline=False, device="cpu", project=project)
    # The in-memory path cannot project; the streamed path takes every projected set. So both run with the
    # projection applied up front: the projected file is the common input.
    projected = path.with_name(path.stem + "-projected.h5")
    _project_file(path, projected, project)
    in_memory = probe_attributes(projected, **{**options, "project": None}, strategy="memory")
    streamed = probe_attributes(projected, **{**options, "project": None})
    worst = 0.0
    for name in in_memory["levels"]:
        assert streamed["levels"][name]["memory"]["path"] == "streamed", streamed["levels"][name]["memory"]
        assert in_memory["levels"][name]["memory"]["path"] == "memory"
        for a, b in zip(in_memory["levels"][name]["attributes"], streamed["levels"][name]["attributes"]):
            worst = max(worst, abs(a["accuracy"] - b["accuracy"]))
    return {"max_abs_accuracy_points": round(100 * worst, 4), "rows": in_memory["splits"],
            "mean_accuracy": {name: {"in_memory": in_memory["levels"][name]["mean_accuracy"],
                                     "streamed": streamed["levels"][name]["mean_accuracy"]}
                              for name in in_memory["levels"]}}


def _project_file(source: Path, target: Path, width: int | None) -> None:
    """``source`` with z1 replaced by the projection the streamed path would use (same seed 0)."""
    from halitool.features import write_features
    from halitool.probe_streamed import fit_projection, project_level

    with open_features(source) as ff:
        z1 = project_level(ff, fit_projection(ff, "z1", ff.rows("train"), width, 0)) if width else ff.read_level("z1")
        write_features(target, {"z1": z1, "z2": ff.read_level("z2")}, ff.split, attributes=ff.attributes,
                       attribute_names=ff.attribute_names, sample_ids=ff.sample_ids)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the features files and results")
    parser.add_argument("--rows", type=int, default=sum(SPLITS))
    parser.add_argument("--z1-dim", type=int, default=int(np.prod(Z1_SHAPE)))
    parser.add_argument("--budget", default="16GB")
    parser.add_argument("--project", type=int, default=2048, help="width of z1's random projection (0: none)")
    parser.add_argument("--C-grid", dest="c_grid", default="1e-4:1e2:7")
    parser.add_argument("--subsample", type=int, default=12_000, help="rows of the accuracy check")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"celeba-shaped-{args.rows}x{args.z1_dim}.h5"
    built = None
    if not path.exists():
        start = time.perf_counter()
        build(path, args.rows, args.z1_dim)
        built = round(time.perf_counter() - start, 1)
    project = args.project or None
    run = probe(path, args.out / "probes.json", args.budget, project, args.c_grid)
    small = args.out / f"subsample-{args.subsample}.h5"
    if not small.exists():
        subsample(path, small, args.subsample)
    check = accuracy_difference(small, project, args.c_grid)
    result = run["result"]
    print(json.dumps({
        "benchmark": "scale", "rows": args.rows, "dims": {"z1": args.z1_dim, "z2": Z2_DIM},
        "attributes": len(POSITIVE_RATES), "file_gib": round(path.stat().st_size / 2**30, 2),
        "peak_rss_gib": round(run["peak_rss_bytes"] / 2**30, 2), "seconds": run["seconds"],
        "build_seconds": built, "budget": args.budget, "project": project, "C_grid": args.c_grid,
        "levels": {name: {"mean_accuracy": r["mean_accuracy"], "mean_balanced_accuracy": r["mean_balanced_accuracy"],
                          "path": r["memory"]["path"],
                          "predicted_peak_gib": round(r["memory"]["predicted_peak_bytes"] / 2**30, 2)}
                   for name, r in result["levels"].items()},
        "accuracy_difference": check, "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }))


if __name__ == "__main__":
    main()

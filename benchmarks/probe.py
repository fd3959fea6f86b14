"""Benchmark: the fast torch probe solver against the scikit-learn reference on the same problem, in one process.

Prints one JSON line: both times, ``speedup`` (sklearn seconds / torch seconds) and the largest per-attribute
test-accuracy difference between the two at the same C.

    python benchmarks/probe.py --quick            # ~50,000 x 256, 40 imbalanced attributes, 8 C values
    python benchmarks/probe.py                    # CelebA's split sizes (162,770 / 19,867 / 19,962), D = 1,024
    python benchmarks/probe.py --quick --sklearn-subset 8   # time 8 attributes by sklearn and scale to all
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from halitool.probe import fit_path_sklearn, fit_path_torch  # noqa: E402
from halitool.standardize import Standardizer  # noqa: E402


def celeba_like(n_train: int, n_test: int, dim: int, n_attributes: int, seed: int):
    """Correlated Gaussian features; attributes planted along random directions with logistic noise and
    positive rates spread log-uniformly from 2 % to 50 %, as CelebA's 40 attributes are."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    mixing = np.eye(dim) + rng.normal(size=(dim, dim)) / np.sqrt(dim)
    X = (rng.normal(size=(n, dim)) @ mixing).astype(np.float32)
    directions = rng.normal(size=(dim, n_attributes)) * (2.0 / np.sqrt(dim))
    logits = X @ directions
    rates = np.geomspace(0.02, 0.5, n_attributes)
    offsets = np.array([-np.quantile(logits[:, a], 1 - r) for a, r in enumerate(rates)])
    Y = (logits + offsets + rng.logistic(size=(n, n_attributes)) > 0).astype(np.int8)
    return X[:n_train], Y[:n_train], X[n_train:], Y[n_train:]


def test_accuracy(X: np.ndarray, Y: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[nC, A] test accuracy of every fit."""
    return np.stack([((X @ W[c].T + b[c]) > 0).astype(np.int8).__eq__(Y).mean(axis=0) for c in range(len(W))])


def limit(n: int, dim: int, iterations: np.ndarray, device) -> dict:
    """What one pass over the feature matrix per solver iteration costs on this machine.

    Each batched L-BFGS iteration reads the rotated features twice (margins ``Z d`` and gradient ``Z^T r``) and
    does 4 n D FLOPs per active column; the C path runs until the slowest column of each C converges, so the
    batched iterations are sum over C of the largest per-column count.
    """
    import torch

    from limits import matmul_flops, memory_bandwidth

    dev = torch.device(device)
    peak, bandwidth = matmul_flops(dev), memory_bandwidth(dev)
    batched = int(iterations.max(axis=1).sum())
    flops = 4.0 * n * dim * float(iterations.sum()) + 4.0 * n * dim * dim  # + Gram matrix and rotation
    bytes_read = 2.0 * 4 * n * dim * batched
    seconds = max(flops / peak, bytes_read / bandwidth)
    return {"matmul_flops_per_second": peak, "memory_bytes_per_second": bandwidth,
            "batched_iterations": batched, "column_iterations": int(iterations.sum()),
            "limit_flops": flops, "limit_bytes": bytes_read, "limit_seconds": seconds,
            "limit_seconds_per_iteration": seconds / max(batched, 1)}


def main() -> None:
    print(json.dumps(run()))


def run(argv: list[str] | None = None) -> dict:
    """Run the benchmark with command-line ``argv``; the result document."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50,000 x 256 instead of CelebA's 162,770 x 1,024")
    parser.add_argument("--sklearn-subset", type=int, default=0, metavar="K",
                        help="time only K attributes by sklearn and scale the time to all (recorded in the JSON)")
    parser.add_argument("--class-weight", choices=["none", "balanced"], default="none")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--c-values", type=int, default=8, help="C values, 1e-4 .. 1e2 log-spaced [default: 8]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for the fast solver [default: torch's own choice]; one thread is "
                             "much steadier on a CPU that other work shares")
    args = parser.parse_args(argv)

    n_train, n_test, dim = (50_000, 10_000, 256) if args.quick else (162_770, 19_962, 1_024)
    n_attributes, Cs = 40, np.geomspace(1e-4, 1e2, args.c_values)
    X_train, Y_train, X_test, Y_test = celeba_like(n_train, n_test, dim, n_attributes, args.seed)
    standardize = Standardizer.fit(X_train)
    X_train, X_test = standardize(X_train), standardize(X_test)

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    fast = fit_path_torch(X_train, Y_train, Cs, class_weight=args.class_weight, device=args.device)
    torch_seconds = time.perf_counter() - start

    k = args.sklearn_subset if 0 < args.sklearn_subset < n_attributes else n_attributes
    start = time.perf_counter()
    reference = fit_path_sklearn(X_train, Y_train[:, :k], Cs, class_weight=args.class_weight)
    sklearn_measured = time.perf_counter() - start
    sklearn_seconds = sklearn_measured * n_attributes / k

    acc_fast = test_accuracy(X_test, Y_test[:, :k], fast.W[:, :k], fast.b[:, :k])
    acc_ref = test_accuracy(X_test, Y_test[:, :k], reference.W, reference.b)

    bound = limit(n_train, dim, fast.iterations, fast.info["device"])
    return {
        "benchmark": "probe", "quick": args.quick, "n_train": n_train, "n_test": n_test, "dim": dim,
        "attributes": n_attributes, "C_values": len(Cs), "class_weight": args.class_weight,
        "device": fast.info["device"], "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "machine": platform.processor() or platform.machine(),
        "torch_seconds": round(torch_seconds, 3), "sklearn_seconds": round(sklearn_seconds, 3),
        "sklearn_attributes_timed": k, "sklearn_scaled": k < n_attributes,
        "speedup": round(sklearn_seconds / torch_seconds, 2),
        "max_accuracy_difference": float(np.abs(acc_fast - acc_ref).max()),
        "torch_iterations_max": int(fast.iterations.max()), "torch_iterations_mean": float(fast.iterations.mean()),
        "sklearn_iterations_mean": float(reference.iterations.mean()),
        **bound,
        "torch_seconds_per_iteration": torch_seconds / max(bound["batched_iterations"], 1),
        "fraction_of_limit": bound["limit_seconds"] / torch_seconds,
    }


if __name__ == "__main__":
    main()

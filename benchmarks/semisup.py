"""Time every semi-supervised protocol over K seeds on one set of features; print one JSON line.

    python benchmarks/semisup.py [FEATURES.h5] [--features z1+z2] [--seeds 10] [--labels 100]
    python benchmarks/semisup.py --raw-pixels /work/data/mnist      # the raw-pixel anchors of docs/semisup.md
    python benchmarks/semisup.py FEATURES.h5 --protocols linear --sklearn-tol 1e-10   # vs the exact optimum

The linear protocols run twice in the same process: with their batched torch solver (what ``halitool semisup``
uses) and with ``solver="sklearn"`` (the scikit-learn reference path, one lbfgs fit per draw x fold x C) on the
first ``--sklearn-seeds`` seeds; the output has both times, the speedup and the largest per-seed error difference.
``--sklearn-tol`` runs the reference with a tighter lbfgs tolerance than the protocol's 1e-4, which stops
large-C fits short of their optimum.

Without FEATURES it synthesises MNIST-sized features (60,000 train + 10,000 test rows, 848 columns like
hali-mnist's z1+z2: ten Gaussian clusters in 64 columns plus 784 columns of noise), so the timing needs no
model. ``--raw-pixels DIR`` uses MNIST's pixels scaled to [0, 1] as the features.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import sys
import time
from unittest import mock

import numpy as np

from halitool import draws, protocols, semisup


def synthetic(seed: int = 0, n_train: int = 60_000, n_test: int = 10_000):
    rng = np.random.default_rng(seed)
    y = np.r_[np.arange(n_train) % 10, np.arange(n_test) % 10]
    rng.shuffle(y)
    signal = rng.normal(size=(10, 64))[y] * 0.6 + rng.normal(size=(len(y), 64))
    x = np.concatenate([rng.normal(size=(len(y), 784)), signal], axis=1).astype(np.float32)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:], f"synthetic 848-d, {n_train:,} + {n_test:,} rows"


def raw_pixels(root: str):
    from halitool.data import open_dataset

    ds = open_dataset(f"mnist:{root}")
    tr, te = ds.indices("train"), ds.indices("test")
    x = ds.images(np.arange(len(ds))).reshape(len(ds), -1).astype(np.float32) / 255
    return x[tr], ds.labels[tr], x[te], ds.labels[te], "raw pixels [0, 1]"


def main(argv=None) -> None:
    print(json.dumps(run(argv)))


def run(argv=None) -> dict:
    """Run the benchmark with command-line ``argv``; the result document."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("features_file", nargs="?")
    parser.add_argument("--features", default=None, help="levels of FEATURES.h5 (default: every level)")
    parser.add_argument("--raw-pixels", metavar="DIR", help="use MNIST's raw pixels from DIR instead")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--protocols", default=",".join(n for n, p in protocols.PROTOCOLS.items() if not p.needs_checkpoint))
    parser.add_argument("--baseline-seeds", type=int, default=0,
                        help="also run scikit-learn's LabelSpreading (kernel knn, its defaults) on the same PCA-50 "
                             "features for this many seeds: the reference for spread's time and error")
    parser.add_argument("--sklearn-seeds", type=int, default=None,
                        help="seeds of the scikit-learn reference run of the linear protocols [default: --seeds; "
                             "0: none]")
    parser.add_argument("--sklearn-tol", type=float, default=None,
                        help="lbfgs tolerance of the reference run [default: the protocol's, 1e-4]")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time each linear protocol's torch and scikit-learn runs this many times, alternating "
                             "(the median is reported; every time is listed)")
    parser.add_argument("--quick", action="store_true",
                        help="synthetic features of 10,000 + 2,000 rows instead of MNIST's 60,000 + 10,000")
    args = parser.parse_args(argv)

    if args.raw_pixels:
        x, y, xt, yt, what = raw_pixels(args.raw_pixels)
    elif args.features_file:
        f = semisup.load_features(args.features_file, args.features)
        x, y, xt, yt, what = f.train, f.labels_train, f.test, f.labels_test, f"{args.features_file}:{'+'.join(f.levels)}"
    else:
        x, y, xt, yt, what = synthetic(0, *((10_000, 2_000) if args.quick else (60_000, 10_000)))
    out = {"benchmark": "semisup", "features": what, "n_train": len(x), "n_test": len(xt), "dim": int(x.shape[1]),
           "labels": args.labels, "seeds": args.seeds, "python": platform.python_version(), "protocols": {}}
    sklearn_seeds = args.seeds if args.sklearn_seeds is None else args.sklearn_seeds
    for name in args.protocols.split(","):
        proto = protocols.PROTOCOLS[name]
        compare = proto.run_seeds is not None and sklearn_seeds > 0
        prepared, prepare_seconds = None, None
        if compare and proto.prepare is not None:  # once on its own: the first call in a process pays for fresh memory
            start = time.perf_counter()
            prepared = proto.prepare(x, xt)
            prepare_seconds = round(time.perf_counter() - start, 2)
        out["protocols"][name] = r = timed(x, y, xt, yt, args.labels, name, args.seeds)
        if not compare:
            print(f"{name}: {r['error_mean']:.2f} +- {r['error_std']:.2f} % in {r['seconds']:.1f} s", file=sys.stderr)
            continue
        r["prepare_seconds_first_call"] = prepare_seconds
        # the same runs with the standardisation done beforehand: the time of the fits and predictions alone
        cached = {name: dataclasses.replace(proto, prepare=None if prepared is None else
                                            (lambda *_, done=prepared: done))}
        times, ref_times, fit_times, ref_fit_times = [r["seconds"]], [], [], []
        with reference_tolerance(args.sklearn_tol):
            for repeat in range(args.repeats):  # alternate, so that a change of load hits both
                if repeat:
                    times.append(timed(x, y, xt, yt, args.labels, name, args.seeds)["seconds"])
                with mock.patch.dict(protocols.PROTOCOLS, cached):
                    fit_times.append(timed(x, y, xt, yt, args.labels, name, args.seeds)["seconds"])
                ref = timed(x, y, xt, yt, args.labels, name, sklearn_seeds, {"solver": "sklearn"})
                ref_times.append(ref["seconds"])
                with mock.patch.dict(protocols.PROTOCOLS, cached):
                    ref_fit_times.append(timed(x, y, xt, yt, args.labels, name, sklearn_seeds,
                                               {"solver": "sklearn"})["seconds"])
        r["seconds_all"], ref["seconds_all"] = times, ref_times
        r["seconds"], ref["seconds"] = float(np.median(times)), float(np.median(ref_times))
        r["seconds_without_standardisation_all"], ref["seconds_without_standardisation_all"] = fit_times, ref_fit_times
        r["seconds_without_standardisation"] = float(np.median(fit_times))
        ref["seconds_without_standardisation"] = float(np.median(ref_fit_times))
        r["seconds_per_seed"] = round(r["seconds"] / args.seeds, 3)
        ref["seconds_per_seed"] = round(ref["seconds"] / sklearn_seeds, 3)
        ref["tol"] = args.sklearn_tol or 1e-4
        r["sklearn"] = ref
        ours = r["errors"][:sklearn_seeds]
        diffs = [abs(a - b) for a, b in zip(ours, ref["errors"])]
        r["sklearn_speedup_per_seed"] = round(ref["seconds_per_seed"] / r["seconds_per_seed"], 1)
        r["max_error_difference"] = round(max(diffs), 3)
        r["mean_error_difference"] = round(float(np.mean(ours)) - ref["error_mean"], 3)
        r["same_C_seeds"] = sum(a == b for a, b in zip(r["C"], ref["C"]))
        print(f"{name} (torch): {r['error_mean']:.2f} +- {r['error_std']:.2f} % in {r['seconds']:.1f} s, "
              f"{r['seconds_without_standardisation']:.1f} s without the standardisation (medians of {len(times)}; "
              f"first standardisation in the process {prepare_seconds} s)", file=sys.stderr)
        print(f"{name} (scikit-learn, tol {ref['tol']:g}, {sklearn_seeds} seeds): {ref['error_mean']:.2f} % in "
              f"{ref['seconds']:.1f} s ({ref['seconds_without_standardisation']:.1f} s without); torch is {r['sklearn_speedup_per_seed']}x faster per seed; error "
              f"difference: mean {r['mean_error_difference']:+.3f}, largest per seed {r['max_error_difference']:.3f} "
              f"points; same C on {r['same_C_seeds']} of {sklearn_seeds} seeds", file=sys.stderr)
    if args.baseline_seeds:
        out["baseline_sklearn_label_spreading"] = sklearn_spreading(x, y, xt, yt, args.labels, args.baseline_seeds)
        if "spread" in out["protocols"]:
            base = out["baseline_sklearn_label_spreading"]
            out["spread_speedup_per_seed"] = round(base["seconds_per_seed"] / out["protocols"]["spread"]["seconds_per_seed"], 2)
    return out


def timed(x, y, xt, yt, n_labels, name, seeds, options=None) -> dict:
    """One :func:`protocols.evaluate` run (standardisation included), timed."""
    start, cpu = time.perf_counter(), time.process_time()
    r = protocols.evaluate(x, y, xt, yt, n_labels=n_labels, protocol=name, seeds=seeds,
                           options={name: options} if options else None)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "seconds_per_seed": round(seconds / seeds, 3),
            "error_mean": round(r["error_mean"], 3), "error_std": round(r["error_std"], 3),
            "errors": [round(run["error"], 2) for run in r["runs"]], "C": [run.get("C") for run in r["runs"]]}


def reference_tolerance(tol):
    """The scikit-learn path with lbfgs tolerance ``tol`` inside the block (None: the protocol's own)."""
    from sklearn.linear_model import LogisticRegression

    if tol is None:
        return contextlib.nullcontext()
    return mock.patch.object(protocols, "_logistic", lambda C: LogisticRegression(C=C, max_iter=20_000, tol=tol))


def sklearn_spreading(x, y, xt, yt, n_labels, seeds):
    """scikit-learn's LabelSpreading(kernel="knn") with its defaults (7 neighbours, alpha 0.2, 30 iterations) on
    the top 50 principal components of train + test (unstandardised), with the draws of :func:`protocols.evaluate`."""
    from sklearn.decomposition import PCA
    from sklearn.semi_supervised import LabelSpreading

    start = time.perf_counter()
    z = PCA(n_components=50, random_state=0).fit_transform(np.concatenate([x, xt]))
    errors = []
    for s in range(seeds):
        labelled = draws.labelled_draw(y, n_labels, s)
        target = np.full(len(z), -1)
        target[labelled] = y[labelled]
        model = LabelSpreading(kernel="knn").fit(z, target)
        errors.append(100.0 * float((model.transduction_[len(y):] != yt).mean()))
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "seconds_per_seed": round(seconds / seeds, 3), "seeds": seeds,
            "error_mean": round(float(np.mean(errors)), 3), "errors": [round(e, 2) for e in errors]}


if __name__ == "__main__":
    main()

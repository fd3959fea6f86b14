"""Time every semi-supervised protocol over K seeds on one set of features; print one JSON line.

    python benchmarks/semisup.py [FEATURES.h5] [--features z1+z2] [--seeds 10] [--labels 100]
    python benchmarks/semisup.py --raw-pixels /work/data/mnist      # the raw-pixel anchors of docs/semisup.md

Without FEATURES it synthesises MNIST-sized features (60,000 train + 10,000 test rows, 848 columns like
hali-mnist's z1+z2: ten Gaussian clusters in 64 columns plus 784 columns of noise), so the timing needs no
model. ``--raw-pixels DIR`` uses MNIST's pixels scaled to [0, 1] as the features.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

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
    for name in args.protocols.split(","):
        start, cpu = time.perf_counter(), time.process_time()
        r = protocols.evaluate(x, y, xt, yt, n_labels=args.labels, protocol=name, seeds=args.seeds)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        out["protocols"][name] = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
                                  "seconds_per_seed": round(seconds / args.seeds, 3),
                                  "error_mean": round(r["error_mean"], 3), "error_std": round(r["error_std"], 3),
                                  "errors": [round(run["error"], 2) for run in r["runs"]]}
        print(f"{name}: {r['error_mean']:.2f} +- {r['error_std']:.2f} % in {seconds:.1f} s", file=sys.stderr)
    if args.baseline_seeds:
        out["baseline_sklearn_label_spreading"] = sklearn_spreading(x, y, xt, yt, args.labels, args.baseline_seeds)
        if "spread" in out["protocols"]:
            base = out["baseline_sklearn_label_spreading"]
            out["spread_speedup_per_seed"] = round(base["seconds_per_seed"] / out["protocols"]["spread"]["seconds_per_seed"], 2)
    return out


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

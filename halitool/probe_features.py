"""Linear attribute probes on a features file: reads the file, builds the feature sets of each level (and
the raw-pixel baseline), and runs the pure protocol of :mod:`halitool.probe` on them."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from rich.console import Console

from halitool.errors import BadInputError, UsageError
from halitool.features import FeaturesFile, open_features
from halitool.probe import (
    DEFAULT_C_GRID, majority_baseline, parse_c_grid, probe_arrays, stratified_subset, stratify_key,
)
from halitool.runtime import resolve_device

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)
# Published means over CelebA's 40 attributes, as quoted in the attribute-prediction literature (not re-checked
# against each paper), with the metric of each.
CELEBA_PUBLISHED = (
    ("FaceTracer (HOG + colour histograms + SVM)", "accuracy", 0.81),
    ("PANDA-w", "accuracy", 0.79),
    ("PANDA-l", "accuracy", 0.85),
    ("LNets+ANet (supervised deep)", "accuracy", 0.87),
    ("Triplet-kNN", "balanced_accuracy", 0.72),
    ("PANDA", "balanced_accuracy", 0.77),
    ("ANet", "balanced_accuracy", 0.80),
    ("LMLE-kNN", "balanced_accuracy", 0.84),
)
PIXEL_DIM_MAX = 1024  # raw pixels are average-pooled to at most this many features


def parse_levels(text: str | None, available: Sequence[str], path: Path) -> list[str]:
    """``z1,z2,z1+z2``; None means each level alone and, with several levels, all of them joined."""
    if text is None:
        return list(available) + (["+".join(available)] if len(available) > 1 else [])
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise UsageError(f"--levels {text!r}: name at least one level (e.g. z1,z2,z1+z2)")
    for spec in specs:
        for part in spec.split("+"):
            if part not in available:
                raise BadInputError(f"{path}: no level {part!r} (from --levels {text!r}); the file has "
                                    f"{', '.join(available) or 'none'}")
    return specs


def parse_attributes(text: str, available: Sequence[str], path: Path) -> list[int]:
    if text.strip() == "all":
        return list(range(len(available)))
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        shown = ", ".join(available[:12]) + (", ..." if len(available) > 12 else "")
        raise BadInputError(f"{path}: unknown attribute(s) {', '.join(unknown) or repr(text)}; the file has {shown}")
    return [list(available).index(n) for n in names]


def pixel_features(ff: FeaturesFile, rows: np.ndarray, on_step: Callable[[int], None] | None = None) -> np.ndarray:
    """Raw pixels of the given rows, reloaded from the data set the features file records, average-pooled to at
    most PIXEL_DIM_MAX values. BadInputError when the provenance does not lead back to the same samples."""
    from halitool.data import open_dataset

    attrs = ff.attrs
    dataset, root = attrs.get("dataset") or "", attrs.get("dataset_root") or ""
    if not dataset or not root:
        raise BadInputError("the features file does not record its data set and root")
    kind = str(dataset).partition(":")[0]
    ds = open_dataset(f"{kind}:{root}")
    if len(ds) != ff.n_samples or not np.array_equal(ds.sample_ids, ff.sample_ids):
        raise BadInputError(f"{root}: the data set's samples do not match the features file's rows")
    channels, height, width = ds.image_shape
    factor = 1
    while channels * (height // factor) * (width // factor) > PIXEL_DIM_MAX:
        factor += 1
    h, w = height // factor, width // factor
    out = np.empty((len(rows), channels * h * w), dtype=np.float32)
    start = 0
    for _, images in ds.iter_batches(rows, 1024, workers=min(4, os.cpu_count() or 1)):
        x = images[:, :, : h * factor, : w * factor].astype(np.float32) / 255.0
        x = x.reshape(len(x), channels, h, factor, w, factor).mean(axis=(3, 5))
        out[start : start + len(x)] = x.reshape(len(x), -1)
        start += len(x)
        if on_step:
            on_step(len(x))
    return out


def probe_attributes(
    path: Path, *, levels: str | None = None, attributes: str = "all", c_grid: str = DEFAULT_C_GRID,
    metric: str = "accuracy", class_weight: str = "none", max_train: int | None = None, solver: str = "auto",
    device: str = "auto", seed: int = 0, pixel_baseline: bool = True, console: Console | None = None,
) -> dict:
    """Run the probe protocol on every requested level of a features file, plus the baselines."""
    from halitool.console import default_console, progress

    console = console or default_console()
    started = time.perf_counter()
    Cs = parse_c_grid(c_grid)
    device = str(resolve_device(device))
    solver = "torch" if solver == "auto" else solver
    with open_features(path) as ff:
        Y_all = ff.attributes
        if Y_all is None or Y_all.shape[1] == 0:
            raise BadInputError(f"{path}: no attributes (/labels/attributes) to probe")
        all_names = ff.attribute_names
        columns = parse_attributes(attributes, all_names, path)
        names = [all_names[c] for c in columns]
        specs = parse_levels(levels, ff.levels, path)
        train, valid, test = ff.rows("train"), ff.rows("valid"), ff.rows("test")
        if len(train) == 0 or len(test) == 0:
            raise BadInputError(f"{path}: probes need train and test rows; the file has {ff.split_counts()}")
        Y_all = Y_all[:, columns]
        labels = ff.labels
        if max_train is not None and max_train < len(train):
            key = labels[train] if labels is not None else stratify_key(Y_all[train])
            train = train[stratified_subset(key, max_train, np.random.default_rng(seed))]
        stratify = labels[train] if labels is not None else None
        splits = {"train": int(len(train)), "valid": int(len(valid)), "test": int(len(test))}
        common = dict(names=names, Cs=Cs, metric=metric, class_weight=class_weight, solver=solver, device=device,
                      seed=seed, stratify=stratify)
        Ys = (Y_all[train], Y_all[valid], Y_all[test])
        results: dict[str, dict] = {}
        baselines: dict[str, dict] = {"majority": majority_baseline(Ys[0], Ys[2], names)}
        selection = None
        cache: dict[str, np.ndarray] = {}

        def features(spec: str) -> np.ndarray:
            parts = []
            for part in spec.split("+"):
                if part not in cache:
                    cache[part] = ff.read_level(part)
                parts.append(cache[part])
            return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

        with progress(console) as bar:
            task = bar.add_task("probing", total=len(specs) * len(Cs))
            for spec in specs:
                bar.update(task, description=f"probing {spec}")
                X = features(spec)
                result = probe_arrays(X[train], Ys[0], X[valid], Ys[1], X[test], Ys[2], **common,
                                      on_step=lambda k: bar.advance(task, k))
                selection = result.pop("selection")
                results[spec] = result
            if pixel_baseline:
                rows = np.concatenate([train, valid, test])
                try:
                    pix_task = bar.add_task("loading pixels", total=len(rows))
                    pixels = pixel_features(ff, rows, on_step=lambda k: bar.advance(pix_task, k))
                except BadInputError as exc:
                    console.log(f"pixel baseline skipped: {exc}")
                else:
                    pix_fit = bar.add_task("probing pixels", total=len(Cs))
                    a, b = len(train), len(train) + len(valid)
                    result = probe_arrays(pixels[:a], Ys[0], pixels[a:b], Ys[1], pixels[b:], Ys[2], **common,
                                          on_step=lambda k: bar.advance(pix_fit, k))
                    result.pop("selection")
                    baselines["pixels"] = result
    return {
        "features": str(path), "levels": results,
        "baselines": baselines,
        "splits": splits, "selection": selection, "solver": solver, "device": device if solver == "torch" else "cpu",
        "metric": metric, "class_weight": class_weight, "C_grid": [float(c) for c in Cs], "seed": seed,
        "seconds": round(time.perf_counter() - started, 3),
    }

"""Linear attribute probes on a features file: reads the file, builds the feature sets of each level (and
the raw-pixel baseline), and runs the pure protocol of :mod:`halitool.probe` on them."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from halitool.errors import BadInputError, UsageError
from halitool.features import FeaturesFile, open_features
from halitool.levels import parse_feature_sets, set_name
from halitool.probe import (
    DEFAULT_C_GRID, HOLDOUT_FRACTION, majority_baseline, parse_c_grid, probe_arrays, stratified_subset, stratify_key,
)
from halitool.probe_streamed import (
    FeatureSetReader, available_memory, fit_projection, gib, in_memory_peak, probe_streamed, project_level,
    streamed_peak,
)
from halitool.progress import SILENT, Progress
from halitool.runtime import resolve_device

log = logging.getLogger(__name__)

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
STRATEGIES = ("auto", "memory")  # auto: streamed with the torch solver, in memory with sklearn
PIXEL_DIM_MAX = 1024  # raw pixels are average-pooled to at most this many features


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
    device: str = "auto", seed: int = 0, pixel_baseline: bool = True, memory_budget: int | None = None,
    project: int | None = None, strategy: str = "auto", progress: Progress = SILENT,
) -> dict:
    """Run the probe protocol on every requested feature set of a features file, plus the baselines.

    ``levels`` is a level spec (``z1,z2,z1+z2``; default: each level alone and, with several, all joined). With
    the torch solver each feature set is streamed from the file in bounded memory (:mod:`halitool.probe_streamed`:
    about 4 bytes per training value instead of about 20); the sklearn solver (the reference) holds it in memory,
    as ``strategy="memory"`` does. A set whose predicted peak exceeds ``memory_budget`` (bytes; default 80 % of
    the memory available) is refused before any work, naming the ``project`` width that would fit; ``project``
    replaces every level wider than it by a seeded random projection to that width (recorded in the result as
    ``projection``)."""
    started = time.perf_counter()
    Cs = parse_c_grid(c_grid)
    device = str(resolve_device(device))
    solver = "torch" if solver == "auto" else solver
    budget = int(0.8 * available_memory()) if memory_budget is None else int(memory_budget)
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}; choose {', '.join(STRATEGIES)}")
    if project is not None and project < 1:
        raise UsageError(f"--project must be at least 1, not {project}")
    with open_features(path) as ff:
        names, Y_all = _attribute_table(ff, attributes)
        sets = (parse_feature_sets(levels, ff.levels) if levels is not None
                else [(name,) for name in ff.levels] + ([tuple(ff.levels)] if len(ff.levels) > 1 else []))
        train, valid, test = _probe_rows(ff, Y_all, max_train, seed)
        plans = [_plan(ff, feature_set, (train, valid, test), len(names), len(Cs), solver, budget, project, seed,
                       strategy) for feature_set in sets]  # every set checked before minutes of work
        labels = ff.labels
        common = dict(names=names, Cs=Cs, metric=metric, class_weight=class_weight, device=device,
                      seed=seed, stratify=labels[train] if labels is not None else None)
        Ys = (Y_all[train], Y_all[valid], Y_all[test])
        results: dict[str, dict] = {}
        selection = None
        projected: dict[str, np.ndarray] = {}  # each projected level computed once, for every set it joins
        for k, (feature_set, plan) in enumerate(zip(sets, plans)):
            with progress.task(f"probing {set_name(feature_set)}", total=len(Cs)) as task:
                if plan["path"] == "memory":
                    X = _read_set(ff, feature_set, np.concatenate([train, valid, test]))
                    a, b = len(train), len(train) + len(valid)
                    result = probe_arrays(X[:a], Ys[0], X[a:b], Ys[1], X[b:], Ys[2], **common, solver=solver,
                                          on_step=task.advance)
                    del X
                else:
                    for name in plan.get("projection", {}):
                        if name not in projected:
                            projected[name] = project_level(ff, fit_projection(ff, name, train, project, seed))
                    reader = FeatureSetReader(ff, feature_set, {n: projected[n] for n in plan.get("projection", {})})
                    result = probe_streamed(reader, train, Ys[0], valid, Ys[1], test, Ys[2], **common,
                                            on_step=task.advance)
            selection = result.pop("selection")
            results[set_name(feature_set)] = {**result, "memory": plan}
            later = {name for other in sets[k + 1:] for name in other}
            for name in [n for n in projected if n not in later]:
                del projected[name]  # no later set joins it: free its memory
        baselines: dict[str, dict] = {"majority": majority_baseline(Ys[0], Ys[2], names)}
        if pixel_baseline:
            pixels = _pixel_baseline(ff, (train, valid, test), Ys, {**common, "solver": solver}, budget, progress)
            if pixels is not None:
                baselines["pixels"] = pixels
    return {
        "features": str(path), "levels": results,
        "baselines": baselines,
        "splits": {"train": int(len(train)), "valid": int(len(valid)), "test": int(len(test))},
        "selection": selection, "solver": solver, "device": device if solver == "torch" else "cpu",
        "metric": metric, "class_weight": class_weight, "C_grid": [float(c) for c in Cs], "seed": seed,
        "memory_budget": budget, "seconds": round(time.perf_counter() - started, 3),
    }


def _plan(ff: FeaturesFile, feature_set: tuple[str, ...], rows: tuple, n_attributes: int, n_c: int, solver: str,
          budget: int, project: int | None, seed: int, strategy: str = "auto") -> dict:
    """How a feature set is probed and its predicted peak bytes: streamed from the file (the torch solver's way,
    with any projections), or in memory (the sklearn solver's, or ``strategy="memory"``). UsageError when it does
    not fit the budget, naming what would."""
    train, valid, test = rows
    n_rows = len(train) + len(valid) + len(test)
    widths = {name: ff.level_dim(name) for name in feature_set}
    projected = {name: project for name, d in widths.items() if project is not None and d > project}
    dim = sum(projected.get(name, d) for name, d in widths.items())
    n_score = len(valid) if len(valid) else int(round(HOLDOUT_FRACTION * len(train)))
    label = f"--levels {set_name(feature_set)} ({dim:,} columns, {len(train):,} training rows)"
    in_memory = in_memory_peak(n_rows, len(train), dim)
    if solver == "sklearn" or strategy == "memory":
        if projected:
            raise UsageError(f"{label}: --project needs the streamed path of --solver torch")
        if in_memory > budget:
            raise UsageError(f"{label}: the in-memory path (the sklearn solver's) needs about {gib(in_memory)}, above "
                             f"the memory budget of {gib(budget)}; use --solver torch (streamed) or a larger "
                             "--memory-budget")
        return {"path": "memory", "predicted_peak_bytes": in_memory}

    def streamed_need(width: int | None) -> int:
        narrowed = {name: (width if width is not None and d > width else d) for name, d in widths.items()}
        wide = sum(w for name, w in narrowed.items() if w != widths[name])
        reads = sum(narrowed.values()) if wide else sum(widths.values())
        return streamed_peak(len(train), n_score, sum(narrowed.values()), reads, n_attributes, n_c,
                             projected_bytes=4 * ff.n_samples * wide)  # every projected level, all rows

    streamed = streamed_need(project)
    if streamed > budget:
        fits = [w for w in (4096, 2048, 1024, 512, 256, 128) if w < max(widths.values()) and streamed_need(w) <= budget]
        hint = (f"; --project {fits[0]} (a random projection of every wider level, recorded in the result) would "
                "fit" if fits else "")
        raise UsageError(f"{label}: needs about {gib(streamed)} even streamed from the file, above the memory budget "
                         f"of {gib(budget)} (--memory-budget){hint}")
    plan = {"path": "streamed", "predicted_peak_bytes": streamed, "in_memory_would_need_bytes": in_memory}
    if projected:
        plan["projection"] = {name: {"kind": "gaussian random projection of the standardised level",
                                     "from": widths[name], "to": width, "seed": seed}
                              for name, width in projected.items()}
    return plan


def _read_set(ff: FeaturesFile, feature_set: tuple[str, ...], rows: np.ndarray) -> np.ndarray:
    """The feature set of ``rows`` (in the order given), levels joined in the order of the set."""
    parts = [ff.read_level(name, rows) for name in feature_set]
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def _attribute_table(ff: FeaturesFile, attributes: str) -> tuple[list[str], np.ndarray]:
    """The names and the [N, A] 0/1 values of the attributes asked for; anything but 0/1 is bad input."""
    Y_all = ff.attributes
    if Y_all is None or Y_all.shape[1] == 0:
        raise BadInputError(f"{ff.path}: no attributes (/labels/attributes) to probe")
    all_names = ff.attribute_names
    columns = parse_attributes(attributes, all_names, ff.path)
    Y = Y_all[:, columns]
    bad = ~np.isin(Y, (0, 1))
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise BadInputError(f"{ff.path}: attribute values must be 0 or 1; {all_names[columns[col]]} is "
                            f"{int(Y[row, col])} at row {row} ({int(bad.sum()):,} values are neither)")
    return [all_names[c] for c in columns], Y


def _probe_rows(ff: FeaturesFile, Y_all: np.ndarray, max_train: int | None, seed: int):
    """(train, valid, test) rows; with ``max_train``, a stratified seeded subsample of train."""
    train, valid, test = ff.rows("train"), ff.rows("valid"), ff.rows("test")
    if len(train) == 0 or len(test) == 0:
        raise BadInputError(f"{ff.path}: probes need train and test rows; the file has {ff.split_counts()}")
    if max_train is not None and max_train < len(train):
        labels = ff.labels
        key = labels[train] if labels is not None else stratify_key(Y_all[train])
        train = train[stratified_subset(key, max_train, np.random.default_rng(seed))]
    return train, valid, test


def _pixel_baseline(ff: FeaturesFile, rows: tuple, Ys: tuple, common: dict, budget: int,
                    progress: Progress) -> dict | None:
    """The probes on raw pixels reloaded from the data set the file records; None (logged) when unavailable or
    when they would not fit the memory budget."""
    train, valid, test = rows
    everything = np.concatenate([train, valid, test])
    need = 4 * len(everything) * PIXEL_DIM_MAX + in_memory_peak(len(everything), len(train), PIXEL_DIM_MAX)
    if need > budget:
        log.info(f"pixel baseline skipped: it needs about {gib(need)}, above the memory budget of {gib(budget)}")
        return None
    try:
        with progress.task("loading pixels", total=len(everything)) as task:
            pixels = pixel_features(ff, everything, on_step=task.advance)
    except BadInputError as exc:
        log.info(f"pixel baseline skipped: {exc}")
        return None
    a, b = len(train), len(train) + len(valid)
    with progress.task("probing pixels", total=len(common["Cs"])) as task:
        result = probe_arrays(pixels[:a], Ys[0], pixels[a:b], Ys[1], pixels[b:], Ys[2], **common,
                              on_step=task.advance)
    result.pop("selection")
    return result

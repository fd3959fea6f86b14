"""``halitool probe-attributes``: linear probes for every binary attribute of a features file, per level."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from halitool.commands.common import app, device_option, force_option, output_options
from halitool.errors import BadInputError, UsageError
from halitool.features import FeaturesFile, open_features
from halitool.probe import (
    CLASS_WEIGHTS, DEFAULT_C_GRID, METRICS, SOLVERS, majority_baseline, parse_c_grid, probe_arrays,
    stratified_subset, stratify_key,
)
from halitool.report import emit
from halitool.runtime import resolve_device

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)
# REFERENCE.md section 3: published means over CelebA's 40 attributes (unverified), with the metric of each.
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


# presentation -------------------------------------------------------------------------------------------
def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{100 * value:.1f}"


def results_table(result: dict) -> Table:
    """Attributes down, levels and baselines across: test accuracy / balanced accuracy in percent."""
    sources = [(name, r) for name, r in result["levels"].items()] + [
        (f"{name}*", r) for name, r in result["baselines"].items()]
    table = Table(title=f"linear probes on {result['features']} (test accuracy/balanced accuracy, %; "
                        f"C chosen by {result['metric']} on {result['selection']['split']})", title_justify="left")
    table.add_column("attribute", style="bold", no_wrap=True)
    table.add_column("pos. %", justify="right", no_wrap=True)
    for name, _ in sources:
        table.add_column(name, justify="right", no_wrap=True)
    names = [a["name"] for a in next(iter(result["levels"].values()))["attributes"]] if result["levels"] else []
    for i, attr in enumerate(names):
        first = next(iter(result["levels"].values()))["attributes"][i]
        cells = [f"{_pct(r['attributes'][i]['accuracy'])}/{_pct(r['attributes'][i]['balanced_accuracy'])}"
                 for _, r in sources]
        table.add_row(attr, _pct(first["positive_rate"]), *cells)
    table.add_section()
    table.add_row("mean", "", *[f"{_pct(r['mean_accuracy'])}/{_pct(r['mean_balanced_accuracy'])}" for _, r in sources])
    table.add_row("AUROC", "", *[_pct(r.get("mean_auroc")) for _, r in sources])
    table.caption = "* baseline"
    return table


def published_table() -> Table:
    table = Table(title="CelebA, published means over the 40 attributes (REFERENCE.md section 3; unverified)",
                  title_justify="left")
    for column in ("method", "metric", "mean %"):
        table.add_column(column)
    for method, metric, value in CELEBA_PUBLISHED:
        table.add_row(method, metric, _pct(value))
    return table


def csv_rows(result: dict):
    for kind, group in (("level", result["levels"]), ("baseline", result["baselines"])):
        for source, r in group.items():
            for attr in r["attributes"]:
                yield {"kind": kind, "source": source, **attr}


def draw_plot(result: dict, path: Path, force: bool) -> None:
    """Per-attribute horizontal bars of test accuracy for each level, with the majority baseline as a black tick."""
    from PIL import Image, ImageDraw

    from halitool.fileio import atomic_path

    levels = list(result["levels"].items())
    if not levels:
        return
    names = [a["name"] for a in levels[0][1]["attributes"]]
    majority = [a["accuracy"] for a in result["baselines"]["majority"]["attributes"]]
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    bar_h, gap, left, right, top = 6, 6, 150, 20, 40
    row_h = bar_h * len(levels) + gap
    width, height = 800, top + row_h * len(names) + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    span = width - left - right
    draw.text((left, 8), "test accuracy per attribute (0-100 %); black tick: majority baseline", fill="black")
    for k, (level, _) in enumerate(levels):
        x = left + 8 + k * 110
        draw.rectangle([x, 24, x + 10, 32], fill=colours[k % len(colours)])
        draw.text((x + 14, 22), level, fill="black")
    for i, name in enumerate(names):
        y = top + i * row_h
        draw.text((4, y + max(0, (bar_h * len(levels) - 10) // 2)), name[:22], fill="black")
        for k, (_, r) in enumerate(levels):
            value = r["attributes"][i]["accuracy"]
            if value is not None and math.isfinite(value):
                draw.rectangle([left, y + k * bar_h, left + int(span * value), y + (k + 1) * bar_h - 1],
                               fill=colours[k % len(colours)])
        if math.isfinite(majority[i]):
            x = left + int(span * majority[i])
            draw.line([x, y - 1, x, y + bar_h * len(levels)], fill="black", width=2)
    for tick in range(0, 101, 20):
        x = left + span * tick // 100
        draw.line([x, height - 36, x, height - 30], fill="black")
        draw.text((x - 8, height - 28), str(tick), fill="black")
    with atomic_path(path, force=force) as tmp:
        image.save(tmp, format="PNG")


@click.command("probe-attributes")
@click.argument("features", type=click.Path(path_type=Path))
@click.option("--levels", default=None, metavar="SPECS",
              help="Comma list of levels and joins, e.g. z1,z2,z1+z2 [default: each level and all joined].")
@click.option("--attributes", default="all", show_default=True, metavar="NAMES|all", help="Attributes to probe.")
@click.option("--C-grid", "c_grid", default=DEFAULT_C_GRID, show_default=True, metavar="GRID",
              help="Values of C: LOW:HIGH:COUNT (log-spaced) or a comma list (scikit-learn's C).")
@click.option("--metric", type=click.Choice(METRICS), default="accuracy", show_default=True,
              help="What selects C on the valid split.")
@click.option("--class-weight", type=click.Choice(CLASS_WEIGHTS), default="none", show_default=True,
              help="'balanced' weighs each class by n / (2 n_class), as scikit-learn does.")
@click.option("--max-train", type=click.IntRange(min=2), default=None, metavar="N",
              help="Fit on a stratified, seeded subsample of N training rows.")
@click.option("--solver", type=click.Choice(["auto", *SOLVERS]), default="auto", show_default=True,
              help="torch: every attribute and C at once (fast); sklearn: one LogisticRegression per fit (reference).")
@device_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of subsampling and of a train hold-out.")
@click.option("--pixel-baseline/--no-pixel-baseline", default=True, show_default=True,
              help="Also probe raw pixels reloaded from the data set the file records (skipped if unavailable).")
@click.option("--plot", type=click.Path(path_type=Path), default=None, metavar="PNG",
              help="Draw per-attribute accuracy bars per level with the majority baseline marked.")
@output_options
@force_option
def probe_attributes_command(features, levels, attributes, c_grid, metric, class_weight, max_train, solver, device,
                             seed, pixel_baseline, plot, fmt, output, force):
    """Linear probes for every binary attribute of FEATURES.h5, for each level and joins of levels.

    Standardises with train statistics, fits an L2 logistic probe per attribute and C, chooses C per attribute
    on the valid split (a stratified 15 % of train when there is none), and reports test accuracy, balanced
    accuracy and AUROC once, beside the majority-class and raw-pixel baselines. Exit 3 for a file that cannot be
    probed (not a complete features file, no attributes, NaN features, unknown level or attribute).

    \b
    Examples:
      halitool probe-attributes features.h5
      halitool probe-attributes features.h5 --levels z1,z1+z2 --metric balanced_accuracy --format json
      halitool probe-attributes celeba.h5 --attributes Smiling,Male --C-grid 1e-3,1e-2,1e-1 -o probes.json
    """
    from halitool.fileio import check_output_path

    ctx = app()
    if output not in (None, "-"):
        check_output_path(Path(output), force)
    if plot is not None:
        check_output_path(plot, force)
    result = probe_attributes(features, levels=levels, attributes=attributes, c_grid=c_grid, metric=metric,
                              class_weight=class_weight, max_train=max_train, solver=solver, device=device,
                              seed=seed, pixel_baseline=pixel_baseline, console=ctx.console)

    def table(res: dict):
        names = {a["name"] for r in res["levels"].values() for a in r["attributes"]}
        if names and names <= set(CELEBA_ATTRIBUTES) and len(names) == len(CELEBA_ATTRIBUTES):
            ctx.console.print(results_table(res))
            return published_table()
        return results_table(res)

    emit(result, command="probe-attributes", fmt=fmt, output=output, console=ctx.console, table=table,
         csv_rows=csv_rows, force=force)
    if plot is not None:
        draw_plot(result, plot, force)

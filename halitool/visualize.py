"""Image grids of what a HALI model does (reconstructions per level, samples, interpolations) and the
fidelity metrics of its reconstructions (pixel MSE and ``class_kept`` per level; docs/fidelity.md).

Grids are PNG files: images of ``H x W`` in ``nrow`` columns with a 1-pixel white border between and around
them, so a grid of ``rows x nrow`` images is ``rows * (H + 1) + 1`` pixels high and ``nrow * (W + 1) + 1`` wide.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from halitool.console import default_console, progress
from halitool.data import Dataset, open_dataset
from halitool.errors import BadInputError, UsageError
from halitool.fileio import atomic_path, check_output_path
from halitool.models import HALI, images_to_input

PAD = 1  # pixels of white between and around the images of a grid


# ------------------------------------------------------------------------------------------------- grids
def grid_array(images: np.ndarray, nrow: int, pad: int = PAD) -> np.ndarray:
    """uint8 pixels of float images [n, C, H, W] in [0, 1] laid out in ``nrow`` columns: [h, w] or [h, w, C]."""
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    grid = np.ones((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top: top + h, left: left + w] = images[i]
    arr = (np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8)
    return arr[0] if c == 1 else arr.transpose(1, 2, 0)


def save_grid(path: Path, images: np.ndarray, nrow: int, *, check: bool = False, force: bool = False) -> Path:
    """Write float images [n, C, H, W] in [0, 1] as one PNG grid of ``nrow`` columns, atomically.

    With ``check`` an existing ``path`` is refused unless ``force`` (UsageError); without it, it is replaced.
    """
    from PIL import Image

    img = Image.fromarray(grid_array(np.asarray(images, dtype=np.float32), nrow))
    with atomic_path(Path(path), force=force, check=check) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


# ------------------------------------------------------------------------------------------------ metrics
@torch.no_grad()
def reconstruction_mse(model: HALI, images: torch.Tensor, batch_size: int = 500) -> dict[str, float]:
    """Mean squared pixel error (images in [0, 1]) of the posterior-mean reconstruction through each level."""
    was_training = model.training
    model.eval()
    totals = {level: 0.0 for level in model.level_names}
    for i in range(0, len(images), batch_size):
        x = images[i: i + batch_size].to(model.device)
        for level in model.level_names:
            totals[level] += float(per_image_mse(model.reconstruct(x, level), x).sum())
    model.train(was_training)
    return {level: total / max(1, len(images)) for level, total in totals.items()}


def per_image_mse(x_rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel error of each image [n] (float32)."""
    return ((x_rec.float() - x.float()) ** 2).flatten(1).mean(dim=1)


def class_kept(predicted: np.ndarray, true_labels: np.ndarray) -> float:
    """Fraction of reconstructions whose predicted class is the input's true class."""
    predicted, true_labels = np.asarray(predicted), np.asarray(true_labels)
    if predicted.shape != true_labels.shape:
        raise ValueError(f"{predicted.shape} predictions for {true_labels.shape} labels")
    return float((predicted == true_labels).mean()) if len(predicted) else float("nan")


@torch.no_grad()
def fidelity(model: HALI, ds: Dataset, idx: np.ndarray, classifier=None, batch_size: int = 500,
             console: Console | None = None) -> dict:
    """Per level: pixel MSE and, with a ``classifier`` (see :mod:`halitool.reference`), ``class_kept``, the
    fraction of posterior-mean reconstructions assigned to the input's true class, and ``agreement``, the
    fraction assigned to the class the classifier gives the input itself. Also ``reference_accuracy``, the
    classifier's accuracy on the real images ``idx``. Without a classifier these are None.
    """
    console = console or default_console()
    levels = model.level_names
    mse = {level: 0.0 for level in levels}
    kept = {level: 0 for level in levels}
    agree = {level: 0 for level in levels}
    correct = 0
    device = model.device
    bar = progress(console)
    with bar:
        task = bar.add_task("reconstructing", total=len(idx))
        for rows, images in ds.iter_batches(idx, batch_size):
            x = images_to_input(images, device)
            truth = torch.from_numpy(ds.labels[rows]).to(device) if classifier is not None else None
            if classifier is not None:
                on_input = classifier.predict(x)
                correct += int((on_input == truth).sum())
            for level in levels:
                x_rec = model.reconstruct(x, level)
                mse[level] += float(per_image_mse(x_rec, x).sum())
                if classifier is not None:
                    on_rec = classifier.predict(x_rec)
                    kept[level] += int((on_rec == truth).sum())
                    agree[level] += int((on_rec == on_input).sum())
            bar.update(task, advance=len(rows))
    n = max(1, len(idx))
    has = classifier is not None
    return {
        "levels": {level: {"mse": mse[level] / n,
                           "class_kept": kept[level] / n if has else None,
                           "agreement": agree[level] / n if has else None} for level in levels},
        "reference_accuracy": correct / n if has else None,
    }


# ------------------------------------------------------------------------------------------ shared set-up
def _load(checkpoint: str, device: str):
    from halitool.checkpoint import load_checkpoint
    from halitool.runtime import resolve_device

    dev = resolve_device(device)
    return load_checkpoint(checkpoint, dev), dev


def _open_data(data_spec: str, model: HALI, split: str) -> tuple[Dataset, np.ndarray]:
    ds = open_dataset(data_spec)
    if tuple(ds.image_shape) != tuple(model.image_shape):
        raise BadInputError(f"{data_spec}: images are {tuple(ds.image_shape)} but the model expects "
                            f"{tuple(model.image_shape)}")
    idx = ds.indices(split)
    if len(idx) == 0:
        raise BadInputError(f"{data_spec}: the {split} split is empty")
    return ds, idx


def _choose(idx: np.ndarray, n: int, seed: int, what: str) -> np.ndarray:
    """``n`` distinct rows of ``idx``, a seeded random choice (in drawn order)."""
    if n < 1:
        raise UsageError(f"{what} must be at least 1")
    if n > len(idx):
        raise UsageError(f"{what} {n} is more than the {len(idx)} images of the split")
    return idx[np.random.default_rng(seed).choice(len(idx), size=n, replace=False)]


def _float(ds: Dataset, rows: np.ndarray, device) -> torch.Tensor:
    return images_to_input(ds.images(rows), device)


def _provenance(ckpt) -> dict:
    return {"checkpoint": str(ckpt.path), "checkpoint_sha256": ckpt.sha256}


# ------------------------------------------------------------------------------------------------ commands
@torch.no_grad()
def reconstruct(checkpoint: str, data_spec: str, output: Path, *, n: int = 16, split: str = "test", seed: int = 0,
                limit: int | None = None, batch_size: int = 500, device: str = "auto", force: bool = False,
                reference_settings=None, console: Console | None = None) -> dict:
    """Write a grid of ``n`` seeded-random images of ``split`` (first row) and their posterior-mean
    reconstructions through each level (one row per level), and measure :func:`fidelity` on the first
    ``limit`` images of the split (all of them by default). Data sets without class labels get MSE only.
    """
    from halitool.reference import reference_classifier

    console = console or default_console()
    output = Path(output)
    check_output_path(output, force)  # before any work: refuse early
    if limit is not None and limit < 1:
        raise UsageError("--limit must be at least 1")
    start = time.perf_counter()
    ckpt, dev = _load(checkpoint, device)
    model = ckpt.model
    ds, idx = _open_data(data_spec, model, split)
    shown = _choose(idx, n, seed, "-n")
    x = _float(ds, shown, dev)
    rows = [x] + [model.reconstruct(x, level) for level in model.level_names]
    save_grid(output, torch.cat(rows).float().cpu().numpy(), nrow=n, check=True, force=force)

    measured = idx[:limit] if limit is not None else idx
    classifier = None
    if ds.labels is not None:
        classifier = reference_classifier(ds, settings=reference_settings, device=dev, console=console)
    metrics = fidelity(model, ds, measured, classifier, batch_size, console)
    return {
        "output": str(output), **_provenance(ckpt), "data": ds.spec, "split": split,
        "n_images": int(len(measured)), "grid": {"images": n, "rows": 1 + len(model.level_names), "seed": seed,
                                                   "sample_ids": ds.sample_ids[shown].tolist()},
        **metrics, "reference": classifier.describe() if classifier is not None else None,
        "device": str(dev), "seconds": round(time.perf_counter() - start, 3),
    }


@torch.no_grad()
def sample(checkpoint: str, output: Path, *, n: int = 64, seed: int = 0, device: str = "auto", force: bool = False,
           console: Console | None = None) -> dict:
    """Write a grid of ``n`` samples (z_top ~ N(0, I), a sample of each p(z_l-1|z_l), then p(x|z1)) from a
    generator seeded with ``seed``, in ceil(sqrt(n)) columns."""
    output = Path(output)
    check_output_path(output, force)
    if n < 1:
        raise UsageError("-n must be at least 1")
    ckpt, dev = _load(checkpoint, device)
    gen = torch.Generator(device=dev).manual_seed(seed)
    images = ckpt.model.sample(n, generator=gen).float().cpu().numpy()
    nrow = math.ceil(math.sqrt(n))
    save_grid(output, images, nrow=nrow, check=True, force=force)
    return {"output": str(output), **_provenance(ckpt), "n": n, "seed": seed, "columns": nrow,
            "rows": math.ceil(n / nrow), "device": str(dev)}


def interpolation_rows(model: HALI, xa: torch.Tensor, xb: torch.Tensor, steps: int) -> dict[str, torch.Tensor]:
    """Per level, images [pairs, steps, C, H, W] decoded from z = (1 - t) z(xa) + t z(xb), t = 0 .. 1 in
    ``steps`` even steps, with z the posterior means of that level."""
    za, zb = model.encode(xa), model.encode(xb)
    t = torch.linspace(0, 1, steps, device=xa.device)
    out = {}
    for level in model.level_names:
        a, b = za[level], zb[level]
        shape = (1, steps) + (1,) * (a.dim() - 1)
        z = (a.unsqueeze(1) * (1 - t.view(shape)) + b.unsqueeze(1) * t.view(shape)).flatten(0, 1)
        out[level] = model.decode(level, z).view(len(xa), steps, *xa.shape[1:])
    return out


@torch.no_grad()
def interpolate(checkpoint: str, data_spec: str, output: Path, *, pairs: int = 4, steps: int = 8,
                split: str = "test", seed: int = 0, device: str = "auto", force: bool = False,
                console: Console | None = None) -> dict:
    """Write a grid of interpolations between ``pairs`` pairs of distinct real images (a seeded random choice
    of ``split``): for each pair, one row per level (z1, z2, ...), each row the real first image, ``steps``
    images decoded along the line between the two posterior means of that level, and the real second image.
    """
    output = Path(output)
    check_output_path(output, force)
    if steps < 2:
        raise UsageError("--steps must be at least 2 (the two endpoints)")
    if pairs < 1:
        raise UsageError("--pairs must be at least 1")
    ckpt, dev = _load(checkpoint, device)
    model = ckpt.model
    ds, idx = _open_data(data_spec, model, split)
    chosen = _choose(idx, 2 * pairs, seed, "--pairs x 2")
    xa, xb = _float(ds, chosen[:pairs], dev), _float(ds, chosen[pairs:], dev)
    lines = interpolation_rows(model, xa, xb, steps)
    rows = []
    for p in range(pairs):
        for level in model.level_names:
            rows.append(torch.cat([xa[p: p + 1], lines[level][p], xb[p: p + 1]]))
    save_grid(output, torch.cat(rows).float().cpu().numpy(), nrow=steps + 2, check=True, force=force)
    return {"output": str(output), **_provenance(ckpt), "data": ds.spec, "split": split, "pairs": pairs,
            "steps": steps, "seed": seed, "levels": list(model.level_names),
            "rows": pairs * len(model.level_names), "columns": steps + 2,
            "sample_ids": [[int(a), int(b)] for a, b in zip(ds.sample_ids[chosen[:pairs]], ds.sample_ids[chosen[pairs:]])],
            "device": str(dev)}

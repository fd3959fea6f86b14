"""The pipelines of ``halitool reconstruct``, ``sample`` and ``interpolate``: resolve the checkpoint, open the
data, run the model, write a PNG grid (:mod:`halitool.grids`) and, for reconstructions, measure their fidelity
(:mod:`halitool.fidelity`)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from halitool.data import Dataset, open_dataset
from halitool.errors import BadInputError, UsageError
from halitool.fidelity import fidelity
from halitool.fileio import check_output_path
from halitool.grids import save_grid
from halitool.models import HALI, images_to_input
from halitool.progress import SILENT, Progress


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
                reference_settings=None, progress: Progress = SILENT) -> dict:
    """Write a grid of ``n`` seeded-random images of ``split`` (first row) and their posterior-mean
    reconstructions through each level (one row per level), and measure :func:`fidelity` on the first
    ``limit`` images of the split (all of them by default). Data sets without class labels get MSE only.
    """
    from halitool.reference import reference_classifier

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
        classifier = reference_classifier(ds, settings=reference_settings, device=dev, progress=progress)
    metrics = fidelity(model, ds, measured, classifier, batch_size, progress)
    return {
        "output": str(output), **_provenance(ckpt), "data": ds.spec, "split": split,
        "n_images": int(len(measured)), "grid": {"images": n, "rows": 1 + len(model.level_names), "seed": seed,
                                                   "sample_ids": ds.sample_ids[shown].tolist()},
        **metrics, "reference": classifier.describe() if classifier is not None else None,
        "device": str(dev), "seconds": round(time.perf_counter() - start, 3),
    }


@torch.no_grad()
def sample(checkpoint: str, output: Path, *, n: int = 64, seed: int = 0, class_index: int | None = None,
           device: str = "auto", force: bool = False) -> dict:
    """Write a grid of ``n`` samples (z_top from its prior, a sample of each p(z_l-1|z_l), then p(x|z1)) from a
    generator seeded with ``seed``, in ceil(sqrt(n)) columns; ``class_index`` fixes a class latent's y."""
    output = Path(output)
    check_output_path(output, force)
    if n < 1:
        raise UsageError("-n must be at least 1")
    ckpt, dev = _load(checkpoint, device)
    k = ckpt.model.config.class_latent
    classes = None
    if class_index is not None:
        if not k:
            raise UsageError(f"--class: {ckpt.path} has no class latent (trained without --class-latent)")
        if not 0 <= class_index < k:
            raise UsageError(f"--class must be 0 to {k - 1} (the model's class latent has {k} values), not {class_index}")
        classes = torch.full((n,), class_index, dtype=torch.long, device=dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    images = ckpt.model.sample(n, generator=gen, classes=classes).float().cpu().numpy()
    nrow = math.ceil(math.sqrt(n))
    save_grid(output, images, nrow=nrow, check=True, force=force)
    return {"output": str(output), **_provenance(ckpt), "n": n, "seed": seed, "class": class_index, "columns": nrow,
            "rows": math.ceil(n / nrow), "device": str(dev)}


@torch.no_grad()
def interpolate(checkpoint: str, data_spec: str, output: Path, *, pairs: int = 4, steps: int = 8,
                split: str = "test", seed: int = 0, device: str = "auto", force: bool = False) -> dict:
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
    lines = model.interpolations(xa, xb, steps)
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

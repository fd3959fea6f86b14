"""Image grids as PNG files: images of ``H x W`` in ``nrow`` columns with a 1-pixel white border between and
around them, so a grid of ``rows x nrow`` images is ``rows * (H + 1) + 1`` pixels high and ``nrow * (W + 1) + 1``
wide. Pure layout (:func:`grid_array`) apart from the atomic PNG write (:func:`save_grid`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from halitool.fileio import atomic_path

PAD = 1  # pixels of white between and around the images of a grid


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

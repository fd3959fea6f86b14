"""Binary attributes for digit images: measured shape properties and properties of the class.

Every measurement is a pure, vectorised function of a uint8 stack ``[N, H, W]`` (no loop over images). It runs
in torch, whose reductions use every core: all 70,000 MNIST digits are measured in about a quarter of a second
on two cores, under half the time numpy took (the measurement is part of opening MNIST, so of every extract).
Definitions, with the reasoning behind each, are in docs/attributes.md; keep the two in step.
"""

from __future__ import annotations

import numpy as np

from halitool.data.base import SPLITS

# A pixel belongs to the digit's ink when it is at least this bright (half of the uint8 range).
INK_THRESHOLD = 128
# Rows are measured in chunks so that the float32 working copies (about 13 MB for MNIST) stay in the CPU's
# caches: 4,096 rows measured all of MNIST in 0.24 s, 16,384 rows in 0.46 s (2-core EPYC).
CHUNK = 4_096

# Each measured attribute and the measurement (of :func:`measure_shapes`) it thresholds. The measurements are
# also the data set's continuous factors (``Dataset.factors``, ``/labels/factors``), named as the measurement.
MEASURED_FROM = {
    "thick": "thickness",
    "slanted": "slant",
    "wide": "width",
    "tall": "vertical_spread",
    "inky": "ink_area",
}
MEASURED = tuple(MEASURED_FROM)
FACTOR_NAMES = tuple(MEASURED_FROM.values())
LOOPED_DIGITS = (0, 6, 8, 9)  # 4 counts as open: most handwritten 4s are drawn with an open top
CLASS_DERIVED = ("even", "closed_loop", "greater_than_4")
ATTRIBUTE_NAMES = MEASURED + CLASS_DERIVED


def _bbox_extent(hit: np.ndarray) -> np.ndarray:
    """Number of lines from the first to the last one with ink, per image, from ``hit [N, L]``; 0 without ink."""
    length = hit.shape[1]
    first = hit.argmax(axis=1)
    last = length - 1 - hit[:, ::-1].argmax(axis=1)
    return np.where(hit.any(axis=1), last - first + 1, 0)


def _measure_chunk(images: np.ndarray) -> dict[str, np.ndarray]:
    import torch  # here, not at the top: registering the mnist: reader must not cost torch's import

    pixels = torch.from_numpy(np.ascontiguousarray(images))
    n, height, width = pixels.shape
    x = pixels.float().div_(255.0)  # [n, H, W] ink in [0, 1]
    # y points up so that a positive slant leans the top to the right.
    ys = -torch.arange(height, dtype=torch.float32)
    xs = torch.arange(width, dtype=torch.float32)
    # One matrix product gives every row's ink and the ink-weighted sum of its column coordinates.
    per_row = (x.reshape(n * height, width) @ torch.stack([torch.ones(width), xs], dim=1)).reshape(n, height, 2)
    row_mass, row_x = per_row[..., 0], per_row[..., 1]  # [n, H]
    mass = row_mass.sum(dim=1)
    safe_mass = mass.clamp(min=1e-6)
    # Total variation (sum of |differences| between 4-neighbours, image border counted as background) is the
    # length of the ink's outline; a stroke of width w and length L has area ~ w*L and outline ~ 2*L.
    outline = (x[:, 1:, :] - x[:, :-1, :]).abs_().sum(dim=(1, 2)) + (x[:, :, 1:] - x[:, :, :-1]).abs_().sum(dim=(1, 2))
    outline += x[:, 0, :].sum(dim=1) + x[:, -1, :].sum(dim=1) + x[:, :, 0].sum(dim=1) + x[:, :, -1].sum(dim=1)
    thickness = torch.where(outline > 0, 2.0 * mass / outline.clamp(min=1e-6), 0.0)
    # Second moments of the ink.
    mean_y = row_mass @ ys / safe_mass
    mean_x = row_x.sum(dim=1) / safe_mass
    var_y = (row_mass @ ys.square() / safe_mass - mean_y.square()).clamp(min=0.0)
    cov_xy = row_x @ ys / safe_mass - mean_x * mean_y
    slant = torch.where(var_y > 1e-6, cov_xy / var_y.clamp(min=1e-6), 0.0)
    # A row (column) has ink when its brightest pixel does; the maximum of uint8 is faster than any().
    ink_rows, ink_cols = pixels.amax(dim=2) >= INK_THRESHOLD, pixels.amax(dim=1) >= INK_THRESHOLD
    return {
        "thickness": thickness.numpy(),
        "slant": slant.numpy(),
        "width": _bbox_extent(ink_cols.numpy()).astype(np.float32),
        "height": _bbox_extent(ink_rows.numpy()).astype(np.float32),
        # MNIST scaled every digit to a 20-pixel box, so the box height is 20 for most digits; the spread of
        # the ink along y still varies. sqrt(12) x std is the length of a uniform bar of that spread.
        "vertical_spread": torch.sqrt(12.0 * var_y).numpy(),
        "ink_area": mass.numpy(),
    }


def measure_shapes(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image shape measurements of a uint8 stack ``[N, H, W]`` (or ``[N, 1, H, W]``), float arrays ``[N]``.

    - ``thickness``: stroke width in pixels, 2 x ink mass / ink outline length (total variation).
    - ``slant``: horizontal shear of the ink, cov(x, y) / var(y) with y up: > 0 leans right, 0 upright.
    - ``width``, ``height``: extent in pixels of the bounding box of pixels >= 128.
    - ``vertical_spread``: sqrt(12) x the standard deviation of the ink's row coordinate (the height of a
      bar with the ink spread evenly along it).
    - ``ink_area``: ink mass, the sum of pixel values / 255.
    """
    images = np.asarray(images)
    if images.ndim == 4:
        if images.shape[1] != 1:
            raise ValueError(f"shape measurements need one channel, got {images.shape[1]}")
        images = images[:, 0]
    parts = [_measure_chunk(images[i : i + CHUNK]) for i in range(0, len(images), CHUNK)]
    keys = ("thickness", "slant", "width", "height", "vertical_spread", "ink_area")
    if not parts:
        return {key: np.zeros(0, dtype=np.float32) for key in keys}
    return {key: np.concatenate([p[key] for p in parts]).astype(np.float32) for key in keys}


def above_train_median(values: np.ndarray, split: np.ndarray) -> np.ndarray:
    """1 where a value is above the median of the training rows (all rows when there are none), else 0."""
    train = values[split == SPLITS["train"]]
    median = np.median(train if len(train) else values) if len(values) else 0.0
    return (values > median).astype(np.int8)


def class_attributes(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Attributes that follow from the digit class alone."""
    labels = np.asarray(labels)
    return {
        "even": (labels % 2 == 0).astype(np.int8),
        "closed_loop": np.isin(labels, LOOPED_DIGITS).astype(np.int8),
        "greater_than_4": (labels > 4).astype(np.int8),
    }


def shape_factors(images: np.ndarray) -> np.ndarray:
    """The continuous measurements behind the measured attributes, ``float32 [N, len(FACTOR_NAMES)]`` in
    :data:`FACTOR_NAMES` order (one column per measured attribute, in :data:`MEASURED` order)."""
    shapes = measure_shapes(images)
    return np.stack([shapes[name] for name in FACTOR_NAMES], axis=1).astype(np.float32)


def threshold_factors(factors: np.ndarray, split: np.ndarray) -> np.ndarray:
    """The measured attributes ``int8 [N, len(MEASURED)]`` from :func:`shape_factors`' table: each measurement
    thresholded at its median over the training split, so about half the training rows are positive (exactly
    half when no value ties the median)."""
    split = np.asarray(split)
    columns = [above_train_median(factors[:, j], split) for j in range(len(MEASURED))]
    return np.stack(columns, axis=1).astype(np.int8) if len(factors) else np.zeros((0, len(MEASURED)), np.int8)


def shape_attributes(images: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The measured attributes only, ``int8 [N, len(MEASURED)]`` in :data:`MEASURED` order: for grey-level
    images whose classes are not digits (the class-derived attributes would be invented there)."""
    return threshold_factors(shape_factors(images), split), list(MEASURED)


def with_class_attributes(measured: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The measured attributes followed by those that follow from the digit class: the table ``int8 [N, A]``
    and its names, in :data:`ATTRIBUTE_NAMES` order."""
    derived = class_attributes(labels)
    table = np.concatenate([measured, np.stack([derived[name] for name in CLASS_DERIVED], axis=1)], axis=1)
    return table.astype(np.int8), list(ATTRIBUTE_NAMES)


def digit_attributes(images: np.ndarray, labels: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The attribute table ``int8 [N, A]`` (0/1) and its names, in :data:`ATTRIBUTE_NAMES` order: the measured
    attributes of :func:`shape_attributes`, then those that follow from the digit class."""
    measured, _ = shape_attributes(images, split)
    return with_class_attributes(measured, labels)

"""Binary attributes for digit images: measured shape properties and properties of the class.

Every measurement is a pure, vectorised numpy function of a uint8 stack ``[N, H, W]`` (no loop over images),
so all 70,000 MNIST digits take well under a second per measurement. Definitions, with the reasoning behind
each, are in docs/attributes.md; keep the two in step.
"""

from __future__ import annotations

import numpy as np

from halitool.data.base import SPLITS

# A pixel belongs to the digit's ink when it is at least this bright (half of the uint8 range).
INK_THRESHOLD = 128
# Rows are measured in chunks so that the float32 working copies stay around 100 MB whatever N is.
CHUNK = 16_384

MEASURED = ("thick", "slanted", "wide", "tall", "inky")
LOOPED_DIGITS = (0, 6, 8, 9)  # 4 counts as open: most handwritten 4s are drawn with an open top
CLASS_DERIVED = ("even", "closed_loop", "greater_than_4")
ATTRIBUTE_NAMES = MEASURED + CLASS_DERIVED


def _bbox_extent(mask: np.ndarray, axis: int) -> np.ndarray:
    """Number of pixels from the first to the last ink row (axis=2 -> columns) of each image; 0 without ink."""
    hit = mask.any(axis=axis)  # [N, L]
    length = hit.shape[1]
    first = hit.argmax(axis=1)
    last = length - 1 - hit[:, ::-1].argmax(axis=1)
    return np.where(hit.any(axis=1), last - first + 1, 0)


def _measure_chunk(images: np.ndarray) -> dict[str, np.ndarray]:
    x = images.astype(np.float32) / 255.0  # [n, H, W] ink in [0, 1]
    n, height, width = x.shape
    mass = x.sum(axis=(1, 2))
    safe_mass = np.maximum(mass, 1e-6)
    # Total variation (sum of |differences| between 4-neighbours, image border counted as background) is the
    # length of the ink's outline; a stroke of width w and length L has area ~ w*L and outline ~ 2*L.
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    outline = np.abs(np.diff(padded, axis=1)).sum(axis=(1, 2)) + np.abs(np.diff(padded, axis=2)).sum(axis=(1, 2))
    thickness = np.where(outline > 0, 2.0 * mass / np.maximum(outline, 1e-6), 0.0)
    # Second moments of the ink, with y pointing up so that a positive slant leans the top to the right.
    ys = -np.arange(height, dtype=np.float32)
    xs = np.arange(width, dtype=np.float32)
    row_mass, col_mass = x.sum(axis=2), x.sum(axis=1)  # [n, H], [n, W]
    mean_y = row_mass @ ys / safe_mass
    mean_x = col_mass @ xs / safe_mass
    var_y = np.maximum(row_mass @ (ys**2) / safe_mass - mean_y**2, 0.0)
    cov_xy = np.einsum("nhw,h,w->n", x, ys, xs) / safe_mass - mean_x * mean_y
    slant = np.where(var_y > 1e-6, cov_xy / np.maximum(var_y, 1e-6), 0.0)
    mask = images >= INK_THRESHOLD
    return {
        "thickness": thickness,
        "slant": slant,
        "width": _bbox_extent(mask, axis=1).astype(np.float32),
        "height": _bbox_extent(mask, axis=2).astype(np.float32),
        # MNIST scaled every digit to a 20-pixel box, so the box height is 20 for most digits; the spread of
        # the ink along y still varies. sqrt(12) x std is the length of a uniform bar of that spread.
        "vertical_spread": np.sqrt(12.0 * var_y),
        "ink_area": mass,
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


def digit_attributes(images: np.ndarray, labels: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The attribute table ``int8 [N, A]`` (0/1) and its names, in :data:`ATTRIBUTE_NAMES` order.

    Measured properties are thresholded at their median over the training split, so about half the training
    rows are positive (exactly half when no value ties the median).
    """
    shapes = measure_shapes(images)
    measured = {
        "thick": shapes["thickness"],
        "slanted": shapes["slant"],
        "wide": shapes["width"],
        "tall": shapes["vertical_spread"],
        "inky": shapes["ink_area"],
    }
    columns = {name: above_train_median(values, np.asarray(split)) for name, values in measured.items()}
    columns.update(class_attributes(labels))
    table = np.stack([columns[name] for name in ATTRIBUTE_NAMES], axis=1) if len(labels) else np.zeros(
        (0, len(ATTRIBUTE_NAMES)), dtype=np.int8
    )
    return table.astype(np.int8), list(ATTRIBUTE_NAMES)

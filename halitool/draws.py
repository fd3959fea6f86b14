"""The labelled draw of a semi-supervised run: which training rows show their label, for a seed.

One function for every consumer (``halitool semisup``'s protocols and ``halitool train --labels``), so the same
seed gives the same labelled images everywhere.
"""

from __future__ import annotations

import hashlib

import numpy as np

from halitool.errors import BadInputError, UsageError

HELDOUT_MAX = 10_000  # ALI's validation set size on MNIST


def heldout_size(n_train: int) -> int:
    """ALI's validation set: 10,000 rows, capped at a sixth of train (MNIST's 60,000 -> exactly 10,000)."""
    return min(HELDOUT_MAX, n_train // 6)


def balanced_draw(labels_train: np.ndarray, n_labels: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions into ``labels_train`` of ``n_labels`` rows, exactly ``n_labels / n_classes`` per class.

    The classes are the distinct labels present. Raises UsageError for ``n_labels <= 0`` or not a multiple of
    the class count, BadInputError when some class has fewer rows than it needs.
    """
    labels_train = np.asarray(labels_train)
    classes = np.unique(labels_train)
    if n_labels <= 0:
        raise UsageError(f"--labels must be positive, got {n_labels}")
    if len(classes) == 0:
        raise BadInputError("no labelled training rows to draw from")
    if n_labels % len(classes):
        raise UsageError(f"--labels {n_labels} is not a multiple of the {len(classes)} classes (a balanced draw needs "
                         f"the same count per class)")
    per_class = n_labels // len(classes)
    picked = []
    for c in classes:
        rows = np.flatnonzero(labels_train == c)
        if len(rows) < per_class:
            raise BadInputError(f"--labels {n_labels} needs {per_class} training rows of class {c}; only {len(rows)} "
                                f"are available")
        picked.append(rng.choice(rows, size=per_class, replace=False))
    return np.sort(np.concatenate(picked))


def labelled_draw(labels_train: np.ndarray, n_labels: int, seed: int) -> np.ndarray:
    """Sorted positions into the train rows (in data-set order) of seed ``seed``'s labelled draw.

    :func:`balanced_draw` with ``numpy.random.default_rng(seed)`` over the rows before the held-out block (the
    last :func:`heldout_size` rows of train), so the held-out rows are never labelled by the draw.
    """
    labels_train = np.asarray(labels_train)
    pool = np.arange(len(labels_train) - heldout_size(len(labels_train)))
    return pool[balanced_draw(labels_train[pool], n_labels, np.random.default_rng(seed))]


def draw_hash(positions: np.ndarray) -> str:
    """sha256 of the draw's positions as little-endian int64: names a draw in a checkpoint and in results."""
    return hashlib.sha256(np.asarray(positions, dtype="<i8").tobytes()).hexdigest()

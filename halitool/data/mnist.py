"""``mnist[:DIR]``: any data set in MNIST's IDX layout (four files, each plain or gzipped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from halitool.data.attributes import digit_attributes
from halitool.data.base import SPLITS, Dataset, register_reader
from halitool.data.idx import read_idx
from halitool.errors import BadInputError

# The official files; the MD5s are of the uncompressed bytes (REFERENCE.md §4).
MNIST_FILES = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 47_040_016),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60_008),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7_840_016),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10_008),
}
SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def find_idx(root: Path, stem: str) -> Path:
    """``stem`` or ``stem.gz`` inside ``root``."""
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise BadInputError(f"{root / stem}: missing (neither it nor {stem}.gz is in {root})")


def read_split(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = find_idx(root, f"{prefix}-images-idx3-ubyte")
    labels_path = find_idx(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise BadInputError(f"{images_path}: expected 3 dimensions (count, rows, cols), header has {images.ndim}")
    if labels.ndim != 1:
        raise BadInputError(f"{labels_path}: expected 1 dimension (count), header has {labels.ndim}")
    if len(images) != len(labels):
        raise BadInputError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}"
        )
    return images, labels


@register_reader("mnist")
def open_mnist(root: Path) -> Dataset:
    """Train (split 0) then test (split 2); sample ids 0..N_train-1 then N_train.. for test.

    The attribute table holds measured shape properties and class-derived properties of each digit
    (:func:`halitool.data.attributes.digit_attributes`; docs/attributes.md).
    """
    train_x, train_y = read_split(root, SPLIT_PREFIX["train"])
    test_x, test_y = read_split(root, SPLIT_PREFIX["test"])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise BadInputError(f"{root}: train images are {train_x.shape[1:]}, test images {test_x.shape[1:]}")
    images = np.concatenate([train_x, test_x])[:, None, :, :]  # [N, 1, H, W]
    labels = np.concatenate([train_y, test_y]).astype(np.int64)
    split = np.concatenate(
        [np.full(len(train_x), SPLITS["train"]), np.full(len(test_x), SPLITS["test"])]
    ).astype(np.int8)
    n_classes = int(labels.max()) + 1 if len(labels) else 0
    attributes, attribute_names = digit_attributes(images[:, 0], labels, split)
    return Dataset(
        kind="mnist",
        root=root,
        image_shape=tuple(images.shape[1:]),
        split=split,
        sample_ids=np.arange(len(images)),
        loader=lambda idx: images[idx],
        labels=labels,
        class_names=[str(c) for c in range(n_classes)],
        attributes=attributes,
        attribute_names=attribute_names,
        preprocessing={"source": "idx", "channels": 1, "size": list(images.shape[2:]), "value_range": [0, 255]},
    )

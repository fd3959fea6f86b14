"""``mnist[:DIR]``: any data set in MNIST's IDX layout (four files, each plain or gzipped)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from halitool.data.attributes import FACTOR_NAMES, MEASURED, shape_factors, threshold_factors, with_class_attributes
from halitool.data.base import SPLITS, Dataset, register_reader
from halitool.data.idx import encode_idx, read_idx
from halitool.errors import BadInputError

# The official files (LeCun, Cortes & Burges); the MD5s are of the uncompressed bytes.
MNIST_FILES = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 47_040_016),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60_008),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7_840_016),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10_008),
}
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
# Optional, beside the IDX files: one class name per line, in label order (label 0 first).
CLASS_NAMES_FILE = "classes.txt"
DIGITS = [str(d) for d in range(10)]


def read_class_names(root: Path, n_classes: int) -> list[str] | None:
    """The names in ``classes.txt``, or None without that file; one name per label is required."""
    path = root / CLASS_NAMES_FILE
    if not path.is_file():
        return None
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read the class names: {exc}") from None
    if len(names) < n_classes:
        raise BadInputError(f"{path}: {len(names)} class names for labels up to {n_classes - 1}")
    if len(set(names)) != len(names):
        raise BadInputError(f"{path}: class names repeat")
    return names


def classes_are_digits(train_labels: np.ndarray, class_names: list[str] | None) -> bool:
    """Whether the classes are the digits 0-9, so that attributes of the digit (even, closed loop, > 4) mean
    something: ``classes.txt`` says so, or (without that file) the training labels are MNIST's own, byte for
    byte. Another data set in the same layout (Fashion-MNIST, KMNIST, ...) also has labels 0-9 but not digits."""
    if class_names is not None:
        return class_names == DIGITS
    digest = hashlib.md5(encode_idx(np.ascontiguousarray(train_labels, dtype=np.uint8))).hexdigest()
    return digest == MNIST_FILES["train-labels-idx1-ubyte"][0]


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

    The attribute table holds measured shape properties of every image and, when the classes are digits
    (:func:`classes_are_digits`), the properties of each digit's class (docs/attributes.md); the factors are
    the continuous measurements the measured attributes threshold. Class names come from ``classes.txt`` when
    the folder has one, else they are the label numbers.
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
    class_names = read_class_names(root, n_classes)
    # Measured once: the continuous factors, and the attributes that threshold them.
    factors = shape_factors(images[:, 0])
    attributes, attribute_names = threshold_factors(factors, split), list(MEASURED)
    if classes_are_digits(train_y, class_names):
        attributes, attribute_names = with_class_attributes(attributes, labels)
    return Dataset(
        kind="mnist",
        root=root,
        image_shape=tuple(images.shape[1:]),
        split=split,
        sample_ids=np.arange(len(images)),
        loader=lambda idx: images[idx],
        labels=labels,
        class_names=class_names[:n_classes] if class_names is not None else [str(c) for c in range(n_classes)],
        attributes=attributes,
        attribute_names=attribute_names,
        factors=factors,
        factor_names=list(FACTOR_NAMES),
        preprocessing={"source": "idx", "channels": 1, "size": list(images.shape[2:]), "value_range": [0, 255]},
    )

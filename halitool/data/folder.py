"""``folder:DIR``: every image file in a folder, with an optional ``attributes.csv``.

Also the image decoding every file-based reader shares: open, convert, centre crop, resize, as uint8 CHW,
with one BadInputError naming the file when an image is missing or cannot be decoded.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from halitool.data.base import SPLITS, Dataset, register_reader
from halitool.errors import BadInputError, UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# Lanczos keeps the most detail when shrinking a face crop to 64 px; its cost is small beside JPEG decoding.
# (Pillow is imported where images are opened, not when the readers register.)
RESAMPLE_NAME = "lanczos"
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
ATTRIBUTES_CSV = "attributes.csv"
SPLIT_WORDS = {"train": 0, "valid": 1, "test": 2, "0": 0, "1": 1, "2": 2}


def check_positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise UsageError(f"{name} must be a positive number of pixels, got {value!r}")
    return int(value)


def decode_image(path: Path | str, mode: str, crop: int | None, size: int) -> np.ndarray:
    """``path`` as uint8 ``[C, size, size]``: converted to ``mode``, centre-cropped to a ``crop`` x ``crop``
    square (``None``: the largest centred square), resized with Lanczos.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert(mode)
    except FileNotFoundError:
        raise BadInputError(f"{path}: image file is missing") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadInputError(f"{path}: cannot decode image: {exc}") from None
    width, height = image.size
    side = min(width, height) if crop is None else crop
    if side > width or side > height:
        raise BadInputError(f"{path}: image is {width}x{height}, smaller than the {side}-pixel centre crop")
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def image_loader(paths: list[Path] | list[str], mode: str, crop: int | None, size: int):
    """A ``loader(indices)`` for :class:`Dataset` that decodes only the requested rows."""
    channels = 1 if mode == "L" else 3

    def load(indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), channels, size, size), dtype=np.uint8)
        for row, index in enumerate(indices):
            out[row] = decode_image(paths[int(index)], mode, crop, size)
        return out

    return load


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """Mode and size from the image header (no pixel decoding)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadInputError(f"{path}: cannot decode image: {exc}") from None


def _binary_column(values: list[str], lines: list[int], column: str, csv_path: Path) -> np.ndarray:
    """0/1 or -1/1 strings as int8 0/1; anything else names the first offending line."""
    allowed = {"0", "1"} if "0" in values else {"-1", "1"}
    for line, value in zip(lines, values):
        if value not in allowed:
            raise BadInputError(
                f"{csv_path}: line {line}: column {column!r} has value {value!r}; "
                "an attribute column holds 0/1 or -1/1"
            )
    return (np.array(values) == "1").astype(np.int8)


def read_attributes_csv(csv_path: Path, names: list[str]) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """The attribute table ``[N, A]`` in the order of ``names``, its column names, and the split if given."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInputError(f"{csv_path}: cannot read: {exc}") from None
    if not rows:
        raise BadInputError(f"{csv_path}: empty file (expected a header with a 'filename' column)")
    header = [h.strip() for h in rows[0]]
    if "filename" not in header:
        raise BadInputError(f"{csv_path}: no 'filename' column in the header {header}")
    lines, body = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise BadInputError(f"{csv_path}: line {line}: {len(row)} fields, the header has {len(header)}")
        lines.append(line)
        body.append([cell.strip() for cell in row])
    columns = {h: [r[i] for r in body] for i, h in enumerate(header)}
    position = {name: i for i, name in enumerate(names)}
    order = np.empty(len(body), dtype=np.int64)
    for k, (line, name) in enumerate(zip(lines, columns["filename"])):
        if name not in position:
            raise BadInputError(f"{csv_path}: line {line}: {name!r} is not an image file in {csv_path.parent}")
        order[k] = position[name]
    if len(set(order.tolist())) != len(order):
        first = next(n for n in columns["filename"] if columns["filename"].count(n) > 1)
        raise BadInputError(f"{csv_path}: {first!r} has more than one row")
    missing = sorted(set(range(len(names))) - set(order.tolist()))
    if missing:
        raise BadInputError(f"{csv_path}: {len(missing)} image(s) have no row, the first is {names[missing[0]]!r}")
    attribute_names = [h for h in header if h not in ("filename", "split")]
    table = np.zeros((len(names), len(attribute_names)), dtype=np.int8)
    for j, column in enumerate(attribute_names):
        table[order, j] = _binary_column(columns[column], lines, column, csv_path)
    split = None
    if "split" in columns:
        split = np.zeros(len(names), dtype=np.int8)
        for k, (line, word) in enumerate(zip(lines, columns["split"])):
            if word.lower() not in SPLIT_WORDS:
                raise BadInputError(f"{csv_path}: line {line}: split {word!r} is not train/valid/test or 0/1/2")
            split[order[k]] = SPLIT_WORDS[word.lower()]
    return table, attribute_names, split


@register_reader("folder")
def open_folder(root: Path, size: int | None = None, crop: int | None = None) -> Dataset:
    """Images in ``root`` (sorted by name; jpg, jpeg, png, bmp, webp), each centre-cropped to a square (the
    largest one, or ``crop`` pixels) and resized to ``size`` (default: the first image's shorter side).

    Greyscale when every image is greyscale, else RGB. ``attributes.csv`` (a ``filename`` column, binary 0/1
    or -1/1 columns and an optional ``split`` column) gives attributes and splits; without a split every
    image is in train. Sample ids are row numbers in name order.
    """
    root = Path(root)
    paths = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise BadInputError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    crop = None if crop is None else check_positive("crop", crop)
    headers = [_header(p) for p in paths]
    mode = "L" if all(m in GREY_MODES for m, _ in headers) else "RGB"
    if size is None:
        size = crop or min(headers[0][1])
    size = check_positive("size", size)
    names = [p.name for p in paths]
    split = np.full(len(paths), SPLITS["train"], dtype=np.int8)
    attributes, attribute_names = None, []
    csv_path = root / ATTRIBUTES_CSV
    if csv_path.is_file():
        attributes, attribute_names, csv_split = read_attributes_csv(csv_path, names)
        if csv_split is not None:
            split = csv_split
    channels = 1 if mode == "L" else 3
    return Dataset(
        kind="folder",
        root=root,
        image_shape=(channels, size, size),
        split=split,
        sample_ids=np.arange(len(paths)),
        loader=image_loader(paths, mode, crop, size),
        attributes=attributes,
        attribute_names=attribute_names,
        filenames=names,
        preprocessing={
            "crop": crop if crop is not None else "largest_square",
            "size": size,
            "resample": RESAMPLE_NAME,
            "value_range": [0, 255],
            "channels": channels,
        },
    )

"""``celeba:DIR``: CelebA's aligned-and-cropped release, in the official txt layout or the CSV redistribution.

Official: ``img_align_celeba/*.jpg``, ``list_attr_celeba.txt``, ``list_eval_partition.txt``.
CSV: ``list_attr_celeba.csv``, ``list_eval_partition.csv``, ``img_align_celeba/img_align_celeba/*.jpg``.
Only the tables are read when the data set is opened; images decode when rows are asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from halitool.data.base import Dataset, register_reader
from halitool.data.cache import ImageCache, cache_wanted
from halitool.data.folder import RESAMPLE_NAME, check_positive, image_loader
from halitool.errors import BadInputError

N_ATTRIBUTES = 40


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read: {exc}") from None


def _values(path: Path, rows: list[tuple[int, list[str]]], n_values: int) -> tuple[list[str], np.ndarray]:
    """File names and an ``int8 [N, n_values]`` table of 1/-1 as 1/0; the first bad row is named by line."""
    for line, parts in rows:
        if len(parts) != n_values + 1:
            few_or_many = "too few" if len(parts) < n_values + 1 else "too many"
            raise BadInputError(
                f"{path}: line {line}: {few_or_many} values ({len(parts) - 1} after the file name, expected {n_values})"
            )
    for line, parts in rows:
        for token in parts[1:]:
            if token not in ("1", "-1"):
                raise BadInputError(f"{path}: line {line}: value {token!r} is not 1 or -1")
    raise AssertionError("_values called on a valid table")  # pragma: no cover


def _table(path: Path, lines: list[str], first_line: int, n_values: int, sep: str | None):
    """Rows ``name v1 .. vn`` (split on ``sep``, or on runs of whitespace) as names and an int8 0/1 table.

    The fast path splits the whole text at once and checks the values as one array; a row with a wrong
    number of values shifts the rest, which that check catches. Only then are rows split one by one, to
    name the first bad line.
    """
    kept = [(i, line) for i, line in enumerate(lines, start=first_line) if line.strip()]
    text = "\n".join(line for _, line in kept)
    if sep is None:
        tokens = text.split()
    else:
        tokens = [t.strip() for t in text.replace("\n", sep).split(sep)] if kept else []
    width = n_values + 1
    if len(tokens) == len(kept) * width:
        table = np.array(tokens, dtype=object).reshape(len(kept), width)
        # comparing the object array element by element beats converting 8 million tokens to a string array
        positive, negative = table[:, 1:] == "1", table[:, 1:] == "-1"
        if (positive | negative).all():
            return table[:, 0].tolist(), positive.astype(np.int8)
    rows = [(i, line.split() if sep is None else [c.strip() for c in line.split(sep)]) for i, line in kept]
    return _values(path, rows, n_values)


def read_attr_txt(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """``list_attr_celeba.txt``: count line, names line, then ``name v1 .. v40`` rows split on runs of spaces."""
    lines = _read_lines(path)
    if len(lines) < 2:
        raise BadInputError(f"{path}: expected a count line and an attribute-names line")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise BadInputError(f"{path}: line 1: expected the number of images, found {lines[0][:40]!r}") from None
    attribute_names = lines[1].split()
    if not attribute_names:
        raise BadInputError(f"{path}: line 2: no attribute names")
    names, table = _table(path, lines[2:], 3, len(attribute_names), sep=None)
    if count != len(names):
        raise BadInputError(f"{path}: line 1 says {count} images, the file has {len(names)} rows")
    return names, attribute_names, table


def read_attr_csv(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """``list_attr_celeba.csv``: header ``image_id,<names>``, then ``name,v1,..,v40`` rows."""
    lines = _read_lines(path)
    if not lines:
        raise BadInputError(f"{path}: empty file (expected a header image_id,<attribute names>)")
    header = [h.strip() for h in lines[0].split(",")]
    if len(header) < 2:
        raise BadInputError(f"{path}: line 1: expected image_id and attribute names, found {lines[0][:60]!r}")
    names, table = _table(path, lines[1:], 2, len(header) - 1, sep=",")
    return names, header[1:], table


def read_partition(path: Path, names: list[str]) -> np.ndarray:
    """Split code (0 train, 1 valid, 2 test) of each name, from ``list_eval_partition.txt`` or ``.csv``."""
    is_csv = path.suffix == ".csv"
    lines = _read_lines(path)
    partition: dict[str, int] = {}
    for line, text in enumerate(lines, start=1):
        if not text.strip() or (is_csv and line == 1):
            continue
        parts = text.split(",") if is_csv else text.split()
        parts = [p.strip() for p in parts]
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise BadInputError(f"{path}: line {line}: expected '<file> <0|1|2>', found {text.strip()[:60]!r}")
        partition[parts[0]] = int(parts[1])
    missing = [n for n in names if n not in partition]
    if missing:
        raise BadInputError(f"{path}: {len(missing)} image(s) of the attribute file have no partition, "
                            f"the first is {missing[0]!r}")
    return np.array([partition[n] for n in names], dtype=np.int8)


def sample_id(name: str, path: Path) -> int:
    """``000001.jpg`` -> 1."""
    stem = name.rpartition(".")[0] or name
    if not stem.isdigit():
        raise BadInputError(f"{path}: file name {name!r} is not a CelebA image number")
    return int(stem)


@register_reader("celeba")
def open_celeba(root: Path, crop: int = 140, size: int = 64, cache: bool | None = None,
                cache_dir: Path | None = None) -> Dataset:
    """CelebA under ``root`` (txt or CSV layout). Images: RGB, centre ``crop`` x ``crop`` square, resized to
    ``size`` x ``size`` with Lanczos; attributes 0/1 with their names in file order; split from the partition
    file; sample ids are the image numbers (``000001.jpg`` -> 1).

    ``cache`` (None: ``$HALITOOL_CACHE``, default auto = at least 10,000 images) serves images from a
    decode-once cache (:mod:`halitool.data.cache`) in ``cache_dir`` (None: ``$HALITOOL_CACHE_DIR`` or
    ``data_home()/cache``), built on the first request for images; the images are the same bit for bit.
    """
    root = Path(root)
    crop, size = check_positive("crop", crop), check_positive("size", size)
    if (root / "list_attr_celeba.txt").is_file():
        layout = "txt"
        attr_path, partition_path = root / "list_attr_celeba.txt", root / "list_eval_partition.txt"
        names, attribute_names, attributes = read_attr_txt(attr_path)
    elif (root / "list_attr_celeba.csv").is_file():
        layout = "csv"
        attr_path, partition_path = root / "list_attr_celeba.csv", root / "list_eval_partition.csv"
        names, attribute_names, attributes = read_attr_csv(attr_path)
    else:
        raise BadInputError(f"{root}: not a CelebA folder (neither list_attr_celeba.txt nor list_attr_celeba.csv)")
    if not partition_path.is_file():
        raise BadInputError(f"{partition_path}: missing (CelebA's split file)")
    split = read_partition(partition_path, names)
    # The CSV redistribution nests the images one folder deeper; accept either place in both layouts.
    image_dir = next((d for d in (root / "img_align_celeba" / "img_align_celeba", root / "img_align_celeba")
                      if d.is_dir()), None)
    if image_dir is None:
        raise BadInputError(f"{root / 'img_align_celeba'}: missing (CelebA's image folder)")
    sample_ids = np.array([sample_id(n, attr_path) for n in names], dtype=np.int64)
    prefix = str(image_dir) + os.sep
    # plain strings: 200k Path objects (or os.path.join calls) take about a second to build
    paths = [prefix + n for n in names]
    loader = image_loader(paths, "RGB", crop, size)
    preprocessing = {"crop": crop, "size": size, "resample": RESAMPLE_NAME, "value_range": [0, 255], "channels": 3}
    image_cache = None
    if cache_wanted(cache, len(names)):
        image_cache = ImageCache("celeba", root, paths, (3, size, size), {**preprocessing, "mode": "RGB"}, loader,
                                 folder=cache_dir)
        loader = image_cache.load
    return Dataset(
        kind="celeba",
        root=root,
        image_shape=(3, size, size),
        split=split,
        sample_ids=sample_ids,
        loader=loader,
        attributes=attributes,
        attribute_names=attribute_names,
        filenames=names,
        preprocessing={**preprocessing, "layout": layout},
        image_cache=image_cache,
    )

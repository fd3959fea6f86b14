"""The features file (HDF5 schema v1): the only code that knows its layout.

```
/                       attrs: format, format_version, complete, provenance (see PROVENANCE_KEYS)
/index/sample_id        int64 [N]
/index/filename         utf-8 string [N]      (where the data set has files)
/index/split            int8 [N]              0 train, 1 valid, 2 test; attrs names
/labels/class           int64 [N]             (where the data set has classes); attrs names
/labels/attributes      int8 [N, A]           0/1; attrs names
/labels/factors         float32 [N, F]        (optional) continuous factors; attrs names, discrete (bool [F])
/levels/<name>/mean     float32 [N, D]        attrs shape = the level's original shape
/levels/<name>/logvar   float32 [N, D]        (optional)
```
Writers preallocate every dataset, chunked along N with its file space allocated at creation (so a slab write
changes no chunk index, only raw data), and fill it one slab per batch; readers refuse files that are not
complete. Provenance values that are not plain strings or numbers are stored as JSON strings.

Bookkeeping of an unfinished file (extract's partials and torchrun shards): ``rows_done`` (rows ``0:rows_done``
are written and flushed), ``extract_options`` (JSON: what a resume must match) and, in a shard,
``shard_rows`` ([start, stop) of the full file's rows it holds).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import h5py
import numpy as np

from halitool.choices import SPLIT_NAMES, SPLITS
from halitool.levels import level_order
from halitool.errors import BadInputError, HalitoolError

FORMAT = "halitool-features"
FORMAT_VERSION = 1
# Root attributes stored as JSON text (everything else is a plain string, number or bool).
JSON_ATTRS = ("model_config", "preprocessing", "splits", "library_versions", "extract_options")
PROVENANCE_KEYS = (
    "halitool_version", "checkpoint_sha256", "checkpoint_name", "model_config", "preprocessing", "dataset",
    "dataset_root", "splits", "latent", "seed", "created_utc", "command", "library_versions",
)
CHUNK_BYTES = 256 * 1024  # inside the 10 KiB - 1 MiB band that suits row-slab writes and row-range reads


def _early_allocation() -> h5py.h5p.PropDCID:
    # File space for every chunk is allocated when the dataset is created: later slab writes only overwrite
    # raw data, so a writer killed between flushes leaves metadata that still describes the file.
    # The space is not filled with zeros first (that wrote the whole file twice): rows are read only once
    # ``rows_done`` covers them, and every row is written before it does. The disk blocks are reserved instead
    # (_reserve_disk_space), so that a full disk still shows at creation, not in the middle of a run.
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


def _reserve_disk_space(h5: h5py.File) -> None:
    """Reserve the disk blocks of every byte HDF5 has allocated, without writing them (fallocate).

    A full disk then fails here, at creation, with ENOSPC (or EFBIG past a file size limit). A write that fails
    half-way through a run instead leaves HDF5 in a state where closing the file crashed the interpreter.
    """
    h5.flush()
    if not hasattr(os, "posix_fallocate"):  # not on macOS: the blocks are taken as rows are written
        return
    fd = os.open(h5.filename, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, h5.id.get_filesize())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise
        # A file system that cannot reserve space (EOPNOTSUPP, EINVAL): the blocks are taken as rows are written.
    finally:
        os.close(fd)


def _write_failure(exc: BaseException) -> str:
    """The operating system's reason for a failed write, on one line (HDF5's own messages span several)."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    reason = re.search(r"error message = '([^']*)'", str(exc))
    return reason.group(1) if reason else " ".join(str(exc).split())


def chunk_rows(n: int, row_bytes: int) -> int:
    return int(max(1, min(n, CHUNK_BYTES // max(1, row_bytes))))


def _attr_value(key: str, value):
    if key in JSON_ATTRS or isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    if value is None:
        return ""
    return value


@dataclass
class LevelLayout:
    """What a level holds: its original shape (flattened on disk to D = prod(shape))."""

    name: str
    shape: tuple[int, ...]

    @property
    def dim(self) -> int:
        return int(np.prod(self.shape))


class FeaturesWriter:
    """Create a schema-v1 file with every dataset preallocated; fill it with :meth:`write` slabs."""

    def __init__(self, h5: h5py.File):
        self.h5 = h5
        self.path = Path(h5.filename)
        self._datasets: dict[str, h5py.Dataset] = {}  # an h5py path lookup per batch is measurable: look up once

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        levels: Sequence[LevelLayout],
        split: np.ndarray,
        sample_ids: np.ndarray,
        provenance: Mapping,
        with_logvar: bool = False,
        filenames: Sequence[str] | None = None,
        labels: np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
        attributes: np.ndarray | None = None,
        attribute_names: Sequence[str] = (),
        factors: np.ndarray | None = None,
        factor_names: Sequence[str] = (),
        factor_discrete: Sequence[bool] | None = None,
    ) -> "FeaturesWriter":
        n = len(split)
        h5 = h5py.File(path, "w")
        try:
            h5.attrs["format"] = FORMAT
            h5.attrs["format_version"] = FORMAT_VERSION
            h5.attrs["complete"] = False
            h5.attrs["rows_done"] = 0
            for key, value in provenance.items():
                h5.attrs[key] = _attr_value(key, value)
            index = h5.create_group("index")
            index.create_dataset("sample_id", data=np.asarray(sample_ids, dtype=np.int64))
            ds_split = index.create_dataset("split", data=np.asarray(split, dtype=np.int8))
            ds_split.attrs["names"] = [SPLIT_NAMES[i] for i in sorted(SPLIT_NAMES)]
            if filenames is not None:
                index.create_dataset("filename", data=list(filenames), dtype=h5py.string_dtype("utf-8"))
            group = h5.create_group("labels")
            if labels is not None:
                ds_class = group.create_dataset("class", data=np.asarray(labels, dtype=np.int64))
                ds_class.attrs["names"] = list(class_names or [])
            if attributes is not None:
                ds_attr = group.create_dataset("attributes", data=np.asarray(attributes, dtype=np.int8))
                ds_attr.attrs["names"] = list(attribute_names)
            if factors is not None:
                ds_factors = group.create_dataset("factors", data=np.asarray(factors, dtype=np.float32))
                ds_factors.attrs["names"] = list(factor_names)
                discrete = [False] * len(factor_names) if factor_discrete is None else list(factor_discrete)
                ds_factors.attrs["discrete"] = np.asarray(discrete, dtype=bool)
            group = h5.create_group("levels")
            for level in levels:
                lg = group.create_group(level.name)
                lg.attrs["shape"] = list(level.shape)
                kinds = ("mean", "logvar") if with_logvar else ("mean",)
                for kind in kinds:
                    lg.create_dataset(
                        kind, shape=(n, level.dim), dtype=np.float32,
                        chunks=(chunk_rows(n, level.dim * 4), level.dim) if n else None,
                        dcpl=_early_allocation(),
                    )
            _reserve_disk_space(h5)
        except BaseException as exc:
            with contextlib.suppress(Exception):  # a close that fails too must not hide why
                h5.close()
            with contextlib.suppress(OSError):  # just created and holds no rows: nothing to resume
                os.unlink(path)
            if isinstance(exc, (OSError, RuntimeError)):  # h5py reports failed writes as either
                raise HalitoolError(f"{path}: cannot create the features file: {_write_failure(exc)}") from exc
            raise
        return cls(h5)

    def write(self, start: int, means: Mapping[str, np.ndarray], logvars: Mapping[str, np.ndarray] | None = None):
        """Write rows ``start:start+n`` of every level given (arrays [n, ...], flattened here)."""
        for kind, arrays in (("mean", means), ("logvar", logvars or {})):
            for name, array in arrays.items():
                array = np.asarray(array, dtype=np.float32).reshape(len(array), -1)
                key = f"levels/{name}/{kind}"
                if key not in self._datasets:
                    self._datasets[key] = self.h5[key]
                self._datasets[key][start : start + len(array)] = array

    @classmethod
    def reopen(cls, path: Path) -> "FeaturesWriter":
        """Open an unfinished file to write more rows (BadInputError when it is not a readable features file)."""
        return cls(open_features(path, allow_incomplete=True, mode="r+").h5)

    @property
    def n_samples(self) -> int:
        return int(self.h5["index/split"].shape[0])

    @property
    def rows_done(self) -> int:
        """Rows ``0:rows_done`` are written and were flushed to disk."""
        return int(self.h5.attrs.get("rows_done", 0))

    def mark_done(self, rows: int) -> None:
        """Record that rows ``0:rows`` are written, and flush the file so that the record survives a kill."""
        self.h5.attrs["rows_done"] = int(rows)
        self.h5.flush()

    def copy_rows(self, source: "FeaturesFile", start: int, block: int = 8192) -> None:
        """Copy every level of ``source`` into rows ``start:start+len(source)`` in blocks (bounded memory)."""
        n = source.n_samples
        for name in source.levels:
            for kind in ("mean", "logvar"):
                key = f"levels/{name}/{kind}"
                if key not in source.h5:
                    continue
                if key not in self.h5:
                    raise BadInputError(f"{source.path}: has {key}, which {self.path} lacks")
                for lo in range(0, n, block):
                    hi = min(n, lo + block)
                    self.h5[key][start + lo : start + hi] = source.h5[key][lo:hi]

    def finish(self) -> None:
        self.h5.attrs["rows_done"] = self.n_samples
        self.h5.attrs["complete"] = True
        self.h5.flush()

    def sync(self) -> None:
        """Flush and close the file, then fsync it: after this the bytes on disk are the whole file."""
        path = self.path
        self.h5.flush()
        self.close()
        with open(path, "rb+") as f:
            os.fsync(f.fileno())

    def close(self) -> None:
        self._datasets.clear()  # the cached handles must not outlive the file
        self.h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_features(
    path: Path,
    levels: Mapping[str, np.ndarray],
    split: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    attributes: np.ndarray | None = None,
    attribute_names: Sequence[str] = (),
    factors: np.ndarray | None = None,
    factor_names: Sequence[str] = (),
    factor_discrete: Sequence[bool] | None = None,
    sample_ids: np.ndarray | None = None,
    provenance: Mapping | None = None,
) -> Path:
    """Write in-memory arrays as a complete schema-v1 file (for tests and for features from other tools)."""
    layouts = [LevelLayout(name, tuple(np.asarray(a).shape[1:])) for name, a in levels.items()]
    n = len(split)
    class_names = [str(c) for c in range(int(np.max(labels)) + 1)] if labels is not None and n else None
    with FeaturesWriter.create(
        path, levels=layouts, split=split,
        sample_ids=np.arange(n) if sample_ids is None else sample_ids,
        provenance=provenance or {}, labels=labels, class_names=class_names,
        attributes=attributes, attribute_names=attribute_names,
        factors=factors, factor_names=factor_names, factor_discrete=factor_discrete,
    ) as writer:
        writer.write(0, levels)
        writer.finish()
    return Path(path)


class FeaturesFile:
    """A validated, read-only view of a features file. Use :func:`open_features`."""

    def __init__(self, path: Path, h5: h5py.File):
        self.path = path
        self.h5 = h5

    # provenance ---------------------------------------------------------------------------------
    @property
    def attrs(self) -> dict:
        out = {}
        for key, value in self.h5.attrs.items():
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, np.ndarray):
                value = value.tolist()
            if key in JSON_ATTRS and isinstance(value, str) and value:
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    raise BadInputError(f"{self.path}: attribute {key!r} is not valid JSON ({value[:40]!r})") from None
            out[key] = value
        return out

    @property
    def complete(self) -> bool:
        return bool(self.h5.attrs.get("complete", False))

    @property
    def rows_done(self) -> int:
        """Rows written so far (all of them in a complete file)."""
        return self.n_samples if self.complete else int(self.h5.attrs.get("rows_done", 0))

    # rows ---------------------------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return int(self.h5["index/split"].shape[0])

    @property
    def split(self) -> np.ndarray:
        return self.h5["index/split"][()]

    @property
    def sample_ids(self) -> np.ndarray:
        return self.h5["index/sample_id"][()]

    @property
    def filenames(self) -> list[str] | None:
        if "index/filename" not in self.h5:
            return None
        return [f.decode() if isinstance(f, bytes) else f for f in self.h5["index/filename"][()]]

    def rows(self, split: str) -> np.ndarray:
        """Row indices of ``train``/``valid``/``test`` (or ``all``)."""
        if split == "all":
            return np.arange(self.n_samples)
        return np.flatnonzero(self.split == SPLITS[split])

    def split_counts(self) -> dict[str, int]:
        split = self.split
        return {name: int((split == code).sum()) for name, code in SPLITS.items()}

    # labels -------------------------------------------------------------------------------------
    @property
    def labels(self) -> np.ndarray | None:
        return self.h5["labels/class"][()] if "labels/class" in self.h5 else None

    @property
    def class_names(self) -> list[str] | None:
        if "labels/class" not in self.h5:
            return None
        return [str(n) for n in self.h5["labels/class"].attrs.get("names", [])]

    @property
    def attributes(self) -> np.ndarray | None:
        return self.h5["labels/attributes"][()] if "labels/attributes" in self.h5 else None

    @property
    def attribute_names(self) -> list[str]:
        if "labels/attributes" not in self.h5:
            return []
        return [str(n) for n in self.h5["labels/attributes"].attrs["names"]]

    @property
    def factors(self) -> np.ndarray | None:
        """float32 ``[N, F]``: the continuous (or declared discrete) factors, None where the file has none.
        NaN or inf is BadInputError, as in :meth:`read_level`."""
        if "labels/factors" not in self.h5:
            return None
        values = self.h5["labels/factors"][()].astype(np.float32, copy=False)
        if not np.isfinite(values).all():
            bad = (~np.isfinite(values)).any(axis=0)
            names = [n for n, b in zip(self.factor_names, bad) if b]
            raise BadInputError(f"{self.path}: labels/factors has NaN or inf values in {', '.join(names)}")
        return values

    @property
    def factor_names(self) -> list[str]:
        if "labels/factors" not in self.h5:
            return []
        names = np.atleast_1d(self.h5["labels/factors"].attrs["names"])  # one name may be stored as a scalar
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    @property
    def factor_discrete(self) -> list[bool]:
        """Per factor, whether its values are categories (used as they are) rather than measurements (binned);
        a file without the ``discrete`` attribute has measurements only."""
        if "labels/factors" not in self.h5:
            return []
        discrete = self.h5["labels/factors"].attrs.get("discrete")
        if discrete is None:
            return [False] * len(self.factor_names)
        return [bool(d) for d in np.atleast_1d(discrete)]

    # levels -------------------------------------------------------------------------------------
    @property
    def levels(self) -> list[str]:
        return sorted(self.h5["levels"].keys(), key=level_order)

    def level_shape(self, name: str) -> tuple[int, ...]:
        self._check_level(name)
        return tuple(int(s) for s in self.h5[f"levels/{name}"].attrs["shape"])

    def level_dim(self, name: str) -> int:
        self._check_level(name)
        return int(self.h5[f"levels/{name}/mean"].shape[1])

    def has_logvar(self, name: str) -> bool:
        return f"levels/{name}/logvar" in self.h5

    def read_level(self, name: str, rows: np.ndarray | None = None, kind: str = "mean",
                   check_finite: bool = True) -> np.ndarray:
        """float32 ``[n, D]`` of one level (all rows, or the given sorted row indices)."""
        self._check_level(name)
        key = f"levels/{name}/{kind}"
        if key not in self.h5:
            raise BadInputError(f"{self.path}: level {name} has no {kind!r} dataset")
        data = self.h5[key][()] if rows is None else read_rows(self.h5[key], np.asarray(rows))
        if check_finite and not np.isfinite(data).all():
            bad = int((~np.isfinite(data)).any(axis=1).sum())
            raise BadInputError(f"{self.path}: level {name} has NaN or inf values in {bad} rows")
        return data

    # tables -------------------------------------------------------------------------------------
    def to_pandas(self, level: str | None = None):
        """A pandas DataFrame with one row per sample in file order, indexed by ``sample_id``: ``split``
        (categorical train/valid/test); where the file has classes, ``label`` (the class value) and ``class`` (its
        name, when the file names every label); one 0/1 column per attribute, named as the attribute; and with
        ``level``, that level's flattened features as float32 columns ``<level>_0`` ... ``<level>_<D-1>``."""
        import pandas as pd  # here, not at module level: nothing else in the file format needs pandas

        index = pd.Index(self.sample_ids, name="sample_id")
        split = self.split
        if not np.isin(split, list(SPLIT_NAMES)).all():
            raise BadInputError(f"{self.path}: index/split holds codes other than {sorted(SPLIT_NAMES)}")
        columns = {"split": pd.Categorical.from_codes(split, categories=[SPLIT_NAMES[c] for c in sorted(SPLIT_NAMES)])}
        labels, names = self.labels, self.class_names
        if labels is not None:
            columns["label"] = labels
            if names and len(labels) and 0 <= labels.min() and labels.max() < len(names):
                columns["class"] = np.asarray(names, dtype=object)[labels]
        attributes = self.attributes
        for j, name in enumerate(self.attribute_names):
            if name in columns:  # a dict would silently replace the column of that name
                raise BadInputError(f"{self.path}: attribute {name!r} has the name of another column")
            columns[name] = attributes[:, j]
        frame = pd.DataFrame(columns, index=index)
        if level is None:
            return frame
        features = self.read_level(level)
        # One block for all D columns: a column at a time is slow (and fragments the frame) for D in the hundreds.
        block = pd.DataFrame(features, index=index, columns=[f"{level}_{i}" for i in range(features.shape[1])])
        return pd.concat([frame, block], axis=1)

    def _check_level(self, name: str) -> None:
        if f"levels/{name}" not in self.h5:
            raise BadInputError(f"{self.path}: no level {name!r}; the file has {', '.join(self.levels) or 'none'}")

    def close(self) -> None:
        self.h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_rows(dataset, rows: np.ndarray) -> np.ndarray:
    """``dataset[rows]`` in the order given: one slab read when the rows are dense in their range (h5py's point
    selection is slow), else a point selection (of the rows sorted, as h5py needs)."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.zeros((0, *dataset.shape[1:]), dtype=dataset.dtype)
    if (np.diff(rows) <= 0).any():
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), *dataset.shape[1:]), dtype=dataset.dtype)
        out[order] = read_rows(dataset, rows[order])
        return out
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    if hi - lo <= 2 * len(rows):
        return dataset[lo:hi][rows - lo]
    return dataset[np.asarray(rows)]


def open_features(path: Path, allow_incomplete: bool = False, mode: str = "r") -> FeaturesFile:
    """Open and validate a features file; anything that is not a complete schema-v1 file is BadInputError."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: features file not found")
    try:
        h5 = h5py.File(path, mode)
    except OSError as exc:
        raise BadInputError(f"{path}: not a readable HDF5 file ({exc.__class__.__name__})") from None
    try:
        _validate(path, h5, allow_incomplete)
    except BadInputError:
        h5.close()
        raise
    except Exception as exc:  # noqa: BLE001  h5py raises several types for damaged objects inside a file
        h5.close()
        raise BadInputError(f"{path}: damaged HDF5 structure ({exc.__class__.__name__}: {exc})") from None
    except BaseException:
        h5.close()
        raise
    return FeaturesFile(path, h5)


def _validate(path: Path, h5: h5py.File, allow_incomplete: bool) -> None:
    fmt = h5.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT:
        raise BadInputError(f"{path}: not a halitool features file (format attribute {fmt!r})")
    version = h5.attrs.get("format_version")
    version = version.item() if isinstance(version, np.generic) else version
    if version != FORMAT_VERSION:
        raise BadInputError(f"{path}: features format version {version!r} is not supported (this halitool reads {FORMAT_VERSION})")
    complete = h5.attrs.get("complete", False)
    if not (isinstance(complete, (bool, np.bool_)) or (isinstance(complete, (int, np.integer)) and complete in (0, 1))):
        raise BadInputError(f"{path}: attribute 'complete' is {complete!r}, not true or false")
    rows_done = h5.attrs.get("rows_done", 0)
    if not isinstance(rows_done, (int, np.integer)) or isinstance(rows_done, (bool, np.bool_)) or rows_done < 0:
        raise BadInputError(f"{path}: attribute 'rows_done' is {rows_done!r}, not a row count")
    if not allow_incomplete and not bool(complete):
        raise BadInputError(f"{path}: incomplete features file (an interrupted extract; finish it with `halitool extract --resume`)")
    for key in ("index/split", "index/sample_id", "levels"):
        if key not in h5:
            raise BadInputError(f"{path}: missing {key}")
    n = h5["index/split"].shape[0]
    for name in h5["levels"]:
        group = h5[f"levels/{name}"]
        if "mean" not in group or "shape" not in group.attrs:
            raise BadInputError(f"{path}: level {name} lacks its mean dataset or shape attribute")
        mean = group["mean"]
        if mean.dtype.kind != "f":
            raise BadInputError(f"{path}: level {name} holds {mean.dtype} values, not floating-point features")
        shape = tuple(int(s) for s in np.atleast_1d(group.attrs["shape"]))
        dim = int(np.prod(shape, dtype=np.int64))
        if mean.ndim != 2 or mean.shape[0] != n or mean.shape[1] != dim:
            raise BadInputError(f"{path}: level {name} holds an array of shape {tuple(int(s) for s in mean.shape)}, "
                                f"expected ({n}, {dim}): {n} rows of its shape {shape} flattened")
    for key in ("index/sample_id", "labels/class", "labels/attributes", "labels/factors", "index/filename"):
        if key in h5 and h5[key].shape[0] != n:
            raise BadInputError(f"{path}: {key} has {h5[key].shape[0]} rows, the index has {n}")
    if "labels/attributes" in h5:
        attr = h5["labels/attributes"]
        names = attr.attrs.get("names")
        if attr.ndim != 2 or names is None or len(names) != attr.shape[1]:
            raise BadInputError(f"{path}: labels/attributes lacks one name per column")
    if "labels/factors" in h5:
        _validate_factors(path, h5["labels/factors"])


def _validate_factors(path: Path, factors: h5py.Dataset) -> None:
    """``/labels/factors``: a 2-D array of numbers with one distinct name and one discrete flag per column."""
    if factors.ndim != 2 or factors.dtype.kind not in "fiu":
        raise BadInputError(f"{path}: labels/factors holds {factors.dtype} values of shape "
                            f"{tuple(int(s) for s in factors.shape)}, not numbers of shape (rows, factors)")
    names = factors.attrs.get("names")
    if names is None or len(np.atleast_1d(names)) != factors.shape[1]:
        raise BadInputError(f"{path}: labels/factors lacks one name per column")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in np.atleast_1d(names)]
    if len(set(names)) != len(names):
        raise BadInputError(f"{path}: labels/factors names a factor twice ({', '.join(names)})")
    discrete = factors.attrs.get("discrete")
    if discrete is not None and (len(np.atleast_1d(discrete)) != factors.shape[1]
                                 or np.asarray(discrete).dtype.kind not in "biu"):
        raise BadInputError(f"{path}: labels/factors' discrete attribute needs one true/false per column")


def describe_features(path: Path) -> dict:
    """What a features file (complete or not) holds: format, provenance, rows per split, levels, labels."""
    with open_features(path, allow_incomplete=True) as f:
        attrs = f.attrs
        provenance = {k: v for k, v in attrs.items() if k not in ("format", "format_version", "complete", "rows_done")}
        return {
            "path": str(Path(path)),
            "format": attrs.get("format"),
            "format_version": attrs.get("format_version"),
            "complete": f.complete,
            "rows_done": f.rows_done,
            "n_samples": f.n_samples,
            "splits": f.split_counts(),
            "levels": {
                name: {"shape": list(f.level_shape(name)), "dim": f.level_dim(name), "logvar": f.has_logvar(name)}
                for name in f.levels
            },
            "classes": f.class_names,
            "attributes": f.attribute_names,
            "factors": f.factor_names,
            "has_filenames": "index/filename" in f.h5,
            "provenance": provenance,
        }

"""The one dataset interface every reader returns, and the registry that picks a reader by SPEC prefix."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from halitool.choices import SPLIT_CHOICES, SPLIT_NAMES, SPLITS  # noqa: F401  (re-exported)
from halitool.settings import data_home
from halitool.errors import BadInputError, UsageError

ImageLoader = Callable[[np.ndarray], np.ndarray]


@dataclass
class Dataset:
    """A data set as halitool sees it.

    Images are uint8 arrays of shape ``[n, C, H, W]`` after the reader's preprocessing (recorded in
    ``preprocessing``), fetched by row index through :meth:`images` so that large data sets decode lazily.
    Row ``i`` has split ``split[i]`` (0 train, 1 valid, 2 test), a stable ``sample_ids[i]`` from the source,
    and, where the source has them, a class label, a 0/1 attribute row, a row of continuous factors (float32
    measurements, such as MNIST's stroke thickness) and a file name.
    """

    kind: str
    root: Path
    image_shape: tuple[int, int, int]
    split: np.ndarray
    sample_ids: np.ndarray
    loader: ImageLoader = field(repr=False)
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    attributes: np.ndarray | None = None
    attribute_names: list[str] = field(default_factory=list)
    factors: np.ndarray | None = None
    factor_names: list[str] = field(default_factory=list)
    filenames: list[str] | None = None
    preprocessing: dict = field(default_factory=dict)
    image_cache: Any = field(default=None, repr=False)  # the ImageCache serving ``loader``, if any

    def __post_init__(self) -> None:
        n = len(self.split)
        self.split = np.asarray(self.split, dtype=np.int8)
        self.sample_ids = np.asarray(self.sample_ids, dtype=np.int64)
        problems = [f"{len(self.sample_ids)} sample ids"] if len(self.sample_ids) != n else []
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            problems += [f"{len(self.labels)} labels"] if len(self.labels) != n else []
        if self.attributes is not None:
            self.attributes = np.asarray(self.attributes, dtype=np.int8)
            if self.attributes.shape != (n, len(self.attribute_names)):
                problems.append(f"attributes of shape {self.attributes.shape} for {len(self.attribute_names)} names")
        if self.factors is not None:
            self.factors = np.asarray(self.factors, dtype=np.float32)
            if self.factors.shape != (n, len(self.factor_names)):
                problems.append(f"factors of shape {self.factors.shape} for {len(self.factor_names)} names")
        if self.filenames is not None and len(self.filenames) != n:
            problems.append(f"{len(self.filenames)} file names")
        if problems:
            raise BadInputError(f"{self.root}: {n} images but {', '.join(problems)}")

    def __len__(self) -> int:
        return len(self.split)

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.root}"

    def images(self, indices) -> np.ndarray:
        """uint8 ``[len(indices), C, H, W]`` for the given row indices, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        out = self.loader(indices)
        if out.dtype != np.uint8 or out.shape != (len(indices), *self.image_shape):
            raise BadInputError(f"{self.root}: the reader gave {out.dtype} images of shape {out.shape}, not uint8 "
                                f"{(len(indices), *self.image_shape)}")
        return out

    def indices(self, split: str = "all") -> np.ndarray:
        """Row indices of one split (``train``, ``valid``, ``test``) or of ``all`` rows, in data-set order."""
        if split == "all":
            return np.arange(len(self), dtype=np.int64)
        if split not in SPLITS:
            raise UsageError(f"unknown split {split!r}; choose all, {', '.join(SPLITS)}")
        return np.flatnonzero(self.split == SPLITS[split]).astype(np.int64)

    def split_counts(self) -> dict[str, int]:
        return {name: int((self.split == code).sum()) for name, code in SPLITS.items()}

    def iter_batches(
        self, indices, batch_size: int, workers: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row_indices, images)`` in order; with ``workers > 0`` batches decode ahead in threads."""
        indices = np.asarray(indices, dtype=np.int64)
        chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
        if workers <= 0:
            for chunk in chunks:
                yield chunk, self.images(chunk)
            return
        # Bounded look-ahead keeps memory flat whatever N is; the decoders (Pillow, zlib) release the GIL.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = []
            ahead = 2 * workers
            it = iter(chunks)
            for chunk in it:
                pending.append((chunk, pool.submit(self.images, chunk)))
                if len(pending) >= ahead:
                    break
            while pending:
                chunk, future = pending.pop(0)
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(self.images, nxt)))
                yield chunk, future.result()


Reader = Callable[..., Dataset]
READERS: dict[str, Reader] = {}


def register_reader(kind: str) -> Callable[[Reader], Reader]:
    """Register ``reader(root: Path, **options) -> Dataset`` for SPECs ``kind[:DIR]``."""

    def decorate(reader: Reader) -> Reader:
        READERS[kind] = reader
        return reader

    return decorate


def default_root(kind: str) -> Path:
    return data_home() / kind


def parse_spec(spec: str) -> tuple[str, Path]:
    """``mnist`` -> (mnist, default root); ``celeba:/data/celeba`` -> (celeba, /data/celeba)."""
    kind, sep, root = spec.partition(":")
    if kind not in READERS:
        raise UsageError(f"unknown data set kind {kind!r} in SPEC {spec!r}; known: {', '.join(sorted(READERS))}")
    return kind, Path(root).expanduser() if sep and root else default_root(kind)


def open_dataset(spec: str, **options) -> Dataset:
    """Open the data set a SPEC names; reader options (crop, size, ...) pass through."""
    kind, root = parse_spec(spec)
    if not root.exists():
        raise BadInputError(f"{root}: data folder does not exist (SPEC {spec!r})")
    if not root.is_dir():
        raise BadInputError(f"{root}: not a folder (SPEC {spec!r})")
    return READERS[kind](root, **options)

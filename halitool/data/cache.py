"""Decode-once image cache: a data set's preprocessed images as one uint8 ``[N, C, H, W]`` ``.npy`` file.

Decoding CelebA's JPEGs costs far more than encoding them (docs/benchmarks.md);
a cache makes every later pass (other checkpoints, other levels, training epochs) a memory-mapped read.

Layout, under :func:`cache_dir` (``$HALITOOL_CACHE_DIR``, else ``data_home()/cache``; the data folder itself may
be read-only, so the cache never goes beside it):

- ``<kind>-<name>.npy``: the images, ``np.lib.format`` with a plain header, then ``N*C*H*W`` bytes.
- ``<kind>-<name>.json``: the completion marker, written only after the ``.npy`` is complete and in place; it
  holds ``key``, ``shape``, ``dtype``, ``bytes`` (the size of the ``.npy``), the root and the preprocessing.

``name`` hashes the data folder and the preprocessing (mode, crop, size, resample), so another crop gets its
own file. ``key`` also hashes every image file's name, size and modification time: a changed, added or removed
image makes the cache stale. A cache that is stale, truncated, of the wrong shape or without its marker is
rebuilt, with one log message saying why. The images are decoded in threads (Pillow releases the GIL)
straight into ``<kind>-<name>.npy.partial-<pid>``, which is flushed, fsynced and renamed when complete.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from halitool.progress import SILENT, Progress
from halitool import settings
from halitool.errors import UsageError

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
# "auto" caches data sets at least this large: below it, decoding is quick and a cache file would only clutter.
AUTO_MIN_IMAGES = 10_000
CHUNK = 256  # rows per decoding task: big enough to amortise the task, small enough to balance the threads


def cache_dir() -> Path:
    """``$HALITOOL_CACHE_DIR``, else ``data_home()/cache``."""
    return settings.image_cache_dir()


def cache_wanted(option: bool | None, n_images: int) -> bool:
    """Whether to cache: the reader option when given, else ``$HALITOOL_CACHE`` (on / off / auto; default auto:
    data sets of at least :data:`AUTO_MIN_IMAGES` images)."""
    if option is not None:
        return bool(option)
    setting = settings.image_cache_switch()
    return n_images >= AUTO_MIN_IMAGES if setting is None else setting


def _sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def files_digest(paths: list[str]) -> str:
    """sha256 over every file's name, size and modification time (ns), in order; a missing file counts too."""
    h = hashlib.sha256()
    for path in paths:
        try:
            st = os.stat(path)
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}\0missing\n".encode())
    return h.hexdigest()


class ImageCache:
    """The cache of one data set's images under one preprocessing; :meth:`load` is a ``Dataset`` loader.

    ``decode(indices) -> uint8 [len, C, H, W]`` is the reader's own loader: the cache holds exactly its output.
    The cache is opened (checked, or built) on the first :meth:`load`, not when the data set is opened.
    """

    def __init__(self, kind: str, root: Path, paths: list[str], image_shape: tuple[int, int, int],
                 preprocessing: dict, decode: Callable[[np.ndarray], np.ndarray], folder: Path | None = None,
                 workers: int | None = None, progress: Progress = SILENT):
        self.kind, self.root, self.paths = kind, Path(root), paths
        self.image_shape, self.preprocessing, self.decode = tuple(image_shape), dict(preprocessing), decode
        self.folder = Path(folder) if folder is not None else cache_dir()
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.progress = progress  # where the decoding of a (re)build is reported
        name = _sha256({"root": str(self.root.resolve()), "preprocessing": self.preprocessing,
                        "shape": self.image_shape})[:16]
        self.path = self.folder / f"{kind}-{name}.npy"
        self.marker = self.path.with_suffix(".json")
        self._array: np.ndarray | None = None
        self.built = False  # whether this object decoded the images (rather than finding a valid cache)
        self._lock = threading.Lock()  # decoding threads (Dataset.iter_batches) may ask for the first rows at once

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), *self.image_shape)

    def key(self) -> str:
        """What the cache's content depends on: preprocessing, shape and every image file's name, size, mtime."""
        return _sha256({"format": CACHE_FORMAT, "preprocessing": self.preprocessing, "shape": list(self.shape),
                        "files": files_digest(self.paths)})

    def problem(self, key: str) -> str | None:
        """Why the cache on disk cannot be used (None: it can)."""
        if not self.marker.is_file():
            return "not built yet" if not self.path.exists() else "no completion marker"
        try:
            marker = json.loads(self.marker.read_text())
        except (OSError, ValueError) as exc:
            return f"unreadable marker ({exc})"
        if marker.get("key") != key:
            return "stale (the images or the preprocessing changed)"
        if not self.path.is_file():
            return "the image array is missing"
        if self.path.stat().st_size != marker.get("bytes"):
            return f"truncated or overwritten ({self.path.stat().st_size:,} bytes, expected {marker.get('bytes'):,})"
        try:
            array = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            return f"unreadable array ({exc})"
        if array.dtype != np.uint8 or array.shape != self.shape:
            return f"wrong array ({array.dtype} {array.shape}, expected uint8 {self.shape})"
        return None

    def open(self, rebuild: bool = False) -> np.ndarray:
        """The memory-mapped array, after checking the cache (and building it when it cannot be used, or when
        ``rebuild``)."""
        with self._lock:
            if self._array is None or rebuild:
                self._array = None
                key = self.key()
                problem = "rebuild asked for" if rebuild else self.problem(key)
                if problem is not None:
                    log.info(f"{self.path}: image cache {problem}; decoding {len(self.paths):,} images into it")
                    self.build(key)
                    self.built = True
                self._array = np.load(self.path, mmap_mode="r")
            return self._array

    def build(self, key: str) -> None:
        """Decode every image in threads into a temporary .npy, then rename it into place and write the marker."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.marker.unlink(missing_ok=True)  # from here on a crash leaves no marker, so the next run rebuilds
        partial = self.path.with_name(f"{self.path.name}.partial-{os.getpid()}")
        n = len(self.paths)
        try:
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=self.shape)

            def fill(lo: int) -> int:
                hi = min(n, lo + CHUNK)
                out[lo:hi] = self.decode(np.arange(lo, hi))
                return hi - lo

            with self.progress.task("caching images", total=n) as task, \
                    ThreadPoolExecutor(max_workers=self.workers) as pool:
                for done in pool.map(fill, range(0, n, CHUNK)):
                    task.advance(done)
            out.flush()
            del out
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(partial, self.path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        marker = {"format": CACHE_FORMAT, "key": key, "kind": self.kind, "root": str(self.root.resolve()),
                  "shape": list(self.shape), "dtype": "uint8", "bytes": self.path.stat().st_size,
                  "preprocessing": self.preprocessing,
                  "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        tmp = self.marker.with_name(f"{self.marker.name}.partial-{os.getpid()}")
        tmp.write_text(json.dumps(marker, indent=1))
        os.replace(tmp, self.marker)

    def load(self, indices: np.ndarray) -> np.ndarray:
        """uint8 ``[len(indices), C, H, W]`` from the cache; a contiguous range is one slice of the memory map."""
        array = self.open()
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) > 1 and (np.diff(indices) == 1).all():
            return np.array(array[indices[0] : indices[-1] + 1])
        return np.asarray(array[indices])  # fancy indexing copies out of the map


def build_cache(ds, rebuild: bool = False, progress: Progress = SILENT) -> dict:
    """Check (or build) the cache of ``ds`` (a :class:`Dataset` opened with ``cache=True``); a summary dict."""
    cache = ds.image_cache
    if cache is None:
        raise UsageError(f"{ds.spec}: data sets of kind {ds.kind!r} have no image cache (only celeba has)")
    cache.progress = progress
    t0 = time.perf_counter()
    array = cache.open(rebuild=rebuild)
    return {"cache": str(cache.path), "marker": str(cache.marker), "n_images": int(array.shape[0]),
            "shape": list(array.shape), "bytes": cache.path.stat().st_size, "built": cache.built,
            "seconds": round(time.perf_counter() - t0, 3)}

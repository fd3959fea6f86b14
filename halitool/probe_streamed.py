"""The probe protocol in bounded memory: a feature set read from the features file in row chunks, never whole.

:func:`halitool.probe.probe_arrays` holds a level several times over (the level, its split copies, a float64
standardised copy, the rotation); at CelebA size that is tens of GB. Here the only copy of the training features
is the rotated working matrix ``Z`` [n_train, D] (float32), filled in one pass over the file while the statistics
and the Gram matrix are accumulated; the selection and test rows are scored chunk by chunk and never stored. The
optimum is the same as the in-memory path's (the same protocol: standardise on train, one L2 logistic path per
attribute, C chosen on the valid rows or a stratified hold-out, test scored once), so the two give the same
weights up to the solver's tolerance (tests/test_probe_streamed.py).

A level wider than ``project`` columns can be replaced by a seeded Gaussian random projection of its standardised
values to ``project`` columns (:class:`Projection`), recorded in the result: an approximation, never a silent one.

Memory model (bytes; N rows probed, D columns of the feature set, A attributes, K values of C): see
:func:`streamed_peak` and :func:`in_memory_peak`, and docs/probes.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from halitool.errors import BadInputError, UsageError
from halitool.features import FeaturesFile, read_rows
from halitool.probe import (
    HOLDOUT_FRACTION,
    METRIC_FUNCTIONS,
    PathFit,
    RotatedFeatures,
    _test_metrics,
    choose_from_scores,
    fit_path_torch,
    stratified_subset,
    stratify_key,
    summarize,
)
from halitool.standardize import CONSTANT_STD, Standardizer

CHUNK_BYTES = 2 << 20  # one chunk of raw rows read at a time (all levels of the set together): its float64
# temporaries are several times larger, the allocator keeps freed chunks of this size around, and a smaller
# chunk only costs more (cheap) reads


# ------------------------------------------------------------------------------------------ memory model
def in_memory_peak(n_rows: int, n_train: int, dim: int) -> int:
    """Bytes :func:`halitool.probe.probe_arrays` needs at its peak, beyond the interpreter: the feature set of
    every row read (4 N D), its split copies (4 N D), the float64 standardisation of train (8 n D) into float32
    (4 n D), the float64 copy behind the Gram matrix (8 n D) and the rotated matrix (4 n D), and the Gram
    matrix with its eigendecomposition (about 36 D^2)."""
    return 8 * n_rows * dim + 24 * n_train * dim + 36 * dim * dim


def streamed_peak(n_train: int, n_score: int, dim: int, raw_dim: int, n_attributes: int, n_c: int,
                  memory: int = 10, projected_bytes: int = 0) -> int:
    """Bytes the streamed path needs at its peak: the rotated training matrix (4 n D); the Gram matrix, its
    eigendecomposition and the rotation (about 36 D^2); one chunk of raw and of standardised rows; the weights of
    every attribute at every C (4 K A D) and the solver's curvature history (8 memory A D); the solver's per-row
    temporaries (about 40 n A); the scores of the selection rows (4 n_score K A); and ``projected_bytes``, the
    projections of every row of the projected levels (4 N width each)."""
    rows = min(n_train, chunk_rows(raw_dim))
    chunk = 8 * rows * raw_dim + 16 * rows * dim  # the raw rows (and a slab read), their float64 copy, a product
    return (projected_bytes + 4 * n_train * dim + 36 * dim * dim + chunk + 4 * n_c * n_attributes * dim
            + 8 * memory * n_attributes * dim + 40 * n_train * n_attributes + 4 * n_score * n_c * n_attributes)


def available_memory() -> int:
    """Bytes the system says it can give without swapping (MemAvailable), else the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parse_size(text: str) -> int:
    """``16GB``, ``512MB``, ``2.5G``, ``1000000`` (bytes; powers of 1024) -> bytes."""
    units = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "G": 1 << 30, "GB": 1 << 30,
             "T": 1 << 40, "TB": 1 << 40}
    t = text.strip().upper().replace("IB", "B")
    number = t.rstrip("KMGTB")
    unit = t[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in units or not math.isfinite(value) or value <= 0:
        raise UsageError(f"--memory-budget {text!r}: give a size such as 16GB, 512MB or a number of bytes")
    return int(value * units[unit])


def chunk_rows(raw_dim: int) -> int:
    """Rows per chunk: about CHUNK_BYTES of raw features, at least 64 rows."""
    return max(64, CHUNK_BYTES // (4 * max(raw_dim, 1)))


def gib(n: int) -> str:
    """Bytes for a message: GiB, or MiB below one GiB."""
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


# ------------------------------------------------------------------------------------------------ reading
@dataclass
class Projection:
    """A level's seeded Gaussian random projection: its values standardised with the training rows' statistics,
    times a ``[D, width]`` matrix of N(0, 1 / width) entries (Johnson-Lindenstrauss: distances, and so linear
    separability, are kept approximately)."""

    level: str
    seed: int
    standardize: Standardizer
    matrix: np.ndarray  # [D, width] float32

    def __post_init__(self) -> None:
        # float32 arithmetic: a chunk of a 16,384-wide level is large, and the projection's own noise is far
        # above float32 rounding.
        self._mean = self.standardize.mean.astype(np.float32)
        self._scale = self.standardize.scale.astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) - self._mean) / self._scale) @ self.matrix

    def describe(self) -> dict:
        return {"kind": "gaussian random projection of the standardised level", "from": int(self.matrix.shape[0]),
                "to": int(self.matrix.shape[1]), "seed": self.seed}


class FeatureSetReader:
    """The rows of one feature set (a level, or levels joined with +) in chunks. A level in ``projected`` is read
    from its projection of every row of the file, computed once (:func:`project_level`), not from the file."""

    def __init__(self, ff: FeaturesFile, feature_set: Sequence[str], projected: dict[str, np.ndarray]):
        self.ff, self.levels, self.projected = ff, tuple(feature_set), projected
        self.dim = sum(projected[name].shape[1] if name in projected else ff.level_dim(name)
                       for name in self.levels)
        self.chunk_rows = chunk_rows(self.dim)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """float32 [len(rows), dim] of sorted ``rows``; NaN or inf is bad input."""
        parts = []
        for name in self.levels:
            if name in self.projected:
                parts.append(self.projected[name][rows])
                continue
            x = read_rows(self.ff.h5[f"levels/{name}/mean"], rows)
            if not np.isfinite(x).all():
                raise BadInputError(f"{self.ff.path}: level {name} has NaN or inf values "
                                    f"(in {int((~np.isfinite(x)).any(axis=1).sum())} rows of a chunk)")
            parts.append(x)
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def chunks(self, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """(offset in ``rows``, the features of the next chunk of them)."""
        for start in range(0, len(rows), self.chunk_rows):
            yield start, self.read(rows[start: start + self.chunk_rows])


def project_level(ff: FeaturesFile, projection: Projection) -> np.ndarray:
    """float32 [N, width]: the projection of every row of the file, chunk by chunk (4 N width bytes, once per level
    however many feature sets it joins)."""
    reader = FeatureSetReader(ff, (projection.level,), {})
    rows = np.arange(ff.n_samples)
    out = np.empty((len(rows), projection.matrix.shape[1]), dtype=np.float32)
    for start, x in reader.chunks(rows):
        out[start: start + len(x)] = projection(x)
    return out


def fit_projection(ff: FeaturesFile, level: str, train: np.ndarray, width: int, seed: int) -> Projection:
    """The projection of ``level`` to ``width`` columns, standardised on the ``train`` rows (one pass over them)."""
    reader = FeatureSetReader(ff, (level,), {})
    stats = _MomentSums(reader.dim)
    for _, x in reader.chunks(train):
        stats.add(x)
    rng = np.random.default_rng([seed, reader.dim, width])
    matrix = (rng.standard_normal((reader.dim, width), dtype=np.float32) / np.float32(math.sqrt(width)))
    return Projection(level, seed, stats.standardizer(), matrix)


class _MomentSums:
    """Column sums and (optionally) the cross-product matrix of rows, accumulated in float64 about a shift (the
    first chunk's mean), so that a large mean does not cancel the variance away."""

    def __init__(self, dim: int, gram: bool = False):
        self.n, self.shift = 0, None
        self.total = np.zeros(dim)
        self.squares = np.zeros(dim)
        self.cross = np.zeros((dim, dim)) if gram else None

    def add(self, x: np.ndarray) -> None:
        d = np.array(x, dtype=np.float64)  # one float64 copy of the chunk, shifted in place
        if self.shift is None:
            self.shift = d.mean(axis=0) if len(d) else np.zeros(d.shape[1])
        d -= self.shift
        self.n += len(d)
        self.total += d.sum(axis=0)
        self.squares += np.einsum("ij,ij->j", d, d)
        if self.cross is not None:
            self.cross += d.T @ d

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        centred = self.total / max(self.n, 1)
        var = np.maximum(self.squares / max(self.n, 1) - centred * centred, 0.0)
        return self.shift + centred, np.sqrt(var)

    def standardizer(self) -> Standardizer:
        mean, std = self.mean_std()
        return Standardizer(mean, np.where(std >= CONSTANT_STD, std, 1.0))

    def standardized_gram(self, scale: np.ndarray) -> np.ndarray:
        """The mean cross-product of the standardised rows, (X_s^T X_s) / n, from the shifted sums."""
        centred = self.total / max(self.n, 1)
        covariance = self.cross / max(self.n, 1) - np.outer(centred, centred)
        return covariance / np.outer(scale, scale)


# --------------------------------------------------------------------------------------------- the path
def rotated_training_rows(reader: FeatureSetReader, train: np.ndarray, device="cpu"
                          ) -> tuple[RotatedFeatures, Standardizer]:
    """One pass over the training rows: their raw features into the working matrix, with their statistics and
    Gram matrix; then, in place and chunk by chunk, standardise and rotate onto the Gram matrix's eigenvectors.
    The standardiser is that of every training row (as in the in-memory path)."""
    import torch

    sums = _MomentSums(reader.dim, gram=True)
    Z = torch.empty((len(train), reader.dim), dtype=torch.float32, device=device)
    for start, x in reader.chunks(train):
        sums.add(x)
        Z[start: start + len(x)] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    standardize = sums.standardizer()
    gram = torch.as_tensor(sums.standardized_gram(standardize.scale), device=device)
    sums.cross = None
    _, V64 = torch.linalg.eigh(gram)
    del gram
    V = V64.float()
    del V64
    mean = torch.as_tensor(standardize.mean, dtype=torch.float32, device=device)
    scale = torch.as_tensor(standardize.scale, dtype=torch.float32, device=device)
    for start in range(0, len(train), reader.chunk_rows):
        block = Z[start: start + reader.chunk_rows]
        block.copy_(((block - mean) / scale) @ V)
    return RotatedFeatures(V, Z), standardize


def scores(reader: FeatureSetReader, rows: np.ndarray, standardize: Standardizer, W: np.ndarray,
           b: np.ndarray) -> np.ndarray:
    """``standardize(x) @ W.T + b`` for every row, chunk by chunk: W [K, D], b [K] -> float32 [len(rows), K]."""
    out = np.empty((len(rows), len(b)), dtype=np.float32)
    for start, x in reader.chunks(rows):
        out[start: start + len(x)] = standardize(x) @ W.T + b
    return out


def probe_streamed(reader: FeatureSetReader, train: np.ndarray, Y_train: np.ndarray, valid: np.ndarray,
                   Y_valid: np.ndarray, test: np.ndarray, Y_test: np.ndarray, *, names: Sequence[str],
                   Cs: Sequence[float], metric: str = "accuracy", class_weight: str = "none", device: str = "cpu",
                   seed: int = 0, stratify: np.ndarray | None = None,
                   on_step: Callable[[int], None] | None = None) -> dict:
    """The protocol of :func:`halitool.probe.probe_arrays` over ``reader``'s rows (sorted row indices of the file
    for train, valid and test): the same result dict. With no valid rows, the stratified hold-out is drawn as
    there; the path is fitted on the other training rows by giving the held-out rows weight 0 (the working
    matrix holds every training row once), and the refit at each chosen C gives every row weight 1."""
    Y_train, Y_valid, Y_test = (np.asarray(Y, dtype=np.int8) for Y in (Y_train, Y_valid, Y_test))
    Cs = np.sort(np.asarray(Cs, dtype=np.float64))
    n_train, A = Y_train.shape
    rotated, standardize = rotated_training_rows(reader, train, device)
    weight = np.ones(n_train, dtype=np.float32)
    if len(Y_valid):
        selection = {"split": "valid", "n": int(len(Y_valid))}
        held = None
    else:
        key = stratify if stratify is not None else stratify_key(Y_train)
        held = stratified_subset(key, int(round(HOLDOUT_FRACTION * n_train)), np.random.default_rng(seed))
        weight[held] = 0.0
        selection = {"split": "train_holdout", "n": int(len(held)), "fraction": HOLDOUT_FRACTION, "seed": seed}
    fit_rows = weight > 0
    rate_fit = Y_train[fit_rows].mean(axis=0) if fit_rows.any() else np.zeros(A)
    fitted = np.flatnonzero((rate_fit > 0) & (rate_fit < 1))
    chosen = np.full(A, -1)
    W_final = np.zeros((A, reader.dim), dtype=np.float32)
    b_final = np.zeros(A, dtype=np.float32)
    if len(fitted):
        path = fit_path_torch(None, Y_train[:, fitted], Cs, class_weight=class_weight, device=device,
                              rotated=rotated, row_weight=None if held is None else weight, on_step=on_step)
        chosen[fitted] = _choose_on(reader, path, standardize, valid if held is None else train[held],
                                    (Y_valid if held is None else Y_train[held])[:, fitted], METRIC_FUNCTIONS[metric])
        columns = np.arange(len(fitted))
        W_final[fitted], b_final[fitted] = path.W[chosen[fitted], columns], path.b[chosen[fitted], columns]
        if held is not None:
            for c in np.unique(chosen[fitted]):
                group = fitted[chosen[fitted] == c]
                refit = fit_path_torch(None, Y_train[:, group], Cs[c: c + 1], class_weight=class_weight,
                                       device=device, init=(W_final[group], b_final[group]), rotated=rotated)
                W_final[group], b_final[group] = refit.W[0], refit.b[0]
    del rotated
    test_scores = scores(reader, test, standardize, W_final, b_final)
    fallback = [int(round(r)) if fit_rows.any() else 0 for r in rate_fit]
    result = summarize([_test_metrics(name, Y_test[:, a], test_scores[:, a], Cs[chosen[a]] if chosen[a] >= 0 else None,
                                      fallback[a]) for a, name in enumerate(names)])
    result["selection"] = selection
    return result


def _choose_on(reader: FeatureSetReader, path: PathFit, standardize: Standardizer, rows: np.ndarray,
               Y_sel: np.ndarray, score_fn) -> np.ndarray:
    """:func:`halitool.probe.choose_from_scores`, the selection rows' scores computed chunk by chunk."""
    n_c, n_fit, dim = path.W.shape
    flat = scores(reader, rows, standardize, path.W.transpose(1, 0, 2).reshape(n_fit * n_c, dim),
                  path.b.T.reshape(-1))  # [n_sel, A_fit * nC], attribute-major
    return choose_from_scores(flat.reshape(len(rows), n_fit, n_c), Y_sel, score_fn)

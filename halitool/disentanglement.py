"""Disentanglement metrics over arrays: the mutual information between every latent dimension and every factor,
MIG (Chen et al. 2018) and MIG-sup (Li et al. 2020). Pure functions of numpy arrays; docs/disentanglement.md
has the definitions and how to read them.

Everything is counted on discrete codes, as disentanglement_lib does: each latent dimension (and each continuous
factor) is cut into ``bins`` equal-width bins over its range on the rows measured; a discrete factor keeps its
values. Mutual information and entropy are the plug-in estimates of those codes' frequencies, in nats.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from halitool.choices import DISENTANGLEMENT_BINS as DEFAULT_BINS  # disentanglement_lib's num_bins

DISCRETIZATION = "histogram"  # equal-width bins over each column's range on the rows measured
# MIG-sup averages over the active dimensions only, as Li et al.'s code does: a dimension whose values vary by
# less than this (variance over the rows measured) encodes nothing, and its gap of ~0 would only dilute the mean.
ACTIVE_VARIANCE = 1e-2
# Rows per block when codes and joint counts are computed: bounds the int64 work arrays (8 bytes x rows x D) to
# about 50 MB for MNIST's z1 (784 dimensions).
BLOCK_ROWS = 8192


class ConstantFactorError(ValueError):
    """A factor takes a single value on the rows measured: no dimension can inform about it, and its normalised
    gap (a division by its entropy, 0) is undefined."""

    def __init__(self, index: int):
        super().__init__(f"factor {index} takes a single value")
        self.index = index


def histogram_codes(values: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Each column of ``values [N, D]`` cut into ``bins`` equal-width bins over its range: codes ``0..bins-1``.

    The same codes as ``np.digitize(column, np.histogram(column, bins)[1][:-1]) - 1`` per column (the
    discretiser of disentanglement_lib), without a loop over columns: the bin edges are numpy's own
    (``np.linspace`` over [min, max], widened by 0.5 on both sides for a constant column), each value's bin is
    estimated from its position in the range and then corrected against those edges, so a value on an edge
    lands where numpy puts it.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"values must be [rows, columns], got shape {values.shape}")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, not {bins}")
    n, d = values.shape
    dtype = np.uint8 if bins <= 256 else np.int32
    codes = np.zeros((n, d), dtype=dtype)
    if n == 0 or d == 0:
        return codes
    lo, hi = values.min(axis=0), values.max(axis=0)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError("values must be finite")
    flat = lo == hi
    lo, hi = np.where(flat, lo - 0.5, lo), np.where(flat, hi + 0.5, hi)
    edge_type = np.result_type(values.dtype, float) if values.dtype.kind in "iub" else values.dtype
    edges = np.linspace(lo.astype(edge_type), hi.astype(edge_type), bins + 1, axis=1)  # [D, bins + 1]
    width = (hi.astype(np.float64) - lo) / bins
    row_of_edges = (np.arange(d) * (bins + 1))[None, :]
    for start in range(0, n, BLOCK_ROWS):
        block = values[start : start + BLOCK_ROWS]
        code = np.floor((block - lo.astype(np.float64)) / width).astype(np.int64)
        np.clip(code, 0, bins - 1, out=code)
        # The estimate is off by at most one bin where a value sits within rounding of an edge.
        below = block < np.take(edges, row_of_edges + code)
        code -= below
        above = (code < bins - 1) & (block >= np.take(edges, row_of_edges + np.minimum(code + 1, bins)))
        code += above
        codes[start : start + len(block)] = code
    return codes


def category_codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """A discrete column as codes ``0..K-1`` (in the order of its sorted values) and K."""
    uniques, codes = np.unique(np.asarray(values), return_inverse=True)
    return codes.reshape(-1).astype(np.int64), len(uniques)


def factor_codes(factors: np.ndarray, discrete: Sequence[bool], bins: int = DEFAULT_BINS
                 ) -> tuple[np.ndarray, list[int]]:
    """Codes ``int64 [N, K]`` of the factors ``[N, K]`` and each one's number of codes: continuous factors
    binned as the latents are (:func:`histogram_codes`), discrete ones as they are (:func:`category_codes`)."""
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] != len(discrete):
        raise ValueError(f"factors of shape {factors.shape} for {len(discrete)} discrete flags")
    codes = np.zeros(factors.shape, dtype=np.int64)
    sizes = []
    for k, is_discrete in enumerate(discrete):
        if is_discrete:
            codes[:, k], size = category_codes(factors[:, k])
        else:
            codes[:, k] = histogram_codes(factors[:, k : k + 1], bins)[:, 0]
            size = bins
        sizes.append(size)
    return codes, sizes


def joint_counts(latent_codes: np.ndarray, bins: int, codes: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Per factor k, ``int64 [D, bins, sizes[k]]``: for each latent dimension j, how many rows have latent code
    a and factor code b. One ``bincount`` of combined codes per factor and block of rows, no loop over
    dimensions."""
    n, d = latent_codes.shape
    counts = [np.zeros(d * bins * size, dtype=np.int64) for size in sizes]
    offsets = (np.arange(d, dtype=np.int64) * bins)[None, :]
    for start in range(0, n, BLOCK_ROWS):
        cell = offsets + latent_codes[start : start + BLOCK_ROWS]  # [rows, D]: dimension j's code a as j*bins + a
        for k, size in enumerate(sizes):
            combined = cell * size
            combined += codes[start : start + len(cell), k, None]
            counts[k] += np.bincount(combined.ravel(), minlength=len(counts[k]))
    return [c.reshape(d, bins, size) for c, size in zip(counts, sizes)]


def mutual_information_from_counts(counts: np.ndarray) -> np.ndarray:
    """Plug-in mutual information (nats) of each ``[..., A, B]`` contingency table: sum p(a,b) log p(a,b) /
    (p(a) p(b)), clipped at 0 against rounding (as scikit-learn's ``mutual_info_score``)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=(-2, -1), keepdims=True)
    outer = counts.sum(axis=-1, keepdims=True) * counts.sum(axis=-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(counts > 0, counts * np.log(counts * total / np.where(outer > 0, outer, 1.0)), 0.0)
        mi = terms.sum(axis=(-2, -1)) / total[..., 0, 0]
    return np.clip(np.nan_to_num(mi, nan=0.0), 0.0, None)


def entropy(codes: np.ndarray) -> float:
    """Plug-in entropy (nats) of a column of codes."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64).ravel())
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def mutual_information(latent_codes: np.ndarray, bins: int, codes: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """``float64 [K, D]``: I(z_j; v_k) in nats between every latent dimension's codes (``[N, D]``, values below
    ``bins``) and every factor's codes (``[N, K]``, factor k's below ``sizes[k]``)."""
    if not len(sizes):
        return np.zeros((0, latent_codes.shape[1]))
    return np.stack([mutual_information_from_counts(c) for c in joint_counts(latent_codes, bins, codes, sizes)])


def _top_two(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Along ``axis`` (of length >= 2): the largest value, its index, the second largest and its index."""
    order = np.argsort(-values, axis=axis, kind="stable")
    first, second = np.take(order, 0, axis=axis), np.take(order, 1, axis=axis)
    pick = (lambda idx: np.take_along_axis(values, np.expand_dims(idx, axis), axis).squeeze(axis))
    return pick(first), first, pick(second), second


def mig(mi: np.ndarray, entropies: np.ndarray) -> dict | None:
    """MIG (Chen et al. 2018) of ``mi [K, D]``: per factor k, (the largest I(z_j; v_k) over dimensions j minus
    the second largest) / H(v_k), and their mean over factors. None with fewer than two dimensions (no gap).

    Returns ``{"score", "gaps" [K], "top" [K], "top_mi" [K], "second" [K], "second_mi" [K]}``."""
    mi = np.asarray(mi, dtype=np.float64)
    if mi.shape[1] < 2 or mi.shape[0] == 0:
        return None
    top_mi, top, second_mi, second = _top_two(mi, axis=1)
    gaps = (top_mi - second_mi) / np.asarray(entropies, dtype=np.float64)
    return {"score": float(gaps.mean()), "gaps": gaps, "top": top, "top_mi": top_mi, "second": second,
            "second_mi": second_mi}


def mig_sup(mi: np.ndarray, entropies: np.ndarray, active: np.ndarray | None = None) -> dict | None:
    """MIG-sup (Li et al. 2020) of ``mi [K, D]``: per dimension j, the largest normalised I(z_j; v_k) / H(v_k)
    over factors k minus the second largest, averaged over the ``active`` dimensions (a bool mask; default all).
    A dimension that encodes two factors scores low. 0 when no dimension is active (none encodes anything);
    None with fewer than two factors (no gap).

    Returns ``{"score", "gaps" [D], "active" [D] bool}``."""
    mi = np.asarray(mi, dtype=np.float64)
    if mi.shape[0] < 2:
        return None
    normalised = mi / np.asarray(entropies, dtype=np.float64)[:, None]
    top, _, second, _ = _top_two(normalised, axis=0)
    gaps = top - second
    active = np.ones(mi.shape[1], dtype=bool) if active is None else np.asarray(active, dtype=bool)
    return {"score": float(gaps[active].mean()) if active.any() else 0.0, "gaps": gaps, "active": active}


def active_dimensions(latents: np.ndarray, threshold: float = ACTIVE_VARIANCE) -> np.ndarray:
    """Bool ``[D]``: the dimensions whose variance over the rows exceeds ``threshold``."""
    return np.asarray(latents).var(axis=0, dtype=np.float64) > threshold


def disentanglement_scores(latents: np.ndarray, factors: np.ndarray, discrete: Sequence[bool],
                           bins: int = DEFAULT_BINS) -> dict:
    """MIG and MIG-sup of ``latents [N, D]`` against ``factors [N, K]`` (``discrete[k]``: factor k's values are
    categories, else it is binned like the latents), with what they are computed from.

    Returns ``{"mutual_information" [K, D] (nats), "entropies" [K], "factor_sizes" [K], "mig": mig(...),
    "mig_sup": mig_sup(...)}``. A factor that takes a single value is a :class:`ConstantFactorError`.
    """
    latents = np.asarray(latents)
    codes, sizes = factor_codes(factors, discrete, bins)
    entropies = np.array([entropy(codes[:, k]) for k in range(codes.shape[1])])
    if (entropies <= 0).any():
        raise ConstantFactorError(int(np.flatnonzero(entropies <= 0)[0]))
    mi = mutual_information(histogram_codes(latents, bins), bins, codes, sizes)
    return {"mutual_information": mi, "entropies": entropies, "factor_sizes": sizes,
            "mig": mig(mi, entropies), "mig_sup": mig_sup(mi, entropies, active_dimensions(latents))}

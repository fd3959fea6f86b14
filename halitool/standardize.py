"""The one feature standardiser of the probes and the semi-supervised protocols."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A column whose standard deviation is below this is constant (up to rounding): it is centred but not scaled,
# so it maps to 0 instead of amplifying float noise into unit variance (or NaN for an exact constant).
CONSTANT_STD = 1e-8


@dataclass
class Standardizer:
    """Feature-wise affine map fitted on training rows (statistics in float64); constant columns map to 0."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray, block: int = 8192) -> "Standardizer":
        """Column means and standard deviations, accumulated in float64 a block of rows at a time (two passes:
        the mean, then the squared deviations from it), so that a float32 X is never copied whole to float64."""
        X = np.asarray(X)
        n = max(len(X), 1)
        total = np.zeros(X.shape[1])
        for start in range(0, len(X), block):
            total += X[start: start + block].sum(axis=0, dtype=np.float64)
        mean = total / n
        squares = np.zeros(X.shape[1])
        for start in range(0, len(X), block):
            d = X[start: start + block].astype(np.float64) - mean
            squares += np.einsum("ij,ij->j", d, d)
        std = np.sqrt(squares / n)
        return cls(mean, np.where(std >= CONSTANT_STD, std, 1.0))

    def __call__(self, X: np.ndarray, dtype=np.float32, block: int = 8192) -> np.ndarray:
        """``(X - mean) / scale`` computed in float64 a block of rows at a time, returned as ``dtype``."""
        X = np.asarray(X)
        out = np.empty(X.shape, dtype=dtype)
        for start in range(0, len(X), block):
            out[start: start + block] = (X[start: start + block].astype(np.float64) - self.mean) / self.scale
        return out

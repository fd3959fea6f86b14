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
    def fit(cls, X: np.ndarray) -> "Standardizer":
        X = np.asarray(X, dtype=np.float64)
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        return cls(mean, np.where(std >= CONSTANT_STD, std, 1.0))

    def __call__(self, X: np.ndarray, dtype=np.float32) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float64) - self.mean) / self.scale).astype(dtype, copy=False)

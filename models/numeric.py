"""Small numpy helpers shared by training and the service (torch-free, like models.features)."""

from __future__ import annotations

import functools

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logits -> probabilities (float64), overflow-safe for any finite logit (no exp overflow)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


@functools.lru_cache(maxsize=64)
def cached_constant(values: tuple[float, ...], dtype: type) -> np.ndarray:
    """`values` as a read-only array, cached: per-spec constants such as the bucket edges, built
    once instead of on every encoding."""
    array: np.ndarray = np.asarray(values, dtype=dtype)
    array.flags.writeable = False
    return array


@functools.lru_cache(maxsize=64)
def cached_log1p(x: float) -> np.float64:
    """np.log1p of a scalar, cached: the count and time scales are per-spec constants."""
    return np.log1p(x)

"""Small numpy helpers shared by training and the service (torch-free, like models.features)."""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logits -> probabilities (float64), overflow-safe for any finite logit (no exp overflow)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))

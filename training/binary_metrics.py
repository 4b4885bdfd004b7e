"""Binary-prediction metrics on numpy arrays: AUC (rank-based, tie-aware), accuracy, log loss,
Brier score and expected calibration error (ECE)."""

from __future__ import annotations

import numpy as np

LOG_LOSS_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] before the log
ECE_BINS = 15  # equal-width probability bins of the ECE


def _validate(y_true: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    q = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != q.shape:
        raise ValueError(f"labels and predictions differ in length: {y.shape[0]} vs {q.shape[0]}")
    return y, q


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks); NaN if only one class."""
    y, s = _validate(y_true, scores)
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(s_sorted)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(s)]])
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y_true: np.ndarray, p: np.ndarray, eps: float = LOG_LOSS_EPS) -> float:
    y, q = _validate(y_true, p)
    q = np.clip(q, eps, 1 - eps)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def accuracy(y_true: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> float:
    y, q = _validate(y_true, p)
    return float(np.mean((q >= threshold) == (y == 1)))


def brier(y_true: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of the probabilities (0 = perfect; 0.25 = always 0.5)."""
    y, q = _validate(y_true, p)
    return float(np.mean((q - y) ** 2))


def ece_bin(p: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """(N,) the equal-width probability bin of each prediction, in 0..n_bins-1."""
    return np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)


def expected_calibration_error(y_true: np.ndarray, p: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean |observed rate - mean prediction| over `n_bins` equal-width
    probability bins (Guo et al. 2017). 0 = calibrated; a model that is right about its rank order
    but says 0.9 where 0.7 happens scores ~0.2."""
    y, q = _validate(y_true, p)
    if len(y) == 0:
        return float("nan")
    idx = ece_bin(q, n_bins)  # (N,)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    gap = np.abs(
        np.bincount(idx, weights=y, minlength=n_bins)
        - np.bincount(idx, weights=q, minlength=n_bins)
    )
    return float(gap.sum() / count.sum())


def binary_metrics(y_true: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """{"auc", "acc", "logloss", "brier", "ece", "n"} for labels in {0, 1} and probabilities."""
    y, q = _validate(y_true, p)
    return {
        "auc": roc_auc(y, q),
        "acc": accuracy(y, q),
        "logloss": log_loss(y, q),
        "brier": brier(y, q),
        "ece": expected_calibration_error(y, q),
        "n": int(len(y)),
    }


def calibration_bins(y_true: np.ndarray, p: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Reliability table: per probability bin, mean prediction, observed rate and count."""
    y, q = _validate(y_true, p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(q, edges[1:-1]), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            rows.append(
                {
                    "p_mean": float(q[sel].mean()),
                    "observed": float(y[sel].mean()),
                    "n": int(sel.sum()),
                }
            )
    return rows

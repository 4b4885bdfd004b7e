"""Confidence intervals of the evaluation metrics by a bootstrap over learners.

Answers of one learner are not independent (the same ability, the same history), so resampling
answers would understate the uncertainty. Each replicate draws the learners with replacement and
weights every answer by how often its learner was drawn; the interval is the percentile interval of
the replicates (Efron & Tibshirani 1993, ch. 13). `metric_intervals` covers AUC, log loss and ECE of
one model; `paired_auc_difference` the AUC difference of two models on the same answers, resampled
together (the comparison's own interval, narrower than the two separate ones).

The weighted metrics equal `training.binary_metrics` at unit weights (tested): the answers are
sorted once, and a replicate only changes the weights, so it costs O(answers).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from training.binary_metrics import ECE_BINS, LOG_LOSS_EPS, ece_bin

LEVEL = 0.95


@dataclass(frozen=True)
class _Ranked:
    """The answers sorted by prediction once: each answer's tie group, for weighted AUCs."""

    tie_group: np.ndarray  # (N,) index of the answer's group of equal predictions, in score order
    n_groups: int

    @classmethod
    def of(cls, scores: np.ndarray) -> _Ranked:
        order = np.argsort(scores, kind="mergesort")
        starts = np.concatenate([[True], np.diff(scores[order]) != 0])  # (N,) new value here
        group = np.empty(len(scores), dtype=np.int64)
        group[order] = np.cumsum(starts) - 1
        return cls(group, int(starts.sum()))

    def auc(self, y: np.ndarray, w: np.ndarray) -> float:
        """Weighted Mann-Whitney AUC: P(score of a positive > a negative), ties count half."""
        pos = np.bincount(self.tie_group, weights=w * y, minlength=self.n_groups)  # (G,)
        neg = np.bincount(self.tie_group, weights=w * (1.0 - y), minlength=self.n_groups)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            return float("nan")
        below = np.cumsum(neg) - neg  # negative weight strictly below each group
        return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))


class WeightedMetrics:
    """AUC, log loss and ECE of fixed answers under per-answer weights (a weight k counts the
    answer k times: equal to `training.binary_metrics` on the answers repeated, tested)."""

    def __init__(self, labels: np.ndarray, probs: np.ndarray) -> None:
        self.y = np.asarray(labels, dtype=np.float64).ravel()  # (N,)
        self.q = np.asarray(probs, dtype=np.float64).ravel()  # (N,)
        self.ranked = _Ranked.of(self.q)
        clipped = np.clip(self.q, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
        self.losses = -(self.y * np.log(clipped) + (1 - self.y) * np.log(1 - clipped))  # (N,)
        self.bins = ece_bin(self.q)  # (N,)

    def __call__(self, w: np.ndarray) -> tuple[float, float, float]:
        total = w.sum()
        gap = np.abs(
            np.bincount(self.bins, weights=w * self.y, minlength=ECE_BINS)
            - np.bincount(self.bins, weights=w * self.q, minlength=ECE_BINS)
        )  # (ECE_BINS,)
        return (
            self.ranked.auc(self.y, w),
            float((w * self.losses).sum() / total),
            float(gap.sum() / total),
        )


def _learner_index(learners: np.ndarray) -> tuple[np.ndarray, int]:
    """(N,) index of each answer's learner in 0..L-1, and L."""
    _, index = np.unique(np.asarray(learners), return_inverse=True)
    return index.ravel(), int(index.max()) + 1 if len(index) else 0


def _replicate_weights(
    index: np.ndarray, n_learners: int, n_resamples: int, seed: int
) -> Iterator[np.ndarray]:
    """(N,) weights per replicate: how often each answer's learner was drawn."""
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_learners, np.full(n_learners, 1.0 / n_learners), size=n_resamples)
    for counts in draws:  # (L,) one replicate's draws per learner
        yield counts[index].astype(np.float64)


def _interval(values: list[float]) -> list[float]:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0:
        return [float("nan"), float("nan")]
    tail = (1.0 - LEVEL) / 2.0 * 100.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return [round(float(lo), 6), round(float(hi), 6)]


def _check(labels: np.ndarray, learners: np.ndarray, n_resamples: int) -> None:
    if len(labels) != len(learners):
        raise ValueError(f"labels and learners differ in length: {len(labels)} vs {len(learners)}")
    if n_resamples < 1:
        raise ValueError("the bootstrap needs at least one resample")


def metric_intervals(
    labels: np.ndarray,
    probs: np.ndarray,
    learners: np.ndarray,
    n_resamples: int = 200,
    seed: int = 0,
) -> dict[str, list[float]]:
    """{"auc_ci95", "logloss_ci95", "ece_ci95"}: [low, high] over learner resamples."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    q = np.asarray(probs, dtype=np.float64).ravel()
    _check(y, np.asarray(learners).ravel(), n_resamples)
    index, n_learners = _learner_index(learners)
    weighted = WeightedMetrics(y, q)
    replicates = [
        weighted(w) for w in _replicate_weights(index, n_learners, n_resamples, seed)
    ]  # (R,) of (auc, logloss, ece)
    auc, logloss, ece = zip(*replicates, strict=True)
    return {
        "auc_ci95": _interval(list(auc)),
        "logloss_ci95": _interval(list(logloss)),
        "ece_ci95": _interval(list(ece)),
    }


def paired_auc_difference(
    labels: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    learners: np.ndarray,
    n_resamples: int = 200,
    seed: int = 0,
) -> dict[str, float | list[float]]:
    """AUC(a) - AUC(b) on the same answers, and its interval with both resampled together."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    a, b = np.asarray(probs_a, np.float64).ravel(), np.asarray(probs_b, np.float64).ravel()
    if not len(a) == len(b) == len(y):
        raise ValueError(
            f"labels and the two predictions differ in length: {len(y)}, {len(a)}, {len(b)}"
        )
    _check(y, np.asarray(learners).ravel(), n_resamples)
    index, n_learners = _learner_index(learners)
    ranked_a, ranked_b = _Ranked.of(a), _Ranked.of(b)
    ones = np.ones_like(y)
    diffs = [
        ranked_a.auc(y, w) - ranked_b.auc(y, w)
        for w in _replicate_weights(index, n_learners, n_resamples, seed)
    ]
    return {
        "auc_diff": round(ranked_a.auc(y, ones) - ranked_b.auc(y, ones), 6),
        "auc_diff_ci95": _interval(diffs),
    }

"""training.bootstrap: the weighted metrics equal binary_metrics on repeated answers, and the
learner-bootstrap intervals behave as intervals (contain the estimate, shrink with more learners,
pair two models on the same resamples)."""

from __future__ import annotations

import numpy as np
import pytest

from training.binary_metrics import binary_metrics
from training.bootstrap import WeightedMetrics, metric_intervals, paired_auc_difference


def _answers(
    rng: np.random.Generator, n: int, learners: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n answers of `learners` learners: probabilities rounded to 2 decimals (many ties), labels
    drawn from them, and each answer's learner."""
    probs = rng.random(n).round(2)
    labels = (rng.random(n) < probs).astype(np.float64)
    return labels, probs, rng.integers(0, learners, n)


@pytest.mark.parametrize("seed", range(5))
def test_weights_count_answers_as_repeats(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels, probs, _ = _answers(rng, 300, 10)
    weights = rng.integers(0, 4, len(labels)).astype(np.float64)  # 0 drops an answer
    auc, logloss, ece = WeightedMetrics(labels, probs)(weights)
    repeats = weights.astype(np.int64)
    expected = binary_metrics(np.repeat(labels, repeats), np.repeat(probs, repeats))
    assert auc == pytest.approx(expected["auc"], abs=1e-12)
    assert logloss == pytest.approx(expected["logloss"], abs=1e-12)
    assert ece == pytest.approx(expected["ece"], abs=1e-12)


def test_intervals_hold_the_estimate_and_shrink_with_more_learners() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for learners in (20, 2000):
        labels, probs, who = _answers(rng, 20_000, learners)
        point = binary_metrics(labels, probs)
        intervals = metric_intervals(labels, probs, who, n_resamples=200)
        for name in ("auc", "logloss"):
            lo, hi = intervals[f"{name}_ci95"]
            assert lo < point[name] < hi
        widths.append(np.diff(intervals["auc_ci95"])[0])
    assert widths[1] < widths[0]  # the same answers spread over more learners: a narrower interval
    assert metric_intervals(labels, probs, who, n_resamples=50, seed=3) == metric_intervals(
        labels, probs, who, n_resamples=50, seed=3
    )


def test_learners_resample_as_wholes() -> None:
    """A learner's answers move together: copies of every answer by the same learner widen the
    interval of a learner bootstrap as much as the learners' number, not the answers', says."""
    rng = np.random.default_rng(1)
    labels, probs, who = _answers(rng, 2000, 2000)
    who = np.arange(2000)  # one answer per learner
    single = np.diff(metric_intervals(labels, probs, who)["auc_ci95"])[0]
    copies = np.diff(
        metric_intervals(np.tile(labels, 10), np.tile(probs, 10), np.tile(who, 10))["auc_ci95"]
    )[0]
    assert copies == pytest.approx(single, rel=0.3)  # 10x the answers, the same 2,000 learners


def test_paired_difference() -> None:
    rng = np.random.default_rng(2)
    labels, probs, who = _answers(rng, 20_000, 500)
    same = paired_auc_difference(labels, probs, probs, who)
    assert same == {"auc_diff": 0.0, "auc_diff_ci95": [0.0, 0.0]}
    noisy = np.clip(probs + rng.normal(0, 0.3, len(probs)), 0, 1)  # a worse model
    diff = paired_auc_difference(labels, probs, noisy, who)
    expected = binary_metrics(labels, probs)["auc"] - binary_metrics(labels, noisy)["auc"]
    assert diff["auc_diff"] == pytest.approx(expected, abs=1e-6)
    lo, hi = diff["auc_diff_ci95"]
    assert 0 < lo < diff["auc_diff"] < hi


def test_bad_input_is_named() -> None:
    labels, probs, who = _answers(np.random.default_rng(3), 10, 2)
    with pytest.raises(ValueError, match="labels and learners differ in length"):
        metric_intervals(labels, probs, who[:5])
    with pytest.raises(ValueError, match="at least one resample"):
        metric_intervals(labels, probs, who, n_resamples=0)
    with pytest.raises(ValueError, match="differ in length"):
        paired_auc_difference(labels, probs, probs[:3], who)

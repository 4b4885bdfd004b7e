"""bench.quality's tables: the learner-bootstrap intervals of each model row, and SAINT+'s paired
AUC difference to every other model on the same eval answers."""

from __future__ import annotations

import numpy as np
import pytest

from bench.quality import paired_lines, table
from training.binary_metrics import binary_metrics


def _row(name: str, labels: np.ndarray, probs: np.ndarray, learners: np.ndarray | None) -> dict:
    metrics = binary_metrics(labels, probs)
    return {
        "model": name, **metrics, "logloss_raw": metrics["logloss"], "ece_raw": metrics["ece"],
        "params": 10, "train_s": 1.0, "seq_per_s": 1.0, "auc_ci95": [0.5, 0.6],
        "ece_ci95": [0.01, 0.02], "_labels": labels, "_probs": probs, "_learners": learners,
    }  # fmt: skip


def test_paired_lines_compare_saint_plus_with_each_model() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random(4000)
    labels = (rng.random(4000) < probs).astype(np.float64)
    learners = rng.integers(0, 100, 4000)
    worse = np.clip(probs + rng.normal(0, 0.4, 4000), 0, 1)
    rows = [_row("logistic", labels, worse, learners), _row("saint_plus", labels, probs, learners)]
    lines = paired_lines(rows)
    assert len(lines) == 2 and lines[1].startswith("- saint_plus − logistic: AUC +0.")
    diff = binary_metrics(labels, probs)["auc"] - binary_metrics(labels, worse)["auc"]
    assert f"{diff:+.4f}" in lines[1]
    # a run saved before learners were kept has no pairs; different answers are an error
    assert paired_lines([rows[0], {**rows[1], "_learners": None}]) == []
    with pytest.raises(ValueError, match="different answers"):
        paired_lines([{**rows[0], "_labels": 1 - labels}, rows[1]])


def test_table_shows_intervals_where_the_run_has_them() -> None:
    labels = np.array([0.0, 1.0, 1.0, 0.0])
    probs = np.array([0.2, 0.8, 0.6, 0.4])
    old = {**_row("dkt", labels, probs, None), "auc_ci95": None, "ece_ci95": None}
    lines = table([_row("saint_plus", labels, probs, np.arange(4)), old], [])
    assert lines[0].count("|") == lines[2].count("|") == lines[3].count("|")
    assert "| 0.5000–0.6000 |" in lines[2] and "| 0.0100–0.0200 |" in lines[2]
    assert "| 1.0000 |  |" in lines[3]  # no interval: an empty cell

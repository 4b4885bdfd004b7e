"""Train/validation splits of an `Interactions` table: by learner, or by time within each learner.

Never random rows (docs/design.md §2). Both splits are deterministic: `split_by_learner` for a given seed,
`split_by_time` always.
"""

from __future__ import annotations

import numpy as np

from training.data import Interactions


def _check_fraction(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def split_by_learner(
    inter: Interactions, valid_fraction: float, seed: int
) -> tuple[Interactions, Interactions]:
    """(train, valid): a seeded random `valid_fraction` of the learners goes to valid.

    With 0 < fraction < 1 and at least two learners, both sides get at least one learner. Each
    side keeps the learners in their original order.
    """
    fraction = _check_fraction("valid_fraction", valid_fraction)
    n = inter.n_learners
    n_valid = int(round(n * fraction))
    if 0.0 < fraction < 1.0 and n >= 2:
        n_valid = min(max(n_valid, 1), n - 1)
    shuffled = np.random.default_rng(seed).permutation(n)
    valid = np.sort(shuffled[:n_valid])
    train = np.sort(shuffled[n_valid:])
    return inter.select(train), inter.select(valid)


def _bundle_starts(inter: Interactions) -> np.ndarray:
    """Row indices where a bundle starts (new learner or new (timestamp, container)), plus N."""
    n = inter.n_rows
    start = np.ones(n + 1, dtype=bool)
    start[1:n] = (inter.timestamp[1:] != inter.timestamp[:-1]) | (
        inter.bundle[1:] != inter.bundle[:-1]
    )
    start[inter.offsets[:-1]] = True
    return np.flatnonzero(start)


def split_by_time(inter: Interactions, eval_fraction: float) -> tuple[Interactions, Interactions]:
    """(history, eval): per learner, the first (1 - f) of its rows, then the rest.

    The cut is at row round((1 - f) * n), moved forward to the next bundle boundary so a bundle is
    never split. Both tables keep every learner in the same order (learner i of eval continues
    learner i of history; either part may be empty), so the history can serve as context when
    predicting the eval rows.
    """
    fraction = _check_fraction("eval_fraction", eval_fraction)
    lo, hi = inter.offsets[:-1], inter.offsets[1:]
    target = lo + np.rint((1.0 - fraction) * (hi - lo)).astype(np.int64)
    boundaries = _bundle_starts(inter)
    cut = boundaries[np.searchsorted(boundaries, target, side="left")]
    cut = np.minimum(cut, hi)  # learner ends are boundaries already; guard anyway
    return inter.take_ranges(inter.user_ids, lo, cut), inter.take_ranges(inter.user_ids, cut, hi)

"""Training windows: the fixed chunks and the shifted ones of --window-augmentation shift."""

from __future__ import annotations

import numpy as np
import pytest

from models.feature_spec import FeatureSpec
from models.features import History
from models.vocab import QuestionVocab
from training.windows import IGNORE_LABEL, WindowDataset

VOCAB = QuestionVocab.build(np.arange(20), np.ones(20, dtype=np.int64))
SPEC = FeatureSpec(window=20, n_questions=VOCAB.size)


def _history(n: int, seed: int) -> History:
    rng = np.random.default_rng(seed)
    return History(
        question=rng.integers(2, VOCAB.size, n),
        correct=rng.integers(0, 2, n).astype(np.int8),
        timestamp=np.arange(n, dtype=np.int64) * 1000,
        bundle=np.arange(n, dtype=np.int64),
        elapsed_ms=np.full(n, np.nan, np.float32),
        explanation=np.full(n, -1, np.int8),
    )


def test_shifted_windows_stay_inside_keep_their_context_and_move() -> None:
    histories = [_history(n, seed=n) for n in (7, 20, 61, 133)]
    data = WindowDataset(histories, SPEC, VOCAB.item_table(), augment=True, seed=3)
    assert len(data) == len(WindowDataset(histories, SPEC, VOCAB.item_table()))
    covered = [np.zeros(len(h), bool) for h in histories]
    seen_refs = set()
    for _ in range(60):  # epochs
        for ref in data.windows:
            n = len(histories[ref.learner])
            moved = data._shifted(ref, n)
            seen_refs.add(moved)
            assert 0 <= moved.start < moved.end <= n
            if n <= SPEC.window:
                assert moved == ref  # short histories are one fixed window
            else:
                assert moved.end - moved.start == SPEC.window
                # scored items keep >= window - stride items of context, unless the window starts
                # the history (then it scores everything, as the fixed first window does)
                expected = 0 if moved.start == 0 else moved.end - data.stride
                assert moved.score_from == expected
            covered[ref.learner][moved.score_from : moved.end] = True
    assert all(c.all() for c in covered)  # every item gets scored
    assert len(seen_refs) > 3 * len(data)  # the windows really move between epochs
    # an item is the encoding of its history slice, labelled from score_from on
    item = data[len(data) - 1]
    assert (item["labels"] != IGNORE_LABEL).sum() in (data.stride, SPEC.window)


def test_augmentation_refuses_scored_prefixes() -> None:
    with pytest.raises(ValueError, match="augmentation"):
        WindowDataset([_history(50, 0)], SPEC, VOCAB.item_table(), score_from=[10], augment=True)


@pytest.mark.parametrize("n", [5, 20, 21, 99])
def test_fixed_windows_score_every_item_once(n: int) -> None:
    data = WindowDataset([_history(n, seed=1)], SPEC, VOCAB.item_table())
    assert sum(int((data[i]["labels"] != IGNORE_LABEL).sum()) for i in range(len(data))) == n

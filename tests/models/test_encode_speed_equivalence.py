"""The fast paths of the encoding give exactly what the general ones give: a single request's batch
(no padding, arrays shared with its encoding) and `collate` of one item equal the padding loop,
bit for bit, dtypes and layouts included; a bank's statistics shared by content equal computing
every candidate's."""

from __future__ import annotations

import numpy as np
import pytest

from models import features
from models.feature_spec import MODEL_INPUTS, FeatureSpec
from models.features import CandidateRequest, History, collate, encode, encode_candidate_batch
from models.vocab import ItemTable, QuestionVocab

VOCAB = QuestionVocab.build(
    np.arange(40), np.arange(40) % 7, [[q % 6, 6 + q % 4][: 1 + q % 2] for q in range(40)]
)
ITEMS = VOCAB.item_table()


def _history(rng: np.random.Generator, n: int) -> History:
    bundle = np.repeat(np.arange(n), rng.integers(1, 4, n))[:n].astype(np.int64)
    timestamp = np.cumsum(rng.integers(0, 10**7, max(n, 1)))[bundle].astype(np.int64)
    elapsed = rng.uniform(-5, 400_000, n).astype(np.float32)
    elapsed[rng.random(n) < 0.2] = np.nan
    after = np.sort(rng.integers(0, n + 1, int(rng.integers(0, 4)))).astype(np.int64)
    return History(
        question=rng.integers(1, VOCAB.size, n).astype(np.int64),
        correct=rng.integers(0, 2, n).astype(np.int8),
        timestamp=timestamp,
        bundle=bundle,
        elapsed_ms=elapsed,
        explanation=rng.integers(-1, 2, n).astype(np.int8),
        lecture_after=after,
        lecture_timestamp=np.zeros(len(after), np.int64),
        lecture_part=rng.integers(0, 8, len(after)).astype(np.int64),
        lecture_tag=rng.integers(0, VOCAB.n_tags, len(after)).astype(np.int64),
    )


def _padded(encoding: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`encoding` batched through the general padding loop (as row 0 of a batch of two)."""
    longer = {name: np.concatenate([values, values[:1]]) for name, values in encoding.items()}
    t = len(encoding["question"])
    return {name: values[:1, :t] for name, values in collate([encoding, longer]).items()}


def _assert_identical(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(MODEL_INPUTS)
    for name in MODEL_INPUTS:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].shape == want[name].shape, name
        assert got[name].flags.c_contiguous, name
        assert got[name].tobytes() == want[name].tobytes(), name


@pytest.mark.parametrize("seed", range(12))
def test_single_request_batch_is_the_padded_batch(seed: int) -> None:
    rng = np.random.default_rng(seed)
    spec = FeatureSpec(window=int(rng.integers(2, 60)), n_questions=VOCAB.size, n_tags=VOCAB.n_tags)
    history = _history(rng, int(rng.integers(0, 120)))
    candidates = rng.integers(1, VOCAB.size, int(rng.choice([1, 5, 30])))
    now = int(history.timestamp[-1]) + 1000 if len(history) else None
    batch, spans = encode_candidate_batch([CandidateRequest(history, candidates, now)], spec, ITEMS)
    encoding = encode(history, spec, ITEMS, candidates=candidates, candidate_timestamp=now)
    _assert_identical(batch, _padded(encoding))
    _assert_identical(collate([encoding]), _padded(encoding))
    t = len(encoding["question"])
    assert spans == [(t - len(candidates), t)]


@pytest.mark.parametrize("lecture_stats", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_a_bank_shares_statistics_by_content_exactly(seed: int, lecture_stats: bool) -> None:
    """Many candidates (a bank) get their statistics once per content group, and the candidates
    the window has answered each on its own (`features._shared_stats_rows`): the encoding equals,
    bit for bit, the one that computes every candidate (duplicates, the unknown question,
    questions answered inside and outside the window, rows registered after training mixed)."""
    rng = np.random.default_rng(seed)
    index = np.arange(VOCAB.size + 2)  # the last two: registered after training
    items = ItemTable(  # few distinct contents (3 parts x 4 tag rows), so groups hold many
        parts=index % 3, tags=np.stack([index % 2 + 1, np.where(index % 4 < 2, 0, 3)], axis=1)
    )
    assert items.content_groups[1] == 12
    spec = FeatureSpec(
        window=int(rng.integers(2, 60)),
        n_questions=VOCAB.size,
        n_tags=VOCAB.n_tags,
        lecture_stats=lecture_stats,
    )
    history = _history(rng, int(rng.integers(0, 120)))
    candidates = rng.integers(1, len(index), int(rng.integers(1, 80)))
    now = int(history.timestamp[-1]) + 1000 if len(history) else None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(features, "_SHARED_STATS_MIN_CANDIDATES", 1)
        shared = encode(history, spec, items, candidates=candidates, candidate_timestamp=now)
        patch.setattr(features, "_SHARED_STATS_MIN_CANDIDATES", 10**9)
        each = encode(history, spec, items, candidates=candidates, candidate_timestamp=now)
    assert list(shared) == list(each)
    for name, values in each.items():
        assert shared[name].dtype == values.dtype, name
        assert shared[name].tobytes() == values.tobytes(), name

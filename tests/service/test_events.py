"""Stored events -> models.features.History: bundles, unknowns, vocabulary mapping."""

from __future__ import annotations

import numpy as np

from models.vocab import UNKNOWN_QUESTION, QuestionVocab
from service.events import (
    RECORD_SIZE,
    decode_blob,
    events_to_history,
    events_to_items,
    make_events,
    merge_events,
)


def test_bundles_from_timestamp_and_container() -> None:
    ts = [10, 10, 10, 10, 20, 20, 30]
    container = [None, None, 5, 5, 5, 6, None]
    ev = make_events(
        ts, [1, 2, 3, 4, 5, 6, 99], [True] * 7, [None] * 7, [None] * 7, container, [None] * 7
    )
    ev = merge_events(ev[:0], ev, max_len=100).events  # canonical order
    vocab = QuestionVocab.build(np.arange(1, 7), np.zeros(6, np.int64))
    h = events_to_history(ev, vocab)
    # (10, none) x2 | (10, 5) x2 | (20, 5) | (20, 6) | (30, none)
    assert h.bundle.tolist() == [0, 0, 1, 1, 2, 3, 4]
    assert np.all(np.diff(h.bundle) >= 0)
    assert h.question[-1] == UNKNOWN_QUESTION  # id 99 is not in this vocabulary
    assert np.isnan(h.elapsed_ms).all() and (h.explanation == -1).all()


def test_record_roundtrip_and_items() -> None:
    ev = make_events([5], [7], [False], [1234], [True], [3], ["abc"])
    assert len(ev.tobytes()) == RECORD_SIZE
    back = decode_blob(ev.tobytes())
    assert events_to_items(back) == [
        {
            "question_id": 7,
            "timestamp": 5,
            "correct": False,
            "elapsed_time_ms": 1234,
            "had_explanation": True,
            "container_id": 3,
        }
    ]
    assert len(decode_blob(None)) == 0

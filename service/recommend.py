"""`POST /recommend`: which questions of the bank to ask next (pure numpy; the route does the I/O).

The bank (or the filtered part of it) is scored for one learner at one moment as ONE virtual bundle,
exactly as `/predict` scores candidates: every question sees the history and itself, never the other
questions (`service.predictor.Predictor.score_bundle`: with the artifact's bank graphs, each
question's own part from items.onnx, computed once per bank, and bundle.onnx over the history once
per BUNDLE_GRAPH_CHUNK questions). Without them the bundle is cut into rows of RECOMMEND_CHUNK
questions, each carrying the history, all in one ONNX Runtime run: a row costs O((window + chunk)^2)
attention, so rows keep the cost linear in the bank size, and rows * (window + chunk)^2 is smallest
for a chunk near the window. Measured (docs/service.md): the 13,523-question Riiid bank, history
100, a 1M-parameter SAINT+ (d_model 128, 2+2 layers), 1 ORT thread: chunk 64 / 128 / 256 / 512 ->
1.72 / 1.40 / 1.76 / 2.19 s (medians, busy machine).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.vocab import FIRST_QUESTION_INDEX, QuestionVocab
from service.events import answers

RECOMMEND_CHUNK = 128


def filter_mask(
    raw_ids: np.ndarray,
    raw_parts: np.ndarray,
    raw_tags: np.ndarray,
    parts: list[int] | None = None,
    tags: list[int] | None = None,
    question_ids: list[int] | None = None,
) -> np.ndarray:
    """(Q,) True for the questions (raw ids (Q,), parts (Q,), tags (Q, M) -1 padded) that pass every
    given filter: one of `parts`, at least one of `tags`, one of `question_ids`."""
    keep = np.ones(len(raw_ids), dtype=bool)
    if parts is not None:
        keep &= np.isin(raw_parts, np.asarray(parts, dtype=np.int64))
    if tags is not None:
        keep &= np.isin(raw_tags, np.asarray(tags, dtype=np.int64)).any(axis=1)
    if question_ids is not None:
        keep &= np.isin(raw_ids, np.asarray(question_ids, dtype=np.int64))
    return keep


def bank_indices(
    vocab: QuestionVocab,
    parts: list[int] | None = None,
    tags: list[int] | None = None,
    question_ids: list[int] | None = None,
) -> np.ndarray:
    """Vocabulary indices of the bank's questions that pass every given filter (ascending)."""
    assert vocab.tags is not None  # always set by QuestionVocab.__post_init__
    keep = filter_mask(vocab.question_ids, vocab.parts, vocab.tags, parts, tags, question_ids)
    return np.flatnonzero(keep).astype(np.int64) + FIRST_QUESTION_INDEX


def answered_question_ids(
    events: np.ndarray, moment: int | None, within_ms: int | None
) -> np.ndarray:
    """Raw ids answered before `moment` (all stored events when None), or only within `within_ms`
    before it (before the last event when there is no moment). Lectures are not answers."""
    events = answers(events)
    if len(events) == 0:
        return np.zeros(0, np.int64)
    timestamps = events["timestamp"]
    if moment is not None:
        events = events[timestamps < moment]
        timestamps = events["timestamp"]
    if within_ms is not None and len(events):
        now = moment if moment is not None else int(timestamps[-1])
        events = events[timestamps >= now - within_ms]
    return np.unique(events["question_id"].astype(np.int64))


def rank(probs: np.ndarray, target: float, p_min: float, p_max: float, k: int) -> np.ndarray:
    """Positions of the k questions inside [p_min, p_max] closest to `target` (ties: lower position)."""
    inside = np.flatnonzero((probs >= p_min) & (probs <= p_max))
    distance = np.abs(probs[inside] - target)
    if k < len(inside):  # only the k nearest need sorting: those within the k-th distance
        near = np.flatnonzero(distance <= np.partition(distance, k - 1)[k - 1])
        inside, distance = inside[near], distance[near]
    order = np.argsort(distance, kind="stable")  # stable: ties keep the lower position
    return inside[order[:k]]


def group_mastery(
    keys: np.ndarray, probs: np.ndarray, answered_keys: np.ndarray, answered_at: np.ndarray
) -> list[dict[str, Any]]:
    """Per group key (a part, or a tag): the mean P(correct) over the bank questions of the group,
    how many questions that is, how many of the learner's answers fall in it and when the last was.

    keys (Q,) or (Q, M) group keys of each scored question (-1 = none); probs (Q,) their P(correct);
    answered_keys (A,) or (A, M) the keys of each answered question; answered_at (A,) timestamps."""
    width = keys.shape[1] if keys.ndim == 2 else 1
    keys = keys.reshape(len(probs), width)
    answered_keys = answered_keys.reshape(len(answered_at), width)  # (0, width) for a new learner
    rows = np.repeat(np.arange(len(probs)), keys.shape[1])
    flat = keys.reshape(-1)
    valid = flat >= 0
    groups, inverse = np.unique(flat[valid], return_inverse=True)
    total = np.bincount(inverse, weights=probs[rows[valid]], minlength=len(groups))
    count = np.bincount(inverse, minlength=len(groups))
    a_rows = np.repeat(np.arange(len(answered_at)), answered_keys.shape[1])
    a_flat = answered_keys.reshape(-1)
    a_pos = np.searchsorted(groups, a_flat)
    a_valid = (a_flat >= 0) & (a_pos < len(groups))
    a_valid[a_valid] &= groups[a_pos[a_valid]] == a_flat[a_valid]
    answers = np.bincount(a_pos[a_valid], minlength=len(groups))
    last = np.full(len(groups), -1, np.int64)
    np.maximum.at(last, a_pos[a_valid], answered_at[a_rows[a_valid]].astype(np.int64))
    return [
        {
            "key": int(g),
            "mastery": float(total[i] / count[i]),
            "questions": int(count[i]),
            "answers": int(answers[i]),
            "last_answer_at": int(last[i]) if last[i] >= 0 else None,
        }
        for i, g in enumerate(groups.tolist())
    ]

"""Stored learner events: the fixed-size binary record, identities, canonical order, -> `History`.

One event = one answered question or one watched lecture (`kind`), packed as a 40-byte
little-endian record (`EVENT_DTYPE`). Raw question / lecture ids are stored (not vocabulary
indices), so a model upgrade with a new vocabulary still reads old histories. Records written
before lectures existed have kind 0 (the byte was reserved and zero), so they read as answers. The
Redis Lua script and `merge_events` (in-memory store) implement the same rules:

* identity (idempotency): `interaction_id` when the client sends one, else (timestamp, question_id)
  or (timestamp, lecture_id); stored as a 52-bit fingerprint (exact in Lua's doubles). A second delivery of an identity already
  in the retained history is a duplicate: the first delivery wins.
* canonical order: (timestamp, container_id, question_id, fingerprint), container_id = -1 when
  absent. The stored history is a function of the *set* of delivered events, whatever the delivery
  order; out-of-order deliveries are sort-inserted.
* cap: only the newest `max_len` events are kept; a new event older than all of them is "stale"
  (accepted, but outside the window, so not stored).
* bundles: answers with the same timestamp and the same container_id (or both without one) form
  one bundle; see `events_to_history`. Lectures are never part of a bundle: they are learning
  events that later answers' statistics read (`models.learner_stats.lecture_stats`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.features import History, lecture_arrays
from models.vocab import QuestionVocab

MAX_SAFE_INT = (1 << 53) - 1  # ids/timestamps must stay exact in Lua (doubles) and in JSON clients
MAX_ELAPSED_MS = (1 << 31) - 1
NO_CONTAINER = -1
UNKNOWN = -1

EVENT_DTYPE = np.dtype(
    [
        ("timestamp", "<i8"),
        ("question_id", "<i8"),
        ("container_id", "<i8"),  # -1 = none
        ("fingerprint", "<i8"),  # 52-bit identity hash
        ("elapsed_ms", "<i4"),  # -1 = unknown
        ("correct", "i1"),  # 0 / 1
        ("explanation", "i1"),  # -1 unknown, 0 no, 1 yes
        ("kind", "u1"),  # ANSWER or LECTURE (question_id then holds the lecture id)
        ("reserved", "u1"),
    ]
)
ANSWER = 0
LECTURE = 1
RECORD_SIZE = EVENT_DTYPE.itemsize  # 40
assert RECORD_SIZE == 40


@dataclass(frozen=True)
class AppendResult:
    """Outcome of one atomic append; `events` is the learner's whole stored history afterwards."""

    recorded: int
    duplicates: int
    stale: int
    events: np.ndarray  # EVENT_DTYPE, canonical order


def identity_fingerprint(
    timestamp: int, question_id: int, interaction_id: str | None, kind: int = ANSWER
) -> int:
    """52-bit fingerprint of an event's idempotency identity."""
    item = "q" if kind == ANSWER else "l"
    key = (
        f"i:{interaction_id}"
        if interaction_id is not None
        else f"t:{timestamp}:{item}:{question_id}"
    )
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 12


def make_events(
    timestamp: list[int],
    question_id: list[int],
    correct: list[bool],
    elapsed_ms: list[int | None],
    had_explanation: list[bool | None],
    container_id: list[int | None],
    interaction_id: list[str | None],
) -> np.ndarray:
    """Pack validated fields into EVENT_DTYPE records (delivery order kept)."""
    n = len(timestamp)
    out = np.zeros(n, dtype=EVENT_DTYPE)
    out["timestamp"] = timestamp
    out["question_id"] = question_id
    out["container_id"] = [NO_CONTAINER if c is None else c for c in container_id]
    out["fingerprint"] = [
        identity_fingerprint(t, q, i)
        for t, q, i in zip(timestamp, question_id, interaction_id, strict=True)
    ]
    out["elapsed_ms"] = [UNKNOWN if e is None else e for e in elapsed_ms]
    out["correct"] = correct
    out["explanation"] = [UNKNOWN if h is None else int(h) for h in had_explanation]
    return out


def make_lecture_events(
    timestamp: list[int], lecture_id: list[int], interaction_id: list[str | None]
) -> np.ndarray:
    """Pack validated lecture views into EVENT_DTYPE records (kind LECTURE, no answer fields)."""
    n = len(timestamp)
    out = np.zeros(n, dtype=EVENT_DTYPE)
    out["timestamp"] = timestamp
    out["question_id"] = lecture_id
    out["container_id"] = NO_CONTAINER
    out["fingerprint"] = [
        identity_fingerprint(t, lec, i, LECTURE)
        for t, lec, i in zip(timestamp, lecture_id, interaction_id, strict=True)
    ]
    out["elapsed_ms"] = UNKNOWN
    out["explanation"] = UNKNOWN
    out["kind"] = LECTURE
    return out


def answers(events: np.ndarray) -> np.ndarray:
    """The answered-question events (lectures left out), in their order."""
    return events[events["kind"] == ANSWER]


def decode_blob(blob: bytes | None) -> np.ndarray:
    """Stored bytes -> EVENT_DTYPE array (empty for a missing key)."""
    if not blob:
        return np.zeros(0, dtype=EVENT_DTYPE)
    if len(blob) % RECORD_SIZE:
        raise ValueError(f"corrupt history blob of {len(blob)} bytes")
    return np.frombuffer(blob, dtype=EVENT_DTYPE)


def canonical_order(events: np.ndarray) -> np.ndarray:
    """Indices sorting events by (timestamp, container_id, question_id, fingerprint)."""
    return np.lexsort(
        (events["fingerprint"], events["question_id"], events["container_id"], events["timestamp"])
    )


def merge_events(old: np.ndarray, new: np.ndarray, max_len: int) -> AppendResult:
    """Reference implementation of the append (dedupe, sort-insert, cap); mirrored by the Lua script."""
    seen = set(old["fingerprint"].tolist())
    keep = np.zeros(len(new), dtype=bool)
    for i, fp in enumerate(new["fingerprint"].tolist()):
        if fp not in seen:
            seen.add(fp)
            keep[i] = True
    added = new[keep]
    duplicates = len(new) - len(added)
    merged = np.concatenate([old, added])
    is_new = np.concatenate([np.zeros(len(old), bool), np.ones(len(added), bool)])
    order = canonical_order(merged)
    merged, is_new = merged[order], is_new[order]
    cut = max(len(merged) - max_len, 0)
    stale = int(is_new[:cut].sum())
    return AppendResult(len(added) - stale, duplicates, stale, merged[cut:].copy())


def events_to_history(
    events: np.ndarray,
    vocab: QuestionVocab,
    to_index: Callable[[np.ndarray], np.ndarray] | None = None,
) -> History:
    """Stored events (canonical order) -> `models.features.History` with the artifact's vocabulary.

    Bundle key: a new bundle starts wherever (timestamp, container_id) changes among the answers,
    so the keys are non-decreasing and every bundle shares one timestamp. Question ids unknown to
    this vocabulary map to the unknown token (`to_index`: a mapping that also knows registered
    questions). Lectures become the history's lectures, after the answers stored before them,
    with the part and tag of the artifact's lecture table (unknown lectures: neither).
    """
    is_lecture = events["kind"] != ANSWER
    lectures = lecture_arrays(is_lecture, events["question_id"], events["timestamp"], vocab)
    if len(lectures["lecture_after"]):
        events = events[~is_lecture]
    n = len(events)
    if n == 0:
        return dataclasses.replace(History.empty(), **lectures)
    ts = events["timestamp"]
    container = events["container_id"]
    change = np.concatenate(
        [[0], ((np.diff(ts) != 0) | (np.diff(container) != 0)).astype(np.int64)]
    )
    elapsed = events["elapsed_ms"].astype(np.float32)
    elapsed[events["elapsed_ms"] < 0] = np.nan
    return History(
        question=(to_index or vocab.to_index)(events["question_id"]),
        correct=events["correct"].astype(np.int8),
        timestamp=ts.astype(np.int64),
        bundle=np.cumsum(change),
        elapsed_ms=elapsed,
        explanation=events["explanation"].astype(np.int8),
        **lectures,
    )


def events_to_lectures(events: np.ndarray) -> list[dict[str, object]]:
    """Stored lecture events -> API lecture dicts (identities are not returned)."""
    lectures = events[events["kind"] == LECTURE]
    return [
        {"lecture_id": lec, "timestamp": ts}
        for ts, lec in zip(
            lectures["timestamp"].tolist(), lectures["question_id"].tolist(), strict=True
        )
    ]


def events_to_items(events: np.ndarray) -> list[dict[str, object]]:
    """Stored answer events -> API interaction dicts (the ingest fields; identities are not
    returned; lectures: `events_to_lectures`)."""
    events = answers(events)
    items: list[dict[str, object]] = []
    for ts, q, c, e, ok, ex in zip(
        events["timestamp"].tolist(),
        events["question_id"].tolist(),
        events["container_id"].tolist(),
        events["elapsed_ms"].tolist(),
        events["correct"].tolist(),
        events["explanation"].tolist(),
        strict=True,
    ):
        items.append(
            {
                "question_id": q,
                "timestamp": ts,
                "correct": bool(ok),
                "elapsed_time_ms": None if e < 0 else e,
                "had_explanation": None if ex < 0 else bool(ex),
                "container_id": None if c < 0 else c,
            }
        )
    return items

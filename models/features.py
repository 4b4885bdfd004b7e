"""The one encoding: a learner's interaction history (+ K candidate questions) -> model input arrays.

numpy only. Training datasets, `training.evaluate` and the service all go through this module, so
training and serving cannot drift apart. Here: `History`, `encode` (with the learner statistics of
`models.learner_stats`), batches (`collate`), training windows and candidate requests. The
inputs' names and dtypes, the statistics' names and `FeatureSpec` are `models.feature_spec`'s; the
question vocabulary (`QuestionVocab`, `ItemTable`) is `models.vocab`'s.

Conventions (index 0 is always padding):
  question     0 = pad, 1 = unknown question, 2.. = known questions (see `QuestionVocab`)
  part         0 = pad/unknown, part p -> p + 1
  response     0 = pad/not visible, 1 = wrong, 2 = right
  explanation  0 = pad/unknown, 1 = no explanation, 2 = saw explanation
  lag_bucket / elapsed_bucket   0 = pad/unknown, 1.. = bucket of the (capped) time
  lag / elapsed                 continuous in [0, 1] (log-scaled lag, linear elapsed), 0 when unknown
  tags         (T, M) encoded tags of the item (0 = none), from the question table (`ItemTable`)
  stats        (T, spec.n_stats) learner statistics from strictly earlier bundles (`STAT_NAMES`,
               then `LECTURE_STAT_NAMES` when `spec.lecture_stats`)
  position     index (within the window) of the first item of the item's bundle: every item of one
               bundle, and all K candidates of one request, share a position
  bundle       bundle ordinal within the window, non-decreasing; the K candidates form one bundle
               after the history. Padding gets PAD_BUNDLE (larger than any real bundle).

Visibility rules (docs/design.md, "What a prediction may see"), enforced by the models from
`bundle` and `question`, and by `learner_stats` for the statistics:
  * exercise side: position i sees exercise j iff bundle[j] < bundle[i] or j == i;
  * response side: position i sees the response/elapsed/explanation of j iff bundle[j] < bundle[i].
The query-side arrays of position i (question, part, tags, position, lag, stats) hold only what is
known when i is shown (stats read responses of strictly earlier bundles only); the response-side arrays of i (response, elapsed, explanation) hold i's own outcome and are
only ever used as keys/values for strictly later bundles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.feature_spec import (
    INPUT_DTYPES,
    INT_INPUTS,
    MODEL_INPUTS,
    PAD_BUNDLE,
    THREE_D_INPUTS,
    FeatureSpec,
)
from models.learner_stats import learner_stats, lecture_stats
from models.numeric import cached_constant, cached_log1p
from models.vocab import UNKNOWN_QUESTION, ItemTable, QuestionVocab

# `encode` computes the statistics of at least _SHARED_STATS_MIN_CANDIDATES candidates (a bank) once
# per distinct content (`_shared_stats_rows`); fewer (a /predict) each on its own
_SHARED_STATS_MIN_CANDIDATES = 1024


@dataclass
class History:
    """One learner's answered questions, oldest first (lectures are not part of the encoding).

    All arrays have the same length n. `bundle` is any integer key that is equal for items answered
    together (a Riiid task container) and non-decreasing; items of one bundle share a timestamp.
    `elapsed_ms` and `explanation` describe the item itself (Riiid's prior_* columns shifted back).
    """

    question: np.ndarray  # (n,) int64 question indices (>= 1)
    correct: np.ndarray  # (n,) int8 0/1
    timestamp: np.ndarray  # (n,) int64 ms
    bundle: np.ndarray  # (n,) int64, non-decreasing
    elapsed_ms: np.ndarray  # (n,) float32, NaN = unknown
    explanation: np.ndarray  # (n,) int8: -1 unknown, 0 no, 1 yes
    # Lectures the learner watched, oldest first: `lecture_after[l]` = how many of the answered
    # items above came before lecture l (so items from index lecture_after[l] on may see it).
    lecture_after: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (L,)
    lecture_timestamp: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (L,) ms
    lecture_part: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (L,) encoded
    lecture_tag: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (L,) encoded

    def __len__(self) -> int:
        return len(self.question)

    @property
    def n_lectures(self) -> int:
        return len(self.lecture_after)

    @classmethod
    def empty(cls) -> History:
        return cls(
            question=np.zeros(0, np.int64),
            correct=np.zeros(0, np.int8),
            timestamp=np.zeros(0, np.int64),
            bundle=np.zeros(0, np.int64),
            elapsed_ms=np.zeros(0, np.float32),
            explanation=np.zeros(0, np.int8),
        )

    def slice(self, start: int, end: int) -> History:
        """Items [start, end) and the lectures watched between item `start - 1` and item `end`."""
        after, timestamp = self.lecture_after, self.lecture_timestamp
        part, tag = self.lecture_part, self.lecture_tag
        if self.n_lectures:  # (without lectures, there is nothing to select)
            keep = (after >= start) & (after <= end)
            after, timestamp, part, tag = after[keep], timestamp[keep], part[keep], tag[keep]
        return History(
            question=self.question[start:end],
            correct=self.correct[start:end],
            timestamp=self.timestamp[start:end],
            bundle=self.bundle[start:end],
            elapsed_ms=self.elapsed_ms[start:end],
            explanation=self.explanation[start:end],
            lecture_after=after - start,
            lecture_timestamp=timestamp,
            lecture_part=part,
            lecture_tag=tag,
        )


def lecture_arrays(
    is_lecture: np.ndarray, ids: np.ndarray, timestamp: np.ndarray, vocab: QuestionVocab
) -> dict[str, np.ndarray]:
    """The `History` lecture fields of one learner's events in order, answers and lectures mixed
    (the training loader's rows, the service's stored events): `is_lecture` marks the lectures,
    `ids` / `timestamp` are every event's raw content id and time. Each lecture comes after the
    answers before it; its part and tag are those of `vocab`'s lecture table (0 when unknown)."""
    is_lecture = np.asarray(is_lecture, dtype=bool)
    if not is_lecture.any():  # the common case, at a quarter of the cost
        none = np.zeros(0, np.int64)
        return {
            "lecture_after": none,
            "lecture_timestamp": none.copy(),
            "lecture_part": none.copy(),
            "lecture_tag": none.copy(),
        }
    part, tag = vocab.lecture_content(np.asarray(ids, dtype=np.int64)[is_lecture])
    return {
        "lecture_after": np.cumsum(~is_lecture)[is_lecture].astype(np.int64),
        "lecture_timestamp": np.asarray(timestamp)[is_lecture].astype(np.int64),
        "lecture_part": part,
        "lecture_tag": tag,
    }


def bucketize(values_ms: np.ndarray, edges_ms: tuple[int, ...], known: np.ndarray) -> np.ndarray:
    """Bucket ids: 0 where unknown, else 1 + number of edges <= value."""
    hashable = isinstance(edges_ms, tuple)
    edges = cached_constant(edges_ms, np.float64) if hashable else np.asarray(edges_ms, np.float64)
    buckets = edges.searchsorted(values_ms, side="right") + 1
    return np.where(known, buckets, 0).astype(np.int64, copy=False)


def _bundle_layout(bundle: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ordinal, position) of h items with bundle keys `bundle`, then k candidates that form one
    more bundle: the bundle ordinal 0, 0, 1, 2, 2, ... (a new one where the key changes) and the
    index of the first item of each item's bundle. Both (h + k,) int64."""
    h = len(bundle)
    starts = np.ones(h + k, bool)  # (h + k,) where a bundle starts
    np.not_equal(bundle[1:], bundle[:-1], out=starts[1:h])
    starts[h + 1 :] = False
    ordinal = np.zeros(h + k, np.int64)
    np.add.accumulate(starts[1:], dtype=np.int64, out=ordinal[1:])
    return ordinal, starts.nonzero()[0][ordinal]


def _lag_ms(
    timestamp: np.ndarray, position: np.ndarray, previous_timestamp: int | None
) -> np.ndarray:
    """Time since the previous bundle (ms) of each item, given the index of the first item of its
    bundle (`position`); NaN where unknown (the learner's very first bundle)."""
    ts = timestamp.astype(np.float64, copy=False)
    lag = ts - ts[position - 1]  # from the last item of the previous bundle (first bundle: below)
    n_first = int(position.searchsorted(0, side="right"))  # the items of the first bundle
    if previous_timestamp is None:
        lag[:n_first] = np.nan
        np.maximum(lag[n_first:], 0.0, out=lag[n_first:])
    else:
        lag[:n_first] = ts[:n_first] - float(previous_timestamp)
        np.maximum(lag, 0.0, out=lag)
    return lag


def _lag_inputs(lag_ms: np.ndarray, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """The `lag` (float32, log-scaled below the cap) and `lag_bucket` (int64) inputs of lags in ms
    (NaN = unknown, both inputs 0 then)."""
    known = lag_ms == lag_ms  # not NaN
    capped = np.where(known, lag_ms, 0.0)
    np.minimum(capped, spec.lag_cap_ms, out=capped)
    scaled = capped / 1000.0
    np.log1p(scaled, out=scaled)
    scaled /= cached_log1p(spec.lag_cap_ms / 1000.0)
    return scaled.astype(np.float32), bucketize(capped, spec.lag_edges_ms, known)


def _elapsed_inputs(
    elapsed_ms: np.ndarray, spec: FeatureSpec, t: int
) -> tuple[np.ndarray, np.ndarray]:
    """The `elapsed` (float32, linear below the cap) and `elapsed_bucket` (int64) inputs of the
    window's elapsed times in ms (NaN or negative = unknown, both inputs 0 then), zero-padded to t."""
    h = len(elapsed_ms)
    known = elapsed_ms >= 0  # False for NaN
    capped = np.zeros(h)  # (h,) float64, 0 where unknown
    np.minimum(elapsed_ms, spec.elapsed_cap_ms, out=capped, where=known, dtype=np.float64)
    scaled = np.zeros(t, np.float32)
    np.divide(capped, spec.elapsed_cap_ms, out=scaled[:h])  # (in float64, rounded to float32)
    bucket = np.zeros(t, np.int64)
    bucket[:h] = bucketize(capped, spec.elapsed_edges_ms, known)
    return scaled, bucket


def encode(
    history: History,
    spec: FeatureSpec,
    items: ItemTable,
    end: int | None = None,
    start: int | None = None,
    candidates: np.ndarray | None = None,
    candidate_timestamp: int | None = None,
) -> dict[str, np.ndarray]:
    """Encode history[start:end] (+ optional K candidates at one moment) as 1-D model input arrays.

    `items` maps question index -> encoded part and tags (`QuestionVocab.item_table()`, or a
    larger table that also holds questions registered after training). Without `start`, the window is the last `spec.window` items before
    `end` when predicting candidates (`spec.window - 1` history items, so candidates still fit the
    model's position table), else the last `spec.window` items. Returns arrays of length T.
    """
    n = len(history)
    end = n if end is None else end
    if not 0 <= end <= n:
        raise ValueError(f"end={end} out of range for a history of {n} items")
    k = 0 if candidates is None else len(candidates)
    if start is None:
        keep = spec.window - 1 if k else spec.window
        start = max(0, end - keep)
    window = history.slice(start, end)
    h = len(window)
    t = h + k

    # The lag of the window's first bundle is measured from the previous *bundle*: when the window
    # starts inside a bundle, step back over the part of that bundle it cut off.
    before = start
    if 0 < start < end:
        while before > 0 and history.bundle[before - 1] == history.bundle[start]:
            before -= 1
    previous_ts = int(history.timestamp[before - 1]) if before > 0 else None
    ordinals, positions = _bundle_layout(window.bundle, k)  # (T,) each
    ts = window.timestamp.astype(np.float64)
    lag = np.empty(t)  # (T,) ms since the previous bundle, NaN = unknown
    lag[:h] = _lag_ms(ts, positions[:h], previous_ts)
    seconds = np.empty(t)  # (T,) timestamps in s, NaN = unknown
    np.divide(ts, 1000.0, out=seconds[:h])
    question = np.empty(t, np.int64)
    question[:h] = window.question
    if k:
        assert candidates is not None
        question[h:] = np.asarray(candidates, dtype=np.int64)
        last_ts = int(window.timestamp[-1]) if h else previous_ts
        known_gap = candidate_timestamp is not None and last_ts is not None
        lag[h:] = max(float(candidate_timestamp - last_ts), 0.0) if known_gap else np.nan  # type: ignore[operator]
        seconds[h:] = np.nan if candidate_timestamp is None else candidate_timestamp / 1000.0

    part = items.parts.take(question)
    tags = items.tags.take(question, axis=0)
    correct = np.zeros(t, np.int64)
    correct[:h] = window.correct
    # (T', ) the positions whose statistics are computed; (T,) the computed row of each position
    rows, source = _shared_stats_rows(question, h, items)
    row_inputs = (
        (question, part, tags, positions, seconds)
        if rows is None
        else (question[rows], part[rows], tags[rows], positions[rows], seconds[rows])
    )
    q_rows, part_rows, tags_rows, position_rows, second_rows = row_inputs
    stats = learner_stats(
        q_rows, part_rows, tags_rows, position_rows, correct, second_rows, h, spec
    )
    if spec.lecture_stats:
        lectures = lecture_stats(part_rows, tags_rows, position_rows, second_rows, h, window, spec)
        stats = np.concatenate([stats, lectures], axis=1)  # (T', spec.n_stats)
    if source is not None:
        stats = stats.take(source, axis=0)  # (T, spec.n_stats)

    lag_input, lag_bucket = _lag_inputs(lag, spec)
    elapsed, elapsed_bucket = _elapsed_inputs(window.elapsed_ms, spec, t)
    response = correct + 1  # (T,) 1 wrong, 2 right; 0 for the candidates
    response[h:] = 0
    explanation = np.zeros(t, np.int64)  # (T,) 0 unknown or a candidate, 1 no, 2 yes
    explanation[:h] = window.explanation
    explanation[:h] += 1
    return {
        "question": model_question(question, spec),
        "part": part,
        "position": positions,
        "bundle": ordinals,
        "lag": lag_input,
        "lag_bucket": lag_bucket,
        "response": response,
        "elapsed": elapsed,
        "elapsed_bucket": elapsed_bucket,
        "explanation": explanation,
        "tags": tags,
        "stats": stats,
    }


def _shared_stats_rows(
    question: np.ndarray, h: int, items: ItemTable
) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """Which positions of a window [h answered items, K candidates of one bundle] need their
    statistics computed, when K >= _SHARED_STATS_MIN_CANDIDATES: (rows (T',) the positions:
    the history, then the candidates computed, source (T,) each position's row in `rows`); else
    (None, None): every position.

    Candidates share their position and moment, so a candidate's statistics depend on the history
    and on its own part, tags and question; and on its question only through the window's earlier
    answers to it (`learner_stats`' question columns: none -> count 0, accuracy 0.5, no last
    attempt). So every candidate whose question the window does not hold has the statistics of
    any other such candidate of its content group (`ItemTable.content_groups`): one of them is
    computed per group, and each candidate the window holds on its own. The Riiid bank, history
    99: 13,523 candidates -> at most 1,580 + 99 rows."""
    k = len(question) - h
    if k < _SHARED_STATS_MIN_CANDIDATES:
        return None, None
    candidates = question[h:]  # (K,)
    in_window = np.zeros(len(items.parts), bool)
    in_window[question[:h]] = True
    answered = in_window[candidates]  # (K,) the window holds the candidate's question
    own = np.flatnonzero(answered)  # (S,) candidates computed on their own
    shared = np.flatnonzero(~answered)  # the others: one per content group is computed
    group_of, n_groups = items.content_groups
    group = group_of.take(candidates)  # (K,)
    stand_in = np.full(n_groups, -1, np.int64)  # per group: one of its candidates not in the window
    stand_in[group[shared]] = shared  # (any one of them wins: their statistics are equal)
    stand_ins = stand_in[stand_in >= 0]  # (G,)
    slot = np.empty(n_groups, np.int64)
    slot[group[stand_ins]] = np.arange(len(stand_ins))
    source = np.empty(h + k, np.int64)
    source[:h] = np.arange(h)
    source[h:] = h + slot.take(group)  # (valid for every shared candidate: its group has a row)
    source[h + own] = h + len(stand_ins) + np.arange(len(own))
    rows = np.concatenate([np.arange(h), h + stand_ins, h + own])  # (h + G + S,)
    return rows, source


def model_question(question: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Question indices as the model reads them: rows of an item table past the model's vocabulary
    (questions registered after training) are the unknown question to the model; their part and
    tags carry what is known of them."""
    return np.where(question >= spec.n_questions, UNKNOWN_QUESTION, question)


def collate(items: list[dict[str, np.ndarray]], length: int | None = None) -> dict[str, np.ndarray]:
    """Right-pad encodings to a (B, T) batch (T = longest item unless `length` is given); the
    3-D inputs become (B, T, width), width = the widest item's."""
    if not items:
        raise ValueError("collate needs at least one item")
    t = max(len(it["question"]) for it in items) if length is None else length
    t = max(t, 1)
    if len(items) == 1 and _unpadded(items[0], t):  # the service's single request: no padding
        return batch_of_one(items[0], copy=True)
    batch: dict[str, np.ndarray] = {}
    for name in MODEL_INPUTS:
        dtype = np.int64 if name in INT_INPUTS else np.float32
        fill = PAD_BUNDLE if name == "bundle" else 0
        shape: tuple[int, ...] = (len(items), t)
        if name in THREE_D_INPUTS:
            shape = (len(items), t, max(it[name].shape[1] for it in items))
        out = np.full(shape, fill, dtype=dtype)
        for b, it in enumerate(items):
            values = it[name][:t]
            if values.ndim == 2:
                out[b, : len(values), : values.shape[1]] = values
            else:
                out[b, : len(values)] = values
        batch[name] = out
    return batch


def _unpadded(encoding: dict[str, np.ndarray], t: int) -> bool:
    """Whether every input of `encoding` is exactly t long (1-D, or 2-D for the 3-D inputs)."""
    return all(
        len(encoding[name]) == t and encoding[name].ndim == 1 + (name in THREE_D_INPUTS)
        for name in MODEL_INPUTS
    )


def batch_of_one(encoding: dict[str, np.ndarray], copy: bool) -> dict[str, np.ndarray]:
    """An `_unpadded` encoding as a batch of one: (1, T) / (1, T, width) arrays of the inputs'
    dtypes; without `copy`, views of the encoding's arrays where their dtypes already fit."""
    convert = np.array if copy else np.asarray
    return {
        name: convert(encoding[name].reshape((1,) + encoding[name].shape), dtype=dtype)
        for name, dtype in INPUT_DTYPES
    }


def training_windows(n: int, window: int, stride: int | None = None) -> list[tuple[int, int, int]]:
    """(start, end, loss_start) windows covering a history of n items; the last one ends at n.

    Windows are `window` long (or n, if shorter) and advance by `stride` (default window // 2).
    Only items in [loss_start, end) are scored, so every item is scored exactly once, and all but
    the first window's items are scored with at least `window - stride` items of context.
    """
    if n <= 0:
        return []
    stride = max(window // 2, 1) if stride is None else stride
    if stride <= 0 or stride > window:
        raise ValueError(f"stride must be in 1..window, got {stride}")
    if n <= window:
        return [(0, n, 0)]
    ends = list(range(window, n, stride))
    if ends[-1] != n:
        ends.append(n)
    windows = [(0, window, 0)]
    for prev_end, end in zip(ends, ends[1:], strict=False):
        windows.append((end - window, end, prev_end))
    return windows


@dataclass
class CandidateRequest:
    """K candidate questions for one learner at one moment (one virtual bundle after `history`)."""

    history: History
    candidates: np.ndarray  # (K,) question indices
    timestamp: int | None = None  # ms, same clock as history.timestamp; None -> lag unknown


def bundle_requests(
    history: History, first: int = 0
) -> tuple[list[CandidateRequest], list[np.ndarray]]:
    """The service's protocol over a known history: one request per bundle that starts at or after
    item `first` (a bundle boundary), each with everything before it as history and the bundle's
    questions as candidates at the bundle's timestamp. Returns the requests and, per request, the
    answers (the labels of its candidates)."""
    bundle = history.bundle[first:]
    if len(bundle) == 0:
        return [], []
    starts = first + np.flatnonzero(np.concatenate([[True], bundle[1:] != bundle[:-1]]))
    spans = list(zip(starts.tolist(), [*starts[1:].tolist(), len(history)], strict=True))
    requests = [
        CandidateRequest(history.slice(0, s), history.question[s:e], int(history.timestamp[s]))
        for s, e in spans
    ]
    return requests, [history.correct[s:e] for s, e in spans]


def encode_candidate_batch(
    requests: list[CandidateRequest], spec: FeatureSpec, items: ItemTable
) -> tuple[dict[str, np.ndarray], list[tuple[int, int]]]:
    """Encode many requests into one (B, T) batch; returns it and, per request, the (start, end)
    columns of its candidates in its row (the candidate logits are batch_logits[b, start:end])."""
    encoded = [
        encode(r.history, spec, items, candidates=r.candidates, candidate_timestamp=r.timestamp)
        for r in requests
    ]
    spans = []
    for r, it in zip(requests, encoded, strict=True):
        t = len(it["question"])
        spans.append((t - len(r.candidates), t))
    if len(encoded) == 1 and spans[0][1] > 0:  # one request: nothing to pad
        return batch_of_one(encoded[0], copy=False), spans  # (its arrays are its own to give)
    return collate(encoded), spans

"""Assembly: file-order columns (`Raw`) of any format -> the final `Interactions` table.

Owns what every format shares: per-learner ordering (and the "unsorted" check), the duplicate
policy (`duplicates="first"|"last"|"error"`), Riiid's prior_* shift, mapping raw ids to vocabulary
indices, and the on-disk cache of built tables (`cached`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.vocab import FIRST_QUESTION_INDEX, UNKNOWN_QUESTION, QuestionVocab
from training.data.interactions import CACHE_FORMAT, DataError, Interactions

logger = logging.getLogger(__name__)

_MAP_CHUNK = 1 << 20  # rows per chunk when mapping ids (bounds temporary memory)

Duplicates = Literal["first", "last", "error"]
DUPLICATE_POLICIES: tuple[str, ...] = ("first", "last", "error")


def check_policy(duplicates: str) -> None:
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(
            f"duplicates must be one of {', '.join(DUPLICATE_POLICIES)}, got {duplicates!r}"
        )


@dataclass
class Raw:
    """Loader output in file order, before sorting and validation."""

    user: np.ndarray  # (N,) int64
    timestamp: np.ndarray  # (N,) int64
    content_id: np.ndarray  # (N,) int32
    is_lecture: np.ndarray  # (N,) bool
    container: np.ndarray  # (N,) int32
    correct: np.ndarray  # (N,) int8
    elapsed: np.ndarray  # (N,) float32 (Riiid: prior_*, still describing the previous bundle)
    explanation: np.ndarray  # (N,) int8
    row_id: np.ndarray  # (N,) int64


# locate(file-order row index) -> (file, line)
Locator = Callable[[int], tuple[Path, int]]


def concat(chunks: list[np.ndarray], dtype: Any) -> np.ndarray:
    out = np.concatenate(chunks) if chunks else np.zeros(0, dtype)
    chunks.clear()
    return out.astype(dtype, copy=False)


def _learner_order(raw: Raw, locate: Locator) -> np.ndarray | None:
    """Permutation to (learner, timestamp, container, file order); None if already in that order.

    Also rejects learners whose timestamps decrease in file order ("unsorted").
    """
    user, ts, cont = raw.user, raw.timestamp, raw.container
    new_user = np.empty(len(user), bool)
    new_user[:1] = True
    np.not_equal(user[1:], user[:-1], out=new_user[1:])
    starts = np.flatnonzero(new_user)
    grouped = len(np.unique(user[starts])) == len(starts)
    if grouped:
        bad = np.flatnonzero(~new_user[1:] & (ts[1:] < ts[:-1]))
        if bad.size:
            _raise_unsorted(raw, int(bad[0]) + 1, int(bad[0]), locate)
        swap = ~new_user[1:] & (ts[1:] == ts[:-1]) & (cont[1:] < cont[:-1])
        if not swap.any():
            return None
        rank = np.cumsum(new_user) - 1
    else:
        _, first, inverse = np.unique(user, return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first))[inverse]
        by_user = np.argsort(rank, kind="stable")
        same = rank[by_user][1:] == rank[by_user][:-1]
        bad = np.flatnonzero(same & (ts[by_user][1:] < ts[by_user][:-1]))
        if bad.size:
            k = bad[np.argmin(by_user[bad + 1])]
            _raise_unsorted(raw, int(by_user[k + 1]), int(by_user[k]), locate)
    logger.info("sorting %d rows by (learner, timestamp, container)", len(user))
    return np.lexsort((cont, ts, rank))


def _raise_unsorted(raw: Raw, row: int, prev: int, locate: Locator) -> None:
    path, line = locate(row)
    _, prev_line = locate(prev)
    raise DataError(
        path,
        line,
        "timestamp",
        f"unsorted: timestamp {raw.timestamp[row]} of user_id {raw.user[row]} is earlier than "
        f"{raw.timestamp[prev]} on line {prev_line} (each learner's rows must be in time order)",
    )


def _learner_chunks(
    starts: np.ndarray, n: int, size: int = _MAP_CHUNK
) -> Iterator[tuple[int, int]]:
    """Row ranges of about `size` rows that never split a learner (bounds temporary memory)."""
    lo = 0
    while lo < n:
        k = int(np.searchsorted(starts, lo + size))
        hi = int(starts[k]) if k < len(starts) else n
        yield lo, hi
        lo = hi


def _content_key(raw: Raw, rows: np.ndarray) -> np.ndarray:
    return raw.content_id[rows].astype(np.int64) * 2 + raw.is_lecture[rows]


def _first_duplicate(raw: Raw, lo: int, hi: int) -> tuple[int, int] | None:
    """Two rows of [lo, hi) sharing (user, timestamp, content_id, content type), or None. Input is
    sorted by learner and time, so only rows of one (user, timestamp) group can collide."""
    user, ts = raw.user[lo:hi], raw.timestamp[lo:hi]
    same = (user[1:] == user[:-1]) & (ts[1:] == ts[:-1])  # local row r+1 shares (user, ts) with r
    idx = np.flatnonzero(same) + 1
    k = 1
    while idx.size:  # compare each row with the k-th previous row of its (user, ts) group
        if k > 32:  # pathological group sizes: sort the members of multi-row groups instead
            rows, by, eq = _sorted_group_members(raw, lo, hi, None)
            hit = np.flatnonzero(eq)
            if not hit.size:
                return None
            return lo + int(rows[by[hit[0] + 1]]), lo + int(rows[by[hit[0]]])
        hit = np.flatnonzero(_content_key(raw, lo + idx) == _content_key(raw, lo + idx - k))
        if hit.size:
            return lo + int(idx[hit[0]]), lo + int(idx[hit[0]]) - k
        k += 1
        idx = idx[idx >= k]
        idx = idx[same[idx - k]]
    return None


def _sorted_group_members(
    raw: Raw, lo: int, hi: int, position: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of [lo, hi) in multi-row (user, timestamp) groups, local indices `rows`, and the
    permutation `by` sorting them by (group, content key, position); eq[j]: sorted member j + 1
    has the same group and content key as sorted member j."""
    user, ts = raw.user[lo:hi], raw.timestamp[lo:hi]
    same = (user[1:] == user[:-1]) & (ts[1:] == ts[:-1])
    member = np.zeros(len(same) + 1, bool)
    member[1:] |= same
    member[:-1] |= same
    rows = np.flatnonzero(member)
    group = np.cumsum(~np.concatenate([[False], same])[rows])
    key = _content_key(raw, lo + rows)
    pos = rows if position is None else position[lo + rows]
    by = np.lexsort((pos, key, group))
    g, kk = group[by], key[by]
    return rows, by, (g[1:] == g[:-1]) & (kk[1:] == kk[:-1])


def _duplicates_to_drop(
    raw: Raw,
    lo: int,
    hi: int,
    order: np.ndarray | None,
    locate: Locator,
    policy: str,
) -> np.ndarray | None:
    """Global indices of the rows of [lo, hi) that the duplicate policy drops (None: no
    duplicates). "error" raises at the later row of the first pair; "first" / "last" keep the
    earliest / latest row of each set of exact duplicates in file order."""
    hit = _first_duplicate(raw, lo, hi)
    if hit is None:
        return None
    if policy == "error":
        _raise_duplicate(raw, hit[0], hit[1], order, locate)
    rows, by, eq = _sorted_group_members(raw, lo, hi, order)
    drop = by[1:][eq] if policy == "first" else by[:-1][eq]
    return lo + rows[drop]


def _raise_duplicate(raw: Raw, a: int, b: int, order: np.ndarray | None, locate: Locator) -> None:
    fa, fb = (int(order[a]), int(order[b])) if order is not None else (a, b)
    later, earlier = max(fa, fb), min(fa, fb)
    path, line = locate(later)
    _, first_line = locate(earlier)
    raise DataError(
        path,
        line,
        "content_id",
        f"duplicate row: same user_id {raw.user[a]}, timestamp {raw.timestamp[a]}, content_id "
        f"{raw.content_id[a]} and content type as line {first_line}",
    )


def _shift_prior(raw: Raw, lo: int, hi: int) -> None:
    """Move Riiid's prior_* values of rows [lo, hi) back onto the question bundle they describe."""
    elapsed, explanation = raw.elapsed[lo:hi], raw.explanation[lo:hi]  # views: written in place
    q = np.flatnonzero(~raw.is_lecture[lo:hi])
    user, ts, cont = raw.user[lo:hi][q], raw.timestamp[lo:hi][q], raw.container[lo:hi][q]
    start = np.ones(len(q), bool)
    start[1:] = (user[1:] != user[:-1]) | (ts[1:] != ts[:-1]) | (cont[1:] != cont[:-1])
    starts = np.flatnonzero(start)
    # bundle b takes the prior_* of the learner's next question bundle b + 1 (its last: unknown)
    has_next = user[starts[1:]] == user[starts[:-1]]
    nxt = q[starts[1:]]
    own_elapsed = np.full(len(starts), np.nan, np.float32)
    own_explanation = np.full(len(starts), -1, np.int8)
    own_elapsed[:-1] = np.where(has_next, elapsed[nxt], np.nan)
    own_explanation[:-1] = np.where(has_next, explanation[nxt], -1)
    bundle_of_row = np.cumsum(start) - 1
    elapsed[:] = np.nan
    explanation[:] = -1
    elapsed[q] = own_elapsed[bundle_of_row]
    explanation[q] = own_explanation[bundle_of_row]


def _map_content(
    raw: Raw,
    vocab: QuestionVocab,
    lectures: tuple[np.ndarray, np.ndarray] | None,
    strict: bool,
    order: np.ndarray | None,
    locate: Locator,
    questions_path: Path,
) -> tuple[np.ndarray, np.ndarray]:
    """(question index int32, raw part int8) of every row."""
    index = np.arange(FIRST_QUESTION_INDEX, vocab.size, dtype=np.int32)
    question = dense_lookup(vocab.question_ids, index, raw.content_id, UNKNOWN_QUESTION, np.int32)
    question[raw.is_lecture] = 0
    unknown = np.flatnonzero(question == UNKNOWN_QUESTION)
    if unknown.size:
        _report_unknown(raw, unknown, strict, order, locate, questions_path)
    part_table = np.concatenate([[-1, -1], vocab.parts]).astype(np.int8)
    part = part_table[question]
    if lectures is not None:
        lec = np.flatnonzero(raw.is_lecture)
        part[lec] = dense_lookup(
            lectures[0], lectures[1].astype(np.int8), raw.content_id[lec], -1, np.int8
        )
    return question, part


def _report_unknown(
    raw: Raw,
    unknown: np.ndarray,
    strict: bool,
    order: np.ndarray | None,
    locate: Locator,
    questions_path: Path,
) -> None:
    if strict:
        first = int(unknown.min() if order is None else order[unknown].min())
        path, line = locate(first)
        qid = raw.content_id[unknown[0] if order is None else unknown[np.argmin(order[unknown])]]
        raise DataError(
            path, line, "content_id", f"unknown question id {qid} (not in {questions_path})"
        )
    distinct = len(np.unique(raw.content_id[unknown]))
    logger.warning(
        "%d question rows (%d distinct ids) are not in %s; mapped to the unknown-question index",
        unknown.size,
        distinct,
        questions_path,
    )


def _apply_order(raw: Raw, order: np.ndarray) -> None:
    for f in fields(raw):
        setattr(raw, f.name, getattr(raw, f.name)[order])


def assemble(
    raw: Raw,
    vocab: QuestionVocab,
    *,
    locate: Locator,
    shift_prior: bool,
    strict: bool,
    questions_path: Path,
    lectures: tuple[np.ndarray, np.ndarray] | None = None,
    duplicates: str = "first",
) -> Interactions:
    """Sort, validate, de-duplicate, shift and map file-order columns into the final table.

    `locate(i)` names the (file, line) of file-order row i, for error messages."""
    check_policy(duplicates)
    order = _learner_order(raw, locate)
    if order is not None:
        _apply_order(raw, order)
    n = len(raw.user)
    starts = np.flatnonzero(np.concatenate([[True], raw.user[1:] != raw.user[:-1]]))
    drops = [
        d
        for lo, hi in _learner_chunks(starts, n)
        if (d := _duplicates_to_drop(raw, lo, hi, order, locate, duplicates)) is not None
    ]
    dropped = 0
    if drops:
        keep = np.ones(n, bool)
        keep[np.concatenate(drops)] = False
        position = order if order is not None else np.arange(n, dtype=np.int64)
        _apply_order(raw, np.flatnonzero(keep))
        order = position[keep]
        dropped = n - len(order)
        n = len(order)
        starts = np.flatnonzero(np.concatenate([[True], raw.user[1:] != raw.user[:-1]]))
        logger.warning(
            "dropped %d duplicate rows (same learner, timestamp, item and content type; "
            "duplicates=%r keeps the %s in file order)",
            dropped,
            duplicates,
            "earliest" if duplicates == "first" else "latest",
        )
    if shift_prior:
        for lo, hi in _learner_chunks(starts, n):
            _shift_prior(raw, lo, hi)
    question, part = _map_content(raw, vocab, lectures, strict, order, locate, questions_path)
    offsets = np.append(starts, n).astype(np.int64)
    correct = raw.correct
    correct[raw.is_lecture] = -1
    return Interactions(
        user_ids=raw.user[starts].copy(),
        offsets=offsets,
        question=question,
        content_id=raw.content_id,
        is_lecture=raw.is_lecture,
        part=part,
        correct=correct,
        bundle=raw.container,
        timestamp=raw.timestamp,
        elapsed_ms=raw.elapsed,
        explanation=raw.explanation,
        row_id=raw.row_id,
        vocab=vocab,
        duplicates_dropped=int(dropped),
    )


def to_numpy(column: pa.Array, dtype: Any, fill: Any) -> np.ndarray:
    if column.null_count:
        column = pc.fill_null(column, fill)
    return column.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def first_null(column: pa.Array) -> int:
    return int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])


def file_key(path: Path) -> list[Any]:
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def cached(
    cache_dir: Path | None, kind: str, key: list[Any], build: Callable[[], Interactions]
) -> Interactions:
    """Build, or reuse the table saved under a key of (inputs, their size/mtime, options)."""
    if cache_dir is None:
        return build()
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, kind, key]).encode()).hexdigest()[:20]
    target = Path(cache_dir) / f"{kind}-{digest}"
    if (target / "meta.json").exists():
        logger.info("loading cached %s table from %s", kind, target)
        return Interactions.load(target)
    inter = build()
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    inter.save(target)
    logger.info("cached %s table (%d rows) in %s", kind, inter.n_rows, target)
    return inter


def lookup(
    keys: np.ndarray, values: np.ndarray, query: np.ndarray, missing: int, dtype: Any
) -> np.ndarray:
    """values[k] for each query id found in the sorted `keys`, else `missing`; chunked to bound memory."""
    out = np.full(len(query), missing, dtype=dtype)
    if len(keys) == 0:
        return out
    for lo in range(0, len(query), _MAP_CHUNK):
        q = query[lo : lo + _MAP_CHUNK]
        pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        found = keys[pos] == q
        out[lo : lo + _MAP_CHUNK] = np.where(found, values[pos], missing)
    return out


def dense_lookup(
    keys: np.ndarray, values: np.ndarray, query: np.ndarray, missing: int, dtype: Any
) -> np.ndarray:
    """Like `_lookup`, through a dense table when ids are small non-negative ints (much faster)."""
    if len(keys) == 0 or keys[0] < 0 or keys[-1] >= (1 << 24):
        return lookup(keys, values, query, missing, dtype)
    table = np.full(int(keys[-1]) + 2, missing, dtype=dtype)  # last slot: out-of-range ids
    table[keys] = values
    out = np.empty(len(query), dtype=dtype)
    top = len(table) - 1
    for lo in range(0, len(query), _MAP_CHUNK):
        q = query[lo : lo + _MAP_CHUNK]
        np.take(table, np.where((q < 0) | (q >= top), top, q), out=out[lo : lo + _MAP_CHUNK])
    return out

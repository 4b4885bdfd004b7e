"""The learner statistics of the encoding (`models.feature_spec.STAT_NAMES`, then
`LECTURE_STAT_NAMES`): for every position of a window, counts, smoothed accuracies, the last attempt
and recencies overall, per part, per question and per tag, read from strictly earlier bundles only
(`learner_stats`), and the lectures watched before each position's bundle (`lecture_stats`). Every
statistic is a prefix count over the window's answered items, grouped by key
(`_grouped_prefix`). numpy only; `models.features.encode` is the one caller."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from models.feature_spec import LECTURE_STAT_NAMES, N_STATS, FeatureSpec
from models.numeric import cached_constant, cached_log1p
from models.vocab import FIRST_QUESTION_INDEX

if TYPE_CHECKING:  # models.features imports this module
    from models.features import History

RECENT_ANSWERS = 10  # the answers the `recent_accuracy` statistic reads
# `_grouped_prefix` reads the totals of at least _KEY_TABLE_MIN_QUERIES queries after every entry
# (a bank's candidates) from tables of at most _KEY_TABLE_MAX keys; fewer (a /predict) search
_KEY_TABLE_MAX = 1 << 22
_KEY_TABLE_MIN_QUERIES = 1024


def learner_stats(
    question: np.ndarray,
    part: np.ndarray,
    tags: np.ndarray,
    position: np.ndarray,
    correct: np.ndarray,
    seconds: np.ndarray,
    n_answered: int,
    spec: FeatureSpec,
) -> np.ndarray:
    """(T, N_STATS) float32 statistics of every position from strictly earlier bundles (STAT_NAMES).

    Inputs are the encoded window (T positions: `n_answered` history items, then any candidates):
    question / part (T,), tags (T, M) encoded, position (T,) index of the first item of each item's
    bundle, correct (T,) 0/1 (only the first `n_answered` are read), seconds (T,) timestamps in s
    (NaN = unknown). Items are in bundle order, so what position i may read is exactly the prefix
    [0, position[i]): every statistic is a prefix count, O(T log T).
    """
    t = len(question)
    if t == 0:
        return np.zeros((0, N_STATS), np.float32)
    stat = np.empty((N_STATS, t))  # (N_STATS, T) float64: the output, transposed
    cutoff = np.minimum(position, n_answered).astype(np.int64, copy=False)  # (T,) [0, cutoff) seen
    right = np.zeros(t + 1)  # (T + 1,) right answers of the answered items, 0 after them
    right[:n_answered] = correct[:n_answered]
    cum = np.zeros(n_answered + 1)  # cum[p] = right answers among items [0, p)
    np.add.accumulate(right[:n_answered], out=cum[1:])
    cum_cutoff = cum[cutoff]

    # prefix statistics per part, question and tag at once (columns part, question, M tags): the
    # answered items are the entries, every position asks about those before its cutoff
    keys, valid = _content_keys(part, tags, question)  # (T, M + 2)
    answered = np.arange(n_answered)[:, None]
    count, n_right, last = _grouped_prefix(
        keys[:n_answered], answered, right, keys, cutoff[:, None] * valid, t + 1
    )
    accuracy = (n_right + 1.0) / (count + 2.0)  # (T, M + 2)
    stat[0] = cutoff  # (rows 0, 2, 4, 6 are counts, log-scaled below)
    stat[1] = (cum_cutoff + 1.0) / (cutoff + 2.0)
    stat[2:7:4] = count[:, :2].T  # part -> rows 2, 3; question -> rows 6, 7
    stat[3:8:4] = accuracy[:, :2].T

    # tags: per-tag prefix statistics, averaged over the item's tags
    has_tag = valid[:, 2:]  # (T, M)
    ones = cached_constant((1.0,) * has_tag.shape[1], np.float64)
    n_tags = has_tag @ ones  # (exact: sums of small integers, as are the counts below)
    k_tags = np.maximum(n_tags, 1)
    np.divide(count[:, 2:] @ ones, k_tags, out=stat[4])
    acc_tag = _sum_over_columns(accuracy[:, 2:] * has_tag)  # (0.5 at a missing tag: masked)
    stat[5] = np.where(n_tags > 0, acc_tag / k_tags, 0.5)
    counts = stat[0:7:2]
    np.log1p(counts, out=counts)
    counts *= 1.0 / cached_log1p(spec.window)

    last_q = last[:, 1]  # the latest earlier attempt at the question (-1: none)
    outcome = 2.0 * right - 1.0  # (T + 1,) +1 right / -1 wrong, 0 at [-1]: no attempt
    outcome[-1] = 0.0
    stat[8] = outcome[last_q]
    bundles_since = _bundle_index(position)
    gap = bundles_since - bundles_since[last_q]
    np.divide(last_q >= 0, np.maximum(gap, 1), out=stat[9])  # 0 without an attempt
    latest = np.empty((2, t), np.int64)  # that attempt; the latest answer with one of the tags
    latest[0] = last_q
    _max_over_columns(last[:, 2:], out=latest[1])
    stat[10:12] = _recency(seconds, latest, spec.lag_cap_ms)

    recent_from = np.maximum(cutoff - RECENT_ANSWERS, 0)
    stat[12] = (cum_cutoff - cum[recent_from] + 0.5) / (cutoff - recent_from + 1.0)
    # previous bundle = [position of item cutoff-1, cutoff)
    prev_start = np.where(cutoff > 0, position[cutoff - 1], 0)
    n_prev = cutoff - prev_start
    prev_acc = (cum_cutoff - cum[prev_start]) / np.maximum(n_prev, 1.0)
    stat[13] = np.where(n_prev > 0, 2.0 * prev_acc - 1.0, 0.0)
    return stat.T.astype(np.float32, order="C")


def _max_over_columns(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`a.max(axis=1, out=out)` for a (N, W) array, W >= 1, one column at a time: numpy's
    reduction over a short last axis costs ~7x more (a bank's 13,622 x 6: 359 against 53 µs)."""
    np.copyto(out, a[:, 0])
    for j in range(1, a.shape[1]):
        np.maximum(out, a[:, j], out=out)
    return out


def _sum_over_columns(a: np.ndarray) -> np.ndarray:
    """`a.sum(axis=1)` of a (N, W) array, W >= 1, one column at a time, left to right (the order
    numpy's reduction takes over so few columns), for the same reason as `_max_over_columns`."""
    out = a[:, 0].copy()
    for j in range(1, a.shape[1]):
        out += a[:, j]
    return out


def _bundle_index(position: np.ndarray) -> np.ndarray:
    """Bundle ordinal of each item from the bundle start positions (0, 0, 1, 2, 2, ...)."""
    index = np.zeros(len(position), np.int64)
    np.add.accumulate(position[1:] != position[:-1], dtype=np.int64, out=index[1:])
    return index


def _content_keys(
    part: np.ndarray, tags: np.ndarray, question: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Side by side, the part (N,), [question (N,)] and tags (N, M) of N items (or lectures) as
    `_grouped_prefix` keys (N, W) int64: kinds * value + kind (part 0, question 1, tags last), so a
    part, a question and a tag of one value never share a key; and whether each one is known (a
    part > 0, a question >= FIRST_QUESTION_INDEX, a tag > 0), (N, W) bool."""
    lead = 1 if question is None else 2  # the columns before the tags
    m = tags.shape[1]
    keys = np.empty((len(part), lead + m), np.int64)
    keys[:, 0] = part
    if question is not None:
        keys[:, 1] = question
    keys[:, lead:] = tags
    valid = keys >= cached_constant((1, FIRST_QUESTION_INDEX)[:lead] + (1,) * m, np.int64)
    keys *= lead + 1
    keys += cached_constant((0, 1)[:lead] + (lead,) * m, np.int64)  # the kind of each column
    return keys, valid


def _grouped_prefix(
    entry_keys: np.ndarray,
    entry_index: np.ndarray,
    right: np.ndarray,
    query_keys: np.ndarray,
    cutoff: np.ndarray,
    span: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each query: (count (int64), right answers, index of the latest) of the entries with the
    query's key and an index < the query's cutoff; (0, 0, -1) where the cutoff is 0.

    Entries: int64 keys >= 0 and indices in [0, span), broadcast together; `right[i]` is the
    outcome (0/1, so the sums are exact) of the entries of index i. Queries: int64 keys >= 0, and
    cutoffs in [0, span) broadcast to their shape, which the results have.

    Queries binary-search the entries sorted by (key, index). When many lie past every entry (a
    bank's candidates after the whole history: /recommend), those read their key's totals from
    a table indexed by key instead: a search costs ~40 ns per query there (random keys defeat
    the cache), a table read ~1 ns, and building the tables is worth it only for many queries.
    """
    shape = query_keys.shape
    if entry_keys.size == 0 or query_keys.size == 0:
        return np.zeros(shape, np.int64), np.zeros(shape), np.full(shape, -1, np.int64)
    combined = (entry_keys * span + entry_index).ravel()
    combined.sort()  # by (key, index)
    index = combined % span  # (E,) index of each sorted entry
    cum_right = np.zeros(len(combined) + 1)
    np.add.accumulate(right[index], out=cum_right[1:])
    entries = _SortedEntries(combined, index, cum_right, span)
    cutoff = np.broadcast_to(cutoff, shape)
    full = cutoff > index.max()  # every entry is before the query
    top = int(query_keys.max()) + 1
    if top <= _KEY_TABLE_MAX and np.count_nonzero(full) >= _KEY_TABLE_MIN_QUERIES:
        return _grouped_totals(entries, query_keys, cutoff, full, top)
    return _searched(entries, query_keys, cutoff)


class _SortedEntries(NamedTuple):
    """`_grouped_prefix`'s entries sorted by (key, index), as both of its lookups read them."""

    combined: np.ndarray  # (E,) key * span + index, ascending
    entry_index: np.ndarray  # (E,) each entry's index (`index` would shadow tuple.index)
    cum_right: np.ndarray  # (E + 1,) right answers among the first e sorted entries
    span: int


def _searched(
    entries: _SortedEntries, query_keys: np.ndarray, cutoff: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_grouped_prefix` of `query_keys` and their cutoffs (same shape) by binary search in the
    sorted entries."""
    combined, index, cum_right, span = entries
    bounds = np.empty((2, *query_keys.shape), np.int64)
    np.multiply(query_keys, span, out=bounds[0])  # the entries of the query's key ...
    np.add(bounds[0], cutoff, out=bounds[1])  # ... before its cutoff
    lo, hi = combined.searchsorted(bounds)
    last = np.where(hi > lo, index[hi - 1], -1)
    return hi - lo, cum_right[hi] - cum_right[lo], last


def _grouped_totals(
    entries: _SortedEntries,
    query_keys: np.ndarray,
    cutoff: np.ndarray,
    full: np.ndarray,
    top: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_grouped_prefix` for many queries after every entry: their key's totals read from tables
    of `top` rows; the other queries (cutoff 0, or inside the entries) as there."""
    combined, index, cum_right, span = entries
    key = combined // span  # (E,) each sorted entry's key
    ends = np.flatnonzero(np.append(key[1:] != key[:-1], True))  # (K,) each key's last entry
    starts = np.append(0, ends[:-1] + 1)
    asked = key[ends] < top  # keys no query asks about need no row
    ends, starts = ends[asked], starts[asked]
    # per key, and a last row `top` of zeros that the other queries read; zero pages cost nothing
    # until read
    count_of = np.zeros(top + 1, np.int64)
    right_of = np.zeros(top + 1)
    last_of = np.zeros(top + 1, np.int64)  # latest index + 1 (0: none)
    count_of[key[ends]] = ends + 1 - starts
    right_of[key[ends]] = cum_right[ends + 1] - cum_right[starts]
    last_of[key[ends]] = index[ends] + 1
    row = np.where(full, query_keys, top)  # one index for the three reads
    count = count_of.take(row)
    n_right = right_of.take(row)
    last = last_of.take(row)
    last -= 1
    searched = np.flatnonzero((cutoff > 0) & ~full)  # into the flattened queries
    count.ravel()[searched], n_right.ravel()[searched], last.ravel()[searched] = _searched(
        entries, query_keys.ravel()[searched], cutoff.ravel()[searched]
    )
    return count, n_right, last


def lecture_stats(
    part: np.ndarray,
    tags: np.ndarray,
    position: np.ndarray,
    seconds: np.ndarray,
    n_answered: int,
    window: History,
    spec: FeatureSpec,
) -> np.ndarray:
    """(T, len(LECTURE_STAT_NAMES)) float32: the window's lectures watched before each position's
    bundle. Arguments as in `learner_stats`; `window` holds the lectures (`lecture_after` counts
    the window's answered items before each). Lecture l is visible to position i iff
    lecture_after[l] <= min(position[i], n_answered): it came before i's bundle."""
    t = len(part)
    out = np.zeros((t, len(LECTURE_STAT_NAMES)), np.float32)
    n_lectures = window.n_lectures
    if n_lectures == 0 or t == 0:
        return out
    cutoff = np.minimum(position, n_answered)
    visible = np.searchsorted(window.lecture_after, cutoff, side="right")  # (T,) lectures [0, v)
    scale = 1.0 / cached_log1p(spec.window)
    out[:, 0] = np.log1p(visible) * scale
    # per part and tag at once: columns part, M tags
    keys, valid = _content_keys(part, tags)  # (T, 1 + M)
    lecture_keys, _ = _content_keys(window.lecture_part, window.lecture_tag[:, None])  # (L, 2)
    lectures = np.arange(n_lectures)[:, None]
    count, _, last = _grouped_prefix(
        lecture_keys, lectures, np.zeros(n_lectures), keys, visible[:, None] * valid, n_lectures + 1
    )
    out[:, 1] = np.log1p(count[:, 0]) * scale
    out[:, 2] = np.log1p(_sum_over_columns(count[:, 1:])) * scale
    latest = np.empty((2, t), np.int64)  # the latest visible lecture; the latest with a tag
    latest[0] = visible - 1
    _max_over_columns(last[:, 1:], out=latest[1])
    lecture_seconds = window.lecture_timestamp.astype(np.float64) / 1000.0
    out[:, 3:] = _since(seconds, lecture_seconds, latest, spec.lag_cap_ms).T
    return out


def _recency(seconds: np.ndarray, last: np.ndarray, cap_ms: int) -> np.ndarray:
    """1 - log1p(dt) / log1p(cap) in [0, 1] for the time since item `last[i]`; 0 = none / unknown."""
    return _since(seconds, seconds, last, cap_ms)


def _since(seconds: np.ndarray, then: np.ndarray, last: np.ndarray, cap_ms: int) -> np.ndarray:
    """`_recency` of event `last[..., i]` of `then` (seconds) seen from `seconds[i]`; -1 = none."""
    dt = seconds - then[last] if len(then) else np.full(last.shape, np.nan)  # last -1: masked
    known = (last >= 0) & (dt == dt)  # dt is NaN where a time is unknown
    cap_s = cap_ms / 1000.0
    scaled = np.log1p(dt.clip(0.0, cap_s)) / cached_log1p(cap_s)
    return np.where(known, 1.0 - scaled, 0.0)

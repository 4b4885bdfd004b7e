"""Property tests of the one encoding (models/features.py): visibility rules, candidates, windows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import learner_stats
from models.feature_spec import (
    LECTURE_STAT_NAMES,
    N_STATS,
    PAD_BUNDLE,
    FeatureSpec,
    load_spec,
    save_spec,
)
from models.features import (
    CandidateRequest,
    History,
    collate,
    encode,
    encode_candidate_batch,
    training_windows,
)
from models.vocab import UNKNOWN_QUESTION, QuestionVocab

QUERY_SIDE = ("question", "part", "tags", "position", "bundle", "lag", "lag_bucket")
RESPONSE_SIDE = ("response", "elapsed", "elapsed_bucket", "explanation")
N_QUESTIONS = 30
# questions 0..29: part q % 7, tags {q % 5} or {q % 5, 5 + q % 3}: shared across questions
VOCAB = QuestionVocab.build(
    np.arange(N_QUESTIONS),
    np.arange(N_QUESTIONS) % 7,
    [[q % 5] if q % 2 else [q % 5, 5 + q % 3] for q in range(N_QUESTIONS)],
)
PARTS = VOCAB.item_table()  # question index (0 pad, 1 unknown, 2.. known) -> part and tags


@st.composite
def histories(draw: st.DrawFn, max_bundles: int = 25) -> History:
    sizes = draw(st.lists(st.integers(1, 4), min_size=0, max_size=max_bundles))
    gaps = draw(st.lists(st.integers(0, 10**10), min_size=len(sizes), max_size=len(sizes)))
    n = sum(sizes)
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    bundle = np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)
    ts_per_bundle = np.cumsum(np.asarray(gaps, dtype=np.int64)) if sizes else np.zeros(0, np.int64)
    elapsed = rng.uniform(-5, 400_000, n).astype(np.float32)
    elapsed[rng.random(n) < 0.2] = np.nan
    timestamp = ts_per_bundle[bundle] if n else np.zeros(0, np.int64)
    # lectures between bundles (or before the first / after the last), at the previous item's time
    starts = np.flatnonzero(np.concatenate([[True], np.diff(bundle) != 0])) if n else np.zeros(0)
    slots = np.concatenate([starts, [n]]).astype(np.int64)
    after = np.sort(rng.choice(slots, size=draw(st.integers(0, 6)))).astype(np.int64)
    lecture_ts = np.where(after > 0, timestamp[np.maximum(after - 1, 0)] if n else 0, 0)
    return History(
        question=rng.integers(1, N_QUESTIONS + 2, n).astype(np.int64),
        correct=rng.integers(0, 2, n).astype(np.int8),
        timestamp=timestamp,
        bundle=bundle * 7 + 3,  # any non-decreasing keys
        elapsed_ms=elapsed,
        explanation=rng.integers(-1, 2, n).astype(np.int8),
        lecture_after=after,
        lecture_timestamp=lecture_ts.astype(np.int64),
        lecture_part=rng.integers(0, 8, len(after)).astype(np.int64),
        lecture_tag=rng.integers(0, VOCAB.n_tags, len(after)).astype(np.int64),
    )


def _perturb_from(history: History, first: int, seed: int) -> History:
    """Change answers, elapsed times and explanation flags of items [first:]."""
    rng = np.random.default_rng(seed)
    h = dataclasses.replace(
        history,
        correct=history.correct.copy(),
        elapsed_ms=history.elapsed_ms.copy(),
        explanation=history.explanation.copy(),
    )
    n = len(h) - first
    h.correct[first:] = 1 - h.correct[first:]
    h.elapsed_ms[first:] = rng.uniform(0, 500_000, n).astype(np.float32)
    h.explanation[first:] = rng.integers(-1, 2, n).astype(np.int8)
    return h


@settings(max_examples=80, deadline=None)
@given(histories(), st.integers(2, 40), st.data())
def test_outcomes_never_reach_query_side_or_earlier_items(
    history: History, window: int, data: st.DataObject
) -> None:
    """Changing outcomes of a bundle and everything after it leaves every query-side array unchanged
    and the response side of strictly earlier bundles unchanged."""
    if len(history) == 0:
        return
    spec = FeatureSpec(window=window, n_questions=N_QUESTIONS + 2)
    starts = np.flatnonzero(np.concatenate([[True], np.diff(history.bundle) != 0]))
    cut = int(data.draw(st.sampled_from(starts.tolist())))
    base = encode(history, spec, PARTS)
    perturbed = encode(_perturb_from(history, cut, seed=cut), spec, PARTS)
    for name in QUERY_SIDE:
        np.testing.assert_array_equal(base[name], perturbed[name], err_msg=name)
    offset = max(0, len(history) - window)
    earlier = max(cut - offset, 0)  # window index of the first perturbed item
    for name in RESPONSE_SIDE:
        np.testing.assert_array_equal(base[name][:earlier], perturbed[name][:earlier], err_msg=name)
    # statistics read strictly earlier bundles: unchanged up to and including the cut bundle
    cut_bundle = base["bundle"][earlier] if earlier < len(base["bundle"]) else np.inf
    same = base["bundle"] <= cut_bundle
    np.testing.assert_array_equal(base["stats"][same], perturbed["stats"][same], err_msg="stats")


@settings(max_examples=80, deadline=None)
@given(histories(), st.integers(2, 40))
def test_bundle_structure(history: History, window: int) -> None:
    spec = FeatureSpec(window=window, n_questions=N_QUESTIONS + 2)
    enc = encode(history, spec, PARTS)
    t = len(enc["question"])
    assert t == min(len(history), window)
    if t == 0:
        return
    bundle, position = enc["bundle"], enc["position"]
    assert bundle[0] == 0 and np.all(np.diff(bundle) >= 0)
    for i in range(t):  # position = index of the first item of i's bundle
        assert position[i] == np.flatnonzero(bundle == bundle[i])[0]
    assert np.all((enc["lag"] >= 0) & (enc["lag"] <= 1))
    assert np.all((enc["elapsed"] >= 0) & (enc["elapsed"] <= 1))
    assert np.all(enc["response"] >= 1)  # history items always carry their own outcome


@settings(max_examples=80, deadline=None)
@given(histories(), st.data())
def test_lag_does_not_depend_on_where_the_window_starts(
    history: History, data: st.DataObject
) -> None:
    """A window that starts inside a bundle still measures that bundle's lag from the previous
    bundle (not from its own cut-off items), exactly as the whole history does (the training
    windows, `encode(start=...)`, and the service's trailing windows go through this)."""
    n = len(history)
    start = data.draw(st.integers(0, n))
    spec = FeatureSpec(window=max(n, 1) + 1, n_questions=N_QUESTIONS + 2)
    whole = encode(history, spec, PARTS, start=0)
    part = encode(history, spec, PARTS, start=start)
    np.testing.assert_array_equal(part["lag"], whole["lag"][start:])
    np.testing.assert_array_equal(part["lag_bucket"], whole["lag_bucket"][start:])


@settings(max_examples=60, deadline=None)
@given(
    histories(),
    st.lists(st.integers(1, N_QUESTIONS + 1), min_size=1, max_size=6),
    st.integers(0, 10**9),
)
def test_candidates_are_one_virtual_bundle(history: History, cands: list[int], gap: int) -> None:
    spec = FeatureSpec(window=12, n_questions=N_QUESTIONS + 2)
    now = int(history.timestamp[-1]) + gap if len(history) else gap
    cand = np.asarray(cands, dtype=np.int64)
    many = encode(history, spec, PARTS, candidates=cand, candidate_timestamp=now)
    k = len(cand)
    h = len(many["question"]) - k
    assert h == min(len(history), spec.window - 1)
    tail = {name: many[name][h:] for name in many}
    assert len(set(tail["bundle"].tolist())) == 1 and len(set(tail["position"].tolist())) == 1
    assert np.all(tail["response"] == 0) and np.all(tail["explanation"] == 0)
    assert tail["position"][0] == h
    if h:
        assert tail["bundle"][0] == many["bundle"][h - 1] + 1
    for j in range(k):  # each candidate alone encodes exactly like its column in the K-batch
        single = encode(history, spec, PARTS, candidates=cand[j : j + 1], candidate_timestamp=now)
        for name in many:
            np.testing.assert_array_equal(single[name][:h], many[name][:h], err_msg=name)
            np.testing.assert_array_equal(single[name][h], many[name][h + j], err_msg=name)


def test_candidate_lag_and_cold_start() -> None:
    spec = FeatureSpec(window=10, n_questions=N_QUESTIONS + 2)
    cold = encode(
        History.empty(), spec, PARTS, candidates=np.array([3, 4]), candidate_timestamp=123
    )
    assert cold["lag_bucket"].tolist() == [0, 0]  # no previous event: lag unknown
    assert cold["position"].tolist() == [0, 0] and cold["bundle"].tolist() == [0, 0]
    h = History(
        np.array([2]),
        np.array([1], np.int8),
        np.array([1_000]),
        np.array([0]),
        np.array([np.nan], np.float32),
        np.array([-1], np.int8),
    )
    enc = encode(h, spec, PARTS, candidates=np.array([3]), candidate_timestamp=61_000)
    assert enc["lag_bucket"][1] > 0
    assert enc["elapsed_bucket"][0] == 0  # unknown elapsed -> bucket 0
    assert enc["explanation"][0] == 0  # unknown flag -> 0


def test_elapsed_is_capped() -> None:
    spec = FeatureSpec(window=10, n_questions=N_QUESTIONS + 2)
    h = History(
        np.array([2, 3]),
        np.array([1, 0], np.int8),
        np.array([0, 5]),
        np.array([0, 1]),
        np.array([10_000_000, 150_000], np.float32),
        np.array([0, 1], np.int8),
    )
    enc = encode(h, spec, PARTS)
    assert enc["elapsed"][0] == pytest.approx(1.0)
    assert enc["elapsed"][1] == pytest.approx(0.5)
    assert enc["elapsed_bucket"][0] == spec.n_elapsed_buckets - 1


def test_collate_pads_right_with_pad_bundle() -> None:
    spec = FeatureSpec(window=10, n_questions=N_QUESTIONS + 2)
    a = encode(History.empty(), spec, PARTS, candidates=np.array([3]))
    b = encode(History.empty(), spec, PARTS, candidates=np.array([3, 4, 5]))
    batch = collate([a, b])
    assert batch["question"].shape == (2, 3)
    assert batch["question"][0].tolist() == [3, 0, 0]
    assert batch["bundle"][0, 1:].tolist() == [PAD_BUNDLE, PAD_BUNDLE]


def test_candidate_batch_spans() -> None:
    spec = FeatureSpec(window=10, n_questions=N_QUESTIONS + 2)
    reqs = [
        CandidateRequest(History.empty(), np.array([3, 4])),
        CandidateRequest(History.empty(), np.array([5])),
    ]
    batch, spans = encode_candidate_batch(reqs, spec, PARTS)
    assert spans == [(0, 2), (0, 1)]
    assert batch["question"][1, 0] == 5


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 500), st.integers(2, 64), st.data())
def test_training_windows_score_each_item_once(n: int, window: int, data: st.DataObject) -> None:
    stride = data.draw(st.integers(1, window))
    windows = training_windows(n, window, stride)
    scored = np.zeros(n, dtype=int)
    for start, end, loss_start in windows:
        assert 0 <= start <= loss_start < end <= n and end - start <= window
        scored[loss_start:end] += 1
    assert np.all(scored == 1)


def test_vocab_maps_unknown_and_round_trips(tmp_path) -> None:
    vocab = QuestionVocab.build(np.array([30, 10, 20]), np.array([3, 1, 2]))
    idx = vocab.to_index(np.array([10, 20, 30, 99, -5]))
    assert idx.tolist() == [2, 3, 4, UNKNOWN_QUESTION, UNKNOWN_QUESTION]
    assert vocab.part_of(idx).tolist() == [2, 3, 4, 0, 0]
    assert vocab.unknown(np.array([10, 99])).tolist() == [99]
    spec = FeatureSpec(window=50, n_questions=vocab.size, n_parts=vocab.n_parts)
    save_spec(tmp_path / "feature_spec.json", spec, vocab)
    spec2, vocab2 = load_spec(tmp_path / "feature_spec.json")
    assert spec2 == spec
    np.testing.assert_array_equal(vocab2.question_ids, vocab.question_ids)


@given(
    st.lists(st.integers(-3, 3000), min_size=1, max_size=40, unique=True),
    st.lists(
        st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-5, 3100)), min_size=1, max_size=40
    ),
)
def test_vocab_dense_index_equals_binary_search(ids: list[int], raw: list[int]) -> None:
    """The dense lookup table (compact non-negative ids) answers exactly as the binary search,
    for ids below, inside and above the range, int64 extremes included."""
    question_ids = np.array(sorted(i for i in ids if i >= 0) or [0], np.int64)
    vocab = QuestionVocab(question_ids, np.zeros(len(question_ids), np.int64))
    assert vocab._dense_index is not None
    searched = QuestionVocab(question_ids, np.zeros(len(question_ids), np.int64))
    searched._dense_index = None
    query = np.array(raw, np.int64)
    np.testing.assert_array_equal(vocab.to_index(query), searched.to_index(query))
    position = {int(q): k + 2 for k, q in enumerate(question_ids)}
    assert vocab.to_index(query).tolist() == [position.get(r, UNKNOWN_QUESTION) for r in raw]


def test_vocab_sparse_ids_use_no_dense_table() -> None:
    vocab = QuestionVocab.build(np.array([7, 10**9]), np.array([0, 1]))
    assert vocab._dense_index is None
    assert vocab.to_index(np.array([7, 10**9, 8])).tolist() == [2, 3, UNKNOWN_QUESTION]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 1}, "window"),
        ({"elapsed_cap_ms": 0}, "positive"),
        ({"lag_edges_ms": (5, 5)}, "increasing"),
        ({"n_questions": 1}, "n_questions"),
    ],
)
def test_bad_spec_is_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeatureSpec(**kwargs)


def test_vocab_catalogue_facts_round_trip_and_are_checked(tmp_path) -> None:
    vocab = QuestionVocab(
        np.array([10, 20, 30]),
        np.array([1, 1, 2]),
        bundles=np.array([10, 10, -1]),
        train_answers=np.array([4, 0, 7]),
    )
    spec = FeatureSpec(window=50, n_questions=vocab.size, n_parts=vocab.n_parts)
    save_spec(tmp_path / "feature_spec.json", spec, vocab)
    _, again = load_spec(tmp_path / "feature_spec.json")
    assert again.bundles is not None and again.bundles.tolist() == [10, 10, -1]
    assert again.train_answers is not None and again.train_answers.tolist() == [4, 0, 7]
    plain = QuestionVocab(np.array([10]), np.array([1]))
    assert plain.bundles is None and "bundles" not in plain.to_dict()
    with pytest.raises(ValueError, match="train_answers"):
        QuestionVocab(np.array([10, 20]), np.array([1, 1]), train_answers=np.array([1]))


def test_vocab_rejects_unsorted_ids() -> None:
    with pytest.raises(ValueError, match="sorted"):
        QuestionVocab(np.array([3, 1]), np.array([0, 0]))


def _naive_stats(enc: dict[str, np.ndarray], n_answered: int, correct: np.ndarray) -> np.ndarray:
    """STAT_NAMES computed the slow, obvious way: for each i, loop over visible j."""
    out = []
    seconds = enc["_seconds"]
    for i in range(len(enc["question"])):
        vis = [j for j in range(n_answered) if enc["bundle"][j] < enc["bundle"][i]]

        def cnt(js: list[int]) -> tuple[float, float]:
            return float(len(js)), float(sum(correct[j] for j in js))

        def desc(js: list[int]) -> list[float]:
            n, r = cnt(js)
            return [np.log1p(n) / np.log1p(enc["_window"]), (r + 1) / (n + 2)]

        q, p = enc["question"][i], enc["part"][i]
        tags_i = [t for t in enc["tags"][i] if t > 0]
        row = desc(vis)
        row += desc([j for j in vis if p > 0 and enc["part"][j] == p])
        per_tag = [[j for j in vis if t in enc["tags"][j]] for t in tags_i]
        if tags_i:
            mean_n = np.mean([len(js) for js in per_tag])
            row += [
                np.log1p(mean_n) / np.log1p(enc["_window"]),
                np.mean([(cnt(js)[1] + 1) / (cnt(js)[0] + 2) for js in per_tag]),
            ]
        else:
            row += [0.0, 0.5]
        same_q = [j for j in vis if q >= 2 and enc["question"][j] == q]
        row += desc(same_q)
        last = same_q[-1] if same_q else None
        row.append(0.0 if last is None else 2.0 * correct[last] - 1.0)
        row.append(0.0 if last is None else 1.0 / max(enc["bundle"][i] - enc["bundle"][last], 1))

        def recency(j: int | None, i: int = i) -> float:
            if j is None or np.isnan(seconds[i] - seconds[j]):
                return 0.0
            cap = 7 * 86400.0
            return 1.0 - np.log1p(np.clip(seconds[i] - seconds[j], 0, cap)) / np.log1p(cap)

        row.append(recency(last))
        any_tag = [j for j in vis if set(tags_i) & set(enc["tags"][j][enc["tags"][j] > 0])]
        row.append(recency(any_tag[-1] if any_tag else None))
        recent = vis[-10:]
        row.append((sum(correct[j] for j in recent) + 0.5) / (len(recent) + 1))
        prev = [j for j in vis if vis and enc["bundle"][j] == enc["bundle"][vis[-1]]]
        row.append(2.0 * np.mean([correct[j] for j in prev]) - 1.0 if prev else 0.0)
        # lectures: those watched before i's bundle (after the window's items before it)
        lec = enc["_lectures"]
        first = min(j for j in range(len(enc["bundle"])) if enc["bundle"][j] == enc["bundle"][i])
        seen = [x for x in range(lec.n_lectures) if lec.lecture_after[x] <= min(first, n_answered)]
        on_part = [x for x in seen if p > 0 and lec.lecture_part[x] == p]
        on_tag = [x for x in seen if lec.lecture_tag[x] > 0 and lec.lecture_tag[x] in tags_i]

        def since(xs: list[int], i: int = i, lec: History = lec) -> float:
            if not xs:
                return 0.0
            dt = seconds[i] - lec.lecture_timestamp[xs[-1]] / 1000.0
            if np.isnan(dt):
                return 0.0
            cap = 7 * 86400.0
            return 1.0 - np.log1p(np.clip(dt, 0, cap)) / np.log1p(cap)

        scale = 1.0 / np.log1p(enc["_window"])
        row += [np.log1p(len(xs)) * scale for xs in (seen, on_part, on_tag)]
        row += [since(seen), since(on_tag)]
        out.append(row)
    return np.asarray(out, dtype=np.float64).reshape(-1, N_STATS + len(LECTURE_STAT_NAMES))


@settings(max_examples=60, deadline=None)
@given(histories(), st.integers(2, 30), st.booleans(), st.data())
def test_learner_stats_match_a_naive_reference(
    history: History, window: int, with_candidates: bool, data: st.DataObject
) -> None:
    """The prefix-count implementation equals the obvious per-position loop over visible items."""
    spec = FeatureSpec(window=window, n_questions=N_QUESTIONS + 2)
    cands = None
    now = None
    if with_candidates:
        cands = np.asarray(
            data.draw(st.lists(st.integers(1, N_QUESTIONS + 1), min_size=1, max_size=4))
        )
        now = int(history.timestamp[-1]) + 5000 if len(history) else None
    enc = encode(history, spec, PARTS, candidates=cands, candidate_timestamp=now)
    k = 0 if cands is None else len(cands)
    h = len(enc["question"]) - k
    start = len(history) - h
    correct = np.concatenate([history.correct[start:], np.zeros(k, np.int8)]).astype(float)
    ts = np.concatenate([history.timestamp[start:] / 1000.0, np.full(k, np.nan)])
    if k and now is not None:
        ts[h:] = now / 1000.0
    lectures = history.slice(start, len(history))
    ref = _naive_stats(
        {**enc, "_seconds": ts, "_window": window, "_lectures": lectures}, h, correct
    )
    np.testing.assert_allclose(enc["stats"], ref, atol=1e-5)
    assert enc["stats"].shape == (len(enc["question"]), spec.n_stats)
    assert spec.n_stats == N_STATS + len(LECTURE_STAT_NAMES)


def test_items_past_the_vocabulary_are_the_unknown_question_with_their_content() -> None:
    """The service appends rows for questions registered after training: the model input is the
    unknown question, part and tags come from the row, and the statistics still tell such
    questions apart (a second answer to the same registered question is its attempt 2)."""
    from models.vocab import ItemTable

    spec = FeatureSpec(window=10, n_questions=VOCAB.size, n_parts=9, n_tags=VOCAB.n_tags)
    extra = VOCAB.size  # first registered index
    items = ItemTable(
        parts=np.concatenate([PARTS.parts, [4, 6]]),
        tags=np.concatenate([PARTS.tags, [[3, 0], [1, 2]]]),
    )
    history = History(
        question=np.array([2, extra, extra + 1, extra]),
        correct=np.array([1, 0, 1, 1], np.int8),
        timestamp=np.array([0, 10, 20, 30]),
        bundle=np.array([0, 1, 2, 3]),
        elapsed_ms=np.full(4, np.nan, np.float32),
        explanation=np.full(4, -1, np.int8),
    )
    enc = encode(history, spec, items, candidates=np.array([extra + 1, 3]), candidate_timestamp=40)
    assert enc["question"].tolist() == [2, UNKNOWN_QUESTION, UNKNOWN_QUESTION, UNKNOWN_QUESTION,
                                        UNKNOWN_QUESTION, 3]  # fmt: skip
    assert enc["part"][1:5].tolist() == [4, 6, 4, 6]
    assert enc["tags"][2].tolist() == [1, 2]
    # the same encoding with the registered questions merged into one unknown id differs only in
    # the statistics that count answers to the same question
    merged = encode(
        History(
            question=np.array([2, 1, 1, 1]),
            correct=history.correct,
            timestamp=history.timestamp,
            bundle=history.bundle,
            elapsed_ms=history.elapsed_ms,
            explanation=history.explanation,
        ),
        spec,
        items,
        candidates=np.array([1, 3]),
        candidate_timestamp=40,
    )
    assert not np.array_equal(enc["stats"], merged["stats"])


@settings(max_examples=60, deadline=None)
@given(histories(), st.integers(2, 40), st.data())
def test_a_lecture_reaches_only_later_bundles(
    history: History, window: int, data: st.DataObject
) -> None:
    """A lecture watched just before a bundle changes the statistics of that bundle and later ones
    (and of the candidates), never those of earlier bundles, and nothing but the statistics."""
    if len(history) == 0:
        return
    spec = FeatureSpec(window=window, n_questions=N_QUESTIONS + 2)
    starts = np.flatnonzero(np.concatenate([[True], np.diff(history.bundle) != 0]))
    cut = int(data.draw(st.sampled_from(starts.tolist())))
    at = np.searchsorted(history.lecture_after, cut, side="right")
    ts = int(history.timestamp[cut - 1]) if cut else int(history.timestamp[0])
    watched = dataclasses.replace(
        history,
        lecture_after=np.insert(history.lecture_after, at, cut),
        lecture_timestamp=np.insert(history.lecture_timestamp, at, ts),
        lecture_part=np.insert(history.lecture_part, at, 3),
        lecture_tag=np.insert(history.lecture_tag, at, 2),
    )
    cands, now = np.array([2, 5]), int(history.timestamp[-1]) + 1000
    base = encode(history, spec, PARTS, candidates=cands, candidate_timestamp=now)
    more = encode(watched, spec, PARTS, candidates=cands, candidate_timestamp=now)
    for name in QUERY_SIDE + RESPONSE_SIDE:
        np.testing.assert_array_equal(base[name], more[name], err_msg=name)
    h = len(base["question"]) - len(cands)
    offset = len(history) - h
    earlier = base["bundle"] < (base["bundle"][cut - offset] if cut >= offset else -1)
    np.testing.assert_array_equal(base["stats"][earlier], more["stats"][earlier])
    lecture_count = N_STATS + LECTURE_STAT_NAMES.index("lecture_count")
    if cut >= offset:  # inside the window: the candidates count it
        assert np.all(more["stats"][h:, lecture_count] > base["stats"][h:, lecture_count])
    else:  # before the window, like the answers there
        np.testing.assert_array_equal(base["stats"], more["stats"])


def test_artifacts_from_before_lecture_statistics_keep_their_width(tmp_path) -> None:
    """A feature spec / model config written without the lecture keys encodes and builds N_STATS
    statistics, so an old artifact's graph still gets the input it was exported with."""
    from models.config import ModelConfig, config_for_spec

    old = FeatureSpec.from_dict({"window": 10, "n_questions": VOCAB.size})
    assert not old.lecture_stats and old.n_stats == N_STATS
    h = History(
        question=np.array([2, 3]),
        correct=np.array([1, 0], np.int8),
        timestamp=np.array([0, 1000]),
        bundle=np.array([0, 1]),
        elapsed_ms=np.full(2, np.nan, np.float32),
        explanation=np.full(2, -1, np.int8),
        lecture_after=np.array([1]),
        lecture_timestamp=np.array([500]),
        lecture_part=np.array([2]),
        lecture_tag=np.array([1]),
    )
    assert encode(h, old, PARTS)["stats"].shape == (2, N_STATS)
    new = FeatureSpec(window=10, n_questions=VOCAB.size)
    assert encode(h, new, PARTS)["stats"].shape == (2, N_STATS + len(LECTURE_STAT_NAMES))
    assert FeatureSpec.from_dict(new.to_dict()).lecture_stats
    assert ModelConfig.from_dict({"name": "dkt"}).n_stats == N_STATS
    assert config_for_spec("dkt", new).n_stats == new.n_stats
    assert ModelConfig.from_dict(config_for_spec("dkt", new).to_dict()).n_stats == new.n_stats


def test_vocab_lecture_table_round_trips_and_encodes_content(tmp_path) -> None:
    vocab = QuestionVocab(
        np.array([10, 20]),
        np.array([1, 2]),
        np.array([[7], [8]]),
        lecture_ids=np.array([5, 9]),
        lecture_parts=np.array([2, -1]),
        lecture_tags=np.array([8, 99]),  # 99: a tag no question has
    )
    part, tag = vocab.lecture_content(np.array([9, 5, 6]))
    assert part.tolist() == [0, 3, 0]  # unknown part, part 2 -> 3, unknown lecture
    assert tag.tolist() == [0, 2, 0]  # tag 8 is the second question tag
    save_spec(tmp_path / "feature_spec.json", FeatureSpec(n_questions=vocab.size), vocab)
    _, again = load_spec(tmp_path / "feature_spec.json")
    assert again.lecture_content(np.array([5]))[0].tolist() == [3]
    with pytest.raises(ValueError, match="go together"):
        QuestionVocab(np.array([10]), np.array([1]), lecture_ids=np.array([5]))


def _grouped_prefix_reference(
    entry_keys: np.ndarray,
    entry_index: np.ndarray,
    right: np.ndarray,
    query_keys: np.ndarray,
    cutoff: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The obvious loop: every query scans every entry."""
    keys, index = (a.ravel() for a in np.broadcast_arrays(entry_keys, entry_index))
    cutoff = np.broadcast_to(cutoff, query_keys.shape)
    count = np.zeros(query_keys.shape, np.int64)
    n_right = np.zeros(query_keys.shape)
    last = np.full(query_keys.shape, -1, np.int64)
    for q in np.ndindex(query_keys.shape):
        seen = (keys == query_keys[q]) & (index < cutoff[q])
        count[q], n_right[q] = seen.sum(), right[index[seen]].sum()
        last[q] = index[seen].max() if seen.any() else -1
    return count, n_right, last


@pytest.mark.parametrize("table", [True, False])
def test_grouped_prefix_matches_a_scan(table: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefix counts per key: the table read (many queries after every entry, e.g. /recommend's
    whole bank) and the binary search (the rest; every query when they are few or the keys too
    large for a table) equal a scan over the entries, dtypes included: cutoffs 0, partial and past
    the end mixed."""
    if table:  # the tables for every query after the entries, however few
        monkeypatch.setattr(learner_stats, "_KEY_TABLE_MIN_QUERIES", 1)
    else:
        monkeypatch.setattr(learner_stats, "_KEY_TABLE_MAX", 0)
    rng = np.random.default_rng(3)
    for _ in range(300):
        n, width = int(rng.integers(0, 12)), int(rng.integers(1, 4))
        entry_keys = rng.integers(0, int(rng.integers(1, 20)), (n, width))
        right = np.zeros(n + 1)
        right[:n] = rng.integers(0, 2, n)
        query_keys = rng.integers(0, 25, (int(rng.integers(0, 15)), width))
        cutoff = rng.integers(0, n + 1, query_keys.shape)
        cutoff[rng.random(query_keys.shape) < 0.5] = n  # after every entry
        got = learner_stats._grouped_prefix(
            entry_keys, np.arange(n)[:, None], right, query_keys, cutoff, n + 1
        )
        want = _grouped_prefix_reference(
            entry_keys, np.arange(n)[:, None], right, query_keys, cutoff
        )
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)


def test_content_groups_pool_equal_part_and_tags() -> None:
    """Two indices share a content group iff their part and tags (in order) are equal."""
    from models.vocab import ItemTable

    items = ItemTable(
        parts=np.array([0, 0, 3, 3, 3, 4]),
        tags=np.array([[0, 0], [0, 0], [1, 2], [1, 2], [2, 1], [1, 2]]),
    )
    group, n_groups = items.content_groups
    assert n_groups == 4
    assert group[0] == group[1] and group[2] == group[3]
    assert len({int(group[1]), int(group[3]), int(group[4]), int(group[5])}) == 4

"""Property tests (hypothesis) with adversarial values: the history stores, the encoding path, and
user ids at the API.

* Stores (in-process and real Redis, side by side): any delivery of events — duplicates, retries,
  any order, any chunking, huge/negative timestamps, unicode and very long user ids — leaves exactly
  what the reference merge (`service.events.merge_events`) says, canonical and duplicate-free, the
  same in both stores, and independent of the delivery order.
* Encoding + ONNX scoring: any stored history (and hand-made histories with NaN/inf/negative elapsed
  times and out-of-range timestamps) encodes to in-range model inputs and finite probabilities.
* API: any user id string is either accepted (charset and KT_USER_ID_MAX_LENGTH respected) or a 422
  naming `user_id` — never a 5xx.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from models.features import CandidateRequest, History, encode
from service.app import create_app
from service.config import USER_ID_RE, Settings
from service.events import (
    EVENT_DTYPE,
    MAX_SAFE_INT,
    canonical_order,
    events_to_history,
    make_events,
    merge_events,
)
from service.predictor import Predictor
from service.store import MemoryHistoryStore, RedisHistoryStore
from tests.redis_required import skip_without_redis
from tests.service.conftest import QUESTION_IDS

REDIS_URL = "redis://127.0.0.1:6379/0"
PROPS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Timestamps from three regimes: a tiny range (many collisions, same-bundle events), the top of the
# exact-integer range (2^53 - 1, the API maximum) and negative values (below the API's minimum:
# the store layer must not care).
timestamps = st.one_of(
    st.integers(0, 40),
    st.integers(MAX_SAFE_INT - 40, MAX_SAFE_INT),
    st.integers(-MAX_SAFE_INT, -MAX_SAFE_INT + 40),
)
# Unicode (any code point but surrogates and braces: braces are the Redis hash tag) and very long.
user_ids = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="{}"), min_size=1),
    st.text(alphabet="ab", min_size=2000, max_size=5000),
).filter(lambda u: "{" not in u and "}" not in u)


@st.composite
def identities(
    draw: st.DrawFn, max_size: int = 25
) -> list[tuple[int, int, int | None, str | None]]:
    """Distinct event identities: (timestamp, question, container, interaction_id)."""
    ts = draw(st.lists(timestamps, min_size=1, max_size=max_size))
    out: dict[Any, tuple[int, int, int | None, str | None]] = {}
    for t in ts:
        q = draw(st.integers(0, 3))
        container = draw(st.one_of(st.none(), st.integers(0, 2)))
        explicit = draw(st.one_of(st.none(), st.text(min_size=1, max_size=12)))
        key = ("i", explicit) if explicit is not None else ("t", t, q)
        out.setdefault(key, (t, q, container, explicit))
    return list(out.values())


def pack(items: list[tuple[int, int, int | None, str | None]]) -> np.ndarray:
    """Events whose payload is a function of their identity (so a retry is an exact retry)."""
    return make_events(
        timestamp=[t for t, _, _, _ in items],
        question_id=[q for _, q, _, _ in items],
        correct=[(t + q) % 2 == 0 for t, q, _, _ in items],
        elapsed_ms=[None if t % 3 == 0 else abs(t) % 100_000 for t, _, _, _ in items],
        had_explanation=[None if t % 5 == 0 else bool(q % 2) for t, q, _, _ in items],
        container_id=[c for _, _, c, _ in items],
        interaction_id=[i for _, _, _, i in items],
    )


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def prefix() -> Iterator[str]:
    """A key prefix on the shared Redis (skip without one); every key under it is removed after."""
    if not _redis_up():
        skip_without_redis("no Redis at 127.0.0.1:6379")
    value = f"kt-prop-{uuid.uuid4().hex[:10]}:"
    yield value
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{value}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def deliveries(
    data: st.DataObject, events: np.ndarray, allow_loss: bool = False
) -> list[np.ndarray]:
    """Random chunks of a random permutation, some chunks repeated (client retries)."""
    order = data.draw(st.permutations(range(len(events))))
    chunks: list[np.ndarray] = []
    i = 0
    while i < len(order):
        size = data.draw(st.integers(1, 6))
        chunk = events[list(order[i : i + size])]
        chunks.append(chunk)
        if data.draw(st.booleans()):
            chunks.append(chunk)  # a retry of the same delivery
        i += size
    return chunks


@PROPS
@given(data=st.data(), items=identities(), cap=st.integers(1, 30), user=user_ids)
def test_stores_agree_with_the_reference_merge(
    prefix: str, data: st.DataObject, items: list[Any], cap: int, user: str
) -> None:
    events = pack(items)
    chunks = deliveries(data, events)

    async def run() -> tuple[list[Any], list[Any], np.ndarray, np.ndarray]:
        memory = MemoryHistoryStore(ttl_s=60)
        store = RedisHistoryStore(REDIS_URL, ttl_s=60, timeout_s=5.0, key_prefix=prefix)
        try:
            got_m = [await memory.append(user, c, cap) for c in chunks]
            got_r = [await store.append(user, c, cap) for c in chunks]
            final_r = await store.get(user)
            await store.delete(user)
            return got_m, got_r, await memory.get(user), final_r
        finally:
            await store.close()

    got_m, got_r, final_m, final_r = asyncio.run(run())
    reference = np.zeros(0, dtype=EVENT_DTYPE)
    for chunk, m, r in zip(chunks, got_m, got_r, strict=True):
        expected = merge_events(reference, chunk, cap)
        for got in (m, r):
            assert (got.recorded, got.duplicates, got.stale) == (
                expected.recorded,
                expected.duplicates,
                expected.stale,
            )
            assert np.array_equal(got.events, expected.events)
        reference = expected.events
    for final in (final_m, final_r):
        assert np.array_equal(final, reference)
        assert np.array_equal(canonical_order(final), np.arange(len(final)))
        assert len(set(final["fingerprint"].tolist())) == len(final) <= cap
    # a function of the *set* delivered: the newest `cap` distinct events in canonical order
    union = events[canonical_order(events)]
    assert np.array_equal(reference, union[max(len(union) - cap, 0) :])


@PROPS
@given(a=user_ids, b=user_ids, items=identities(max_size=5))
def test_user_ids_never_share_a_history(prefix: str, a: str, b: str, items: list[Any]) -> None:
    if a == b:
        return
    events = pack(items)

    async def run() -> list[int]:
        store = RedisHistoryStore(REDIS_URL, ttl_s=60, timeout_s=5.0, key_prefix=prefix)
        memory = MemoryHistoryStore(ttl_s=60)
        try:
            sizes = []
            for s in (store, memory):
                await s.append(a, events, 100)
                sizes += [len(await s.get(a)), len(await s.get(b))]
            await store.delete(a)
            return sizes
        finally:
            await store.close()

    assert asyncio.run(run()) == [len(events), 0, len(events), 0]


# -- encoding + scoring ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predictor(artifact: Path) -> Predictor:
    return Predictor.load(artifact, providers="cpu", threads=1)


def _assert_inputs_in_range(inputs: dict[str, np.ndarray], predictor: Predictor) -> None:
    spec = predictor.spec
    for name, values in inputs.items():
        assert np.all(np.isfinite(values)), name
    assert np.all((inputs["lag"] >= 0) & (inputs["lag"] <= 1))
    assert np.all((inputs["elapsed"] >= 0) & (inputs["elapsed"] <= 1))
    assert np.all((inputs["lag_bucket"] >= 0) & (inputs["lag_bucket"] < spec.n_lag_buckets))
    assert np.all(
        (inputs["elapsed_bucket"] >= 0) & (inputs["elapsed_bucket"] < spec.n_elapsed_buckets)
    )
    assert np.all((inputs["question"] >= 0) & (inputs["question"] < predictor.vocab.size))
    assert np.all(inputs["position"] >= 0) and np.all(inputs["bundle"] >= 0)


@PROPS
@given(
    items=identities(max_size=40),
    moment=st.one_of(st.none(), timestamps),
    k=st.integers(1, 8),
    raw_questions=st.lists(st.integers(0, 2**40), min_size=8, max_size=8),
)
def test_any_stored_history_scores_to_finite_probabilities(
    predictor: Predictor, items: list[Any], moment: int | None, k: int, raw_questions: list[int]
) -> None:
    """Stored events (any timestamps, raw ids known or not) -> History -> inputs -> P in [0, 1]."""
    known = np.asarray(QUESTION_IDS)
    events = pack(items)
    events["question_id"] = np.where(
        events["question_id"] % 2 == 0, known[events["question_id"] % len(known)], 10**12
    )
    events = merge_events(np.zeros(0, EVENT_DTYPE), events, 10_000).events
    if moment is not None:
        events = events[: int(np.searchsorted(events["timestamp"], moment, side="left"))]
    history = events_to_history(events, predictor.vocab)
    candidates = predictor.vocab.to_index(np.asarray(raw_questions[:k], dtype=np.int64))
    inputs = encode(
        history,
        predictor.spec,
        predictor.vocab.item_table(),
        candidates=candidates,
        candidate_timestamp=moment,
    )
    _assert_inputs_in_range(inputs, predictor)
    (p,) = predictor.score([CandidateRequest(history, candidates, moment)])
    assert p.shape == (k,) and np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))


@PROPS
@given(
    n=st.integers(0, 30),
    elapsed=st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True, width=32),
            st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 3.4e38]),
        ),
        min_size=30,
        max_size=30,
    ),
    ts=st.lists(st.integers(-(2**62), 2**62), min_size=30, max_size=30),
    moment=st.one_of(st.none(), st.integers(-(2**62), 2**62)),
)
def test_adversarial_history_values_encode_safely(
    predictor: Predictor, n: int, elapsed: list[float], ts: list[int], moment: int | None
) -> None:
    """NaN/inf/negative elapsed times and huge, negative or out-of-order timestamps (which the API
    never stores, but a corrupt or foreign history could hold) still give in-range inputs."""
    history = History(
        question=np.asarray([1 + i % (predictor.vocab.size - 1) for i in range(n)], np.int64),
        correct=np.asarray([i % 2 for i in range(n)], np.int8),
        timestamp=np.asarray(ts[:n], np.int64),
        bundle=np.arange(n, dtype=np.int64),
        elapsed_ms=np.asarray(elapsed[:n], np.float32),
        explanation=np.asarray([(i % 3) - 1 for i in range(n)], np.int8),
    )
    candidates = np.asarray([1, 2], np.int64)
    inputs = encode(
        history,
        predictor.spec,
        predictor.vocab.item_table(),
        candidates=candidates,
        candidate_timestamp=moment,
    )
    _assert_inputs_in_range(inputs, predictor)
    (p,) = predictor.score([CandidateRequest(history, candidates, moment)])
    assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))


# -- user ids at the API --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(artifact: Path) -> Iterator[TestClient]:
    settings_ = Settings(model_dir=artifact, user_id_max_length=64)
    with TestClient(create_app(settings_), raise_server_exceptions=False) as client:
        yield client


@PROPS
@given(
    user=st.one_of(st.text(max_size=80), st.from_regex(r"[A-Za-z0-9._:@\-]{1,70}", fullmatch=True))
)
def test_any_user_id_is_accepted_or_a_422_naming_it(api: TestClient, user: str) -> None:
    valid = 0 < len(user) <= 64 and USER_ID_RE.match(user) is not None
    body = {"user_id": user, "questions": [{"question_id": QUESTION_IDS[0]}]}
    r = api.post("/predict", json=body)
    assert r.status_code == (200 if valid else 422), (user, r.text)
    if not valid:
        assert r.json()["detail"][0]["field"] == "user_id"
        if len(user) > 64 and USER_ID_RE.match(user):
            assert "KT_USER_ID_MAX_LENGTH=64" in r.json()["detail"][0]["msg"]
    if user not in ("", ".", ".."):
        h = api.get(f"/users/{quote(user, safe='')}/history")  # percent-encoded, any code point
        assert h.status_code in ((200,) if valid else (404, 422)), (user, h.text)

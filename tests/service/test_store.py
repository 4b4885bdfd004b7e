"""One test suite, both history stores (memory and real Redis): identical semantics required."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from service.events import (
    ANSWER,
    EVENT_DTYPE,
    LECTURE,
    AppendResult,
    answers,
    canonical_order,
    make_events,
    make_lecture_events,
    merge_events,
)
from service.store import (
    HistoryStore,
    MemoryHistoryStore,
    RedisHistoryStore,
    StoreUnavailable,
)

pytestmark = pytest.mark.anyio


def events(
    ts: list[int],
    qs: list[int] | None = None,
    *,
    container: list[int | None] | None = None,
    ids: list[str | None] | None = None,
    correct: list[bool] | None = None,
) -> np.ndarray:
    n = len(ts)
    return make_events(
        timestamp=ts,
        question_id=qs if qs is not None else [100 + t % 50 for t in ts],
        correct=correct if correct is not None else [t % 3 == 0 for t in ts],
        elapsed_ms=[None if t % 4 == 0 else 1000 + t for t in ts],
        had_explanation=[None if t % 5 == 0 else bool(t % 2) for t in ts],
        container_id=container if container is not None else [None] * n,
        interaction_id=ids if ids is not None else [None] * n,
    )


def assert_canonical(stored: np.ndarray) -> None:
    assert np.array_equal(canonical_order(stored), np.arange(len(stored))), "not in canonical order"
    assert len(set(stored["fingerprint"].tolist())) == len(stored), "duplicate identities"


async def test_append_get_roundtrip(store_factory: Callable[..., HistoryStore]) -> None:
    store = store_factory()
    try:
        batch = events([10, 20, 30], [5, 6, 7], container=[1, None, 2])
        result = await store.append("alice", batch, max_len=100)
        assert (result.recorded, result.duplicates, result.stale) == (3, 0, 0)
        stored = await store.get("alice")
        assert stored.dtype == EVENT_DTYPE
        assert np.array_equal(stored, result.events)
        assert np.array_equal(stored, batch)
        assert len(await store.get("nobody")) == 0
    finally:
        await store.close()


async def test_idempotent_retries(store_factory: Callable[..., HistoryStore]) -> None:
    store = store_factory()
    try:
        batch = events([1, 2, 3, 4])
        await store.append("u1", batch, max_len=100)
        retry = await store.append("u1", batch, max_len=100)
        assert (retry.recorded, retry.duplicates) == (0, 4)
        # a retry with a different payload is still the same identity: the first delivery wins
        flipped = events([2], correct=[not bool(batch["correct"][1])])
        again = await store.append("u1", flipped, max_len=100)
        assert (again.recorded, again.duplicates) == (0, 1)
        assert np.array_equal(await store.get("u1"), batch)
        # duplicates inside one delivery count once
        inner = await store.append("u1", events([9, 9, 9], [1, 1, 1]), max_len=100)
        assert (inner.recorded, inner.duplicates) == (1, 2)
    finally:
        await store.close()


async def test_explicit_interaction_id_is_the_identity(
    store_factory: Callable[..., HistoryStore],
) -> None:
    store = store_factory()
    try:
        # same (timestamp, question) but distinct ids: two attempts, both kept
        r = await store.append("u", events([5, 5], [1, 1], ids=["a", "b"]), max_len=10)
        assert r.recorded == 2
        # same id, different timestamp: a retry
        r = await store.append("u", events([6], [2], ids=["a"]), max_len=10)
        assert (r.recorded, r.duplicates) == (0, 1)
        assert len(await store.get("u")) == 2
    finally:
        await store.close()


async def test_out_of_order_deliveries_give_the_canonical_history(
    store_factory: Callable[..., HistoryStore],
) -> None:
    store = store_factory()
    rng = np.random.default_rng(0)
    ts = sorted(rng.integers(0, 10_000, size=40).tolist())
    all_events = events(ts, container=[t // 100 for t in ts])
    try:
        for k, user in enumerate(["inorder", "shuffled", "reversed"]):
            order = np.arange(len(all_events))
            if k == 1:
                order = rng.permutation(order)
            elif k == 2:
                order = order[::-1]
            for chunk in np.array_split(order, 7):
                await store.append(user, all_events[chunk], max_len=1000)
        a, b, c = await store.get_many(["inorder", "shuffled", "reversed"])
        assert_canonical(a)
        assert np.array_equal(a, b) and np.array_equal(a, c)
        assert len(a) == len(all_events)
    finally:
        await store.close()


async def test_cap_keeps_newest_and_reports_stale(
    store_factory: Callable[..., HistoryStore],
) -> None:
    store = store_factory()
    try:
        await store.append("u", events(list(range(100, 130))), max_len=10)
        stored = await store.get("u")
        assert stored["timestamp"].tolist() == list(range(120, 130))
        late = await store.append("u", events([5, 125_000]), max_len=10)  # one too old, one new
        assert (late.recorded, late.stale, late.duplicates) == (1, 1, 0)
        assert late.events["timestamp"].tolist() == list(range(121, 130)) + [125_000]
        # a trimmed event delivered again stays out (no resurrection, no duplicate)
        again = await store.append("u", events([100]), max_len=10)
        assert (again.recorded, again.stale) == (0, 1)
        assert_canonical(again.events)
    finally:
        await store.close()


async def test_matches_reference_merge(store_factory: Callable[..., HistoryStore]) -> None:
    """The store (Lua for Redis) agrees with `merge_events` on random deliveries, counts included."""
    store = store_factory()
    rng = np.random.default_rng(1)
    reference = np.zeros(0, dtype=EVENT_DTYPE)
    try:
        for _ in range(25):
            n = int(rng.integers(1, 8))
            ts = rng.integers(0, 60, size=n).tolist()
            batch = events(
                ts,
                rng.integers(0, 4, size=n).tolist(),
                container=[None if x < 0 else int(x) for x in rng.integers(-1, 3, size=n)],
            )
            expected = merge_events(reference, batch, max_len=20)
            got = await store.append("r", batch, max_len=20)
            assert (got.recorded, got.duplicates, got.stale) == (
                expected.recorded,
                expected.duplicates,
                expected.stale,
            )
            assert np.array_equal(got.events, expected.events)
            reference = expected.events
        assert np.array_equal(await store.get("r"), reference)
    finally:
        await store.close()


async def test_64_concurrent_writers(store_factory: Callable[..., HistoryStore]) -> None:
    """64 overlapping appends under `asyncio.gather`: every distinct event once, accounting exact.

    For Redis the writes really interleave (each append awaits the network; the Lua script is what
    makes each one atomic). The memory store never awaits inside `append`, so here the event loop
    runs them one after another: for it this checks the merge accounting, and
    `test_memory_store_threads_interleave` checks its lock with real threads.
    """
    store = store_factory()
    cap = 50
    # 64 writers, overlapping deliveries: most events are sent by more than one writer
    batches = [events(sorted({(w * 7 + j * 13) % 200 for j in range(6)})) for w in range(64)]
    sent = sum(len(b) for b in batches)
    union = np.unique(np.concatenate([b["timestamp"] for b in batches]))
    try:
        # uncapped: every distinct event is recorded exactly once
        results = await asyncio.gather(*(store.append("wide", b, max_len=1000) for b in batches))
        assert sum(r.recorded for r in results) == len(union)
        assert sum(r.duplicates for r in results) == sent - len(union)
        wide = await store.get("wide")
        assert_canonical(wide)
        assert wide["timestamp"].tolist() == union.tolist()

        # capped: the newest `cap` distinct events, sorted, no duplicates, whatever the interleaving
        results = await asyncio.gather(*(store.append("hot", b, max_len=cap) for b in batches))
        stored = await store.get("hot")
        assert_canonical(stored)
        assert stored["timestamp"].tolist() == union[-cap:].tolist()
        assert sum(r.recorded + r.duplicates + r.stale for r in results) == sent
        assert all(len(r.events) <= cap for r in results)
    finally:
        await store.close()


def test_memory_store_threads_interleave() -> None:
    """64 OS threads append overlapping batches to one learner at once (the service's worker threads
    may call the store): without the store's lock, read-merge-write races lose events."""
    store = MemoryHistoryStore(ttl_s=3600)
    batches = [events(sorted({(w * 7 + j * 13) % 200 for j in range(6)})) for w in range(64)]
    union = np.unique(np.concatenate([b["timestamp"] for b in batches]))
    start = threading.Barrier(len(batches))
    results: list[AppendResult] = []

    def write(batch: np.ndarray) -> None:
        start.wait()
        results.append(asyncio.run(store.append("hot", batch, max_len=1000)))

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up if possible
    try:
        threads = [threading.Thread(target=write, args=(b,)) for b in batches]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(old_interval)
    stored = asyncio.run(store.get("hot"))
    assert_canonical(stored)
    assert stored["timestamp"].tolist() == union.tolist()
    assert sum(r.recorded for r in results) == len(union)


async def test_ttl_expiry_and_refresh(store_factory: Callable[..., HistoryStore]) -> None:
    """A write sets the TTL and every write, a duplicate too, refreshes it; then it expires.

    The clock is read around every call instead of assuming how long a sleep or a call takes: a
    trial counts only if the read provably came after the first write's TTL ran out and before the
    refreshed one did (a stalled machine makes a trial inconclusive and it is run again).
    """
    ttl_s = 0.6
    store = store_factory(ttl_s=ttl_s)
    try:
        for trial in range(5):
            user = f"t{trial}"
            await store.append(user, events([1]), max_len=10)
            first_done = time.monotonic()  # the first TTL ends by first_done + ttl_s
            await asyncio.sleep(ttl_s / 2)
            refreshed = time.monotonic()  # the refreshed TTL ends at refreshed + ttl_s or later
            await store.append(user, events([1]), max_len=10)
            await asyncio.sleep(max(0.0, first_done + ttl_s * 1.1 - time.monotonic()))
            present = len(await store.get(user))
            read_done = time.monotonic()
            if read_done < refreshed + ttl_s:
                break
        else:
            pytest.fail("5 trials stalled past the TTL window: the machine is too loaded to tell")
        assert present == 1, "a duplicate write did not refresh the TTL"
        deadline = time.monotonic() + 10
        while len(await store.get(user)) == 1:
            assert time.monotonic() < deadline, "the history never expired"
            await asyncio.sleep(0.02)
        assert time.monotonic() >= refreshed + ttl_s, "expired before its TTL"
    finally:
        await store.close()


async def test_erasure(store_factory: Callable[..., HistoryStore]) -> None:
    store = store_factory()
    try:
        await store.append("gone", events([1, 2]), max_len=10)
        await store.append("kept", events([1]), max_len=10)
        assert await store.delete("gone") is True
        assert len(await store.get("gone")) == 0
        assert await store.delete("gone") is False
        assert len(await store.get("kept")) == 1
        # after erasure the learner starts afresh
        assert (await store.append("gone", events([1]), max_len=10)).recorded == 1
    finally:
        await store.close()


async def test_rejects_brace_user_ids(store_factory: Callable[..., HistoryStore]) -> None:
    store = store_factory()
    try:
        with pytest.raises(ValueError):
            await store.get("a{b}")
    finally:
        await store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_redis_down_raises_store_unavailable_quickly() -> None:
    store = RedisHistoryStore(f"redis://127.0.0.1:{_free_port()}/0", ttl_s=10, timeout_s=0.3)
    try:
        start = time.perf_counter()
        for call in (store.ping(), store.get("u"), store.append("u", events([1]), max_len=5)):
            with pytest.raises(StoreUnavailable):
                await call
        assert time.perf_counter() - start < 2.0
    finally:
        await store.close()


async def test_recent_users_newest_first_without_erased_ones(
    store_factory: Callable[..., HistoryStore],
) -> None:
    store = store_factory()
    try:
        assert await store.recent_users(10) == []
        for user in ["ann", "bob", "cy"]:
            await store.append(user, events([10, 20]), max_len=100)
            await asyncio.sleep(0.002)  # distinct millisecond write times (ordering, not timing)
        await store.append("ann", events([30]), max_len=100)  # ann wrote last
        recent = await store.recent_users(10)
        assert recent is not None
        assert [u for u, _ in recent] == ["ann", "cy", "bob"]
        now_ms = time.time_ns() // 1_000_000
        assert all(now_ms - 60_000 < ms <= now_ms for _, ms in recent)
        assert [u for u, _ in await store.recent_users(2)] == ["ann", "cy"]
        assert await store.delete("cy")
        assert [u for u, _ in await store.recent_users(10)] == ["ann", "bob"]
    finally:
        await store.close()


async def test_recent_users_leave_out_expired_histories(
    store_factory: Callable[..., HistoryStore],
) -> None:
    store = store_factory(ttl_s=0.3)
    try:
        await store.append("short-lived", events([10]), max_len=100)
        assert [u for u, _ in await store.recent_users(5) or []] == ["short-lived"]
        deadline = time.monotonic() + 10
        while len(await store.get("short-lived")) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(await store.get("short-lived")) == 0
        assert await store.recent_users(5) == []
    finally:
        await store.close()


async def test_lecture_events_keep_their_kind_and_identity(
    store_factory: Callable[..., HistoryStore],
) -> None:
    """Both stores (the Lua script treats records as opaque past their sort keys) keep a lecture a
    lecture; a lecture and an answer with the same id and time are two identities; records
    written before lectures existed (kind byte 0) read as answers."""
    store = store_factory()
    try:
        answers_ = events([10, 20], [5, 6])
        lectures = make_lecture_events([15, 20], [5, 6], [None, None])  # (20, 6): twice
        result = await store.append("lena", np.concatenate([answers_, lectures]), max_len=100)
        assert (result.recorded, result.duplicates) == (4, 0)
        stored = await store.get("lena")
        assert_canonical(stored)
        kinds = sorted(zip(stored["timestamp"].tolist(), stored["kind"].tolist(), strict=True))
        assert kinds == [(10, ANSWER), (15, LECTURE), (20, ANSWER), (20, LECTURE)]
        assert np.array_equal(answers(stored), answers_)
        again = await store.append("lena", lectures[:1], max_len=100)
        assert (again.recorded, again.duplicates) == (0, 1)
    finally:
        await store.close()
    assert EVENT_DTYPE.itemsize == 40 and EVENT_DTYPE.fields["kind"][1] == 38  # the old spare byte

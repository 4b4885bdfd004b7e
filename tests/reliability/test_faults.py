"""Faults against real processes: `python -m service` (uvicorn) on a redis-server the test owns.

* Redis SIGKILLed during load -> only 503 + Retry-After (bounded latency), readiness false; after
  Redis is back, ready again within 2 s, without restarting the service.
* Redis with AOF (`appendfsync always`) SIGKILLed during ingest and restarted -> every
  acknowledged interaction is still there; retries of the unacknowledged ones never duplicate.
* The service SIGKILLed during ingest -> no acknowledged interaction lost; after a restart, client
  retries of every unacknowledged request leave each interaction exactly once.
* Redis stalled (`DEBUG SLEEP`) -> every endpoint answers 503 at the configured deadline; after the
  stall nothing is mixed up between learners and a timed-out write retried is stored once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bench.procs import RedisServer, ServiceProcess
from tests.service.conftest import QUESTION_IDS

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)
Q = QUESTION_IDS
CAP_SAFE_EVENTS = 20  # per learner: below the tiny model's window + KT_HISTORY_EXTRA (12 + 16)
ACKED_BEFORE_FAULT = 200  # events acknowledged before a fault is injected
# Deadlines for the load's progress (never durations the test waits out): generous, so that a much
# slower machine only takes longer; a faster one cannot outrun the unbounded load.
PROGRESS_DEADLINE_S = 60.0


def service_env(artifact: Path, redis_url: str, timeout_s: float = 0.3) -> dict[str, str]:
    return {
        "KT_MODEL_DIR": str(artifact),
        "KT_REDIS_URL": redis_url,
        "KT_REDIS_TIMEOUT_S": str(timeout_s),
        "KT_RETRY_AFTER_S": "1",
        "KT_ORT_THREADS": "1",
    }


@pytest.fixture
def service_factory() -> Iterator[Any]:
    started: list[ServiceProcess] = []

    def make(env: dict[str, str]) -> ServiceProcess:
        svc = ServiceProcess(env)
        started.append(svc)
        return svc.start()

    yield make
    for svc in started:
        svc.cleanup()


def event(user_no: int, k: int) -> dict[str, Any]:
    """The k-th interaction of learner `user_no` (its identity is (timestamp, question_id))."""
    return {
        "question_id": Q[(user_no + k) % len(Q)],
        "timestamp": 1_000_000 + 10_000 * k,
        "correct": (user_no + k) % 3 != 0,
        "elapsed_time_ms": 1000 + k,
    }


@dataclass
class Ledger:
    """What the clients sent and what the service acknowledged (thread-safe).

    `calls` keeps (start, end, status) per request in the order they finished (monotonic clock;
    status -1 = no answer), so a test can select the requests that started after a fault."""

    acked: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    unacked: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    calls: list[tuple[float, float, int]] = field(default_factory=list)
    acked_events: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, user: str, items: list[dict[str, Any]], status: int | None, start: float) -> None:
        end = time.monotonic()
        with self.lock:
            self.calls.append((start, end, status if status is not None else -1))
            if status == 200:
                self.acked.setdefault(user, []).extend(items)
                self.acked_events += len(items)
            else:
                self.unacked.append((user, items))

    @property
    def statuses(self) -> list[int]:
        with self.lock:
            return [status for _, _, status in self.calls]

    @property
    def latencies(self) -> list[float]:
        with self.lock:
            return [end - start for start, end, _ in self.calls]

    def started_after(self, t: float, until: float = float("inf")) -> list[int]:
        """Statuses of the finished requests sent after `t` that ended before `until`."""
        with self.lock:
            return [status for start, end, status in self.calls if start > t and end < until]


class IngestLoad:
    """Writer threads posting learners' events in order, `per_request` per call, until stopped.

    The load is unbounded, so a fault can never arrive after it has finished, however fast the
    machine: each thread keeps `users / threads` learners active and replaces a learner that has
    sent CAP_SAFE_EVENTS events with a new one. Tests trigger faults from the ledger's progress.
    """

    def __init__(
        self,
        base_url: str,
        ledger: Ledger,
        users: int,
        threads: int = 4,
        per_request: int = 1,
        mix_predict: bool = False,
    ) -> None:
        self.url = base_url
        self.ledger = ledger
        self.users = users
        self.per_request = per_request
        self.mix_predict = mix_predict
        self.stop = threading.Event()
        self.predict_statuses: list[int] = []
        self.n_threads = threads
        self.threads = [
            threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)
        ]

    def _run(self, t: int) -> None:
        # thread t owns learners t, t + n, t + 2n, ... (n = thread count): never shared
        active = list(range(t, self.users, self.n_threads))
        next_new = t + self.n_threads * len(active)
        next_k = dict.fromkeys(active, 0)
        with httpx.Client(base_url=self.url, timeout=3.0) as http:
            i = 0
            while not self.stop.is_set():
                slot = i % len(active)
                i += 1
                u = active[slot]
                k = next_k[u]
                items = [event(u, k + j) for j in range(self.per_request)]
                items = items[: CAP_SAFE_EVENTS - k]
                next_k[u] = k + len(items)
                if next_k[u] >= CAP_SAFE_EVENTS:  # retire the learner, start a new one
                    active[slot] = next_new
                    next_k[next_new] = 0
                    next_new += self.n_threads
                user = f"learner-{u}"
                start = time.monotonic()
                status: int | None
                try:
                    r = http.post("/interactions", json={"user_id": user, "interactions": items})
                    status = r.status_code
                except httpx.TransportError:
                    status = None
                self.ledger.add(user, items, status, start)
                if self.mix_predict:
                    with contextlib.suppress(httpx.TransportError):
                        body = {"user_id": user, "questions": [{"question_id": Q[0]}]}
                        p = http.post("/predict", json=body)
                        with self.ledger.lock:
                            self.predict_statuses.append(p.status_code)

    def __enter__(self) -> IngestLoad:
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for th in self.threads:
            th.join(timeout=20)


def stored_keys(http: httpx.Client, user: str) -> list[tuple[int, int]]:
    r = http.get(f"/users/{user}/history")
    assert r.status_code == 200, r.text
    return [(i["timestamp"], i["question_id"]) for i in r.json()["interactions"]]


def identity(item: dict[str, Any]) -> tuple[int, int]:
    return (item["timestamp"], item["question_id"])


def wait_for(predicate: Any, timeout_s: float, step_s: float = 0.02) -> float:
    """Seconds until `predicate()` held; fails after `timeout_s`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(step_s)
    return time.monotonic() - start


def ready(http: httpx.Client) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return http.get("/readyz").status_code == 200
    return False


# -- Redis dies under load ------------------------------------------------------------------------
def test_redis_killed_during_load_gives_503_then_recovers_within_2s(
    artifact: Path, redis_server: RedisServer, service_factory: Any
) -> None:
    svc = service_factory(service_env(artifact, redis_server.url, timeout_s=0.3))
    pid = svc.proc.pid
    ledger = Ledger()
    with httpx.Client(base_url=svc.url, timeout=3.0) as http:
        with IngestLoad(svc.url, ledger, users=400, threads=3, mix_predict=True) as load:
            wait_for(lambda: ledger.acked_events >= ACKED_BEFORE_FAULT, PROGRESS_DEADLINE_S)
            redis_server.kill()  # returns once the process is gone
            killed_at = time.monotonic()
            # the outage is what the requests sent after the kill saw: wait for several per thread
            wait_for(
                lambda: len(ledger.started_after(killed_at)) >= 3 * load.n_threads,
                PROGRESS_DEADLINE_S,
            )
            r = http.get("/readyz")
            assert r.status_code == 503 and r.json()["store_ok"] is False, r.text
            r = http.post("/predict", json={"user_id": "x", "questions": [{"question_id": Q[0]}]})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert http.get("/healthz").status_code == 200  # alive, not ready
            during = ledger.started_after(killed_at, until=time.monotonic())

            redis_server.start()  # same port, empty; the service is not touched
            recovery = wait_for(lambda: ready(http), timeout_s=2.0)
            back = time.monotonic()
            wait_for(lambda: 200 in ledger.started_after(back), PROGRESS_DEADLINE_S)
            load.stop.set()
        logger.info("recovery after Redis restart: %.3f s", recovery)
    assert svc.proc is not None and svc.proc.pid == pid and svc.proc.poll() is None
    assert during and set(during) == {503}, f"statuses during the outage: {set(during)}"
    assert set(ledger.statuses) <= {200, 503}, set(ledger.statuses)
    assert set(load.predict_statuses) <= {200, 503}
    assert max(ledger.latencies) < 2.5, "a request hung past the deadline"  # client timeout 3 s
    assert recovery <= 2.0


# -- Redis crash with AOF -------------------------------------------------------------------------
def test_aof_redis_crash_loses_no_acknowledged_interaction(
    artifact: Path, aof_redis_server: RedisServer, service_factory: Any
) -> None:
    svc = service_factory(service_env(artifact, aof_redis_server.url, timeout_s=0.5))
    ledger = Ledger()
    with IngestLoad(svc.url, ledger, users=300, threads=4, per_request=2) as load:
        wait_for(lambda: ledger.acked_events >= ACKED_BEFORE_FAULT, PROGRESS_DEADLINE_S)
        aof_redis_server.kill()  # SIGKILL mid-load: no shutdown save
        killed_at = time.monotonic()
        # writes sent while Redis is down are not acknowledged: wait until every thread had some
        wait_for(
            lambda: len(ledger.started_after(killed_at)) >= 2 * load.n_threads,
            PROGRESS_DEADLINE_S,
        )
        aof_redis_server.start()  # replays the AOF
        with httpx.Client(base_url=svc.url, timeout=3.0) as http:
            wait_for(lambda: ready(http), timeout_s=2.0)
        back = time.monotonic()
        # the load goes on after the restart, on top of the replayed data
        wait_for(lambda: 200 in ledger.started_after(back), PROGRESS_DEADLINE_S)
        load.stop.set()
    acked_events = ledger.acked_events
    assert acked_events >= ACKED_BEFORE_FAULT and ledger.unacked, (
        acked_events,
        len(ledger.unacked),
    )
    with httpx.Client(base_url=svc.url, timeout=5.0) as http:
        for user, items in ledger.acked.items():
            stored = set(stored_keys(http, user))
            missing = [identity(i) for i in items if identity(i) not in stored]
            assert not missing, f"{user}: acknowledged but lost after the crash: {missing}"
        # the unacknowledged ones, retried, are stored exactly once
        for user, items in ledger.unacked:
            r = http.post("/interactions", json={"user_id": user, "interactions": items})
            assert r.status_code == 200
        sent: dict[str, set[tuple[int, int]]] = {}
        for user, items in [*ledger.acked.items(), *ledger.unacked]:
            sent.setdefault(user, set()).update(identity(i) for i in items)
        for user, ids in sent.items():
            stored_list = stored_keys(http, user)
            assert len(stored_list) == len(set(stored_list)) == len(ids), user
            assert set(stored_list) == ids
    logger.info(
        "AOF crash: %d acknowledged events kept, %d requests unacknowledged and retried",
        acked_events,
        len(ledger.unacked),
    )


# -- the service dies during ingest ---------------------------------------------------------------
def test_service_sigkill_during_ingest_loses_nothing_and_retries_do_not_duplicate(
    artifact: Path, redis_server: RedisServer, service_factory: Any
) -> None:
    env = service_env(artifact, redis_server.url, timeout_s=1.0)
    svc = service_factory(env)
    ledger = Ledger()
    with IngestLoad(svc.url, ledger, users=300, threads=4, per_request=3) as load:
        wait_for(lambda: ledger.acked_events >= ACKED_BEFORE_FAULT, PROGRESS_DEADLINE_S)
        svc.kill(signal.SIGKILL)  # in-flight requests die unanswered
        killed_at = time.monotonic()
        # every thread's next request finds no server: wait until each has seen that
        wait_for(
            lambda: len(ledger.started_after(killed_at)) >= load.n_threads, PROGRESS_DEADLINE_S
        )
        load.stop.set()
    acked_events = ledger.acked_events
    unanswered = [s for s in ledger.statuses if s == -1]
    in_flight = [
        status for start, end, status in ledger.calls if status == -1 and start < killed_at
    ]
    assert acked_events >= ACKED_BEFORE_FAULT and unanswered, (acked_events, len(unanswered))

    svc2 = service_factory(env)  # a fresh process on the same Redis
    duplicates = 0
    with httpx.Client(base_url=svc2.url, timeout=5.0) as http:
        for user, items in ledger.acked.items():
            stored = set(stored_keys(http, user))
            assert all(identity(i) in stored for i in items), f"{user}: acknowledged but lost"
        for user, items in ledger.unacked:  # client retries, same identities
            r = http.post("/interactions", json={"user_id": user, "interactions": items})
            assert r.status_code == 200, r.text
            duplicates += r.json()["duplicates"]
        sent: dict[str, set[tuple[int, int]]] = {}
        for user, items in [*ledger.acked.items(), *ledger.unacked]:
            sent.setdefault(user, set()).update(identity(i) for i in items)
        for user, ids in sent.items():
            stored_list = stored_keys(http, user)
            assert len(stored_list) == len(set(stored_list)), f"{user}: duplicate after retry"
            assert set(stored_list) == ids, user
    logger.info(
        "service SIGKILL: %d acknowledged events kept; %d unanswered requests (%d in flight at the "
        "kill) retried, %d of their events had been applied before the kill (counted as duplicates)",
        acked_events,
        len(unanswered),
        len(in_flight),
        duplicates,
    )


# -- Redis stalls ---------------------------------------------------------------------------------
def test_stalled_redis_times_out_at_the_deadline_and_mixes_nothing_up(
    artifact: Path, redis_server: RedisServer, service_factory: Any
) -> None:
    deadline_s = 0.25
    svc = service_factory(service_env(artifact, redis_server.url, timeout_s=deadline_s))
    users = [f"stall-{i}" for i in range(6)]
    with httpx.Client(base_url=svc.url, timeout=5.0) as http:
        for n, user in enumerate(users):
            items = [event(n, k) for k in range(n + 1)]  # learner n has n + 1 events
            assert (
                http.post(
                    "/interactions", json={"user_id": user, "interactions": items}
                ).status_code
                == 200
            )

        # The stall must outlast the probe and every call below at its slowest allowed (deadline +
        # 0.5 s each): it is checked to still run after the last call.
        probe_timeout_s = 0.2
        stall_s = probe_timeout_s + 6 * (deadline_s + 0.5) + 0.5
        admin = redis_server.client(socket_timeout=stall_s + 10)
        stall_sent = threading.Event()

        def stall_redis() -> None:
            stall_sent.set()
            admin.execute_command("DEBUG", "SLEEP", str(stall_s))

        stall = threading.Thread(target=stall_redis)
        stall.start()
        # no retries: redis-py's default retry backs off for seconds on a timeout
        probe = redis_server.client(socket_timeout=probe_timeout_s, retry=Retry(NoBackoff(), 0))

        def stalled() -> bool:
            try:
                probe.ping()
            except redis.TimeoutError:
                return stall_sent.is_set()
            return False

        wait_for(stalled, PROGRESS_DEADLINE_S)
        probe.close()
        late_write = {"user_id": users[0], "interactions": [event(0, 50)]}
        calls = [
            ("POST", "/interactions", late_write),
            ("POST", "/predict", {"user_id": users[1], "questions": [{"question_id": Q[0]}]}),
            (
                "POST",
                "/predict/batch",
                {"requests": [{"user_id": u, "questions": [{"question_id": Q[1]}]} for u in users]},
            ),
            ("GET", f"/users/{users[2]}/history", None),
            ("DELETE", "/users/nobody", None),
            ("GET", "/readyz", None),
        ]
        for method, path, body in calls:
            start = time.perf_counter()
            r = http.request(method, path, json=body)
            elapsed = time.perf_counter() - start
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert deadline_s * 0.8 <= elapsed <= deadline_s + 0.5, (path, elapsed)
            if path != "/readyz":
                assert r.headers["retry-after"] == "1" and "unavailable" in r.json()["detail"]
        assert stall.is_alive(), "the stall ended before the last call: the test proved nothing"
        stall.join()
        admin.close()

        wait_for(lambda: ready(http), timeout_s=2.0)
        # answers are not shifted between requests (stale replies on reused connections)
        results: dict[str, int] = {}

        def read(user: str) -> None:
            with httpx.Client(base_url=svc.url, timeout=5.0) as c:
                for _ in range(20):
                    r = c.get(f"/users/{user}/history").json()
                    assert r["user_id"] == user
                    results[user] = r["history_length"]
                    if results[user] != users.index(user) + 1 + (user == users[0]):
                        break

        threads = [threading.Thread(target=read, args=(u,)) for u in users]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        # the timed-out write reached Redis after the stall (503 does not mean "not applied"):
        # its retry is a duplicate, never a second copy
        applied = results[users[0]] == 2
        expected = {u: n + 1 for n, u in enumerate(users)} | {users[0]: 1 + int(applied)}
        assert results == expected
        retry = http.post("/interactions", json=late_write).json()
        assert (retry["recorded"], retry["duplicates"]) == ((0, 1) if applied else (1, 0))
        assert http.get(f"/users/{users[0]}/history").json()["history_length"] == 2
    logger.info("stall: timed-out write applied after the stall: %s", applied)


def test_service_log_has_no_user_ids_or_payloads(
    artifact: Path, redis_server: RedisServer, service_factory: Any
) -> None:
    """The real process log (uvicorn + service, info level) across writes, reads, errors and an
    outage: no user id, no history values, no API key."""
    key = "sekret-api-key-9f8e7d"
    env = service_env(artifact, redis_server.url) | {"KT_API_KEY": key, "KT_LOG_LEVEL": "debug"}
    svc = service_factory(env)
    user = "private-learner-7731"
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=svc.url, timeout=3.0, headers=auth) as http:
        items = [event(7, k) | {"elapsed_time_ms": 987_654} for k in range(3)]
        assert (
            http.post("/interactions", json={"user_id": user, "interactions": items}).status_code
            == 200
        )
        http.post("/predict", json={"user_id": user, "questions": [{"question_id": 555_444}]})
        http.get(f"/users/{user}/history")
        http.post("/predict", json={"user_id": user}, headers={"Authorization": "Bearer wrong-key"})
        http.post(
            "/interactions", content=b"\xff\xfe", headers={"content-type": "application/json"}
        )
        redis_server.kill()
        http.post("/interactions", json={"user_id": user, "interactions": items})
        http.delete(f"/users/{user}")
    svc.kill(signal.SIGTERM)
    text = svc.log_text()
    assert "history store unavailable" in text or "redis" in text.lower()  # the log is captured
    for secret in (user, key, "wrong-key", "987654", "555444"):
        assert secret not in text, f"{secret!r} leaked into the service log"
    assert os.path.getsize(svc.log_path) > 0

"""The app on a real Redis: the shared one (own key prefix), and one this test starts, stops, pauses
and restarts on a spare port (503 + Retry-After, readiness false, recovery without an app restart)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.redis_required import skip_without_redis
from tests.service.conftest import QUESTION_IDS
from tests.service.test_api import ia, server_timing, some_history
from tests.service.test_store import _free_port

Q = QUESTION_IDS


@pytest.fixture
def redis_client(artifact: Path, redis_url: str, key_prefix: str) -> Iterator[TestClient]:
    settings = Settings(
        model_dir=artifact, redis_url=redis_url, key_prefix=key_prefix, redis_timeout_s=2.0
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_flow_on_redis(redis_client: TestClient, redis_url: str, key_prefix: str) -> None:
    c = redis_client
    ready = c.get("/readyz").json()
    assert ready["ready"] and ready["store"] == "redis"
    r = c.post("/interactions", json={"user_id": "rx", "interactions": some_history(6)})
    assert r.json()["recorded"] == 6
    assert (
        c.post("/interactions", json={"user_id": "rx", "interactions": some_history(6)}).json()[
            "duplicates"
        ]
        == 6
    )
    body = {"user_id": "rx", "questions": [{"question_id": q, "timestamp": 10**7} for q in Q[:4]]}
    response = c.post("/predict", json=body)
    pred = response.json()
    assert pred["history_length"] == 6 and len(pred["predictions"]) == 4
    timing = server_timing(response)  # the Redis GET's round trip is in the store's share
    assert timing["store"] > 0 and timing["model"] > 0
    # the stored key carries the hash tag, packed binary (40 bytes per event), and a TTL
    raw = redis.Redis.from_url(redis_url)
    key = f"{key_prefix}{{rx}}:events"
    assert raw.strlen(key) == 6 * 40 and 0 < raw.ttl(key) <= Settings().history_ttl_s
    assert c.delete("/users/rx").json()["deleted"] is True
    assert raw.exists(key) == 0
    raw.close()


class RedisProcess:
    """A throwaway redis-server on a spare loopback port (no persistence)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    return
            except redis.RedisError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc = None


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None:
        skip_without_redis("redis-server not installed")
    server = RedisProcess()
    server.start()
    yield server
    server.stop()


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def test_redis_outage_503_then_recovery(artifact: Path, own_redis: RedisProcess) -> None:
    settings = Settings(
        model_dir=artifact, redis_url=own_redis.url, redis_timeout_s=0.3, retry_after_s=2
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        items = {"user_id": "o", "interactions": some_history(3)}
        assert c.post("/interactions", json=items).status_code == 200

        own_redis.stop()
        predict = {"user_id": "o", "questions": [{"question_id": Q[0]}]}
        for method, path, body in (
            ("post", "/interactions", items),
            ("post", "/predict", predict),
            ("get", "/users/o/history", None),
            ("delete", "/users/o", None),
        ):
            r, elapsed = _timed(lambda m=method, p=path, b=body: c.request(m, p, json=b))
            assert r.status_code == 503, (path, r.text)
            assert r.headers["retry-after"] == "2"
            assert "history store unavailable" in r.json()["detail"]
            assert elapsed < 1.5, (path, elapsed)
        ready = c.get("/readyz")
        assert (
            ready.status_code == 503
            and ready.json()["store_ok"] is False
            and ready.json()["model_loaded"]
        )
        assert c.get("/healthz").status_code == 200  # alive, just not ready

        own_redis.start()  # same port, empty (no persistence): the app reconnects by itself
        deadline = time.monotonic() + 2.0
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "no recovery within 2 s"
            time.sleep(0.05)
        assert c.post("/interactions", json=items).json()["recorded"] == 3
        assert c.post("/predict", json=predict).json()["history_length"] == 3
        assert 'outcome="unavailable"' in c.get("/metrics").text


def test_paused_redis_times_out_at_the_deadline(artifact: Path, own_redis: RedisProcess) -> None:
    settings = Settings(model_dir=artifact, redis_url=own_redis.url, redis_timeout_s=0.3)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        body = {"user_id": "s", "interactions": [ia(1, Q[0])]}
        assert c.post("/interactions", json=body).status_code == 200
        admin = redis.Redis(port=own_redis.port)
        admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        r, elapsed = _timed(lambda: c.post("/interactions", json=body))
        assert r.status_code == 503 and 0.25 < elapsed < 1.2, elapsed
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
        deadline = time.monotonic() + 2.0
        while c.post("/interactions", json=body).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_registered_questions_are_shared_by_workers_and_survive_restarts(
    artifact: Path, redis_url: str, key_prefix: str
) -> None:
    """Two apps on one Redis stand for two workers (or replicas): a question registered through one
    is known to the other on first use, and to an app started afterwards (a restart)."""
    settings = Settings(model_dir=artifact, redis_url=redis_url, key_prefix=key_prefix)
    new_id = 5_001
    with (
        TestClient(create_app(settings), raise_server_exceptions=False) as a,
        TestClient(create_app(settings), raise_server_exceptions=False) as b,
    ):
        before = b.post("/predict", json={"user_id": "w", "questions": [{"question_id": new_id}]})
        assert before.status_code == 422  # unknown everywhere yet
        r = a.put(f"/questions/{new_id}", json={"part": 2, "tags": [1], "bundle_id": 9})
        assert r.status_code == 201, r.text
        after = b.post("/predict", json={"user_id": "w", "questions": [{"question_id": new_id}]})
        assert after.status_code == 200, after.text
        assert after.json()["predictions"][0]["cold_start"] is True
        p_a = a.post("/predict", json={"user_id": "w", "questions": [{"question_id": new_id}]})
        assert p_a.json()["predictions"] == after.json()["predictions"]
    with TestClient(create_app(settings), raise_server_exceptions=False) as restarted:
        entry = restarted.get(f"/questions/{new_id}").json()
        assert entry["cold_start"] is True and entry["bundle_id"] == 9 and entry["tags"] == [1]
    raw = redis.Redis.from_url(redis_url)
    assert raw.hkeys(f"{key_prefix}questions") == [str(new_id).encode()]
    raw.close()

"""Redis Cluster: the history store on a real local 3-master cluster started by this module
(`redis-server --cluster-enabled yes` x 3 on ports 7100-7199 + `redis-cli --cluster create`).

The shared store suite of tests/service/test_store.py runs here unchanged against the cluster
(`store_factory` below overrides the memory/redis one), then the app end to end: both ways to turn
cluster mode on (`redis+cluster://` URL, KT_REDIS_CLUSTER=1), learners spread over all three
masters, a batch whose learners live on different nodes, and a dead master -> 503, not 500.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import key_slot
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.store import HistoryStore, RedisHistoryStore, resolve_redis_url
from tests.redis_required import skip_without_redis
from tests.reliability.procs import RedisCluster, redis_cli_has_cluster
from tests.service.conftest import QUESTION_IDS
from tests.service.test_store import (  # the shared suite, collected here against the cluster
    test_64_concurrent_writers,
    test_append_get_roundtrip,
    test_cap_keeps_newest_and_reports_stale,
    test_erasure,
    test_explicit_interaction_id_is_the_identity,
    test_idempotent_retries,
    test_matches_reference_merge,
    test_out_of_order_deliveries_give_the_canonical_history,
    test_rejects_brace_user_ids,
    test_ttl_expiry_and_refresh,
)

SHARED_SUITE = [
    test_64_concurrent_writers,
    test_append_get_roundtrip,
    test_cap_keeps_newest_and_reports_stale,
    test_erasure,
    test_explicit_interaction_id_is_the_identity,
    test_idempotent_retries,
    test_matches_reference_merge,
    test_out_of_order_deliveries_give_the_canonical_history,
    test_rejects_brace_user_ids,
    test_ttl_expiry_and_refresh,
]
pytestmark = [pytest.mark.slow, pytest.mark.anyio]  # anyio: the imported async suite
Q = QUESTION_IDS


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    if not redis_cli_has_cluster():
        skip_without_redis("redis-server/redis-cli without cluster support (redis-cli --cluster)")
    c = RedisCluster(masters=3)
    try:
        c.start()
        yield c
    finally:
        c.cleanup()


@pytest.fixture
def store_factory(cluster: RedisCluster) -> Callable[..., HistoryStore]:
    """Cluster-backed stores for the shared suite (unique key prefix per test)."""
    prefix = f"kt-cl-{uuid.uuid4().hex[:8]}:"
    url = "redis+cluster://" + cluster.url.removeprefix("redis://")
    return lambda ttl_s=3600.0: RedisHistoryStore(
        url, ttl_s=ttl_s, timeout_s=2.0, key_prefix=prefix
    )


def test_shared_suite_is_collected_here() -> None:
    names = {t.__name__ for t in SHARED_SUITE}
    assert all(name in globals() for name in names)


def test_cluster_urls() -> None:
    assert resolve_redis_url("redis+cluster://h:7000/0") == ("redis://h:7000/0", True)
    assert resolve_redis_url("rediss+cluster://:pw@h:7000") == ("rediss://:pw@h:7000", True)
    assert resolve_redis_url("redis://h:6379/0") == ("redis://h:6379/0", False)
    assert resolve_redis_url("redis://h:6379/0", True) == ("redis://h:6379/0", True)


def _masters_of(cluster: RedisCluster, keys: list[bytes]) -> set[int]:
    client = redis.Redis(port=cluster.ports[0], decode_responses=True)
    slots = client.execute_command("CLUSTER", "SLOTS")
    client.close()
    owners = set()
    for key in keys:
        slot = key_slot(key)
        for start, end, master, *_ in slots:
            if start <= slot <= end:
                owners.add(int(master[1]))
    return owners


@pytest.mark.parametrize("how", ["url", "env"])
def test_app_on_the_cluster(
    artifact: Path, cluster: RedisCluster, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"kt-app-{uuid.uuid4().hex[:8]}:"
    if how == "url":
        settings = Settings(
            model_dir=artifact,
            redis_url="redis+cluster://" + cluster.url.removeprefix("redis://"),
            key_prefix=prefix,
        )
    else:
        monkeypatch.setenv("KT_REDIS_CLUSTER", "1")
        settings = Settings(model_dir=artifact, redis_url=cluster.url, key_prefix=prefix)
        assert settings.redis_cluster is True
    users = [f"cl-{i}" for i in range(24)]
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        assert c.get("/readyz").json()["store_ok"] is True
        for n, user in enumerate(users):
            items = [
                {"question_id": Q[k], "timestamp": 1000 * (k + 1), "correct": k % 2 == 0}
                for k in range(n % 5 + 1)
            ]
            r = c.post("/interactions", json={"user_id": user, "interactions": items})
            assert r.status_code == 200 and r.json()["recorded"] == len(items), r.text
            assert c.post("/interactions", json={"user_id": user, "interactions": items}).json()[
                "duplicates"
            ] == len(items)
        # the learners really live on all three masters
        keys = [f"{prefix}{{{u}}}:events".encode() for u in users]
        assert _masters_of(cluster, keys) == set(cluster.ports)
        batch = {"requests": [{"user_id": u, "questions": [{"question_id": Q[0]}]} for u in users]}
        r = c.post("/predict/batch", json=batch)
        assert r.status_code == 200, r.text
        lengths = [res["history_length"] for res in r.json()["results"]]
        assert lengths == [n % 5 + 1 for n in range(len(users))]
        single = c.post("/predict", json=batch["requests"][3]).json()
        assert single["predictions"][0]["p_correct"] == pytest.approx(
            r.json()["results"][3]["predictions"][0]["p_correct"], abs=1e-5
        )
        for user in users:
            assert c.delete(f"/users/{user}").json()["deleted"] is True


def test_dead_master_gives_503_not_500(artifact: Path) -> None:
    """Own cluster (it is broken on purpose): a learner on the dead master -> 503 at the deadline."""
    if not redis_cli_has_cluster():
        skip_without_redis("redis-server/redis-cli without cluster support")
    own = RedisCluster(masters=3).start()
    try:
        settings = Settings(
            model_dir=artifact,
            redis_url="redis+cluster://" + own.url.removeprefix("redis://"),
            redis_timeout_s=0.5,
        )
        users = [f"d-{i}" for i in range(12)]
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            item = {"question_id": Q[0], "timestamp": 1, "correct": True}
            for u in users:
                assert (
                    c.post("/interactions", json={"user_id": u, "interactions": [item]}).status_code
                    == 200
                )
            own.procs[1].kill()
            own.procs[1].wait(timeout=10)
            dead_port = own.ports[1]
            statuses = {}
            for u in users:
                r = c.get(f"/users/{u}/history")
                statuses[u] = r.status_code
                if r.status_code != 200:
                    assert r.status_code == 503 and r.headers["retry-after"], r.text
            on_dead = {
                u for u in users if _masters_of(own, [f"kt:{{{u}}}:events".encode()]) == {dead_port}
            }
            assert on_dead and all(statuses[u] == 503 for u in on_dead)
            assert set(statuses.values()) <= {200, 503}
    finally:
        own.cleanup()

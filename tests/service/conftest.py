"""Shared fixtures for the service tests: Redis connection details, unique key prefixes, stores."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from service.store import HistoryStore, MemoryHistoryStore, RedisHistoryStore

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _redis_up():
        pytest.skip("no Redis at 127.0.0.1:6379")
    return REDIS_URL


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    prefix = f"kt-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["memory", "redis"])
def store_factory(request: pytest.FixtureRequest) -> Callable[..., HistoryStore]:
    """Builds stores of the parametrized kind (shared suite: identical semantics for both)."""
    if request.param == "memory":
        return lambda ttl_s=3600.0: MemoryHistoryStore(ttl_s=ttl_s)
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("key_prefix")
    return lambda ttl_s=3600.0: RedisHistoryStore(
        url, ttl_s=ttl_s, timeout_s=2.0, key_prefix=prefix
    )

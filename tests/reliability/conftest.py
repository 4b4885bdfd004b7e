"""Fixtures of the reliability suite: a tiny exported artifact and throwaway Redis servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.procs import RedisServer, redis_server_installed
from tests.redis_required import skip_without_redis
from tests.service.conftest import build_artifact


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random saint_plus exported to ONNX (the fast exporter of the service tests, ~1 s)."""
    return build_artifact(tmp_path_factory.mktemp("rel-artifacts"), seed=0, fast=True)


def _need_redis_server() -> None:
    if not redis_server_installed():
        skip_without_redis("redis-server is not installed")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A throwaway redis-server without persistence on a port in 7100-7199."""
    _need_redis_server()
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def aof_redis_server() -> Iterator[RedisServer]:
    """A throwaway redis-server with AOF `appendfsync always` (survives SIGKILL losing nothing)."""
    _need_redis_server()
    server = RedisServer(appendfsync="always").start()
    yield server
    server.cleanup()

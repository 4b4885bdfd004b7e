"""Skip a Redis-backed test when no Redis is available, except where Redis is required (CI).

`.ci/run` starts Redis and sets REQUIRE_REDIS_TESTS=1, so there a missing Redis (or redis-server
binary) fails the test instead of skipping it: CI cannot pass without exercising Redis.
"""

from __future__ import annotations

import os

import pytest


def skip_without_redis(reason: str) -> None:
    if os.environ.get("REQUIRE_REDIS_TESTS") == "1":
        pytest.fail(f"{reason} (REQUIRE_REDIS_TESTS=1: Redis-backed tests must run here)")
    pytest.skip(reason)

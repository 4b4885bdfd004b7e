"""Learner history stores: one protocol, two implementations with identical semantics.

* `RedisHistoryStore`: one Redis string per learner, `{prefix}{<user>}:events`, holding the packed
  40-byte records of `service.events` in canonical order. Append = one Lua script that dedupes,
  sort-inserts, caps and sets the TTL atomically (a single key, hash-tagged, so it runs unchanged on
  Redis Cluster). Reads are one GET (+ numpy frombuffer). Every call runs under a deadline of
  `timeout_s`; connection trouble raises `StoreUnavailable` (-> 503 + Retry-After), never hangs.
* `MemoryHistoryStore`: the embedded default (one process only), same rules via `merge_events`.

Deduplication is against the retained window (the fingerprints inside the stored records), so its
memory is bounded by the cap; an event older than a full window is stale either way (see events.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from service.events import EVENT_DTYPE, RECORD_SIZE, AppendResult, decode_blob, merge_events

logger = logging.getLogger(__name__)
RECENT_USERS_KEPT = 1000  # learners remembered by `recent_users` (a Redis sorted set, capped)


def _now_ms() -> int:
    """Wall-clock ms since the Unix epoch: the time of a learner's last write (`recent_users`)."""
    return time.time_ns() // 1_000_000


class StoreUnavailable(RuntimeError):
    """The history store cannot be reached in time (maps to 503 + Retry-After)."""


class HistoryStore(Protocol):
    """Per-learner, time-ordered, capped, deduplicated event histories."""

    kind: str

    async def append(self, user_id: str, events: np.ndarray, max_len: int) -> AppendResult: ...

    async def get(self, user_id: str) -> np.ndarray: ...

    async def get_many(self, user_ids: Sequence[str]) -> list[np.ndarray]: ...

    async def delete(self, user_id: str) -> bool: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    # Questions registered after training (service.catalogue): raw id -> JSON record, one table
    # shared by every worker and replica, kept with no TTL.
    async def put_question(self, question_id: int, record: str) -> bool: ...

    async def get_questions(self, question_ids: Sequence[int] | None = None) -> dict[int, str]: ...

    # the most recently written learners, newest first: (user id, last write in ms since the epoch);
    # None when the store cannot tell (Redis Cluster: the list would be a key in another slot)
    async def recent_users(self, limit: int) -> list[tuple[str, int]] | None: ...


def _check_user(user_id: str) -> None:
    if not user_id or "{" in user_id or "}" in user_id:
        raise ValueError("user_id must be non-empty and must not contain braces")


class MemoryHistoryStore:
    """In-process store (the embedded default): a dict of numpy record arrays with lazy TTL expiry."""

    kind = "memory"

    def __init__(self, ttl_s: float, sweep_every: int = 1024) -> None:
        self._ttl_s = float(ttl_s)
        self._data: dict[str, tuple[np.ndarray, float]] = {}
        self._questions: dict[int, str] = {}
        # last write per learner (wall clock, for recent_users)
        self._written_ms: dict[str, int] = {}
        # A plain lock: every operation below is synchronous (no await inside), so it is atomic on
        # the event loop; the lock also makes the store safe to call from worker threads.
        self._lock = threading.Lock()
        self._writes = 0
        self._sweep_every = sweep_every

    def _live(self, user_id: str, now: float) -> np.ndarray:
        entry = self._data.get(user_id)
        if entry is None:
            return np.zeros(0, dtype=EVENT_DTYPE)
        if entry[1] <= now:
            del self._data[user_id]
            return np.zeros(0, dtype=EVENT_DTYPE)
        return entry[0]

    def _sweep(self, now: float) -> None:
        for user in [u for u, (_, exp) in self._data.items() if exp <= now]:
            del self._data[user]
            self._written_ms.pop(user, None)

    async def append(self, user_id: str, events: np.ndarray, max_len: int) -> AppendResult:
        _check_user(user_id)
        if max_len < 1:
            raise ValueError("max_len must be >= 1")
        with self._lock:
            now = time.monotonic()
            result = merge_events(self._live(user_id, now), events, max_len)
            if len(result.events):
                result.events.flags.writeable = False
                self._data[user_id] = (result.events, now + self._ttl_s)
                self._written_ms[user_id] = _now_ms()
            self._writes += 1
            if self._writes % self._sweep_every == 0:
                self._sweep(now)
        return result

    async def get(self, user_id: str) -> np.ndarray:
        _check_user(user_id)
        with self._lock:
            return self._live(user_id, time.monotonic())

    async def get_many(self, user_ids: Sequence[str]) -> list[np.ndarray]:
        for u in user_ids:
            _check_user(u)
        with self._lock:
            now = time.monotonic()
            return [self._live(u, now) for u in user_ids]

    async def delete(self, user_id: str) -> bool:
        _check_user(user_id)
        with self._lock:
            self._written_ms.pop(user_id, None)
            return self._data.pop(user_id, None) is not None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        with self._lock:
            self._data.clear()
            self._written_ms.clear()

    async def recent_users(self, limit: int) -> list[tuple[str, int]] | None:
        with self._lock:
            now = time.monotonic()
            live = [(u, ms) for u, ms in self._written_ms.items() if len(self._live(u, now))]
        live.sort(key=lambda item: (-item[1], item[0]))
        return live[:limit]

    async def put_question(self, question_id: int, record: str) -> bool:
        with self._lock:
            created = question_id not in self._questions
            self._questions[question_id] = record
            return created

    async def get_questions(self, question_ids: Sequence[int] | None = None) -> dict[int, str]:
        with self._lock:
            if question_ids is None:
                return dict(self._questions)
            return {q: self._questions[q] for q in question_ids if q in self._questions}


# KEYS[1] = events key. ARGV[1] = new packed records, ARGV[2] = cap, ARGV[3] = ttl in ms.
# Optional KEYS[2] = the recent-learners sorted set (not in cluster mode: another slot), with
# ARGV[4] = now in ms and ARGV[5] = the user id; it keeps the RECENT_USERS_KEPT newest learners.
# Returns {recorded, duplicates, stale, stored blob}. Numbers are < 2^53, exact in Lua doubles.
_APPEND_LUA = """
local RS = __RS__
local cap = tonumber(ARGV[2])
local old = redis.call('GET', KEYS[1])
if not old then old = '' end
local rows, seen = {}, {}
for off = 1, #old, RS do
  local ts, q, c, fp = struct.unpack('<i8i8i8i8', old, off)
  rows[#rows + 1] = {ts, c, q, fp, string.sub(old, off, off + RS - 1), false}
  seen[fp] = true
end
local new = ARGV[1]
local dups, added, sorted = 0, 0, true
for off = 1, #new, RS do
  local ts, q, c, fp = struct.unpack('<i8i8i8i8', new, off)
  if seen[fp] then
    dups = dups + 1
  else
    seen[fp] = true
    added = added + 1
    local row = {ts, c, q, fp, string.sub(new, off, off + RS - 1), true}
    local last = rows[#rows]
    if last and sorted then
      if ts < last[1] or (ts == last[1] and (c < last[2] or (c == last[2] and
         (q < last[3] or (q == last[3] and fp < last[4]))))) then
        sorted = false
      end
    end
    rows[#rows + 1] = row
  end
end
if not sorted then
  table.sort(rows, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    if a[2] ~= b[2] then return a[2] < b[2] end
    if a[3] ~= b[3] then return a[3] < b[3] end
    return a[4] < b[4]
  end)
end
local cut = #rows - cap
if cut < 0 then cut = 0 end
local stale = 0
local parts = {}
for i = 1, #rows do
  if i <= cut then
    if rows[i][6] then stale = stale + 1 end
  else
    parts[#parts + 1] = rows[i][5]
  end
end
local blob = table.concat(parts)
if #blob > 0 then
  if added > 0 then
    redis.call('SET', KEYS[1], blob, 'PX', ARGV[3])
  else
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
  if KEYS[2] then
    redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
    local n = redis.call('ZCARD', KEYS[2])
    if n > __KEPT__ then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - __KEPT__ - 1) end
  end
end
return {added - stale, dups, stale, blob}
""".replace("__RS__", str(RECORD_SIZE)).replace("__KEPT__", str(RECENT_USERS_KEPT))

# Server-side conditions that mean "not available right now" rather than a bug.
_UNAVAILABLE_PREFIXES = (
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "READONLY",
    "OOM",
)


CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def resolve_redis_url(url: str, cluster: bool = False) -> tuple[str, bool]:
    """`redis+cluster://host:port` (or `rediss+cluster://`) -> (`redis://host:port`, True).

    Any other URL is returned unchanged with the `cluster` flag (KT_REDIS_CLUSTER) as given."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in CLUSTER_SCHEMES:
        return f"{CLUSTER_SCHEMES[scheme.lower()]}://{rest}", True
    return url, cluster


class RedisHistoryStore:
    """Redis-backed store (`redis.asyncio` + hiredis), safe for many workers and Redis Cluster.

    Cluster mode (`cluster=True` or a `redis+cluster://` URL) uses
    `redis.asyncio.cluster.RedisCluster`: one key per learner with a hash tag, so the append script
    touches one slot; `get_many` pipelines GETs grouped by node.
    """

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float,
        timeout_s: float = 0.5,
        key_prefix: str = "kt:",
        cluster: bool = False,
    ) -> None:
        self._ttl_ms = max(int(ttl_s * 1000), 1)
        self._timeout_s = timeout_s
        self._prefix = key_prefix
        options: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "decode_responses": False,
        }
        url, cluster = resolve_redis_url(url, cluster)
        self.cluster = cluster
        if cluster:
            from redis.asyncio.cluster import RedisCluster

            # One immediate retry (the cluster client refreshes its slot map before it), no
            # backoff: the deadline below bounds the whole call anyway.
            options["retry"] = Retry(NoBackoff(), 1)
            self._client: Any = RedisCluster.from_url(url, **options)
        else:
            # No client-side retries: a retry loop with backoff would outlive the request deadline.
            options["retry"] = Retry(NoBackoff(), 0)
            options["retry_on_timeout"] = False
            self._client = aioredis.Redis.from_url(url, **options)
        self._append = self._client.register_script(_APPEND_LUA)

    def key(self, user_id: str) -> str:
        _check_user(user_id)
        return f"{self._prefix}{{{user_id}}}:events"

    async def _call(self, op: str, coro: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                if self.cluster:
                    # Learn the slot map once, before any command: concurrent first commands
                    # racing the client's lazy initialisation fail with "Connection closed"
                    # (measured: 15 of 64 concurrent first appends). A no-op once initialised.
                    try:
                        await self._client.initialize()
                    except BaseException:
                        coro.close()  # never started: close it (no "never awaited" warning)
                        raise
                return await coro
        except (
            TimeoutError,
            rexc.ConnectionError,
            rexc.TimeoutError,
            rexc.ClusterError,
            # cluster client: no reachable node to learn the topology from, slot not covered
            rexc.RedisClusterException,
        ) as exc:
            logger.warning("redis %s failed: %s", op, type(exc).__name__)
            raise StoreUnavailable(f"history store unavailable ({type(exc).__name__})") from exc
        except rexc.ResponseError as exc:
            if str(exc).startswith(_UNAVAILABLE_PREFIXES):
                logger.warning("redis %s refused: %s", op, str(exc).split(" ")[0])
                raise StoreUnavailable(
                    f"history store unavailable ({str(exc).split(' ')[0]})"
                ) from exc
            raise

    async def append(self, user_id: str, events: np.ndarray, max_len: int) -> AppendResult:
        if max_len < 1:
            raise ValueError("max_len must be >= 1")
        payload = np.ascontiguousarray(events, dtype=EVENT_DTYPE).tobytes()
        keys: list[str] = [self.key(user_id)]
        args: list[Any] = [payload, max_len, self._ttl_ms]
        if not self.cluster:
            keys.append(self.recent_key)
            args += [_now_ms(), user_id]
        recorded, dups, stale, blob = await self._call("append", self._append(keys=keys, args=args))
        return AppendResult(int(recorded), int(dups), int(stale), decode_blob(blob))

    async def get(self, user_id: str) -> np.ndarray:
        return decode_blob(await self._call("get", self._client.get(self.key(user_id))))

    async def get_many(self, user_ids: Sequence[str]) -> list[np.ndarray]:
        if not user_ids:
            return []
        keys = [self.key(u) for u in user_ids]

        async def run() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for k in keys:
                pipe.get(k)
            return await pipe.execute()

        blobs = await self._call("get_many", run())
        return [decode_blob(b) for b in blobs]

    async def delete(self, user_id: str) -> bool:
        key = self.key(user_id)
        if self.cluster:
            return bool(await self._call("delete", self._client.delete(key)))

        async def run() -> list[Any]:
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(key)
            pipe.zrem(self.recent_key, user_id)
            return await pipe.execute()

        deleted, _ = await self._call("delete", run())
        return bool(deleted)

    @property
    def recent_key(self) -> str:
        return f"{self._prefix}recent-users"

    async def recent_users(self, limit: int) -> list[tuple[str, int]] | None:
        """Newest first, leaving out learners whose history has expired since (same TTL)."""
        if self.cluster:
            return None
        oldest = _now_ms() - self._ttl_ms
        rows = await self._call(
            "recent_users",
            self._client.zrevrangebyscore(
                self.recent_key, "+inf", oldest, start=0, num=limit, withscores=True
            ),
        )
        return [(user.decode(), int(score)) for user, score in rows]

    async def ping(self) -> None:
        await self._call("ping", self._client.ping())

    @property
    def questions_key(self) -> str:
        return f"{self._prefix}questions"

    async def put_question(self, question_id: int, record: str) -> bool:
        created = await self._call(
            "put_question", self._client.hset(self.questions_key, str(question_id), record)
        )
        return bool(created)

    async def get_questions(self, question_ids: Sequence[int] | None = None) -> dict[int, str]:
        if question_ids is None:
            raw = await self._call("get_questions", self._client.hgetall(self.questions_key))
            return {int(k): v.decode() for k, v in raw.items()}
        ids = list(question_ids)
        if not ids:
            return {}
        values = await self._call(
            "get_questions", self._client.hmget(self.questions_key, [str(q) for q in ids])
        )
        return {q: v.decode() for q, v in zip(ids, values, strict=True) if v is not None}

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except (
            rexc.RedisError,
            OSError,
        ):  # closing a dead connection is not an error worth raising
            logger.debug("redis close failed", exc_info=True)

"""The serving benchmarks' open-loop HTTP load generator and their CPU accounting (Linux /proc).

`load_step` offers `rate` requests per second for a while: request i is *scheduled* at t0 + i/rate
and sent then, whatever the earlier ones are doing (new keep-alive connections are opened when all
are busy); its latency is measured from the scheduled time, so a stalled server or a late generator
shows up in the tail (closed-loop tools hide it: they wait for each reply). The generator is a
raw-socket HTTP/1.1 client on uvloop, to keep its own CPU cost small on a 2-core machine; it reads
each answer's `Server-Timing` (the service's store and model time). `LoadResult` holds what one
step measured, with the CPU the server, the generator, Redis and the machine's other jobs used.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- CPU accounting (Linux /proc) -------------------------------------------------------------
def _process_tree(pid: int) -> list[int]:
    """pid and its descendants (uvicorn workers are children of the supervisor)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            children = []
        todo.extend(int(c) for c in children)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process tree (Linux /proc)."""
    total = 0
    for p in _process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (ticks)
    return total / CLK_TCK


def machine_busy_s() -> float:
    """CPU-seconds the whole machine has been busy (all cores; /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


# -- open-loop load generator ---------------------------------------------------------------------
def http_post(path: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def http_get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


@dataclass
class LoadResult:
    rate: float
    sent: int
    ok: int
    errors: dict[str, int]
    latency_ms: np.ndarray  # successful requests, from the scheduled send time
    wall_s: float
    server_cpu_s: float
    client_cpu_s: float
    send_lag_ms: np.ndarray  # actual send - scheduled send (generator lateness; < 0: early)
    # the service's `Server-Timing` (model;dur=, store;dur=) of each successful request (NaN where
    # absent)
    model_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    store_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    other_cores: float = float("nan")  # CPU used by everything else on the machine (cores)

    def row(self) -> dict[str, Any]:
        lat = self.latency_ms
        p50, p95, p99 = np.percentile(lat, [50, 95, 99]).tolist() if len(lat) else [np.nan] * 3
        timed = ~np.isnan(self.model_ms) if len(self.model_ms) == len(lat) else np.zeros(0, bool)
        in_model = {}
        if timed.any():  # the model's time inside each request, and the rest of that request
            above = (lat - self.model_ms)[timed]
            m50, m95, m99 = np.percentile(self.model_ms[timed], [50, 95, 99]).tolist()
            in_model = {
                "model_p50_ms": round(m50, 3),
                "model_p95_ms": round(m95, 3),
                "model_p99_ms": round(m99, 3),
                "overhead_p50_ms": round(float(np.median(above)), 3),
            }
            if len(self.store_ms) == len(lat) and not np.isnan(self.store_ms[timed]).any():
                in_model["store_p50_ms"] = round(float(np.median(self.store_ms[timed])), 3)
                rest = above - self.store_ms[timed]  # neither the model nor the store
                in_model["rest_p50_ms"] = round(float(np.median(rest)), 3)
        return {
            "rate": self.rate,
            "sent": self.sent,
            "ok": self.ok,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "achieved_rps": round(self.ok / self.wall_s, 1) if self.wall_s else 0.0,
            "p50_ms": round(p50, 2),
            "p95_ms": round(p95, 2),
            "p99_ms": round(p99, 2),
            "max_ms": round(float(lat.max()), 2) if len(lat) else np.nan,
            "server_cpu_ms_per_req": round(1000 * self.server_cpu_s / max(self.ok, 1), 3),
            "client_cpu_ms_per_req": round(1000 * self.client_cpu_s / max(self.sent, 1), 3),
            "send_lag_p99_ms": round(float(np.percentile(self.send_lag_ms, 99)), 2),
            "other_cores": round(self.other_cores, 2),
            **in_model,
        }


class ConnectionLimitError(ConnectionError):
    """All `max_connections` are busy: the request counts as an error (open loop never waits)."""


class OpenLoop:
    """Fixed-schedule HTTP/1.1 load over a pool of keep-alive connections (grows when all are busy)."""

    def __init__(self, port: int, timeout_s: float = 2.0, max_connections: int = 512) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened = 0
        self.idle_s = 3.0  # below uvicorn's 5 s keep-alive timeout

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened += 1
        return reader, writer

    async def warm(self, n: int) -> None:
        while len(self.idle) < n:
            self.idle.append((*await self._connect(), time.monotonic()))

    async def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()

    async def _one(self, payload: bytes) -> tuple[int, dict[bytes, float]]:
        """One request: its status and its `Server-Timing` metrics ({b"model": ms, ...})."""
        now = time.monotonic()
        while self.idle and now - self.idle[-1][2] > self.idle_s:  # the server may have closed it
            self.idle.pop()[1].close()
            self.opened -= 1
        fresh = not self.idle
        if self.idle:
            reader, writer, _ = self.idle.pop()
        elif self.opened < self.max_connections:
            reader, writer = await self._connect()
        else:
            raise ConnectionLimitError(f"{self.max_connections} connections busy")
        try:
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, timing = 0, dict[bytes, float]()
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                elif line[:14].lower() == b"server-timing:":
                    for metric in line[14:].split(b","):
                        name, _, ms = metric.strip().partition(b";dur=")
                        timing[name] = float(ms)
            if length:
                await reader.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            writer.close()
            self.opened -= 1
            if not fresh and not exc.partial:  # a reused keep-alive connection closed under us:
                return await self._one(payload)  # retry once on a new one, as HTTP clients do
            raise
        except BaseException:
            writer.close()
            self.opened -= 1
            raise
        self.idle.append((reader, writer, time.monotonic()))
        return status, timing

    async def run(self, payloads: list[bytes], rate: float, count: int) -> LoadResult:
        clock = time.perf_counter  # not loop.time(): uvloop's clock has 1 ms resolution
        latencies = np.full(count, np.nan)
        model_ms, store_ms = np.full(count, np.nan), np.full(count, np.nan)
        errors: dict[str, int] = {}

        async def send(i: int, scheduled: float) -> None:
            try:
                status, timing = await asyncio.wait_for(
                    self._one(payloads[i % len(payloads)]), self.timeout_s
                )
            except TimeoutError:
                errors["timeout"] = errors.get("timeout", 0) + 1
                return
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            if status != 200:
                errors[str(status)] = errors.get(str(status), 0) + 1
                return
            latencies[i] = (clock() - scheduled) * 1000.0
            model_ms[i] = timing.get(b"model", np.nan)
            store_ms[i] = timing.get(b"store", np.nan)

        await self.warm(16)
        tasks = []
        send_lag = np.empty(count)
        t0 = clock() + 0.05
        for i in range(count):
            scheduled = t0 + i / rate
            delay = scheduled - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            now = clock()
            send_lag[i] = (now - scheduled) * 1000.0
            # Latency counts from the scheduled time; a timer that fired a little early (uvloop's
            # timers have ~1 ms granularity) must not shorten it, so then from the actual send.
            tasks.append(asyncio.ensure_future(send(i, max(scheduled, now))))
        await asyncio.gather(*tasks)
        wall = clock() - t0
        done = ~np.isnan(latencies)
        ok = latencies[done]
        return LoadResult(
            rate,
            count,
            len(ok),
            errors,
            ok,
            wall,
            0.0,
            0.0,
            send_lag,
            model_ms=model_ms[done],
            store_ms=store_ms[done],
        )


def load_step(
    port: int,
    server_pid: int,
    payloads: list[bytes],
    rate: float,
    duration_s: float,
    redis_pid: int | None = None,
) -> LoadResult:
    """One step: `rate` x `duration_s` requests (`payloads` round-robin) offered open loop to the
    service on `port`, with the CPU its process tree (`server_pid`), this generator, Redis
    (`redis_pid`) and the machine's other jobs used meanwhile."""
    import uvloop

    count = max(int(rate * duration_s), 1)
    gen = OpenLoop(port)

    async def main() -> LoadResult:
        try:
            return await gen.run(payloads, rate, count)
        finally:
            await gen.close()

    redis0 = cpu_seconds(redis_pid) if redis_pid else 0.0
    busy0, wall0 = machine_busy_s(), time.monotonic()
    cpu0, client0 = cpu_seconds(server_pid), time.process_time()
    result = uvloop.run(main())
    result.server_cpu_s = cpu_seconds(server_pid) - cpu0
    result.client_cpu_s = time.process_time() - client0
    ours = result.server_cpu_s + result.client_cpu_s
    ours += cpu_seconds(redis_pid) - redis0 if redis_pid else 0.0
    result.other_cores = (machine_busy_s() - busy0 - ours) / (time.monotonic() - wall0)
    return result

"""Serving benchmark: open-loop load against a running `python -m service` (Redis-backed).

    python -m bench.serve_bench [--artifact DIR] [--rates 50,100,200,300,400] [--duration 10]
                                [--redis-url URL | --redis-port 7231] [--workers 1] [--no-docs]

What it does, all on loopback:
1. Picks the model: `--artifact`, else the distilled demo student at artifacts/demo/artifact, else
   it exports an *untrained* saint_plus with the demo student's size (preset "tiny": d_model 32,
   1 layer, 2 heads, window 100, 1000 questions) — latency does not depend on the weights.
2. Starts a private `redis-server` (port 7231, AOF everysec like docker-compose.yml; or uses
   `--redis-url`) and `python -m service` as a subprocess (KT_ORT_THREADS=1, one worker, a fresh
   key prefix deleted at the end), then records a 100-event history for each of 500 learners.
3. Model-only latency: `Predictor.score` in this process, batch 1, the same 100-event history,
   1 and 100 candidates (the service is idle meanwhile).
4. Open-loop load: for each offered rate, requests are *scheduled* at fixed times t0 + i/rate and
   sent whether or not earlier ones have answered (new keep-alive connections are opened when all
   are busy); latency is measured from the scheduled time, so a stalled server or a late load
   generator shows up in the tail (closed-loop tools hide it: they wait for each reply). Bounded by
   count (rate x duration) and time (per-request timeout). The generator is a raw-socket HTTP/1.1 client
   on uvloop, to keep its own CPU cost small on a 2-core machine.
5. 1 vs 100 candidates at a low rate; bytes per learner in Redis (MEMORY USAGE); server CPU time
   per request (from /proc), hence req/s per core.

Prints the numbers and rewrites the `<!-- serve:start -->`…`<!-- serve:end -->` section of
docs/benchmarks.md (the rest of the file is left alone) and docs/serve_bench.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "serve_bench.png"
RAW = ROOT / "bench" / "out" / "serve_bench.json"  # raw numbers of the last run (git-ignored)
START, END = "<!-- serve:start -->", "<!-- serve:end -->"
DEMO_ARTIFACT = ROOT / "artifacts" / "demo" / "artifact"
COMMAND = "python -m bench.serve_bench"
HISTORY = 100
N_USERS = 500
TARGET_P99_MS, TARGET_RATE = 15.0, 300
TARGET_OVERHEAD_MS = 1.5
TARGET_CAND_RATIO = 3.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- model ----------------------------------------------------------------------------------------
def build_untrained_artifact(out: Path, window: int = 100, n_questions: int = 1000) -> Path:
    """Export an untrained saint_plus of the demo student's size (training.distill preset 'tiny')."""
    import torch

    from models.config import config_for_spec
    from models.features import FeatureSpec, QuestionVocab
    from models.registry import build_model
    from training.artifacts import save_model_dir
    from training.export import export_artifact

    torch.manual_seed(0)
    ids = np.arange(n_questions)
    vocab = QuestionVocab.build(ids, 1 + ids % 7)
    spec = FeatureSpec(window=window, n_questions=vocab.size, n_parts=vocab.n_parts)
    config = config_for_spec(
        "saint_plus", spec, vocab, d_model=32, n_layers=1, n_heads=2, dropout=0.0
    )
    model = build_model(config).eval()
    model_dir = save_model_dir(out / "model", model, config, spec, vocab, metrics={})
    return Path(export_artifact(model_dir, out / "artifact"))


# -- histories ------------------------------------------------------------------------------------
def synthetic_history(rng: np.random.Generator, question_ids: np.ndarray, n: int) -> list[dict]:
    """n answered questions in bundles of 1-3, 5 s - 10 min apart, with elapsed/explanation."""
    items: list[dict] = []
    ts, container = 1_700_000_000_000, 0
    while len(items) < n:
        size = min(int(rng.integers(1, 4)), n - len(items))
        for q in rng.choice(question_ids, size=size, replace=False).tolist():
            items.append(
                {
                    "question_id": int(q),
                    "timestamp": ts,
                    "correct": bool(rng.random() < 0.65),
                    "elapsed_time_ms": int(rng.integers(3_000, 60_000)),
                    "had_explanation": bool(rng.random() < 0.8),
                    "container_id": container,
                }
            )
        ts += int(rng.integers(5_000, 600_000))
        container += 1
    return items


# -- Redis and service subprocesses ---------------------------------------------------------------
@contextmanager
def own_redis(port: int) -> Iterator[tuple[str, int]]:
    """A private redis-server (AOF everysec, like docker-compose.yml) in a temp dir: clean stats."""
    import redis

    with tempfile.TemporaryDirectory(prefix="serve-bench-redis-") as tmp:
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    if redis.Redis.from_url(url, socket_timeout=0.5).ping():
                        break
                except redis.RedisError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on port {port} did not start") from None
                    time.sleep(0.1)
            yield url, proc.pid
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    match = [w for w in out.split() if w.startswith("v=")]
    return match[0][2:] if match else "?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_service(
    artifact: Path, redis_url: str, prefix: str, port: int, workers: int
) -> Iterator[subprocess.Popen]:
    env = {
        **os.environ,
        "KT_MODEL_DIR": str(artifact),
        "KT_REDIS_URL": redis_url,
        "KT_KEY_PREFIX": prefix,
        "KT_ORT_THREADS": "1",
        "KT_WORKERS": str(workers),
        "KT_HOST": "127.0.0.1",
        "KT_PORT": str(port),
        "KT_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, cwd=ROOT)
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"python -m service exited with {proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("service not ready after 60 s")
            time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
    other_cores: float = float("nan")  # CPU used by everything else on the machine (cores)

    def row(self) -> dict[str, Any]:
        lat = self.latency_ms
        p50, p95, p99 = np.percentile(lat, [50, 95, 99]).tolist() if len(lat) else [np.nan] * 3
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

    async def _one(self, payload: bytes) -> int:
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
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
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
        return status

    async def run(self, payloads: list[bytes], rate: float, count: int) -> LoadResult:
        clock = time.perf_counter  # not loop.time(): uvloop's clock has 1 ms resolution
        latencies = np.full(count, np.nan)
        errors: dict[str, int] = {}

        async def send(i: int, scheduled: float) -> None:
            try:
                status = await asyncio.wait_for(
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
        ok = latencies[~np.isnan(latencies)]
        return LoadResult(rate, count, len(ok), errors, ok, wall, 0.0, 0.0, send_lag)


def load_step(
    port: int,
    server_pid: int,
    payloads: list[bytes],
    rate: float,
    duration_s: float,
    redis_pid: int | None = None,
) -> LoadResult:
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


# -- model-only -----------------------------------------------------------------------------------
def model_only(
    artifact: Path, history: list[dict], moment: int, n_cand: int, iters: int
) -> np.ndarray:
    """Latency (ms) of `Predictor.score` for one request (B=1), exactly the service's scoring call."""
    from models.features import CandidateRequest
    from service.events import events_to_history, make_events
    from service.predictor import Predictor

    predictor = Predictor.load(artifact, providers="cpu", threads=1)
    events = make_events(
        timestamp=[h["timestamp"] for h in history],
        question_id=[h["question_id"] for h in history],
        correct=[h["correct"] for h in history],
        elapsed_ms=[h["elapsed_time_ms"] for h in history],
        had_explanation=[h["had_explanation"] for h in history],
        container_id=[h["container_id"] for h in history],
        interaction_id=[None] * len(history),
    )
    cands = predictor.vocab.question_ids[:n_cand]
    request = CandidateRequest(
        events_to_history(events, predictor.vocab), predictor.vocab.to_index(cands), moment
    )
    for _ in range(50):
        predictor.score([request])
    out = np.empty(iters)
    for i in range(iters):
        t = time.perf_counter()
        predictor.score([request])
        out[i] = (time.perf_counter() - t) * 1000.0
    return out


# -- report ---------------------------------------------------------------------------------------
def _pct(a: np.ndarray) -> dict[str, float]:
    p50, p95, p99 = np.percentile(a, [50, 95, 99]).tolist()
    return {"p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "p99_ms": round(p99, 3)}


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [r["rate"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style in (("p50_ms", "o-"), ("p95_ms", "s-"), ("p99_ms", "^-")):
        ax.plot(rates, [r[key] for r in rows], style, label=key.replace("_ms", ""))
    ax.axhline(TARGET_P99_MS, color="grey", ls="--", lw=1, label=f"p99 target {TARGET_P99_MS:g} ms")
    ax.axvline(TARGET_RATE, color="grey", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (req/s, open loop)")
    ax.set_ylabel("latency from scheduled send (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _yes(ok: bool) -> str:
    return "**yes**" if ok else "**no**"


def render(r: dict[str, Any]) -> str:
    rows = r["load"]
    at_target = next((x for x in rows if x["rate"] == TARGET_RATE), None)
    m1, m100 = r["model_only"]["1"], r["model_only"]["100"]
    e1, e100 = r["candidates"]["1"], r["candidates"]["100"]
    overhead = e1["p50_ms"] - m1["p50_ms"]
    overhead_hi = at_target["p50_ms"] - m1["p50_ms"] if at_target else float("nan")
    ratio = e100["p50_ms"] / e1["p50_ms"]
    mem = r["redis_memory"]
    fl = r["floor"]
    lines = [
        "## Serving (open loop)",
        "",
        f"Reproduce: `{COMMAND}` (writes this section and `docs/serve_bench.png`).",
        f"Machine: {r['machine']}; 1-min load average before/after the run {r['load_before']} / "
        f"{r['load_after']} (other jobs share these cores). The load generator, Redis and the "
        "service all run on the same 2 cores, over loopback.",
        f"Model: {r['model']}.",
        f"Service: `python -m service`, {r['workers']} uvicorn worker(s) (uvloop + httptools), "
        f"`KT_ORT_THREADS=1`, histories on {r['redis']}. Request: `POST /predict`, one learner with a 100-event "
        f"history (one `GET` of {HISTORY} packed events), 1 candidate at a new moment; "
        f"{N_USERS} learners round-robin.",
        "Load: open loop — request i is scheduled at t0 + i/rate and sent then, whatever the "
        "earlier ones are doing (extra keep-alive connections are opened when all are busy); "
        "latency is measured from the *scheduled* time, so generator lateness and queueing count. "
        f'{r["duration_s"]:g} s per rate, 2 s timeout (= error). "Other jobs\' CPU" = the '
        "machine's busy CPU during the step (/proc/stat) minus the service, the generator and "
        f"the benchmark's Redis: the neighbours' share of the {os.cpu_count()} cores.",
        "",
        "| offered req/s | sent | ok | errors | achieved req/s | p50 ms | p95 ms | p99 ms | max ms "
        "| server CPU ms/req | generator CPU ms/req | generator send lag p99 ms "
        "| other jobs' CPU (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in rows:
        err = str(x["errors"]) + (f" {x['error_kinds']}" if x["errors"] else "")
        lines.append(
            f"| {x['rate']:g} | {x['sent']} | {x['ok']} | {err} | {x['achieved_rps']} | "
            f"{x['p50_ms']} | {x['p95_ms']} | {x['p99_ms']} | {x['max_ms']} | "
            f"{x['server_cpu_ms_per_req']} | {x['client_cpu_ms_per_req']} | {x['send_lag_p99_ms']} | {x['other_cores']} |"
        )
    cpu = r["server_cpu_ms_per_req"]
    lines += [
        "",
        "![serve latency vs offered rate](serve_bench.png)",
        "",
        "| model-only (`Predictor.score`, B=1, history 100, 1 ORT thread) | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|",
        f"| 1 candidate | {m1['p50_ms']} | {m1['p95_ms']} | {m1['p99_ms']} |",
        f"| 100 candidates | {m100['p50_ms']} | {m100['p95_ms']} | {m100['p99_ms']} |",
        "",
        f"| end to end at {r['low_rate']:g} req/s (open loop) | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|",
        f"| 1 candidate | {e1['p50_ms']} | {e1['p95_ms']} | {e1['p99_ms']} |",
        f"| 100 candidates | {e100['p50_ms']} | {e100['p95_ms']} | {e100['p99_ms']} |",
        f"| `GET /healthz` (HTTP floor: no body, no store, no model) | {fl['p50_ms']} "
        f"| {fl['p95_ms']} | {fl['p99_ms']} |",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    if at_target:
        reps = r.get("target_repeats") or [at_target["p99_ms"]]
        met = sum(p <= TARGET_P99_MS for p in reps)
        lines.append(
            f"| p99 ≤ {TARGET_P99_MS:g} ms at {TARGET_RATE} req/s (history 100, 1 candidate) "
            f"| {at_target['p99_ms']} ms in the sweep ({at_target['errors']} errors); "
            f"{len(reps)} runs: {', '.join(f'{p:g}' for p in reps)} ms "
            f"| {_yes(met == len(reps) and at_target['errors'] == 0)} ({met}/{len(reps)} runs) |"
        )
    lines += [
        f"| e2e p50 − model-only p50 ≤ {TARGET_OVERHEAD_MS} ms | at {r['low_rate']:g} req/s: "
        f"{e1['p50_ms']} − {m1['p50_ms']} = {overhead:.2f} ms; at {TARGET_RATE} req/s: "
        f"{overhead_hi:.2f} ms | {_yes(overhead <= TARGET_OVERHEAD_MS)} |",
        f"| 100 candidates ≤ {TARGET_CAND_RATIO:g}× the latency of 1 (e2e p50) | {ratio:.2f}× "
        f"(model-only {m100['p50_ms'] / m1['p50_ms']:.2f}×) | {_yes(ratio <= TARGET_CAND_RATIO)} |",
        "",
        f"Capacity: the service process used {cpu:.3f} ms of CPU per request at {TARGET_RATE} "
        "req/s (more per request at low rates, where every request wakes idle threads), "
        f"i.e. ≈ {1000 / cpu:.0f} req/s per fully used core for this request shape "
        "(HTTP + validation + Redis GET + encode + ORT + JSON); the generator cost is reported "
        "separately above and is not included.",
        f"Redis: one learner with a full {HISTORY}-event history is one string key of "
        f"{mem['strlen_100']} bytes; `MEMORY USAGE` = {mem['bytes_100']} bytes "
        f"(at the service's cap of window + KT_HISTORY_EXTRA = {mem['cap']} events: "
        f"{mem['bytes_cap']} bytes) → ≈ {mem['bytes_cap'] * 1e6 / 2**30:.1f} GiB per million "
        "active learners at the cap, before Redis' own overhead (replication buffers, "
        "fragmentation, AOF rewrite).",
    ]
    ops = r.get("redis_ops_us") or {}
    if ops:
        lines.append(
            "Redis CPU per call (`INFO commandstats` of the benchmark's Redis): read (`GET` of a "
            f"100-event history) {ops.get('get', float('nan')):.1f} µs; append (the dedupe/"
            f"sort/cap Lua script, `EVALSHA`) of 100 events into an empty history "
            f"{ops.get('evalsha', float('nan')):.1f} µs, of 1 event onto a 100-event history "
            f"{ops.get('append_1', float('nan')):.1f} µs — a single Redis core sustains roughly "
            f"{1e6 / ops.get('append_1', float('nan')):,.0f} such appends/s or "
            f"{1e6 / ops.get('get', float('nan')):,.0f} history reads/s."
        )
    others = [x["other_cores"] for x in rows if x["other_cores"] == x["other_cores"]]
    reps = r.get("target_repeats") or []
    busiest = max(max(others, default=0), 0)
    spread = f" ({len(reps)} runs: {min(reps):g}–{max(reps):g} ms)" if reps else ""
    if busiest >= 0.1:
        tail_note = (
            "The tail at the target rate then follows the neighbours' bursts"
            + spread
            + "; re-run on a quiet machine before attributing such a tail to the service."
        )
    else:
        tail_note = (
            "The machine was quiet, so the tail at the target rate is the service's own"
            + spread
            + "."
        )
    lines += [
        "",
        "Reading the numbers:",
        f"- *Neighbours.* Other jobs used {max(min(others, default=0), 0):.1f}–{busiest:.1f} "
        f"of the {os.cpu_count()} cores during the steps (last column), and the service "
        f"(≈ {cpu * TARGET_RATE / 1000:.2f} core at {TARGET_RATE} req/s), the generator and Redis "
        "had what was left. " + tail_note,
        f"- *Overhead above the model* ({overhead:.1f} ms at {r['low_rate']:g} req/s, "
        f"{overhead_hi:.1f} ms at {TARGET_RATE}): the HTTP floor (`GET /healthz`, same generator) "
        f"is {fl['p50_ms']} ms; the rest is body validation, the Redis `GET` round trip, the "
        "hand-off to the inference thread and back (the dependencies `get_state` and "
        "`current_predictor` are `async def`, so they add no threadpool hop; as plain `def` they "
        "cost p50 +0.6 ms and +0.3 ms CPU per request in an A/B here). At low rates the "
        "inference thread sleeps between requests and must be woken, which is why the CPU per "
        "request is higher at 50 req/s than at 300.",
        "- *100 candidates* are one ORT run over 100 history + 100 candidate positions instead of "
        "100 + 1, so the model time roughly doubles; end to end that stays well under 3×.",
    ]
    if r.get("notes"):
        lines += ["", *r["notes"]]
    return "\n".join(lines)


def write_docs(section: str) -> None:
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    block = f"{START}\n{section}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOCS.write_text(text)


def _load_avg() -> str:
    return f"{os.getloadavg()[0]:.1f}"


# -- main -----------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    import redis

    from service.predictor import Predictor

    load_before = _load_avg()
    tmp = tempfile.TemporaryDirectory(prefix="serve-bench-")
    if args.artifact:
        artifact = Path(args.artifact)
    elif (DEMO_ARTIFACT / "model.onnx").exists():
        artifact = DEMO_ARTIFACT
    else:
        print("no artifact given and no demo model: exporting an untrained tiny saint_plus ...")
        artifact = build_untrained_artifact(Path(tmp.name))
    predictor = Predictor.load(artifact, threads=1)
    cfg = predictor.config
    params = predictor.manifest.get("params")
    trained = (
        "untrained, the size of the distilled demo student (`training.distill` preset `tiny`), "
        "exported because no demo artifact was there — latency does not depend on the weights"
        if artifact.is_relative_to(Path(tmp.name))
        else "trained"
    )
    model = (
        f"{cfg.get('name')} d_model {cfg.get('d_model')}, {cfg.get('n_layers')} layer(s), "
        f"{cfg.get('n_heads')} heads, window {predictor.spec.window}, {predictor.vocab.size} "
        f"question tokens{f', {params:,} parameters' if isinstance(params, int) else ''}; "
        f"{trained}; artifact `{artifact if not artifact.is_relative_to(Path(tmp.name)) else 'temporary export'}` "
        f"(version {predictor.version})"
    )
    question_ids = predictor.vocab.question_ids
    del predictor

    rng = np.random.default_rng(0)
    histories = [synthetic_history(rng, question_ids, HISTORY) for _ in range(N_USERS)]
    moment = max(h[-1]["timestamp"] for h in histories) + 60_000
    prefix = f"bench-{secrets.token_hex(4)}:"
    users = [f"bench-user-{i}" for i in range(N_USERS)]
    port = _free_port()
    result: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), shared",
        "model": model,
        "workers": args.workers,
        "duration_s": args.duration,
        "low_rate": args.low_rate,
    }
    stack = ExitStack()
    redis_pid: int | None = None
    if args.redis_url:
        redis_url, redis_desc = args.redis_url, f"the Redis at `{args.redis_url}`"
    elif shutil.which("redis-server"):
        redis_url, redis_pid = stack.enter_context(own_redis(args.redis_port))
        redis_desc = (
            f"a private `redis-server` {redis_version()} (AOF `appendfsync everysec`, as in "
            "docker-compose.yml) started by the benchmark"
        )
    else:
        redis_url, redis_desc = "redis://127.0.0.1:6379/0", "the Redis at 127.0.0.1:6379"
    result["redis"] = redis_desc
    client = redis.Redis.from_url(redis_url)
    try:
        # model-only first, while nothing else of ours runs
        result["model_only"] = {
            str(k): _pct(model_only(artifact, histories[0], moment, k, args.model_iters))
            for k in (1, 100)
        }
        print("model-only:", json.dumps(result["model_only"]))
        with running_service(artifact, redis_url, prefix, port, args.workers) as proc:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                for uid, items in zip(users, histories, strict=True):
                    r = http.post("/interactions", json={"user_id": uid, "interactions": items})
                    r.raise_for_status()
                extra = http.post(  # one learner at the cap (window + KT_HISTORY_EXTRA)
                    "/interactions",
                    json={
                        "user_id": "bench-cap",
                        "interactions": synthetic_history(rng, question_ids, 400),
                    },
                ).json()
            key = f"{prefix}{{{users[0]}}}:events"
            cap_key = f"{prefix}{{bench-cap}}:events"
            result["redis_memory"] = {
                "strlen_100": int(client.strlen(key)),
                "bytes_100": int(client.memory_usage(key, samples=0) or 0),
                "cap": int(extra["history_length"]),
                "bytes_cap": int(client.memory_usage(cap_key, samples=0) or 0),
            }
            print("redis:", json.dumps(result["redis_memory"]))

            def payloads(n_cand: int) -> list[bytes]:
                cands = [
                    {"question_id": int(q), "timestamp": moment} for q in question_ids[:n_cand]
                ]
                return [http_post("/predict", {"user_id": u, "questions": cands}) for u in users]

            one = payloads(1)
            load_step(port, proc.pid, one, 100, 2.0, redis_pid)  # warm-up (not reported)
            rows = []
            for rate in args.rates:
                res = load_step(port, proc.pid, one, rate, args.duration, redis_pid)
                rows.append(res.row())
                print("load:", json.dumps(rows[-1]))
                time.sleep(1.0)
            result["load"] = rows
            # the target rate again: on a shared machine one run is one sample of the neighbours' load
            repeats = [x["p99_ms"] for x in rows if x["rate"] == TARGET_RATE]
            for _ in range(max(args.target_repeats - len(repeats), 0) if repeats else 0):
                time.sleep(1.0)
                again = load_step(port, proc.pid, one, TARGET_RATE, args.duration, redis_pid).row()
                print("load (repeat):", json.dumps(again))
                repeats.append(again["p99_ms"])
            result["target_repeats"] = repeats
            # marginal cost under load (at low rates idle wake-ups inflate the per-request CPU)
            result["server_cpu_ms_per_req"] = next(
                (x["server_cpu_ms_per_req"] for x in rows if x["rate"] == TARGET_RATE),
                float(np.median([x["server_cpu_ms_per_req"] for x in rows])),
            )
            cand = {}
            for k, p in (("1", one), ("100", payloads(100))):
                res = load_step(port, proc.pid, p, args.low_rate, args.duration, redis_pid)
                cand[k] = res.row()
                print(f"{k} candidates:", json.dumps(cand[k]))
            result["candidates"] = cand
            stats = client.info("commandstats")
            result["redis_ops_us"] = {
                op: float(stats[f"cmdstat_{op}"]["usec_per_call"])
                for op in ("get", "evalsha")
                if f"cmdstat_{op}" in stats
            }
            # steady state: one new answer appended to a full history (the /interactions path)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                for i, (uid, items) in enumerate(zip(users, histories, strict=True)):
                    new = dict(items[-1], timestamp=moment + i, container_id=10_000)
                    http.post(
                        "/interactions", json={"user_id": uid, "interactions": [new]}
                    ).raise_for_status()
            after = client.info("commandstats").get("cmdstat_evalsha")
            before = stats.get("cmdstat_evalsha")
            if after and before and after["calls"] > before["calls"]:
                result["redis_ops_us"]["append_1"] = (after["usec"] - before["usec"]) / (
                    after["calls"] - before["calls"]
                )
            floor = load_step(
                port, proc.pid, [http_get("/healthz")], args.low_rate, args.duration, redis_pid
            )
            result["floor"] = floor.row()
            print("GET /healthz:", json.dumps(result["floor"]))
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        stack.close()
        tmp.cleanup()
    result["load_before"], result["load_after"] = load_before, _load_avg()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", default=None, help="serving artifact dir (default: demo)")
    parser.add_argument(
        "--redis-url",
        default=None,
        help="use this Redis (default: start a private redis-server on --redis-port)",
    )
    parser.add_argument("--redis-port", type=int, default=7231, help="port of the private Redis")
    parser.add_argument(
        "--rates", default="50,100,200,300,400", help="offered rates, req/s (comma-separated)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per rate")
    parser.add_argument("--low-rate", type=float, default=50.0, help="rate of the 1-vs-100 test")
    parser.add_argument("--workers", type=int, default=1, help="KT_WORKERS of the service")
    parser.add_argument("--model-iters", type=int, default=2000)
    parser.add_argument(
        "--target-repeats", type=int, default=3, help=f"runs at {TARGET_RATE} req/s (incl. sweep)"
    )
    parser.add_argument("--note", action="append", default=[], help="extra line for the docs")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    parser.add_argument(
        "--render-from", default=None, help=f"re-render the docs from a saved run ({RAW})"
    )
    args = parser.parse_args(argv)
    args.rates = [float(x) for x in args.rates.split(",") if x.strip()]
    if not args.rates or min(args.rates) <= 0 or args.duration <= 0:
        parser.error("--rates and --duration must be positive")
    if args.render_from:
        result = json.loads(Path(args.render_from).read_text())
    else:
        result = run(args)
        RAW.parent.mkdir(parents=True, exist_ok=True)
        RAW.write_text(json.dumps(result, indent=1))
    result["notes"] = args.note or result.get("notes") or []
    section = render(result)
    print(section)
    if not args.no_docs:
        write_docs(section)
        plot(result["load"], PLOT, f"POST /predict, history {HISTORY}, 1 candidate")
        print(f"wrote {DOCS} and {PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

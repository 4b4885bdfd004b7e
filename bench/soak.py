"""Soak benchmark: a fixed offered load for minutes against a real `python -m service` on Redis.

    python -m bench.soak [--duration 300] [--rate 100] [--learners 10000] [--ingest-share 0.5]
                         [--artifact DIR] [--no-docs]

All on loopback, bounded in time (`--duration` + prefill) and count (rate x duration):
1. Model: `--artifact`, else an *untrained* saint_plus of the demo student's size (d_model 32,
   1 layer, 2 heads, window 100, 1000 questions) exported with `training.export` (latency and
   memory do not depend on the weights).
2. A private `redis-server` on a spare port in 7100-7199 (AOF `appendfsync everysec`, as in
   docker-compose.yml, in a temp dir) and `python -m service` (1 worker, KT_ORT_THREADS=1).
3. Prefill: every learner gets a full history (window + KT_HISTORY_EXTRA events), so the soak runs
   at the steady-state size of Redis and every ingest exercises the cap.
4. Open loop: requests are *scheduled* at t0 + i/rate and sent whether or not earlier ones have
   answered; latency is measured from the scheduled time (a stalled server or a late generator
   shows in the tail). The mix: `--ingest-share` of POST /interactions (the learner's next answer),
   the rest POST /predict (1 candidate at the learner's next moment), learners uniformly at random.
5. RSS of the service process sampled every 5 s; growth = last sample vs the sample after the
   warm-up (10% of the run, at least 20 s). Redis bytes per learner: INFO used_memory growth over
   the prefill / learners, and the mean MEMORY USAGE of 200 sampled keys.

Prints the report and replaces the `<!-- soak:start -->`…`<!-- soak:end -->` section of
docs/benchmarks.md (created if missing; the rest of the file is left alone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import redis

from bench.serve_bench import build_untrained_artifact

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- soak:start -->", "<!-- soak:end -->"
logger = logging.getLogger("bench.soak")
RSS_GOAL = 0.05
MAX_IN_FLIGHT = 512  # bound on concurrent requests; beyond it a send counts as an error (shed)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def spare_redis_port() -> int:
    ports = list(range(7100, 7200))
    random.shuffle(ports)
    for port in ports:
        if _free(port):
            return port
    raise RuntimeError("no free port in 7100-7199")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout_s} s")
        time.sleep(0.05)


@dataclass
class Stats:
    """Per-operation outcomes of the open-loop run."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {"ingest": [], "predict": []})
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (scheduled t, latency)
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    shed: int = 0
    send_lag: list[float] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Learners:
    """Per-learner clocks: each ingest is the learner's next answer, each predict its next moment."""

    def __init__(self, n: int, n_questions: int, start_events: int, seed: int = 0) -> None:
        self.n = n
        self.n_questions = n_questions
        self.next_k = [start_events] * n
        self.rng = random.Random(seed)

    @staticmethod
    def ts(k: int) -> int:
        return 1_700_000_000_000 + 25_000 * k

    def event(self, u: int, k: int) -> dict[str, Any]:
        return {
            "question_id": (u * 7 + k * 13) % self.n_questions,
            "timestamp": self.ts(k),
            "correct": (u + k) % 3 != 0,
            "elapsed_time_ms": 5_000 + (k % 20) * 1_000,
            "had_explanation": k % 2 == 0,
        }

    def ingest_body(self, u: int) -> dict[str, Any]:
        k = self.next_k[u]
        self.next_k[u] = k + 1
        return {"user_id": f"soak-{u}", "interactions": [self.event(u, k)]}

    def predict_body(self, u: int) -> dict[str, Any]:
        k = self.next_k[u]
        q = (u * 11 + k) % self.n_questions
        return {"user_id": f"soak-{u}", "questions": [{"question_id": q, "timestamp": self.ts(k)}]}


async def prefill(url: str, learners: Learners, events: int, concurrency: int = 8) -> float:
    """Give every learner `events` answers (one request each); returns seconds taken."""
    start = time.perf_counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for u in range(learners.n):
        queue.put_nowait(u)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            u = queue.get_nowait()
            body = {
                "user_id": f"soak-{u}",
                "interactions": [learners.event(u, k) for k in range(events)],
            }
            r = await client.post("/interactions", json=body)
            if r.status_code != 200:
                raise RuntimeError(f"prefill failed: {r.status_code} {r.text[:200]}")

    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return time.perf_counter() - start


async def open_loop(
    url: str,
    learners: Learners,
    rate: float,
    duration_s: float,
    ingest_share: float,
    timeout_s: float,
    on_tick: Any,
) -> tuple[Stats, float]:
    """Send rate x duration requests at scheduled times; latency from the scheduled time."""
    stats = Stats()
    total = int(rate * duration_s)
    rng = random.Random(1)
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=64)
    in_flight = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(client: httpx.AsyncClient, kind: str, body: dict[str, Any], at: float) -> None:
        nonlocal in_flight
        path = "/interactions" if kind == "ingest" else "/predict"
        try:
            r = await client.post(path, json=body)
            done = time.perf_counter()
            stats.timeline.append((at, done - at))
            if r.status_code == 200:
                stats.latencies[kind].append(done - at)
            else:
                stats.error(f"{kind} HTTP {r.status_code}")
        except httpx.HTTPError as exc:
            stats.error(f"{kind} {type(exc).__name__}")
        finally:
            in_flight -= 1

    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        t0 = time.perf_counter() + 0.2
        next_tick = t0
        for i in range(total):
            at = t0 + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter()
            stats.send_lag.append(max(now - at, 0.0))
            if now >= next_tick:
                on_tick(now - t0)
                next_tick += 5.0
            u = rng.randrange(learners.n)
            kind = "ingest" if rng.random() < ingest_share else "predict"
            body = learners.ingest_body(u) if kind == "ingest" else learners.predict_body(u)
            stats.sent += 1
            if in_flight >= MAX_IN_FLIGHT:
                stats.shed += 1
                stats.error("shed (too many in flight)")
                continue
            in_flight += 1
            task = asyncio.create_task(one(client, kind, body, at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    return stats, elapsed


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q)) if values else float("nan")


def write_docs(section: str) -> None:
    block = f"{START}\n{section.rstrip()}\n{END}\n"
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    DOCS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--duration", type=float, default=300.0, help="seconds of load (default 300)"
    )
    parser.add_argument(
        "--rate", type=float, default=100.0, help="offered requests/s (default 100)"
    )
    parser.add_argument("--learners", type=int, default=10_000)
    parser.add_argument("--ingest-share", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=5.0, help="per-request client timeout (s)")
    parser.add_argument(
        "--artifact", type=Path, help="model artifact dir (default: untrained demo-size)"
    )
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0 or args.learners < 1 or not 0 <= args.ingest_share <= 1:
        parser.error("--duration, --rate, --learners must be positive; --ingest-share in [0, 1]")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if shutil.which("redis-server") is None:
        logger.error("redis-server is not installed")
        return 2

    work = Path(tempfile.mkdtemp(prefix="kt-soak-"))
    redis_proc: subprocess.Popen[bytes] | None = None
    service: subprocess.Popen[bytes] | None = None
    try:
        artifact = args.artifact
        if artifact is None:
            logger.info("exporting an untrained demo-size saint_plus ...")
            artifact = build_untrained_artifact(work / "model")
        from models.features import load_spec

        spec, vocab = load_spec(artifact / "feature_spec.json")
        history_extra = 16
        cap = spec.window + history_extra

        rport = spare_redis_port()
        redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--dir", str(work),
             "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
             "--latency-monitor-threshold", "50"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        r = redis.Redis(port=rport)
        wait_until(r.ping, 10, "redis-server")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KT_")} | {
            "KT_MODEL_DIR": str(artifact),
            "KT_REDIS_URL": f"redis://127.0.0.1:{rport}/0",
            "KT_PORT": str(port),
            "KT_ORT_THREADS": "1",
            "KT_LOG_LEVEL": "warning",
            "KT_HISTORY_EXTRA": str(history_extra),
            "KT_UNKNOWN_QUESTIONS": "map",
        }
        service = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(url + "/readyz", timeout=1).status_code == 200, 60, "service")
        proc = psutil.Process(service.pid)

        learners = Learners(args.learners, vocab.size - 1, start_events=cap)
        mem_before = int(r.info("memory")["used_memory"])
        logger.info("prefill: %d learners x %d events ...", args.learners, cap)
        prefill_s = asyncio.run(prefill(url, learners, cap))
        mem_after = int(r.info("memory")["used_memory"])
        sample = random.Random(2).sample(range(args.learners), min(200, args.learners))
        usage = [int(r.memory_usage(f"kt:{{soak-{u}}}:events") or 0) for u in sample]
        strlen = [int(r.strlen(f"kt:{{soak-{u}}}:events")) for u in sample]

        rss: list[tuple[float, int]] = []

        def tick(t: float) -> None:
            rss.append((t, proc.memory_info().rss))
            if len(rss) % 12 == 0:
                logger.info("t=%4.0fs  RSS %.1f MiB", t, rss[-1][1] / 2**20)

        logger.info("soak: %.0f req/s offered for %.0f s (%.0f%% ingest) ...", args.rate,
                    args.duration, 100 * args.ingest_share)  # fmt: skip
        cpu0 = proc.cpu_times()
        stats, elapsed = asyncio.run(
            open_loop(
                url, learners, args.rate, args.duration, args.ingest_share, args.timeout, tick
            )
        )
        cpu1 = proc.cpu_times()
        rss.append((elapsed, proc.memory_info().rss))
        warm = max(0.1 * args.duration, 20.0)
        base = next((v for t, v in rss if t >= warm), rss[0][1])
        last = rss[-1][1]
        growth = (last - base) / base
        mem_end = int(r.info("memory")["used_memory"])
        delayed_fsync = int(r.info("persistence").get("aof_delayed_fsync", 0))
        redis_events = [(str(e[0]), int(e[3])) for e in r.execute_command("LATENCY", "LATEST")]
        # 5-s windows by scheduled time: where do the tails come from?
        t_first = stats.timeline[0][0] if stats.timeline else 0.0
        windows: dict[int, list[float]] = {}
        for at, lat in stats.timeline:
            windows.setdefault(int((at - t_first) // 5), []).append(lat)
        window_p99 = sorted(((pct(v, 99), 5 * k) for k, v in windows.items()), reverse=True)
        calm = sum(1 for p, _ in window_p99 if p <= 50.0)
        errors = sum(stats.errors.values())
        all_lat = stats.latencies["ingest"] + stats.latencies["predict"]
        cpu_ms = 1000 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / max(stats.sent, 1)

        rows = [
            ("all", all_lat),
            ("ingest (POST /interactions, 1 event)", stats.latencies["ingest"]),
            ("predict (POST /predict, 1 candidate, full history)", stats.latencies["predict"]),
        ]
        lines = [
            "## Soak: fixed offered load on Redis (`bench/soak.py`)",
            "",
            f"`python -m bench.soak --duration {args.duration:.0f} --rate {args.rate:.0f}` on "
            f"{platform.machine()}, {os.cpu_count()} cores (load generator, service and Redis "
            "share them): one `python -m service` worker (KT_ORT_THREADS=1) on a private Redis "
            "(AOF everysec), an untrained saint_plus of the demo student's size (window "
            f"{spec.window}), {args.learners:,} learners prefilled to the history cap ({cap} events), "
            f"then {args.duration:.0f} s open loop at {args.rate:.0f} req/s "
            f"({100 * args.ingest_share:.0f}% ingest / {100 * (1 - args.ingest_share):.0f}% predict, "
            "learners uniformly at random; latency from the scheduled send time).",
            "",
            "| requests | sent | ok | errors | achieved req/s | p50 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, lat in rows:
            sent = (
                stats.sent
                if name == "all"
                else len(lat)
                + sum(v for k, v in stats.errors.items() if k.startswith(name.split(" ")[0]))
            )
            err = errors if name == "all" else sent - len(lat)
            lines.append(
                f"| {name} | {sent:,} | {len(lat):,} | {err} | {len(lat) / elapsed:.1f} | "
                f"{pct(lat, 50):.2f} | {pct(lat, 99):.2f} | {pct(lat, 100):.1f} |"
            )
        rss_mib = [v / 2**20 for _, v in rss]
        verdict = "**yes**" if growth <= RSS_GOAL else "**no**"
        lines += [
            "",
            f"- Errors: {errors} of {stats.sent:,}"
            + (
                f" ({', '.join(f'{k}: {v}' for k, v in sorted(stats.errors.items()))})"
                if errors
                else ""
            )
            + f"; generator send lag p99 {pct(stats.send_lag, 99):.2f} ms.",
            f"- Service RSS: {base / 2**20:.1f} MiB after the {warm:.0f} s warm-up -> "
            f"{last / 2**20:.1f} MiB at the end (**{100 * growth:+.2f}%**; min {min(rss_mib):.1f}, "
            f"max {max(rss_mib):.1f} MiB over {len(rss)} samples). Goal ≤ {100 * RSS_GOAL:.0f}%: {verdict}.",
            f"- Service CPU: {cpu_ms:.2f} ms per request (user + system over the run).",
            f"- Tail by 5-s window: {calm} of {len(window_p99)} windows have p99 ≤ 50 ms; the worst: "
            + ", ".join(f"t={t}s p99 {p:,.0f} ms" for p, t in window_p99[:3])
            + f". Redis: aof_delayed_fsync {delayed_fsync}, latency events (max ms) "
            + (", ".join(f"{n} {m}" for n, m in redis_events) or "none")
            + f"; host load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
            f"- Redis bytes per learner at the cap ({cap} events x 40 B = {cap * 40:,} B of payload): "
            f"{(mem_after - mem_before) / args.learners:,.0f} B (INFO used_memory growth over the "
            f"prefill / learners); MEMORY USAGE {np.mean(usage):,.0f} B per key (mean of "
            f"{len(usage)}; STRLEN {np.mean(strlen):,.0f} B). used_memory after the soak: "
            f"{mem_end / 2**20:.1f} MiB for {args.learners:,} learners "
            f"(prefill took {prefill_s:.1f} s).",
        ]
        section = "\n".join(lines) + "\n"
        logger.info("\n%s", section)
        if not args.no_docs:
            write_docs(section)
            logger.info("wrote the soak section of %s", DOCS)
        return 0 if errors == 0 else 1
    finally:
        if service is not None and service.poll() is None:
            service.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.wait(timeout=10)
            if service.poll() is None:
                service.kill()
        if redis_proc is not None:
            redis_proc.kill()
            redis_proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

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
   the prefill / learners, and the mean MEMORY USAGE of 200 sampled keys. The key format, the
   history margin (KT_HISTORY_EXTRA) and the record size come from the service's own code
   (`service.store`, `service.config`, `service.events`); a missing key fails the run.

Code: `measure` (processes and raw numbers) -> `summarize` (a dict of the report's numbers) ->
`render` (the docs section); `bench.procs` starts the processes, `bench.report` writes the section.

Prints the report and replaces the `<!-- soak:start -->`…`<!-- soak:end -->` section of
docs/benchmarks.md (created if missing; the rest of the file is left alone).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import redis

from bench.procs import (
    RedisServer,
    ServiceProcess,
    history_keys,
    key_memory,
    redis_server_installed,
    service_default,
)
from bench.report import BENCHMARKS_MD as DOCS
from bench.report import replace_section
from bench.serve_bench import build_untrained_artifact

ROOT = Path(__file__).resolve().parents[1]
SECTION = "soak"
logger = logging.getLogger("bench.soak")
RSS_GOAL = 0.05
MAX_IN_FLIGHT = 512  # bound on concurrent requests; beyond it a send counts as an error (shed)
KEY_SAMPLE = 200  # history keys whose MEMORY USAGE / STRLEN are read after the prefill


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
            if r.json()["history_length"] != events:  # the service keeps fewer than its cap?
                raise RuntimeError(f"prefill: {events} events sent, service kept {r.text[:200]}")

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


# -- measure --------------------------------------------------------------------------------------
@contextmanager
def soak_stack(artifact: Path, history_extra: int) -> Iterator[tuple[RedisServer, ServiceProcess]]:
    """A private Redis (AOF everysec, latency monitor at 50 ms) and `python -m service` on it.

    One worker, KT_ORT_THREADS=1, unknown questions mapped; stopped (SIGTERM, then SIGKILL) and the
    Redis data dir removed on exit.
    """
    server = RedisServer(appendfsync="everysec", extra=["--latency-monitor-threshold", "50"])
    service: ServiceProcess | None = None
    try:
        server.start()
        env = {
            "KT_MODEL_DIR": str(artifact),
            "KT_REDIS_URL": server.url,
            "KT_ORT_THREADS": "1",
            "KT_LOG_LEVEL": "warning",
            "KT_HISTORY_EXTRA": str(history_extra),
            "KT_UNKNOWN_QUESTIONS": "map",
        }
        service = ServiceProcess(env, inherit_output=True).start(ready_timeout_s=60)
        yield server, service
    finally:
        if service is not None:
            service.stop(timeout_s=10)
            service.cleanup()
        server.cleanup()


def redis_footprint(r: redis.Redis, n_learners: int) -> dict[str, Any]:
    """MEMORY USAGE and STRLEN of a sample of history keys (named by `service.store`'s own code).

    Raises if a key is missing: the bytes per learner must never silently read 0.
    """
    sample = random.Random(2).sample(range(n_learners), min(KEY_SAMPLE, n_learners))
    keys = history_keys(f"soak-{u}" for u in sample)  # KT_KEY_PREFIX is the service's default
    usage, strlen = zip(*(key_memory(r, key) for key in keys), strict=True)
    return {"usage": list(usage), "strlen": list(strlen)}


def run_load(
    url: str, learners: Learners, args: argparse.Namespace, proc: psutil.Process
) -> dict[str, Any]:
    """The open-loop run with the service's RSS sampled every 5 s and its CPU time around it."""
    rss: list[tuple[float, int]] = []

    def tick(t: float) -> None:
        rss.append((t, proc.memory_info().rss))
        if len(rss) % 12 == 0:
            logger.info("t=%4.0fs  RSS %.1f MiB", t, rss[-1][1] / 2**20)

    logger.info("soak: %.0f req/s offered for %.0f s (%.0f%% ingest) ...", args.rate,
                args.duration, 100 * args.ingest_share)  # fmt: skip
    cpu0 = proc.cpu_times()
    stats, elapsed = asyncio.run(
        open_loop(url, learners, args.rate, args.duration, args.ingest_share, args.timeout, tick)
    )
    cpu1 = proc.cpu_times()
    rss.append((elapsed, proc.memory_info().rss))
    return {
        "stats": stats,
        "elapsed_s": elapsed,
        "rss": rss,
        "cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
    }


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Export (or take) the model, start Redis + service, prefill, run the load: the raw numbers."""
    artifact = args.artifact
    if artifact is None:
        logger.info("exporting an untrained demo-size saint_plus ...")
        artifact = build_untrained_artifact(work / "model")
    from models.feature_spec import load_spec
    from service.events import RECORD_SIZE

    spec, vocab = load_spec(artifact / "feature_spec.json")
    history_extra = int(service_default("history_extra"))
    cap = spec.window + history_extra  # the service's history cap (window + KT_HISTORY_EXTRA)
    with soak_stack(artifact, history_extra) as (server, service):
        r = server.client()
        proc = psutil.Process(service.pid)
        learners = Learners(args.learners, vocab.size - 1, start_events=cap)
        mem_before = int(r.info("memory")["used_memory"])
        logger.info("prefill: %d learners x %d events ...", args.learners, cap)
        prefill_s = asyncio.run(prefill(service.url, learners, cap))
        mem_after = int(r.info("memory")["used_memory"])
        keys = redis_footprint(r, args.learners)
        load = run_load(service.url, learners, args, proc)
        result = {
            "duration": args.duration,
            "rate": args.rate,
            "learners": args.learners,
            "ingest_share": args.ingest_share,
            "window": spec.window,
            "cap": cap,
            "record_bytes": RECORD_SIZE,
            "prefill_s": prefill_s,
            "redis_used": {"before": mem_before, "after": mem_after},
            **keys,
            **load,
        }
        result["redis_used"]["end"] = int(r.info("memory")["used_memory"])
        result["aof_delayed_fsync"] = int(r.info("persistence").get("aof_delayed_fsync", 0))
        latest = r.execute_command("LATENCY", "LATEST")
        result["redis_latency_events"] = [(str(e[0]), int(e[3])) for e in latest]
        r.close()
    result["loadavg"] = os.getloadavg()[0]
    return result


# -- dict -----------------------------------------------------------------------------------------
def latency_rows(m: dict[str, Any]) -> list[dict[str, Any]]:
    """Per request kind: sent, ok, errors, achieved req/s, p50/p99/max ms."""
    stats: Stats = m["stats"]
    errors = sum(stats.errors.values())
    rows = []
    for name, lat in (
        ("all", stats.latencies["ingest"] + stats.latencies["predict"]),
        ("ingest (POST /interactions, 1 event)", stats.latencies["ingest"]),
        ("predict (POST /predict, 1 candidate, full history)", stats.latencies["predict"]),
    ):
        kind = name.split(" ")[0]
        sent = (
            stats.sent
            if name == "all"
            else len(lat) + sum(v for k, v in stats.errors.items() if k.startswith(kind))
        )
        rows.append(
            {
                "name": name,
                "sent": sent,
                "ok": len(lat),
                "errors": errors if name == "all" else sent - len(lat),
                "achieved_rps": len(lat) / m["elapsed_s"],
                "p50_ms": pct(lat, 50),
                "p99_ms": pct(lat, 99),
                "max_ms": pct(lat, 100),
            }
        )
    return rows


def rss_growth(m: dict[str, Any]) -> dict[str, Any]:
    """RSS after the warm-up (10% of the run, at least 20 s) vs the last sample."""
    rss = m["rss"]
    warm = max(0.1 * m["duration"], 20.0)
    base = next((v for t, v in rss if t >= warm), rss[0][1])
    last = rss[-1][1]
    mib = [v / 2**20 for _, v in rss]
    return {
        "warm_s": warm,
        "base_mib": base / 2**20,
        "last_mib": last / 2**20,
        "growth": (last - base) / base,
        "min_mib": min(mib),
        "max_mib": max(mib),
        "samples": len(rss),
    }


def tail_windows(stats: Stats) -> dict[str, Any]:
    """p99 per 5-s window of scheduled time: how many are calm, and the worst three."""
    t_first = stats.timeline[0][0] if stats.timeline else 0.0
    windows: dict[int, list[float]] = {}
    for at, lat in stats.timeline:
        windows.setdefault(int((at - t_first) // 5), []).append(lat)
    window_p99 = sorted(((pct(v, 99), 5 * k) for k, v in windows.items()), reverse=True)
    return {
        "calm": sum(1 for p, _ in window_p99 if p <= 50.0),
        "windows": len(window_p99),
        "worst": window_p99[:3],
    }


def summarize(m: dict[str, Any]) -> dict[str, Any]:
    """The numbers of the report, from `measure`'s raw result."""
    stats: Stats = m["stats"]
    used = m["redis_used"]
    return {
        key: m[key]
        for key in ("duration", "rate", "learners", "ingest_share", "window", "cap", "prefill_s")
    } | {
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "rows": latency_rows(m),
        "sent": stats.sent,
        "errors": sum(stats.errors.values()),
        "error_kinds": dict(sorted(stats.errors.items())),
        "send_lag_p99_ms": pct(stats.send_lag, 99),
        "rss": rss_growth(m),
        "cpu_ms_per_req": 1000 * m["cpu_s"] / max(stats.sent, 1),
        "tail": tail_windows(stats),
        "aof_delayed_fsync": m["aof_delayed_fsync"],
        "redis_latency_events": m["redis_latency_events"],
        "loadavg": m["loadavg"],
        "payload_bytes": m["cap"] * m["record_bytes"],
        "record_bytes": m["record_bytes"],
        "bytes_per_learner": (used["after"] - used["before"]) / m["learners"],
        "memory_usage_mean": float(np.mean(m["usage"])),
        "strlen_mean": float(np.mean(m["strlen"])),
        "keys_sampled": len(m["usage"]),
        "used_end_mib": used["end"] / 2**20,
    }


# -- render ---------------------------------------------------------------------------------------
def render_setup(s: dict[str, Any]) -> list[str]:
    """Heading, the command and the setup paragraph."""
    return [
        "## Soak: fixed offered load on Redis (`bench/soak.py`)",
        "",
        f"`python -m bench.soak --duration {s['duration']:.0f} --rate {s['rate']:.0f}` on "
        f"{s['machine']}, {s['cores']} cores (load generator, service and Redis "
        "share them): one `python -m service` worker (KT_ORT_THREADS=1) on a private Redis "
        "(AOF everysec), an untrained saint_plus of the demo student's size (window "
        f"{s['window']}), {s['learners']:,} learners prefilled to the history cap ({s['cap']} events), "
        f"then {s['duration']:.0f} s open loop at {s['rate']:.0f} req/s "
        f"({100 * s['ingest_share']:.0f}% ingest / {100 * (1 - s['ingest_share']):.0f}% predict, "
        "learners uniformly at random; latency from the scheduled send time).",
        "",
    ]


def render_table(s: dict[str, Any]) -> list[str]:
    """The latency table: all, ingest, predict."""
    lines = [
        "| requests | sent | ok | errors | achieved req/s | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in s["rows"]:
        lines.append(
            f"| {x['name']} | {x['sent']:,} | {x['ok']:,} | {x['errors']} | "
            f"{x['achieved_rps']:.1f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | {x['max_ms']:.1f} |"
        )
    return lines


def render_findings(s: dict[str, Any]) -> list[str]:
    """Errors, RSS growth against the goal, CPU, the tail by window, Redis bytes per learner."""
    rss, tail, errors = s["rss"], s["tail"], s["errors"]
    verdict = "**yes**" if rss["growth"] <= RSS_GOAL else "**no**"
    kinds = ", ".join(f"{k}: {v}" for k, v in s["error_kinds"].items())
    return [
        "",
        f"- Errors: {errors} of {s['sent']:,}"
        + (f" ({kinds})" if errors else "")
        + f"; generator send lag p99 {s['send_lag_p99_ms']:.2f} ms.",
        f"- Service RSS: {rss['base_mib']:.1f} MiB after the {rss['warm_s']:.0f} s warm-up -> "
        f"{rss['last_mib']:.1f} MiB at the end (**{100 * rss['growth']:+.2f}%**; min "
        f"{rss['min_mib']:.1f}, max {rss['max_mib']:.1f} MiB over {rss['samples']} samples). "
        f"Goal ≤ {100 * RSS_GOAL:.0f}%: {verdict}.",
        f"- Service CPU: {s['cpu_ms_per_req']:.2f} ms per request (user + system over the run).",
        f"- Tail by 5-s window: {tail['calm']} of {tail['windows']} windows have p99 ≤ 50 ms; "
        "the worst: "
        + ", ".join(f"t={t}s p99 {p:,.0f} ms" for p, t in tail["worst"])
        + f". Redis: aof_delayed_fsync {s['aof_delayed_fsync']}, latency events (max ms) "
        + (", ".join(f"{n} {m}" for n, m in s["redis_latency_events"]) or "none")
        + f"; host load average at the end {s['loadavg']:.1f} on {s['cores']} cores.",
        f"- Redis bytes per learner at the cap ({s['cap']} events x {s['record_bytes']} B = "
        f"{s['payload_bytes']:,} B of payload): {s['bytes_per_learner']:,.0f} B (INFO used_memory "
        f"growth over the prefill / learners); MEMORY USAGE {s['memory_usage_mean']:,.0f} B per "
        f"key (mean of {s['keys_sampled']}; STRLEN {s['strlen_mean']:,.0f} B). used_memory after "
        f"the soak: {s['used_end_mib']:.1f} MiB for {s['learners']:,} learners "
        f"(prefill took {s['prefill_s']:.1f} s).",
    ]


def render(s: dict[str, Any]) -> str:
    """The docs section of a `summarize` result."""
    return "\n".join(render_setup(s) + render_table(s) + render_findings(s)) + "\n"


# -- CLI ------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure, summarize, render; print the section and write it to docs/benchmarks.md."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if not redis_server_installed():
        logger.error("redis-server is not installed")
        return 2
    work = Path(tempfile.mkdtemp(prefix="kt-soak-"))
    try:
        summary = summarize(measure(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    section = render(summary)
    logger.info("\n%s", section)
    if not args.no_docs:
        replace_section(DOCS, SECTION, section)
        logger.info("wrote the soak section of %s", DOCS)
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

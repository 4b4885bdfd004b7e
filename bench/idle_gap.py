"""What a pause between requests costs a request: in process, with the CPU idle or kept busy.

    python -m bench.idle_gap [--artifact artifacts/demo/artifact] [--rounds 200] [--no-docs]

At 50 req/s a service worker waits ~20 ms (two workers: ~40 ms) between `/predict` calls, and the
same call costs about twice what it costs back to back (docs/benchmarks.md, Serving). This separates
the two usual explanations:
- the *idle wake-up* (the process sleeps in `epoll`, the CPU idles, waking both costs time): then a
  gap spent spinning on the CPU (a loop that reads no data) would cost nothing;
- *cold caches* (during the gap the caches and branch predictors fill with other work: the other
  worker, Redis, the generator, other tenants of the host): then a spun gap costs as much as a
  slept one, and grows with the gap's length.

It runs the app in this process (raw ASGI on the embedded store, no sockets, as `python -m service`
builds it; 1 ORT thread), records one learner's 100-answer history, then times `POST /predict`
(1 candidate, server time) after gaps of each length, slept (`asyncio.sleep`, the event loop idles
as in uvicorn) or spun, all configurations called in turn so that the host's drift hits each alike.
Those rows ("after the same request") isolate one gap: the request just before warmed everything.
A service at a low rate sees a *steady stream* instead (each request only after a gap), so the
same gaps are also run as streams of `STEADY_BLOCK` requests (slept and spun blocks in turn, the
first `STEADY_SETTLE` of each block left out) over 500 learners round-robin, as the serving
benchmark's load. Each request's model time is its `Server-Timing` (`model;dur=`); the rest is the
app's own work (routing, validation, store read, decoding, JSON). Prints the table and rewrites
the `<!-- idle-gap:start -->` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import BENCHMARKS_MD as DOCS
from bench.report import write_section
from bench.serve_bench import DEMO_ARTIFACT, HISTORY, synthetic_history

ROOT = Path(__file__).resolve().parents[1]
SECTION = "idle-gap"
GAPS_MS = (0.0, 1.0, 5.0, 20.0, 40.0)
WARMUP_ROUNDS = 10
STEADY_GAPS_MS = (20.0, 40.0)  # 50 and 25 req/s
STEADY_BLOCK = 25  # requests per steady block
STEADY_SETTLE = 5  # the first requests of a block, left out: the stream has not settled yet
STEADY_LEARNERS = 500
REPEAT, STEADY = "after the same request", "steady stream"
USER = "idle-gap-learner"
COMMAND = "python -m bench.idle_gap"


def spin(seconds: float) -> None:
    """Keep the CPU busy for `seconds` without reading data (the interpreter loop only)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class InProcessApp:
    """The service app driven by raw ASGI calls: no sockets, no client library in the timing."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[bytes, bytes], bytes]:
        payload = json.dumps(body).encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"bench"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        sent = False
        status, headers, chunks = 0, {}, []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:  # the app only asks again to watch for a disconnect
                await asyncio.Event().wait()
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], dict(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, headers, b"".join(chunks)


def model_ms(headers: dict[bytes, bytes]) -> float:
    """`model;dur=<ms>` of a `Server-Timing` header."""
    for part in headers.get(b"server-timing", b"").decode().split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name == "model":
            return float(dur)
    raise RuntimeError("the response has no Server-Timing model;dur=")


async def measure(artifact: Path, rounds: int) -> dict[str, Any]:
    from service.app import create_app
    from service.config import Settings
    from service.lifecycle import hold_freed_memory

    hold_freed_memory()  # as the service's workers
    app = create_app(Settings(model_dir=artifact, ort_threads=1, ui=False))
    client = InProcessApp(app)
    async with app.router.lifespan_context(app):
        predictor = app.state.kt.predictor
        ids = predictor.vocab.question_ids

        async def record(user: str, rng: np.random.Generator) -> None:
            """A synthetic 100-answer history for `user`, through `POST /interactions`."""
            history = synthetic_history(rng, ids, HISTORY)
            status, _, body = await client.post(
                "/interactions", {"user_id": user, "interactions": history}
            )
            if status != 200:
                raise RuntimeError(f"recording {user}'s history failed: {status} {body[:200]!r}")

        await record(USER, np.random.default_rng(0))
        request = {"user_id": USER, "questions": [{"question_id": int(ids[0])}]}
        rng = np.random.default_rng(1)
        learners = [f"{USER}-{i}" for i in range(STEADY_LEARNERS)]
        for learner in learners:
            await record(learner, rng)
        stream = [
            {"user_id": learner, "questions": [{"question_id": int(q)}]}
            for learner, q in zip(learners, rng.choice(ids, STEADY_LEARNERS), strict=True)
        ]

        async def predict(request: dict[str, Any] = request) -> tuple[float, float]:
            start = time.perf_counter()
            status, headers, body = await client.post("/predict", request)
            total = (time.perf_counter() - start) * 1e3
            if status != 200:
                raise RuntimeError(f"/predict failed: {status} {body[:200]!r}")
            return total, model_ms(headers)

        gaps: dict[str, Callable[[float], Awaitable[None]]] = {
            "slept": asyncio.sleep,
            "spun": _spun,
        }
        configs = [(mode, g) for g in GAPS_MS for mode in gaps]
        samples: dict[tuple[str, float], list[tuple[float, float]]] = {c: [] for c in configs}
        for r in range(rounds + WARMUP_ROUNDS):
            for mode, gap in configs:
                await predict()  # the same request just before: the gap is the only difference
                await gaps[mode](gap / 1e3)
                sample = await predict()
                if r >= WARMUP_ROUNDS:
                    samples[(mode, gap)].append(sample)
        steady: dict[tuple[str, float], list[tuple[float, float]]] = {
            (mode, g): [] for g in STEADY_GAPS_MS for mode in gaps
        }
        blocks = -(-rounds // (STEADY_BLOCK - STEADY_SETTLE))
        sent = 0
        for _ in range(blocks):
            for mode, gap in steady:
                for i in range(STEADY_BLOCK):
                    await gaps[mode](gap / 1e3)
                    sample = await predict(stream[sent % len(stream)])
                    sent += 1
                    if i >= STEADY_SETTLE:
                        steady[(mode, gap)].append(sample)
    rows = [_row(REPEAT, mode, gap, values) for (mode, gap), values in samples.items()] + [
        _row(STEADY, mode, gap, values[:rounds]) for (mode, gap), values in steady.items()
    ]
    return {
        "rows": rows,
        "rounds": rounds,
        "artifact": _shown(artifact),
        "version": predictor.version,
        "machine": f"{os.cpu_count()} CPUs ({platform.machine()})",
        "load": os.getloadavg(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }


def _row(pattern: str, mode: str, gap: float, values: list[tuple[float, float]]) -> dict[str, Any]:
    """One table row: p50 of the request, of its model time and of the rest."""
    total = np.array([v[0] for v in values])
    model = np.array([v[1] for v in values])
    return {
        "pattern": pattern,
        "gap": mode,
        "gap_ms": gap,
        "total_p50_ms": round(float(np.median(total)), 3),
        "model_p50_ms": round(float(np.median(model)), 3),
        "rest_p50_ms": round(float(np.median(total - model)), 3),
    }


def _shown(path: Path) -> str:
    """`path` relative to the repository where it lies inside it (as the docs name it)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


async def _spun(seconds: float) -> None:
    spin(seconds)


def render(result: dict[str, Any]) -> str:
    rows = result["rows"]
    base = {r["gap"]: r for r in rows if r["pattern"] == REPEAT and r["gap_ms"] == 0.0}
    lines = [
        f"Reproduce: `{COMMAND}`. Machine: {result['machine']}, shared; 1-min load average at the "
        f"end {result['load'][0]:.1f}. Run {result['when']}, artifact `{result['artifact']}` "
        f"(version {result['version']}); {result['rounds']} calls per row, the rows of each "
        "pattern called in turn.",
        "",
        "`POST /predict` (1 candidate, history 100, embedded store) through the app in process, "
        "after a gap slept (the event loop idles, as uvicorn between requests) or spun (the thread "
        "keeps its CPU in a loop that reads no data). *After the same request*: the request just "
        "before the gap was this one, so the gap is the only difference. *Steady stream*: every "
        f"request comes only after a gap, over {STEADY_LEARNERS} learners round-robin, as a "
        f"worker sees a low rate (blocks of {STEADY_BLOCK}, the first {STEADY_SETTLE} left out). "
        "The last column compares with the back-to-back request (gap 0, same mode):",
        "",
        "| pattern | gap | gap ms | request p50 ms | of which model (`Server-Timing`) p50 ms "
        "| rest p50 ms | request vs no gap |",
        "|---|---|---|---|---|---|---|",
    ]
    order = {REPEAT: 0, STEADY: 1}
    for r in sorted(rows, key=lambda r: (order[r["pattern"]], r["gap"], r["gap_ms"])):
        ratio = r["total_p50_ms"] / base[r["gap"]]["total_p50_ms"]
        lines.append(
            f"| {r['pattern']} | {r['gap']} | {r['gap_ms']:g} | {r['total_p50_ms']} "
            f"| {r['model_p50_ms']} | {r['rest_p50_ms']} | {ratio:.2f}× |"
        )

    def ratio(pattern: str, mode: str, gap: float) -> float:
        (row,) = (r for r in rows if (r["pattern"], r["gap"], r["gap_ms"]) == (pattern, mode, gap))
        return float(row["total_p50_ms"] / base[mode]["total_p50_ms"])

    longest, steady = max(GAPS_MS), min(STEADY_GAPS_MS)
    lines += [
        "",
        f"Reading: after the same request and a {longest:g} ms gap, the request costs "
        f"{ratio(REPEAT, 'slept', longest):.2f}× its back-to-back time when the gap is slept and "
        f"{ratio(REPEAT, 'spun', longest):.2f}× when it is spun. In a steady stream of one "
        f"request per {steady:g} ms ({1000 / steady:g} req/s) it costs "
        f"{ratio(STEADY, 'slept', steady):.2f}× slept and {ratio(STEADY, 'spun', steady):.2f}× "
        "spun: the steady rows are what a worker of the serving benchmark sees at its low rate. "
        "Where slept and spun are alike, the cost is not the idle CPU waking up (a spinning "
        "thread never sleeps) but the state the gap lets other work evict (caches, TLB, branch "
        "predictors), which grows with the gap and which the service cannot keep warm short of "
        "running something in its place.",
    ]
    return "\n".join(lines)


def run_loop(main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run on uvloop where installed, the event loop of the service's uvicorn workers."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a service dependency
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=DEMO_ARTIFACT, help="model artifact")
    parser.add_argument("--rounds", type=int, default=200, help="calls per row")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    parser.add_argument("--docs", type=Path, default=DOCS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (args.artifact / "model.onnx").exists():
        parser.error(f"--artifact: no model.onnx in {args.artifact} (run `make demo-model`)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    result = run_loop(measure(args.artifact, args.rounds))
    section = render(result)
    print(section)
    if not args.no_docs:
        write_section(
            args.docs, SECTION, "What a pause between requests costs (in process)", section
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

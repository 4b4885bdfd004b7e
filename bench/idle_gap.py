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
Each request's model time is its `Server-Timing` (`model;dur=`); the rest is the app's own work
(routing, validation, store read, decoding, JSON). Prints the table and rewrites the
`<!-- idle-gap:start -->` section of docs/benchmarks.md.
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
        history = synthetic_history(np.random.default_rng(0), ids, HISTORY)
        status, _, body = await client.post(
            "/interactions", {"user_id": USER, "interactions": history}
        )
        if status != 200:
            raise RuntimeError(f"recording the history failed: {status} {body[:200]!r}")
        request = {"user_id": USER, "questions": [{"question_id": int(ids[0])}]}

        async def predict() -> tuple[float, float]:
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
    rows = []
    for (mode, gap), values in samples.items():
        total = np.array([v[0] for v in values])
        model = np.array([v[1] for v in values])
        rows.append(
            {
                "gap": mode,
                "gap_ms": gap,
                "total_p50_ms": round(float(np.median(total)), 3),
                "model_p50_ms": round(float(np.median(model)), 3),
                "rest_p50_ms": round(float(np.median(total - model)), 3),
            }
        )
    return {
        "rows": rows,
        "rounds": rounds,
        "artifact": _shown(artifact),
        "version": predictor.version,
        "machine": f"{os.cpu_count()} CPUs ({platform.machine()})",
        "load": os.getloadavg(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
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
    base = {r["gap"]: r for r in rows if r["gap_ms"] == 0.0}
    lines = [
        f"Reproduce: `{COMMAND}`. Machine: {result['machine']}, shared; 1-min load average at the "
        f"end {result['load'][0]:.1f}. Run {result['when']}, artifact `{result['artifact']}` "
        f"(version {result['version']}); {result['rounds']} calls per row, every row called in "
        "turn.",
        "",
        "`POST /predict` (1 candidate, history 100, embedded store) through the app in process, "
        "just after the same request and a gap slept (the event loop idles, as uvicorn between "
        "requests) or spun (the thread keeps its CPU in a loop that reads no data):",
        "",
        "| gap | gap ms | request p50 ms | of which model (`Server-Timing`) p50 ms | rest p50 ms "
        "| request vs no gap |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["gap"], r["gap_ms"])):
        ratio = r["total_p50_ms"] / base[r["gap"]]["total_p50_ms"]
        lines.append(
            f"| {r['gap']} | {r['gap_ms']:g} | {r['total_p50_ms']} | {r['model_p50_ms']} "
            f"| {r['rest_p50_ms']} | {ratio:.2f}× |"
        )
    slept = {r["gap_ms"]: r["total_p50_ms"] for r in rows if r["gap"] == "slept"}
    spun = {r["gap_ms"]: r["total_p50_ms"] for r in rows if r["gap"] == "spun"}
    longest = max(GAPS_MS)
    lines += [
        "",
        f"Reading: after {longest:g} ms the request costs {slept[longest] / slept[0.0]:.2f}× its "
        f"back-to-back time when the gap is slept and {spun[longest] / spun[0.0]:.2f}× when it is "
        "spun. Where the two are alike, the cost is not the idle CPU waking up (a spinning thread "
        "never sleeps) but the state the gap lets the host's other work evict (caches, TLB, branch "
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

"""Serving benchmark: open-loop load against a running `python -m service` (Redis-backed).

    python -m bench.serve_bench [--artifact DIR] [--rates 100,200,...,700] [--duration 10]
                                [--redis-url URL | --redis-port 7231] [--workers 2] [--no-docs]

What it does, all on loopback:
1. Picks the model: `--artifact`, else the distilled demo student at artifacts/demo/artifact, else
   it exports an *untrained* saint_plus with the demo student's size (preset "tiny": d_model 32,
   1 layer, 2 heads, window 100, 1000 questions) — latency does not depend on the weights.
2. Starts a private `redis-server` (port 7231, AOF everysec like docker-compose.yml; or uses
   `--redis-url`) and `python -m service` as a subprocess (KT_ORT_THREADS=1, `--workers` workers,
   a fresh key prefix deleted at the end), then records a 100-event history for each of 500
   learners.
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

Code: `run` (measure: the processes via `bench.procs`, Redis keys named by `service.store`'s own
code, a missing key fails the run) -> a dict (saved to bench/out/serve_bench.json, re-rendered with
`--render-from`) -> `bench.serve_report.render` (the section, written by `bench.report`; the
targets live there too) and its `plot`. The load generator and the CPU accounting are
`bench.openloop`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.openloop import http_get, http_post, load_step
from bench.procs import (
    RedisServer,
    ServiceProcess,
    history_keys,
    key_memory,
    redis_server_installed,
    redis_version,
)
from bench.report import BENCHMARKS_MD as DOCS
from bench.report import replace_section
from bench.serve_report import COMMAND, TARGET_RATE, plot, render

ROOT = Path(__file__).resolve().parents[1]
SECTION = "serve"
PLOT = ROOT / "docs" / "serve_bench.png"
RAW = ROOT / "bench" / "out" / "serve_bench.json"  # raw numbers of the last run (git-ignored)
DEMO_ARTIFACT = ROOT / "artifacts" / "demo" / "artifact"
HISTORY = 100
N_USERS = 500
# /recommend over a whole bank: the Riiid sample's 13,523 questions with a lean student
RECOMMEND_ARTIFACT = ROOT / "bench" / "out" / "riiid_lean" / "artifact"
RECOMMEND_RATE = 20.0
RECOMMEND_USERS = 50


# -- model ----------------------------------------------------------------------------------------
def build_untrained_artifact(out: Path, window: int = 100, n_questions: int = 1000) -> Path:
    """Export an untrained saint_plus of the demo student's size (training.distill preset 'tiny')."""
    import torch

    from models.config import config_for_spec
    from models.feature_spec import FeatureSpec
    from models.registry import build_model
    from models.vocab import QuestionVocab
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


# -- model-only -----------------------------------------------------------------------------------
def _history(predictor: Any, history: list[dict], to_index: Any = None) -> Any:
    """A synthetic history as the service reads it back from the store (`events_to_history`)."""
    from service.events import events_to_history, make_events

    events = make_events(
        timestamp=[h["timestamp"] for h in history],
        question_id=[h["question_id"] for h in history],
        correct=[h["correct"] for h in history],
        elapsed_ms=[h["elapsed_time_ms"] for h in history],
        had_explanation=[h["had_explanation"] for h in history],
        container_id=[h["container_id"] for h in history],
        interaction_id=[None] * len(history),
    )
    return events_to_history(events, predictor.vocab, to_index)


def _timed(call: Any, iters: int, warm: int = 50) -> np.ndarray:
    for _ in range(warm):
        call()
    out = np.empty(iters)
    for i in range(iters):
        t = time.perf_counter()
        call()
        out[i] = (time.perf_counter() - t) * 1000.0
    return out


def model_only(
    artifact: Path, history: list[dict], moment: int, n_cand: int, iters: int
) -> np.ndarray:
    """Latency (ms) of `Predictor.score` for one request (B=1), exactly the service's scoring call."""
    from models.features import CandidateRequest
    from service.predictor import Predictor

    predictor = Predictor.load(artifact, providers="cpu", threads=1)
    cands = predictor.vocab.question_ids[:n_cand]
    request = CandidateRequest(
        _history(predictor, history), predictor.vocab.to_index(cands), moment
    )
    return _timed(lambda: predictor.score([request]), iters)


def recommend_model_only(
    artifact: Path, history: list[dict], moment: int, iters: int
) -> dict[str, Any]:
    """The /recommend route's scoring call for one learner over the whole bank
    (`Predictor.score_bundle`), and its two parts: encoding and the bundle.onnx runs. With the
    service's allocator setting (`hold_freed_memory`), as its workers run."""
    from models.bundle import bundle_feeds
    from models.features import CandidateRequest, encode
    from service import recommend
    from service.catalogue import Catalogue
    from service.lifecycle import hold_freed_memory
    from service.predictor import Predictor

    hold_freed_memory()

    predictor = Predictor.load(artifact, providers="cpu", threads=1)
    bank = Catalogue().bank(predictor.vocab)
    hist = _history(predictor, history, bank.to_index)
    cands = bank.indices(None, None, None)
    request = CandidateRequest(hist, cands, moment)
    chunk = recommend.RECOMMEND_CHUNK

    def encoding() -> dict[str, np.ndarray]:
        return encode(
            hist, predictor.spec, bank.items, candidates=cands, candidate_timestamp=moment
        )

    whole = encoding()
    embedding, difficulty = predictor.item_side_rows(bank.items)  # the bank's, as the service
    feeds = bundle_feeds([whole], [len(cands)], [(embedding[cands], difficulty[cands])])

    return {
        "bundle_graph": predictor.has_bundle_graph,
        "score": _pct(_timed(lambda: predictor.score_bundle(request, chunk, bank.items), iters, 3)),
        "encode": _pct(_timed(encoding, iters, 3)),
        "ort": _pct(_timed(lambda: predictor.run_bundle(feeds), iters, 3))
        if predictor.has_bundle_graph
        else None,
        "history": int(len(whole["question"]) - len(cands)),
    }


# -- report ---------------------------------------------------------------------------------------
def _pct(a: np.ndarray) -> dict[str, float]:
    p50, p95, p99 = np.percentile(a, [50, 95, 99]).tolist()
    return {"p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "p99_ms": round(p99, 3)}


def _load_avg() -> str:
    return f"{os.getloadavg()[0]:.1f}"


# -- measure --------------------------------------------------------------------------------------
def pick_artifact(args: argparse.Namespace, tmp: Path) -> Path:
    """`--artifact`, else the demo student, else an untrained tiny saint_plus exported into `tmp`."""
    if args.artifact:
        return Path(args.artifact)
    if (DEMO_ARTIFACT / "model.onnx").exists():
        return DEMO_ARTIFACT
    print("no artifact given and no demo model: exporting an untrained tiny saint_plus ...")
    return build_untrained_artifact(tmp)


def describe_model(artifact: Path, tmp: Path) -> tuple[str, np.ndarray]:
    """The model line of the report and the artifact's question ids."""
    from service.predictor import Predictor

    predictor = Predictor.load(artifact, threads=1)
    cfg = predictor.config
    params = predictor.manifest.get("params")
    exported = artifact.is_relative_to(tmp)
    trained = (
        "untrained, the size of the distilled demo student (`training.distill` preset `tiny`), "
        "exported because no demo artifact was there — latency does not depend on the weights"
        if exported
        else "trained"
    )
    model = (
        f"{cfg.get('name')} d_model {cfg.get('d_model')}, {cfg.get('n_layers')} layer(s), "
        f"{cfg.get('n_heads')} heads, window {predictor.spec.window}, {predictor.vocab.size} "
        f"question tokens{f', {params:,} parameters' if isinstance(params, int) else ''}; "
        f"{trained}; artifact `{artifact if not exported else 'temporary export'}` "
        f"(version {predictor.version})"
    )
    return model, predictor.vocab.question_ids


def open_redis(args: argparse.Namespace, stack: ExitStack) -> tuple[str, int | None, str]:
    """(URL, pid of a private redis-server or None, description): `--redis-url`, else a private
    redis-server on `--redis-port` (AOF everysec, stopped by `stack`), else 127.0.0.1:6379."""
    if args.redis_url:
        return args.redis_url, None, f"the Redis at `{args.redis_url}`"
    if redis_server_installed():
        server = RedisServer(port=args.redis_port, appendfsync="everysec")
        stack.callback(server.cleanup)
        stack.callback(server.stop)
        server.start()
        desc = (
            f"a private `redis-server` {redis_version()} (AOF `appendfsync everysec`, as in "
            "docker-compose.yml) started by the benchmark"
        )
        return server.url, server.pid, desc
    return "redis://127.0.0.1:6379/0", None, "the Redis at 127.0.0.1:6379"


def record_histories(
    url: str, users: list[str], histories: list[list[dict]], cap_history: list[dict]
) -> int:
    """POST every learner's history, and one learner ("bench-cap") past the cap; returns the cap."""
    import httpx

    with httpx.Client(base_url=url, timeout=10) as http:
        for uid, items in zip(users, histories, strict=True):
            r = http.post("/interactions", json={"user_id": uid, "interactions": items})
            r.raise_for_status()
        r = http.post("/interactions", json={"user_id": "bench-cap", "interactions": cap_history})
        r.raise_for_status()
    return int(r.json()["history_length"])


def redis_memory(client: Any, prefix: str, user: str, cap: int) -> dict[str, int]:
    """Bytes of a 100-event history and of one at the cap, under the service's own key names."""
    key, cap_key = history_keys([user, "bench-cap"], prefix)
    bytes_100, strlen_100 = key_memory(client, key, samples=0)
    bytes_cap, _ = key_memory(client, cap_key, samples=0)
    return {"strlen_100": strlen_100, "bytes_100": bytes_100, "cap": cap, "bytes_cap": bytes_cap}


def predict_payloads(
    users: list[str], question_ids: np.ndarray, moment: int, n_cand: int
) -> list[bytes]:
    """One POST /predict per learner with the first `n_cand` questions at `moment`."""
    cands = [{"question_id": int(q), "timestamp": moment} for q in question_ids[:n_cand]]
    return [http_post("/predict", {"user_id": u, "questions": cands}) for u in users]


# A sweep step whose generator sent its requests late by more than STALLED_SEND_LAG_MS (p99) did
# not offer its rate: the machine stalled the generator itself (a service that falls behind delays
# its answers, not the generator's sends). Such a step is run again, at most STALLED_RETRIES times;
# the stalled runs are reported under the sweep table.
STALLED_SEND_LAG_MS = 20.0
STALLED_RETRIES = 2


def offered_step(
    port: int,
    pid: int,
    payloads: list[bytes],
    rate: float,
    args: argparse.Namespace,
    redis_pid: int | None,
    label: str,
) -> dict[str, Any]:
    """One sweep step at `rate` (`load_step`), run again while its generator fell behind (see
    STALLED_SEND_LAG_MS); its row, with the stalled runs' rows under `stalled_runs` if any."""
    stalled: list[dict[str, Any]] = []
    while True:
        row = load_step(port, pid, payloads, rate, args.duration, redis_pid).row()
        print(f"{label}:", json.dumps(row))
        time.sleep(1.0)
        if row["send_lag_p99_ms"] <= STALLED_SEND_LAG_MS or len(stalled) == STALLED_RETRIES:
            return {**row, "stalled_runs": stalled} if stalled else row
        stalled.append(row)  # the generator itself fell behind: the rate was not offered


def rate_sweep(
    port: int, pid: int, one: list[bytes], args: argparse.Namespace, redis_pid: int | None
) -> dict[str, Any]:
    """Warm-up, one step per offered rate, the target rate repeated; the per-request CPU there."""
    load_step(port, pid, one, 100, 2.0, redis_pid)  # warm-up (not reported)
    rows = [offered_step(port, pid, one, rate, args, redis_pid, "load") for rate in args.rates]
    # the target rate again: on a shared machine one run is one sample of the neighbours' load
    repeats = [x["p99_ms"] for x in rows if x["rate"] == TARGET_RATE]
    stalled_repeats: list[dict[str, Any]] = []
    for _ in range(max(args.target_repeats - len(repeats), 0) if repeats else 0):
        again = offered_step(port, pid, one, TARGET_RATE, args, redis_pid, "load (repeat)")
        repeats.append(again["p99_ms"])
        stalled_repeats += again.get("stalled_runs", [])
    # marginal cost under load (at low rates idle wake-ups inflate the per-request CPU)
    cpu = next(
        (x["server_cpu_ms_per_req"] for x in rows if x["rate"] == TARGET_RATE),
        float(np.median([x["server_cpu_ms_per_req"] for x in rows])),
    )
    return {
        "load": rows,
        "target_repeats": repeats,
        "target_repeats_stalled_runs": stalled_repeats,
        "server_cpu_ms_per_req": cpu,
    }


def candidate_steps(
    port: int,
    pid: int,
    by_k: dict[str, list[bytes]],
    low_rate: float,
    duration: float,
    redis_pid: int | None,
) -> dict[str, Any]:
    """One load step at the low rate per candidate count."""
    out = {}
    for k, payloads in by_k.items():
        out[k] = load_step(port, pid, payloads, low_rate, duration, redis_pid).row()
        print(f"{k} candidates:", json.dumps(out[k]))
    return out


def redis_ops_us(
    client: Any, url: str, users: list[str], histories: list[list[dict]], moment: int
) -> dict[str, float]:
    """Redis µs per call so far (GET, EVALSHA), then of appending 1 event onto a full history."""
    import httpx

    stats = client.info("commandstats")
    ops = {
        op: float(stats[f"cmdstat_{op}"]["usec_per_call"])
        for op in ("get", "evalsha")
        if f"cmdstat_{op}" in stats
    }
    # steady state: one new answer appended to a full history (the /interactions path)
    with httpx.Client(base_url=url, timeout=10) as http:
        for i, (uid, items) in enumerate(zip(users, histories, strict=True)):
            new = dict(items[-1], timestamp=moment + i, container_id=10_000)
            http.post(
                "/interactions", json={"user_id": uid, "interactions": [new]}
            ).raise_for_status()
    after = client.info("commandstats").get("cmdstat_evalsha")
    before = stats.get("cmdstat_evalsha")
    if after and before and after["calls"] > before["calls"]:
        ops["append_1"] = (after["usec"] - before["usec"]) / (after["calls"] - before["calls"])
    return ops


@contextmanager
def bench_service(
    artifact: Path, redis_url: str, workers: int
) -> Iterator[tuple[ServiceProcess, Any, str]]:
    """`python -m service` on `artifact` (KT_ORT_THREADS=1, `workers` workers) over `redis_url` with
    a fresh key prefix: yields (the running service, a Redis client, the prefix); the prefix's
    keys are deleted afterwards."""
    import redis

    prefix = f"bench-{secrets.token_hex(4)}:"
    env = {
        "KT_MODEL_DIR": str(artifact),
        "KT_REDIS_URL": redis_url,
        "KT_KEY_PREFIX": prefix,
        "KT_ORT_THREADS": "1",
        "KT_WORKERS": str(workers),
        "KT_HOST": "127.0.0.1",
        "KT_LOG_LEVEL": "warning",
    }
    client = redis.Redis.from_url(redis_url)
    try:
        with ServiceProcess(env, inherit_output=True).start(ready_timeout_s=60) as svc:
            yield svc, client, prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def measure_service(
    args: argparse.Namespace,
    artifact: Path,
    redis_url: str,
    redis_pid: int | None,
    question_ids: np.ndarray,
    histories: list[list[dict]],
    moment: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Start the service on a fresh key prefix, fill it, run every load step; keys deleted after."""
    users = [f"bench-user-{i}" for i in range(N_USERS)]
    out: dict[str, Any] = {}
    with bench_service(artifact, redis_url, args.workers) as (svc, client, prefix):
        cap_history = synthetic_history(rng, question_ids, 400)
        cap = record_histories(svc.url, users, histories, cap_history)
        out["redis_memory"] = redis_memory(client, prefix, users[0], cap)
        print("redis:", json.dumps(out["redis_memory"]))
        one = predict_payloads(users, question_ids, moment, 1)
        out |= rate_sweep(svc.port, svc.pid, one, args, redis_pid)
        by_k = {"1": one, "100": predict_payloads(users, question_ids, moment, 100)}
        out["candidates"] = candidate_steps(
            svc.port, svc.pid, by_k, args.low_rate, args.duration, redis_pid
        )
        out["redis_ops_us"] = redis_ops_us(client, svc.url, users, histories, moment)
        floor = load_step(
            svc.port, svc.pid, [http_get("/healthz")], args.low_rate, args.duration, redis_pid
        )
        out["floor"] = floor.row()
        print("GET /healthz:", json.dumps(out["floor"]))
        floor_hi = load_step(
            svc.port, svc.pid, [http_get("/healthz")], TARGET_RATE, args.duration, redis_pid
        )
        out["floor_hi"] = floor_hi.row()
        print(f"GET /healthz at {TARGET_RATE} req/s:", json.dumps(out["floor_hi"]))
    return out


def measure_recommend(
    args: argparse.Namespace, artifact: Path, redis_url: str, redis_pid: int | None
) -> dict[str, Any]:
    """`/recommend` over the whole bank of `artifact` at RECOMMEND_RATE: a service of its own (1
    worker) on a fresh key prefix, RECOMMEND_USERS learners with 100-answer histories, k = 10."""
    _, question_ids = describe_model(artifact, Path(tempfile.gettempdir()))
    rng = np.random.default_rng(1)
    histories = [synthetic_history(rng, question_ids, HISTORY) for _ in range(RECOMMEND_USERS)]
    moment = max(h[-1]["timestamp"] for h in histories) + 60_000
    out: dict[str, Any] = {
        "bank": len(question_ids),
        "users": RECOMMEND_USERS,
        "model_only": recommend_model_only(artifact, histories[0], moment, 20),
    }
    print("recommend model-only:", json.dumps(out["model_only"]))
    users = [f"bench-rec-{i}" for i in range(RECOMMEND_USERS)]
    with bench_service(artifact, redis_url, workers=1) as (svc, _, _):
        record_histories(svc.url, users, histories, histories[0])
        payloads = [
            http_post("/recommend", {"user_id": u, "k": 10, "timestamp": moment}) for u in users
        ]
        load_step(svc.port, svc.pid, payloads[:2], 2.0, 2.0, redis_pid)  # warm-up
        step = load_step(svc.port, svc.pid, payloads, RECOMMEND_RATE, args.duration, redis_pid)
        out["load"] = step.row()
        print("recommend:", json.dumps(out["load"]))
    return out


def setup_facts(args: argparse.Namespace) -> dict[str, Any]:
    """What the report says of the requests: history length, learners, the /recommend artifact."""
    artifact = Path(args.recommend_artifact).resolve()
    shown = artifact.relative_to(ROOT) if artifact.is_relative_to(ROOT) else artifact
    return {"history": HISTORY, "users": N_USERS, "recommend_artifact": str(shown)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of the benchmark, as the dict `render` reads (and RAW stores)."""
    load_before = _load_avg()
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        artifact = pick_artifact(args, tmp)
        model, question_ids = describe_model(artifact, tmp)
        rng = np.random.default_rng(0)
        histories = [synthetic_history(rng, question_ids, HISTORY) for _ in range(N_USERS)]
        moment = max(h[-1]["timestamp"] for h in histories) + 60_000
        result: dict[str, Any] = {
            "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), shared",
            "model": model,
            "workers": args.workers,
            "duration_s": args.duration,
            "low_rate": args.low_rate,
            **setup_facts(args),
        }
        redis_url, redis_pid, result["redis"] = open_redis(args, stack)
        # model-only first, while nothing else of ours runs
        result["model_only"] = {
            str(k): _pct(model_only(artifact, histories[0], moment, k, args.model_iters))
            for k in (1, 100)
        }
        print("model-only:", json.dumps(result["model_only"]))
        result |= measure_service(
            args, artifact, redis_url, redis_pid, question_ids, histories, moment, rng
        )
        recommend_artifact = Path(args.recommend_artifact)
        if (recommend_artifact / "model.onnx").exists():
            result["recommend"] = measure_recommend(args, recommend_artifact, redis_url, redis_pid)
            result["recommend"]["model"] = describe_model(recommend_artifact, tmp)[0]
        else:
            print(f"no {recommend_artifact}: /recommend over a whole bank not measured")
    result["load_before"], result["load_after"] = load_before, _load_avg()
    return result


# -- main -----------------------------------------------------------------------------------------
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
        "--rates",
        default="100,200,300,400,500,600,700",
        help="offered rates, req/s (comma-separated)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per rate")
    parser.add_argument("--low-rate", type=float, default=50.0, help="rate of the 1-vs-100 test")
    parser.add_argument("--workers", type=int, default=2, help="KT_WORKERS of the service")
    parser.add_argument(
        "--recommend-artifact",
        default=str(RECOMMEND_ARTIFACT),
        help="artifact whose whole bank /recommend ranks (skipped when absent; see docs)",
    )
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
        # (a run saved before these facts were recorded had the defaults)
        result = setup_facts(args) | json.loads(Path(args.render_from).read_text())
        if "recommend" in result:
            result["recommend"].setdefault("users", RECOMMEND_USERS)
    else:
        result = run(args)
        RAW.parent.mkdir(parents=True, exist_ok=True)
        RAW.write_text(json.dumps(result, indent=1))
    result["notes"] = args.note or result.get("notes") or []
    section = render(result)
    print(section)
    if not args.no_docs:
        replace_section(DOCS, SECTION, section)
        plot(result["load"], PLOT, f"POST /predict, history {result['history']}, 1 candidate")
        print(f"wrote {DOCS} and {PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m training.replay`: online evaluation through the live HTTP API.

The same protocol as `training.evaluate`, but every prediction goes through a running service:

1. each learner's history file rows are recorded with `POST /interactions` (chunked to the
   service's per-request limit);
2. then, for every bundle of the eval file in time order, `POST /predict` scores the bundle's
   questions as candidates at the bundle's timestamp (the service uses only events strictly
   earlier), and only afterwards `POST /interactions` reveals the bundle's answers (with
   `container_id`, `elapsed_time_ms` and `had_explanation` where known).

Requests are built from `training.data.Interactions`, never from raw CSV rows: the loader has already
moved Riiid's `prior_*` columns (which describe the *previous* bundle) back onto the interactions
they describe, exactly as `training.evaluate` sees them. Learners run concurrently (asyncio + httpx);
the bundles of one learner strictly in order. Replay user ids carry a random prefix so they cannot
collide with real learners, and are erased at the end unless `--keep`.

    python -m training.replay --url http://127.0.0.1:8000 --history-file H --eval-file E \
        --questions-file Q [--concurrency 8] [--api-key K]

The last line printed is one JSON object: auc, acc, logloss, n, p50_ms, p99_ms (+ a few counts).

On the same artifact and files the predictions equal `training.evaluate`'s (tested to 1e-5 each).
Two places where they can differ slightly on real data: the service orders the items of one
bundle by question id (the loader keeps file order), which matters only when the model window cuts
through a bundle; and question ids unknown to the model are rejected by the service (422) unless it
runs with KT_UNKNOWN_QUESTIONS=map, while `training.evaluate` always maps them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.binary_metrics import binary_metrics
from training.cli import OneLineArgumentParser
from training.data import DataError, Interactions, load_dataset

logger = logging.getLogger(__name__)

DEFAULT_CHUNK = 1000  # the service's default KT_MAX_INTERACTIONS_PER_REQUEST
RETRY_STATUSES = frozenset({502, 503, 504})


class ReplayError(RuntimeError):
    """The service answered something the replay cannot continue from (the message says what)."""


@dataclass
class Bundle:
    """One eval bundle: questions shown together, then answered."""

    items: list[dict[str, Any]]  # /interactions items (question_id, timestamp, correct, ...)
    timestamp: int
    labels: np.ndarray  # (k,) 0/1
    lectures_before: list[dict[str, int]] = field(default_factory=list)  # since the last bundle

    @property
    def candidates(self) -> list[dict[str, int]]:
        return [
            {"question_id": it["question_id"], "timestamp": self.timestamp} for it in self.items
        ]


@dataclass
class LearnerPlan:
    """Everything the replay sends for one learner."""

    raw_user: int
    history: list[dict[str, Any]]
    bundles: list[Bundle]
    history_lectures: list[dict[str, int]] = field(default_factory=list)


@dataclass
class ReplayResult:
    """Labels and probabilities in eval order (learner by learner, bundle by bundle)."""

    labels: np.ndarray
    probs: np.ndarray
    predict_ms: np.ndarray  # client-side latency of every /predict call
    learners: int
    requests: int
    wall_s: float
    metrics: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        p50, p99 = (
            np.percentile(self.predict_ms, [50, 99]).tolist() if len(self.predict_ms) else [0, 0]
        )
        return {
            **self.metrics,
            "p50_ms": round(p50, 3),
            "p99_ms": round(p99, 3),
            "learners": self.learners,
            "requests": self.requests,
            "wall_s": round(self.wall_s, 2),
        }


# -- plan: Interactions -> API payloads -----------------------------------------------------------
def _lectures(data: Interactions, learner: int) -> tuple[list[dict[str, int]], np.ndarray]:
    """One learner's lecture rows as /interactions `lectures` items, and how many question rows
    come before each."""
    rows = data.rows(learner)
    lecture = data.is_lecture[rows]
    items = [
        {"lecture_id": int(lec), "timestamp": int(ts)}
        for lec, ts in zip(
            data.content_id[rows][lecture].tolist(),
            data.timestamp[rows][lecture].tolist(),
            strict=True,
        )
    ]
    return items, np.cumsum(~lecture)[lecture]


def _items(data: Interactions, learner: int) -> list[dict[str, Any]]:
    """One learner's question rows as /interactions items (lectures: `_lectures`)."""
    rows = data.rows(learner)
    keep = ~data.is_lecture[rows]
    items: list[dict[str, Any]] = []
    for q, ts, ok, cont, el, ex in zip(
        data.content_id[rows][keep].tolist(),
        data.timestamp[rows][keep].tolist(),
        data.correct[rows][keep].tolist(),
        data.bundle[rows][keep].tolist(),
        data.elapsed_ms[rows][keep].tolist(),
        data.explanation[rows][keep].tolist(),
        strict=True,
    ):
        item: dict[str, Any] = {"question_id": int(q), "timestamp": int(ts), "correct": bool(ok)}
        if cont >= 0:
            item["container_id"] = int(cont)
        if not math.isnan(el):
            item["elapsed_time_ms"] = round(el)
        if ex >= 0:
            item["had_explanation"] = bool(ex)
        items.append(item)
    return items


def _bundles(items: list[dict[str, Any]]) -> list[Bundle]:
    """Group consecutive items by (timestamp, container_id): the loader's (and the service's) bundles."""
    out: list[Bundle] = []
    start = 0
    for i in range(1, len(items) + 1):
        if i == len(items) or (items[i]["timestamp"], items[i].get("container_id")) != (
            items[start]["timestamp"],
            items[start].get("container_id"),
        ):
            chunk = items[start:i]
            labels = np.array([int(it["correct"]) for it in chunk], dtype=np.int8)
            out.append(Bundle(chunk, int(chunk[0]["timestamp"]), labels))
            start = i
    return out


def build_plans(
    history: Interactions | None, evaluation: Interactions, max_learners: int | None = None
) -> list[LearnerPlan]:
    """One plan per eval learner with at least one question row, in `evaluation.user_ids` order
    (the order of `training.evaluate.build_requests`)."""
    index = {int(u): i for i, u in enumerate(history.user_ids)} if history is not None else {}
    plans: list[LearnerPlan] = []
    for i, user in enumerate(evaluation.user_ids.tolist()):
        future = _items(evaluation, i)
        if not future:
            continue
        past: list[dict[str, Any]] = []
        past_lectures: list[dict[str, int]] = []
        if history is not None and int(user) in index:
            past = _items(history, index[int(user)])
            past_lectures = _lectures(history, index[int(user)])[0]
        bundles = _bundles(future)
        lectures, after = _lectures(evaluation, i)
        starts = np.cumsum([0] + [len(b.items) for b in bundles[:-1]])  # first item of each
        for lecture, n_before in zip(lectures, after.tolist(), strict=True):
            k = int(
                np.searchsorted(starts, n_before, side="left")
            )  # the next bundle starting there
            if k < len(bundles):
                bundles[k].lectures_before.append(lecture)
        plans.append(LearnerPlan(int(user), past, bundles, past_lectures))
        if max_learners is not None and len(plans) >= max_learners:
            break
    return plans


# -- HTTP -----------------------------------------------------------------------------------------
class _Api:
    """Thin client: JSON POST/DELETE with a few retries on 503/transport errors (writes are idempotent)."""

    def __init__(self, client: Any, retries: int = 3) -> None:
        self.client = client
        self.retries = retries

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        for attempt in range(self.retries + 1):
            try:
                resp = await self.client.request(method, path, json=body)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise ReplayError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if resp.status_code in RETRY_STATUSES and attempt < self.retries:
                await asyncio.sleep(float(resp.headers.get("retry-after", "0.5") or 0.5))
                continue
            if resp.status_code >= 400:
                raise ReplayError(_explain(method, path, resp.status_code, resp.text))
            return resp.json()
        raise AssertionError("unreachable")


def _explain(method: str, path: str, status: int, text: str) -> str:
    msg = f"{method} {path} -> {status}: {text[:500]}"
    if "unknown_question" in text:
        msg += (
            "\nThe model does not know some question ids of this data. Start the service with "
            "KT_UNKNOWN_QUESTIONS=map to score them as the unknown token (as training.evaluate does)."
        )
    elif status == 401:
        msg += "\nThe service requires an API key: pass --api-key (KT_API_KEY of the service)."
    return msg


async def _replay_learner(
    api: _Api, plan: LearnerPlan, user_id: str, chunk: int
) -> tuple[list[np.ndarray], list[float], int]:
    requests = 0
    for field_name, items in (("interactions", plan.history), ("lectures", plan.history_lectures)):
        for s in range(0, len(items), chunk):
            await api.call(
                "POST", "/interactions", {"user_id": user_id, field_name: items[s : s + chunk]}
            )
            requests += 1
    probs: list[np.ndarray] = []
    latencies: list[float] = []
    for bundle in plan.bundles:
        if bundle.lectures_before:
            await api.call(
                "POST", "/interactions", {"user_id": user_id, "lectures": bundle.lectures_before}
            )
            requests += 1
        started = time.perf_counter()
        out = await api.call(
            "POST", "/predict", {"user_id": user_id, "questions": bundle.candidates}
        )
        latencies.append((time.perf_counter() - started) * 1000.0)
        got = [p["question_id"] for p in out["predictions"]]
        if got != [it["question_id"] for it in bundle.items]:
            raise ReplayError(f"/predict for {user_id}: predictions do not match the candidates")
        probs.append(np.array([p["p_correct"] for p in out["predictions"]], dtype=np.float64))
        await api.call("POST", "/interactions", {"user_id": user_id, "interactions": bundle.items})
        requests += 2
    return probs, latencies, requests


async def replay_async(
    url: str,
    plans: list[LearnerPlan],
    *,
    concurrency: int = 8,
    api_key: str | None = None,
    user_prefix: str | None = None,
    keep: bool = False,
    chunk: int = DEFAULT_CHUNK,
    timeout_s: float = 30.0,
) -> ReplayResult:
    """Replay the plans against the service at `url`; see the module docstring."""
    try:
        import httpx
    except ImportError as exc:  # dev/serve extras carry it; the train extra alone does not
        raise ReplayError("training.replay needs httpx: pip install httpx") from exc
    if concurrency < 1 or chunk < 1:
        raise ValueError("concurrency and chunk must be positive")
    prefix = user_prefix if user_prefix is not None else f"replay-{secrets.token_hex(4)}-"
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    results: list[tuple[list[np.ndarray], list[float], int] | None] = [None] * len(plans)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(plans)):
        queue.put_nowait(i)
    started = time.perf_counter()
    async with httpx.AsyncClient(
        base_url=url.rstrip("/"), headers=headers, timeout=timeout_s, limits=limits
    ) as client:
        api = _Api(client)
        info = await api.call("GET", "/model")
        logger.info(
            "replaying %d learners against %s (model %s %s, window %s), user prefix %r",
            len(plans),
            url,
            info.get("name"),
            info.get("version"),
            info.get("window"),
            prefix,
        )
        done = 0

        async def worker() -> None:
            nonlocal done
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                results[i] = await _replay_learner(
                    api, plans[i], f"{prefix}{plans[i].raw_user}", chunk
                )
                done += 1
                if done % 100 == 0 or done == len(plans):
                    logger.info("%d/%d learners replayed", done, len(plans))

        try:
            await asyncio.gather(*(worker() for _ in range(min(concurrency, len(plans)) or 1)))
        finally:
            if not keep:
                await _erase(api, [f"{prefix}{p.raw_user}" for p in plans], concurrency)
    wall = time.perf_counter() - started
    probs = [p for r in results if r for p in r[0]]
    latencies = [x for r in results if r for x in r[1]]
    labels = [b.labels for plan in plans for b in plan.bundles]
    result = ReplayResult(
        labels=np.concatenate(labels).astype(np.float64) if labels else np.zeros(0),
        probs=np.concatenate(probs) if probs else np.zeros(0),
        predict_ms=np.asarray(latencies, dtype=np.float64),
        learners=len(plans),
        requests=sum(r[2] for r in results if r),
        wall_s=wall,
    )
    if len(result.labels):
        result.metrics = binary_metrics(result.labels, result.probs)
    return result


async def _erase(api: _Api, user_ids: list[str], concurrency: int) -> None:
    """Best effort: DELETE every replay learner (also after a failure)."""
    sem = asyncio.Semaphore(concurrency)

    async def one(uid: str) -> None:
        async with sem:
            try:
                await api.call("DELETE", f"/users/{uid}")
            except ReplayError as exc:
                logger.warning("could not erase %s: %s", uid, exc)

    await asyncio.gather(*(one(u) for u in user_ids))
    logger.info("erased %d replay learners", len(user_ids))


def replay(
    url: str,
    eval_file: Path,
    questions_file: Path,
    history_file: Path | None = None,
    *,
    max_learners: int | None = None,
    **kw: Any,
) -> ReplayResult:
    """Load the files (same loader as `training.evaluate`) and replay them; see `replay_async`."""
    evaluation = load_dataset(eval_file, questions_file)
    history = load_dataset(history_file, questions_file) if history_file is not None else None
    plans = build_plans(history, evaluation, max_learners)
    if not plans:
        raise ValueError(f"{eval_file}: no answered questions to replay")
    return asyncio.run(replay_async(url, plans, **kw))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    parser = OneLineArgumentParser(
        prog="python -m training.replay",
        description="Replay a log through the running service's HTTP API and report online AUC.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    parser.add_argument(
        "--history-file", default=None, help="earlier interactions (Riiid CSV / EdNet folder)"
    )
    parser.add_argument("--eval-file", required=True, help="interactions to predict, in time order")
    parser.add_argument("--questions-file", required=True)
    parser.add_argument("--concurrency", type=int, default=8, help="learners replayed at once")
    parser.add_argument("--api-key", default=None, help="bearer token (the service's KT_API_KEY)")
    parser.add_argument(
        "--user-prefix", default=None, help="prefix of replay user ids (default replay-<random>-)"
    )
    parser.add_argument("--keep", action="store_true", help="do not erase the replay learners")
    parser.add_argument(
        "--max-learners", type=int, default=None, help="replay only the first N eval learners"
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK,
        help="history items per /interactions call (<= the service's KT_MAX_INTERACTIONS_PER_REQUEST)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    args = parser.parse_args(argv)
    for flag in ("eval_file", "questions_file", "history_file"):
        value = getattr(args, flag)
        if value is not None and not Path(value).exists():
            parser.error(f"--{flag.replace('_', '-')}: {value} does not exist")
    if args.concurrency < 1 or args.chunk_size < 1:
        parser.error("--concurrency and --chunk-size must be positive")
    if args.max_learners is not None and args.max_learners < 1:
        parser.error("--max-learners must be positive")
    try:
        result = replay(
            args.url,
            Path(args.eval_file),
            Path(args.questions_file),
            Path(args.history_file) if args.history_file else None,
            max_learners=args.max_learners,
            concurrency=args.concurrency,
            api_key=args.api_key,
            user_prefix=args.user_prefix,
            keep=args.keep,
            chunk=args.chunk_size,
            timeout_s=args.timeout,
        )
    except (DataError, ValueError, FileNotFoundError, ReplayError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the route modules share: the server's clock, input checks against the bank and the
limits (4xx naming the field), the bank with registered questions, scoring (small calls on the
event loop, large ones on the inference thread) and its `Server-Timing`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from fastapi import Path, Request

from models.features import CandidateRequest
from models.vocab import UNKNOWN_QUESTION
from service.catalogue import ExtendedBank
from service.config import USER_ID_PATTERN
from service.deps import ApiError, RequestTiming, ServiceState, check_count
from service.events import make_events, make_lecture_events
from service.predictor import Predictor
from service.recommend import RECOMMEND_CHUNK
from service.schemas import InteractionIn, LectureIn

T = TypeVar("T")
UserPath = Path(min_length=1, max_length=1024, pattern=USER_ID_PATTERN)


def receive_time_ms() -> int:
    """The server's clock (ms since the Unix epoch): the time of requests that carry none."""
    return time.time_ns() // 1_000_000


def now_moment(state: ServiceState, received_ms: int) -> int | None:
    """The moment of a prediction without a timestamp: just after the receive time (so what was
    received with it is history), or None (lag unknown) with KT_SERVER_TIME=false."""
    return received_ms + 1 if state.settings.server_time else None


def to_events(
    items: list[InteractionIn], received_ms: int, lectures: list[LectureIn] | None = None
) -> np.ndarray:
    """Events of validated interactions (and lectures); those without a timestamp get the receive
    time."""
    answered = make_events(
        timestamp=[received_ms if i.timestamp is None else i.timestamp for i in items],
        question_id=[i.question_id for i in items],
        correct=[i.correct for i in items],
        elapsed_ms=[i.elapsed_time_ms for i in items],
        had_explanation=[i.had_explanation for i in items],
        container_id=[i.container_id for i in items],
        interaction_id=[i.interaction_id for i in items],
    )
    if not lectures:
        return answered
    watched = make_lecture_events(
        timestamp=[received_ms if x.timestamp is None else x.timestamp for x in lectures],
        lecture_id=[x.lecture_id for x in lectures],
        interaction_id=[x.interaction_id for x in lectures],
    )
    return np.concatenate([answered, watched])


async def request_bank(state: ServiceState, predictor: Predictor, ids: list[int]) -> ExtendedBank:
    """The model's bank plus the registered questions, after asking the store about any of `ids`
    this process does not know yet (a question registered through another worker)."""
    bank = state.catalogue.bank(predictor.vocab)
    unknown = np.unique(bank.unknown(np.asarray(ids, dtype=np.int64)))
    if len(unknown):
        found = await state.store_call("get_questions", state.store.get_questions(unknown.tolist()))
        if found:
            state.catalogue.add(found)
            bank = state.catalogue.bank(predictor.vocab)
    return bank


def check_unknown(
    state: ServiceState,
    bank: ExtendedBank,
    ids: list[int],
    loc: list[str | int],
    index: np.ndarray | None = None,
) -> None:
    """422 listing the ids neither trained on nor registered (unless KT_UNKNOWN_QUESTIONS=map);
    `index`: `bank.to_index(ids)` when the caller has it already."""
    if state.settings.unknown_questions == "map" or not ids:
        return
    raw = np.asarray(ids, dtype=np.int64)
    index = bank.to_index(raw) if index is None else index
    unknown = sorted(set(raw[index == UNKNOWN_QUESTION].tolist()))
    if unknown:
        shown = unknown[:50]
        more = f" (+{len(unknown) - 50} more)" if len(unknown) > 50 else ""
        raise ApiError(
            422,
            f"unknown question ids: {shown}{more}",
            loc,
            "unknown_question",
            extra={"unknown_question_ids": shown},
        )


def check_interactions(
    state: ServiceState,
    bank: ExtendedBank,
    items: list[InteractionIn],
    loc: list,
    received_ms: int,
    n_lectures: int = 0,
) -> None:
    s = state.settings
    check_count(
        len(items) + n_lectures,
        s.max_interactions_per_request,
        "KT_MAX_INTERACTIONS_PER_REQUEST",
        "interactions",
        loc,
    )
    check_times(state, items, loc, received_ms)
    check_unknown(state, bank, [i.question_id for i in items], loc)


def check_times(
    state: ServiceState,
    items: Sequence[InteractionIn | LectureIn],
    loc: list,
    received_ms: int,
) -> None:
    """Server time when KT_SERVER_TIME allows it; no timestamp beyond KT_MAX_FUTURE_SKEW_MS."""
    s = state.settings
    latest = received_ms + s.max_future_skew_ms
    for k, item in enumerate(items):
        if item.timestamp is None and not s.server_time:
            raise ApiError(
                422,
                "timestamp is required (KT_SERVER_TIME=false)",
                [*loc, k, "timestamp"],
                "missing",
            )
        if item.timestamp is not None and item.timestamp > latest:
            raise ApiError(
                422,
                f"timestamp {item.timestamp} is {item.timestamp - received_ms} ms ahead of the "
                f"server's clock ({received_ms}); at most KT_MAX_FUTURE_SKEW_MS="
                f"{s.max_future_skew_ms} is allowed",
                [*loc, k, "timestamp"],
            )


async def score(
    state: ServiceState,
    predictor: Predictor,
    requests: list[CandidateRequest],
    bank: ExtendedBank | None = None,
    timing: RequestTiming | None = None,
) -> list[np.ndarray]:
    """`Predictor.score` of `requests` (one ORT run), where `_run_scoring` decides."""
    items = None if bank is None else bank.items
    state.metrics.inference_batch.observe(len(requests))
    positions = model_positions(predictor, requests)
    return await _run_scoring(state, positions, lambda: predictor.score(requests, items), timing)


async def score_bundle(
    state: ServiceState,
    predictor: Predictor,
    request: CandidateRequest,
    bank: ExtendedBank | None = None,
    timing: RequestTiming | None = None,
) -> np.ndarray:
    """P(correct) of every candidate of one learner at one moment (a bank or a filter of it):
    `Predictor.score_bundle` in rows of RECOMMEND_CHUNK candidates; empty without candidates."""
    if len(request.candidates) == 0:
        return np.zeros(0)
    items = None if bank is None else bank.items
    rows = -(-len(request.candidates) // RECOMMEND_CHUNK)
    state.metrics.inference_batch.observe(rows)
    positions = rows * history_window(predictor, request) + len(request.candidates)
    return await _run_scoring(
        state, positions, lambda: predictor.score_bundle(request, RECOMMEND_CHUNK, items), timing
    )


async def _run_scoring(
    state: ServiceState, positions: int, call: Callable[[], T], timing: RequestTiming | None
) -> T:
    """Run a scoring call of `positions` model positions. A small one (at most
    KT_INLINE_SCORE_MAX_POSITIONS, e.g. one learner's /predict) runs right here on the event loop:
    for it, the hand-off to the inference thread and back (two thread wake-ups and the GIL
    changing hands) costs more CPU than the call. Larger calls (/recommend over a bank, batches)
    run on the inference thread, so the loop keeps serving meanwhile. The call's own duration
    goes to the metrics and to `timing`."""

    def run() -> tuple[T, float]:
        start = time.perf_counter()
        out = call()
        return out, time.perf_counter() - start

    if positions <= state.settings.inline_score_max_positions:
        out, seconds = run()
    else:
        out, seconds = await asyncio.get_running_loop().run_in_executor(state.executor, run)
    state.metrics.inference_latency.observe(seconds)
    if timing is not None:
        timing.model_s += seconds
    return out


def model_positions(predictor: Predictor, requests: list[CandidateRequest]) -> int:
    """Positions the model runs over for `requests`: each learner's window of history plus its
    candidates."""
    return sum(history_window(predictor, r) + len(r.candidates) for r in requests)


def history_window(predictor: Predictor, request: CandidateRequest) -> int:
    """How much of a request's history the model reads: at most window - 1 items before its
    candidates (`models.features.encode`)."""
    return min(len(request.history), predictor.spec.window - 1)


def max_len(state: ServiceState, predictor: Predictor) -> int:
    return predictor.spec.window + state.settings.history_extra


def only_query(request: Request, allowed: set[str]) -> None:
    """Unknown query parameters are an error (as unknown body fields are), not silently ignored."""
    for name in request.query_params:
        if name not in allowed:
            raise ApiError(
                422,
                f"unknown query parameter {name!r} (allowed: {', '.join(sorted(allowed))})",
                ["query", name],
                "value_error",
            )


def before(events: np.ndarray, at: int) -> np.ndarray:
    """The events strictly before `at` (what is known at that moment)."""
    return events[: int(np.searchsorted(events["timestamp"], at, side="left"))]


async def full_bank(state: ServiceState, predictor: Predictor) -> ExtendedBank:
    """The bank with every registration in the store (the catalogue lists them all)."""
    state.catalogue.add(await state.store_call("get_questions", state.store.get_questions()))
    return state.catalogue.bank(predictor.vocab)

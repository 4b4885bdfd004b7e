"""HTTP routes. Thin: validate limits, talk to the store, score through `Predictor.score` off the loop."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Sequence

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from models.features import FIRST_QUESTION_INDEX, CandidateRequest, History
from service import lifecycle
from service import recommend as recommend_lib
from service.catalogue import ExtendedBank, RegisteredQuestion
from service.config import USER_ID_PATTERN
from service.deps import (
    ApiError,
    CurrentPredictor,
    ServiceState,
    State,
    check_count,
    check_user_id,
    require_api_key,
)
from service.events import (
    MAX_SAFE_INT,
    answers,
    events_to_history,
    events_to_items,
    events_to_lectures,
    make_events,
    make_lecture_events,
)
from service.predictor import Predictor
from service.schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    DeleteResponse,
    ErrorResponse,
    GroupMastery,
    HealthResponse,
    HistoryResponse,
    InteractionIn,
    InteractionsRequest,
    InteractionsResponse,
    LectureIn,
    MasteryPoint,
    MasteryResponse,
    MasteryTimelineResponse,
    ModelResponse,
    Prediction,
    PredictRequest,
    PredictResponse,
    QuestionIn,
    QuestionOut,
    QuestionsResponse,
    ReadyResponse,
    RecentUser,
    RecentUsersResponse,
    Recommendation,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
)

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (401, 413, 422, 503)
}
public = APIRouter()
api = APIRouter(dependencies=[Depends(require_api_key)], responses=_ERRORS)
UserPath = Path(min_length=1, max_length=1024, pattern=USER_ID_PATTERN)


# -- helpers --------------------------------------------------------------------------------------
def _receive_time_ms() -> int:
    """The server's clock (ms since the Unix epoch): the time of requests that carry none."""
    return time.time_ns() // 1_000_000


def _now_moment(state: ServiceState, received_ms: int) -> int | None:
    """The moment of a prediction without a timestamp: just after the receive time (so what was
    received with it is history), or None (lag unknown) with KT_SERVER_TIME=false."""
    return received_ms + 1 if state.settings.server_time else None


def _to_events(
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


async def _bank(state: ServiceState, predictor: Predictor, ids: list[int]) -> ExtendedBank:
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


def _request_ids(req: PredictRequest) -> list[int]:
    return [q.question_id for q in req.questions] + [i.question_id for i in req.interactions or []]


def _check_unknown(
    state: ServiceState, bank: ExtendedBank, ids: list[int], loc: list[str | int]
) -> None:
    if state.settings.unknown_questions == "map" or not ids:
        return
    unknown = sorted(set(bank.unknown(np.asarray(ids, dtype=np.int64)).tolist()))
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


def _check_interactions(
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
    _check_times(state, items, loc, received_ms)
    _check_unknown(state, bank, [i.question_id for i in items], loc)


def _check_times(
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


def _check_predict(
    state: ServiceState, bank: ExtendedBank, req: PredictRequest, loc: list, received_ms: int
) -> int | None:
    """Validate one predict request; returns the moment (timestamp) of its candidates."""
    s = state.settings
    check_user_id(req.user_id, s, [*loc, "user_id"])
    check_count(
        len(req.questions), s.max_candidates, "KT_MAX_CANDIDATES", "questions", [*loc, "questions"]
    )
    moments = {q.timestamp for q in req.questions if q.timestamp is not None}
    if len(moments) > 1:
        raise ApiError(
            422,
            "the questions of one request are one moment: their timestamps must be equal",
            [*loc, "questions"],
        )
    _check_unknown(state, bank, [q.question_id for q in req.questions], [*loc, "questions"])
    if req.interactions:
        _check_interactions(state, bank, req.interactions, [*loc, "interactions"], received_ms)
    return moments.pop() if moments else _now_moment(state, received_ms)


def _candidate_request(
    bank: ExtendedBank, events: np.ndarray, req: PredictRequest, moment: int | None
) -> CandidateRequest:
    if moment is not None:  # only strictly earlier events are known at the moment of the prediction
        events = events[: int(np.searchsorted(events["timestamp"], moment, side="left"))]
    # No slicing to the window here: `encode` keeps the last window-1 items and uses the one before
    # them for the first item's lag, exactly as for offline evaluation on a full history.
    candidates = bank.to_index(np.asarray([q.question_id for q in req.questions], dtype=np.int64))
    history = events_to_history(events, bank.vocab, bank.to_index)
    return CandidateRequest(history, candidates, moment)


async def _score(
    state: ServiceState,
    predictor: Predictor,
    requests: list[CandidateRequest],
    bank: ExtendedBank | None = None,
) -> list[np.ndarray]:
    def run() -> list[np.ndarray]:
        start = time.perf_counter()
        out = predictor.score(requests, None if bank is None else bank.items)
        state.metrics.inference_latency.observe(time.perf_counter() - start)
        return out

    state.metrics.inference_batch.observe(len(requests))
    return await asyncio.get_running_loop().run_in_executor(state.executor, run)


def _max_len(state: ServiceState, predictor: Predictor) -> int:
    return predictor.spec.window + state.settings.history_extra


def _response(
    req: PredictRequest, predictor: Predictor, bank: ExtendedBank, n_events: int, probs: np.ndarray
) -> PredictResponse:
    ids = [q.question_id for q in req.questions]
    cold = bank.is_registered(bank.to_index(np.asarray(ids, dtype=np.int64))).tolist()
    return PredictResponse(
        user_id=req.user_id,
        model_version=predictor.version,
        history_length=n_events,
        predictions=[
            Prediction(question_id=q.question_id, p_correct=float(p), cold_start=bool(c))
            for q, p, c in zip(req.questions, probs.tolist(), cold, strict=True)
        ],
    )


# -- public probes --------------------------------------------------------------------------------
@public.get("/api", tags=["ops"])
async def index() -> dict[str, object]:
    """A short index of the API; the interactive reference is at /docs. `GET /` answers the same
    when the learner page is off (KT_UI=false), else redirects to /ui."""
    return {
        "service": "knowledge-tracing prediction service",
        "docs": "/docs",
        "redoc": "/redoc",
        "ui": "/ui (when KT_UI is on)",
        "openapi": "/openapi.json",
        "endpoints": {
            "POST /interactions": "record a learner's answers",
            "POST /predict": "P(correct) of candidate questions for one learner at one moment",
            "POST /predict/batch": "the same for many learners in one call",
            "POST /recommend": "the questions of the bank closest to a target P(correct)",
            "GET /users": "the learners with the most recent interactions",
            "GET /users/{user_id}/history": "a learner's stored history",
            "GET /users/{user_id}/mastery": "mean P(correct) per part and per tag, now or ?at=",
            "GET /users/{user_id}/mastery/timeline": "the same after every N answers (?every=)",
            "DELETE /users/{user_id}": "erase a learner",
            "GET /questions": "the bank, paged (?part=, ?tag=, ?offset=, ?limit=), with difficulty",
            "GET /questions/{question_id}": "one question of the bank",
            "PUT /questions/{question_id}": "register a new question (part, tags) without retraining",
            "GET /model": "the loaded model: version, bank size, metrics",
            "GET /healthz, GET /readyz, GET /metrics": "probes and Prometheus metrics",
        },
    }


@public.get("/healthz", response_model=HealthResponse, tags=["ops"])
async def healthz() -> HealthResponse:
    """Liveness: the process serves HTTP."""
    return HealthResponse(status="ok")


@public.get(
    "/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}}, tags=["ops"]
)
async def readyz(state: State) -> JSONResponse:
    """Readiness: model loaded, store reachable, requested execution provider active."""
    report = await lifecycle.readiness(state)
    return JSONResponse(report.model_dump(), status_code=200 if report.ready else 503)


# -- API ------------------------------------------------------------------------------------------
@api.post("/predict", response_model=PredictResponse, tags=["predict"])
async def predict(
    body: PredictRequest, state: State, predictor: CurrentPredictor
) -> PredictResponse:
    """K candidate questions at one moment, scored as one virtual bundle in one forward pass."""
    received_ms = _receive_time_ms()
    bank = await _bank(state, predictor, _request_ids(body))
    moment = _check_predict(state, bank, body, ["body"], received_ms)
    if body.interactions:
        result = await state.store_call(
            "append",
            state.store.append(
                body.user_id, _to_events(body.interactions, received_ms), _max_len(state, predictor)
            ),
        )
        events = result.events
    else:
        events = await state.store_call("get", state.store.get(body.user_id))
    state.metrics.history_length.observe(len(events))
    request = _candidate_request(bank, events, body, moment)
    (probs,) = await _score(state, predictor, [request], bank)
    return _response(body, predictor, bank, len(events), probs)


@api.post("/recommend", response_model=RecommendResponse, tags=["predict"])
async def recommend(
    body: RecommendRequest, state: State, predictor: CurrentPredictor
) -> RecommendResponse:
    """The k questions of the bank (or of a filter of it) whose P(correct) for this learner is
    closest to `target_p` inside [p_min, p_max]; the bank is one virtual bundle, as in /predict."""
    if body.p_min > body.p_max:
        raise ApiError(422, "p_min must be <= p_max", ["body", "p_min"], "value_error")
    moment = (
        body.timestamp if body.timestamp is not None else _now_moment(state, _receive_time_ms())
    )
    bank = await _bank(state, predictor, body.question_ids or [])
    if body.question_ids:
        _check_unknown(state, bank, body.question_ids, ["body", "question_ids"])
    events = await state.store_call("get", state.store.get(body.user_id))
    vocab = predictor.vocab
    candidates = bank.indices(body.parts, body.tags, body.question_ids)
    raw_ids = bank.raw_ids_of(candidates)
    if body.exclude_answered:
        answered = recommend_lib.answered_question_ids(events, moment, body.exclude_within_ms)
        keep = ~np.isin(raw_ids, answered)
        candidates, raw_ids = candidates[keep], raw_ids[keep]
    known = events
    if moment is not None:  # only strictly earlier events are known at the moment
        known = events[: int(np.searchsorted(events["timestamp"], moment, side="left"))]
    history = events_to_history(known, vocab, bank.to_index)
    requests = [
        CandidateRequest(history, chunk, moment) for chunk in recommend_lib.chunks(candidates)
    ]
    scored = await _score(state, predictor, requests, bank)
    probs = np.concatenate(scored) if requests else np.zeros(0)
    best = recommend_lib.rank(probs, body.target_p, body.p_min, body.p_max, body.k)
    described = [bank.describe(int(candidates[i])) for i in best.tolist()]
    return RecommendResponse(
        user_id=body.user_id,
        model_version=predictor.version,
        at=moment,
        history_length=len(events),
        scored=len(candidates),
        recommendations=[
            Recommendation(
                question_id=qid,
                p_correct=float(probs[i]),
                part=part,
                tags=tags,
                cold_start=bool(bank.is_registered(candidates[i])),
            )
            for i, (qid, part, tags, _) in zip(best.tolist(), described, strict=True)
        ],
    )


@api.post("/predict/batch", response_model=BatchPredictResponse, tags=["predict"])
async def predict_batch(
    body: BatchPredictRequest, state: State, predictor: CurrentPredictor
) -> BatchPredictResponse:
    """Many learners (each with its own history and candidates) in one ORT call."""
    check_count(
        len(body.requests),
        state.settings.max_batch_learners,
        "KT_MAX_BATCH_LEARNERS",
        "learners",
        ["body", "requests"],
    )
    bank = await _bank(state, predictor, [q for r in body.requests for q in _request_ids(r)])
    received_ms = _receive_time_ms()
    moments = [
        _check_predict(state, bank, r, ["body", "requests", i], received_ms)
        for i, r in enumerate(body.requests)
    ]
    cap = _max_len(state, predictor)
    writes = [r for r in body.requests if r.interactions]
    if writes:
        await state.store_call(
            "append",
            asyncio.gather(
                *(
                    state.store.append(
                        r.user_id, _to_events(r.interactions or [], received_ms), cap
                    )
                    for r in writes
                )
            ),
        )
    histories = await state.store_call(
        "get_many", state.store.get_many([r.user_id for r in body.requests])
    )
    for events in histories:
        state.metrics.history_length.observe(len(events))
    requests = [
        _candidate_request(bank, ev, r, m)
        for ev, r, m in zip(histories, body.requests, moments, strict=True)
    ]
    probs = await _score(state, predictor, requests, bank)
    return BatchPredictResponse(
        model_version=predictor.version,
        results=[
            _response(r, predictor, bank, len(ev), p)
            for r, ev, p in zip(body.requests, histories, probs, strict=True)
        ],
    )


@api.post("/interactions", response_model=InteractionsResponse, tags=["history"])
async def interactions(
    body: InteractionsRequest, state: State, predictor: CurrentPredictor
) -> InteractionsResponse:
    """Record answered questions and watched lectures: atomic, idempotent, sorted, capped, TTL
    refreshed."""
    received_ms = _receive_time_ms()
    check_user_id(body.user_id, state.settings, ["body", "user_id"])
    if not body.interactions and not body.lectures:
        raise ApiError(
            422,
            "nothing to record: send at least one interaction or lecture",
            ["body", "interactions"],
            "value_error",
        )
    bank = await _bank(state, predictor, [i.question_id for i in body.interactions])
    _check_interactions(
        state,
        bank,
        body.interactions,
        ["body", "interactions"],
        received_ms,
        n_lectures=len(body.lectures),
    )
    _check_times(state, body.lectures, ["body", "lectures"], received_ms)
    events = _to_events(body.interactions, received_ms, body.lectures)
    cap = _max_len(state, predictor)
    result = await state.store_call("append", state.store.append(body.user_id, events, cap))
    reason = None
    if result.stale:
        state.metrics.stale_events.inc(result.stale)
        reason = (
            f"{result.stale} event(s) are older than every one of the {cap} events stored for this "
            "learner (the model's window plus KT_HISTORY_EXTRA): they can no longer change a "
            "prediction, so they were not stored"
        )
    return InteractionsResponse(
        recorded=result.recorded,
        duplicates=result.duplicates,
        stale=result.stale,
        stale_reason=reason,
        history_length=len(result.events),
    )


@api.get("/users", response_model=RecentUsersResponse, tags=["history"])
async def recent_users(
    request: Request,
    state: State,
    limit: int = Query(20, ge=1, le=1000, description="At most this many learners."),
) -> RecentUsersResponse:
    """The learners with the most recent stored interactions, newest first (erased and expired
    learners are left out). Redis Cluster cannot tell: `supported` is false there."""
    _only_query(request, {"limit"})
    rows = await state.store_call("recent_users", state.store.recent_users(limit))
    if rows is None:
        return RecentUsersResponse(supported=False, users=[])
    return RecentUsersResponse(
        supported=True, users=[RecentUser(user_id=u, last_write_at=ms) for u, ms in rows]
    )


@api.get("/users/{user_id}/history", response_model=HistoryResponse, tags=["history"])
async def history(state: State, user_id: str = UserPath) -> HistoryResponse:
    """The stored history of one learner, oldest first (canonical order)."""
    check_user_id(user_id, state.settings, ["path", "user_id"])
    events = await state.store_call("get", state.store.get(user_id))
    return HistoryResponse.model_validate(
        {
            "user_id": user_id,
            "history_length": len(events),
            "interactions": events_to_items(events),
            "lectures": events_to_lectures(events),
        }
    )


async def _mastery_at(
    state: ServiceState, predictor: Predictor, events: np.ndarray, at: int | None
) -> tuple[list[GroupMastery], list[GroupMastery]]:
    """(per part, per tag) mastery from `events` (already cut at the moment), the bank scored as
    one virtual bundle at `at`."""
    vocab = predictor.vocab
    assert vocab.tags is not None
    history = events_to_history(events, vocab)
    bank = recommend_lib.bank_indices(vocab)
    requests = [CandidateRequest(history, c, at) for c in recommend_lib.chunks(bank)]
    probs = np.concatenate(await _score(state, predictor, requests)) if requests else np.zeros(0)
    answered_events = answers(events)
    answered = vocab.to_index(answered_events["question_id"].astype(np.int64)) - 2  # -1 = unknown
    known = answered >= 0
    times = answered_events["timestamp"][known]
    parts = recommend_lib.group_mastery(vocab.parts, probs, vocab.parts[answered[known]], times)
    tags = recommend_lib.group_mastery(vocab.tags, probs, vocab.tags[answered[known]], times)
    return (
        [GroupMastery.model_validate(g) for g in parts],
        [GroupMastery.model_validate(g) for g in tags],
    )


def _only_query(request: Request, allowed: set[str]) -> None:
    """Unknown query parameters are an error (as unknown body fields are), not silently ignored."""
    for name in request.query_params:
        if name not in allowed:
            raise ApiError(
                422,
                f"unknown query parameter {name!r} (allowed: {', '.join(sorted(allowed))})",
                ["query", name],
                "value_error",
            )


def _before(events: np.ndarray, at: int) -> np.ndarray:
    """The events strictly before `at` (what is known at that moment)."""
    return events[: int(np.searchsorted(events["timestamp"], at, side="left"))]


@api.get("/users/{user_id}/mastery", response_model=MasteryResponse, tags=["history"])
async def mastery(
    request: Request,
    state: State,
    predictor: CurrentPredictor,
    user_id: str = UserPath,
    at: int | None = Query(None, ge=0, le=MAX_SAFE_INT, description="Moment (ms); default now."),
) -> MasteryResponse:
    """Per part and per tag: the mean P(correct) over that group's questions for this learner at
    `at` (from the history before it), with the learner's answer count and last answer time."""
    _only_query(request, {"at"})
    check_user_id(user_id, state.settings, ["path", "user_id"])
    events = await state.store_call("get", state.store.get(user_id))
    if at is None:
        at = _now_moment(state, _receive_time_ms())
    if at is not None:
        events = _before(events, at)
    parts, tags = await _mastery_at(state, predictor, events, at)
    return MasteryResponse(
        user_id=user_id,
        model_version=predictor.version,
        at=at,
        history_length=len(answers(events)),
        parts=parts,
        tags=tags,
    )


MAX_TIMELINE_POINTS = 50


@api.get(
    "/users/{user_id}/mastery/timeline", response_model=MasteryTimelineResponse, tags=["history"]
)
async def mastery_timeline(
    request: Request,
    state: State,
    predictor: CurrentPredictor,
    user_id: str = UserPath,
    every: int = Query(10, ge=1, le=100_000, description="One point per this many answers."),
) -> MasteryTimelineResponse:
    """Mastery after every `every` answers of the stored history (and after the last one), for
    plotting; at most MAX_TIMELINE_POINTS points (the most recent). Each point scores the whole bank
    once, so the cost is points x the cost of /users/{id}/mastery."""
    _only_query(request, {"every"})
    check_user_id(user_id, state.settings, ["path", "user_id"])
    events = await state.store_call("get", state.store.get(user_id))
    answer_times = answers(events)["timestamp"]
    n_answers = len(answer_times)
    ends = list(range(every, n_answers + 1, every))
    if n_answers and (not ends or ends[-1] != n_answers):
        ends.append(n_answers)
    points = []
    for end in ends[-MAX_TIMELINE_POINTS:]:
        at = int(answer_times[end - 1]) + 1  # just after the end-th answer
        known = _before(events, at)  # its bundle-mates (same timestamp) are known too
        parts, tags = await _mastery_at(state, predictor, known, at)
        answered = int(np.searchsorted(answer_times, at, side="left"))
        points.append(MasteryPoint(at=at, answers=answered, parts=parts, tags=tags))
    return MasteryTimelineResponse(
        user_id=user_id, model_version=predictor.version, every=every, points=points
    )


@api.delete("/users/{user_id}", response_model=DeleteResponse, tags=["history"])
async def erase(state: State, user_id: str = UserPath) -> DeleteResponse:
    """Erase everything stored about a learner."""
    check_user_id(user_id, state.settings, ["path", "user_id"])
    deleted = await state.store_call("delete", state.store.delete(user_id))
    return DeleteResponse(user_id=user_id, deleted=deleted)


# -- question catalogue ---------------------------------------------------------------------------
# P(correct) of every model question for a learner with no history, per loaded model (computed on the
# first catalogue call: the bank as one virtual bundle, as /recommend scores it).
_NEW_LEARNER_P: weakref.WeakKeyDictionary[Predictor, np.ndarray] = weakref.WeakKeyDictionary()


async def _new_learner_p(
    state: ServiceState, predictor: Predictor, bank: ExtendedBank, indices: np.ndarray
) -> np.ndarray:
    """P(correct) for a learner with no history of each of `indices` (model or registered)."""
    model_p = _NEW_LEARNER_P.get(predictor)
    if model_p is None:
        every = recommend_lib.bank_indices(predictor.vocab)
        requests = [CandidateRequest(History.empty(), c, None) for c in recommend_lib.chunks(every)]
        scored = await _score(state, predictor, requests) if requests else []
        model_p = np.concatenate([np.zeros(FIRST_QUESTION_INDEX), *scored])
        _NEW_LEARNER_P[predictor] = model_p
    out = np.zeros(len(indices))
    is_reg = bank.is_registered(indices)
    out[~is_reg] = model_p[indices[~is_reg]]
    if is_reg.any():
        reg = indices[is_reg]
        requests = [CandidateRequest(History.empty(), c, None) for c in recommend_lib.chunks(reg)]
        out[is_reg] = np.concatenate(await _score(state, predictor, requests, bank))
    return out


def _question_out(bank: ExtendedBank, index: int, p_new: float) -> QuestionOut:
    qid, part, tags, bundle = bank.describe(index)
    registered = bool(bank.is_registered(index))
    counts = bank.vocab.train_answers
    answers = 0 if registered else None if counts is None else int(counts[index - 2])
    return QuestionOut(
        question_id=qid,
        part=part,
        tags=tags,
        bundle_id=bundle,
        trained=None if answers is None else answers > 0,
        train_answers=answers,
        p_correct_new_learner=p_new,
        cold_start=registered,
    )


async def _full_bank(state: ServiceState, predictor: Predictor) -> ExtendedBank:
    """The bank with every registration in the store (the catalogue lists them all)."""
    state.catalogue.add(await state.store_call("get_questions", state.store.get_questions()))
    return state.catalogue.bank(predictor.vocab)


@api.get("/questions", response_model=QuestionsResponse, tags=["questions"])
async def questions(
    request: Request,
    state: State,
    predictor: CurrentPredictor,
    part: int | None = Query(None, ge=0, le=MAX_SAFE_INT, description="Only this part."),
    tag: int | None = Query(
        None, ge=0, le=MAX_SAFE_INT, description="Only questions with this tag."
    ),
    offset: int = Query(0, ge=0, le=MAX_SAFE_INT, description="Skip this many (paging)."),
    limit: int = Query(100, ge=1, le=1000, description="Page size."),
) -> QuestionsResponse:
    """The question bank, ascending by id, paged, filtered by part and tag: the model's questions
    and those registered after training. Each with its part, tags, bundle, whether (and on how
    many answers) the model was trained on it, and its difficulty as the model sees it
    (P(correct) for a learner with no history)."""
    _only_query(request, {"part", "tag", "offset", "limit"})
    bank = await _full_bank(state, predictor)
    selected = bank.indices(None if part is None else [part], None if tag is None else [tag])
    selected = selected[np.argsort(bank.raw_ids_of(selected), kind="stable")]
    page = selected[offset : offset + limit]
    p_new = await _new_learner_p(state, predictor, bank, page) if len(page) else np.zeros(0)
    return QuestionsResponse(
        model_version=predictor.version,
        total=len(selected),
        offset=offset,
        limit=limit,
        questions=[_question_out(bank, int(i), float(p)) for i, p in zip(page, p_new, strict=True)],
    )


QuestionPath = Path(ge=0, le=MAX_SAFE_INT, description="Raw question id.")


@api.get(
    "/questions/{question_id}",
    response_model=QuestionOut,
    tags=["questions"],
    responses={404: {"model": ErrorResponse}},
)
async def question(
    state: State, predictor: CurrentPredictor, question_id: int = QuestionPath
) -> QuestionOut:
    """One question of the bank (404 when it is neither trained on nor registered)."""
    bank = await _bank(state, predictor, [question_id])
    index = int(bank.to_index(np.array([question_id]))[0])
    if index < FIRST_QUESTION_INDEX:
        raise ApiError(
            404, f"unknown question id {question_id}", ["path", "question_id"], "not_found"
        )
    (p_new,) = await _new_learner_p(state, predictor, bank, np.array([index]))
    return _question_out(bank, index, float(p_new))


@api.put(
    "/questions/{question_id}",
    response_model=QuestionOut,
    tags=["questions"],
    status_code=201,
    responses={200: {"model": QuestionOut}, 409: {"model": ErrorResponse}},
)
async def register_question(
    body: QuestionIn,
    response: Response,
    state: State,
    predictor: CurrentPredictor,
    question_id: int = QuestionPath,
) -> QuestionOut:
    """Register a new question (part, tags, bundle) without retraining: its predictions come from
    its content. Stored in the history store (shared by every worker, kept across restarts and
    reloads); 201 when new, 200 when it replaces an earlier registration; 409 for a question the
    model was trained on."""
    vocab = predictor.vocab
    if int(vocab.to_index(np.array([question_id]))[0]) >= FIRST_QUESTION_INDEX:
        raise ApiError(
            409,
            f"question {question_id} is in the model's bank (trained on); only new questions "
            "are registered",
            ["path", "question_id"],
            "conflict",
        )
    max_part = predictor.spec.n_parts - 2  # encoded part = raw part + 1 < n_parts
    if body.part > max_part:
        raise ApiError(
            422,
            f"part {body.part} is unknown to the model (it knows parts 0..{max_part})",
            ["body", "part"],
        )
    record = RegisteredQuestion(question_id, body.part, tuple(body.tags), body.bundle_id)
    created = await state.store_call(
        "put_question", state.store.put_question(question_id, record.to_json())
    )
    state.catalogue.add({question_id: record.to_json()})
    bank = state.catalogue.bank(vocab)
    index = int(bank.to_index(np.array([question_id]))[0])
    (p_new,) = await _new_learner_p(state, predictor, bank, np.array([index]))
    response.status_code = 201 if created else 200
    return _question_out(bank, index, float(p_new))


@api.get("/model", response_model=ModelResponse, tags=["ops"])
async def model_info(state: State, predictor: CurrentPredictor) -> ModelResponse:
    """Version, config and training metrics of the loaded artifact."""
    manifest = predictor.manifest
    metrics = manifest.get("metrics")
    fingerprint = manifest.get("data_fingerprint")
    spec = predictor.spec
    try:
        registered: int | None = len((await _full_bank(state, predictor)).records)
    except ApiError:  # the store is down: the model card still answers
        registered = None
    return ModelResponse(
        version=predictor.version,
        name=predictor.model_name,
        artifact_dir=str(predictor.artifact_dir),
        providers=predictor.active_providers,
        window=spec.window,
        n_questions=len(predictor.vocab.question_ids),
        n_tags=len(predictor.vocab.tag_ids),
        data_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
        int8=manifest.get("quantization") == "dynamic-int8",
        content_cold_start=spec.n_tags > 1 or spec.n_parts > 2,
        registered_questions=registered,
        reads_lectures=spec.lecture_stats,
        known_lectures=len(predictor.vocab.lecture_ids)
        if predictor.vocab.lecture_ids is not None
        else 0,
        config=predictor.config,
        metrics=metrics if isinstance(metrics, dict) else {},
        manifest=manifest,
    )


@api.post(
    "/admin/reload",
    response_model=ReloadResponse,
    tags=["ops"],
    responses={409: {"model": ErrorResponse}},
)
async def reload(state: State, body: ReloadRequest | None = None) -> ReloadResponse:
    """Load an artifact (default: the current directory again) and swap it in atomically.

    A failed load keeps the old model and answers 422 with the reason. With KT_WORKERS > 1 a
    request reaches one worker only, so it is refused (409): send SIGHUP to the main process."""
    workers = state.settings.workers
    if workers > 1:
        raise ApiError(
            409,
            f"KT_WORKERS={workers}: a reload request would reach one worker only; send SIGHUP to "
            "the main process (uvicorn restarts every worker on KT_MODEL_DIR)",
            ["body"],
            "reload_needs_sighup",
        )
    return await lifecycle.reload_model(state, body.model_dir if body else None)


@api.get("/metrics", response_class=Response, tags=["ops"])
async def metrics(state: State) -> Response:
    """Prometheus exposition (summed over all workers when KT_WORKERS > 1)."""
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

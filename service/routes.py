"""HTTP routes. Thin: validate limits, talk to the store, score through `Predictor.score` off the loop.

This module: the routers, the public probes, prediction (`/predict`, `/recommend`,
`/predict/batch`) and operations (`/model`, `/admin/reload`, `/metrics`); learners live in
`service.learner_routes`, the question catalogue in `service.question_routes`, what they share
in `service.handling`."""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from models.features import CandidateRequest
from service import learner_routes, lifecycle, question_routes
from service import recommend as recommend_lib
from service.catalogue import ExtendedBank
from service.deps import (
    ApiError,
    CurrentPredictor,
    RequestTiming,
    ServiceState,
    State,
    check_count,
    check_user_id,
    hot_path_context,
)
from service.events import events_to_history
from service.handling import (
    check_interactions,
    check_unknown,
    full_bank,
    max_len,
    now_moment,
    receive_time_ms,
    request_bank,
    score,
    score_bundle,
    to_events,
)
from service.predictor import Predictor
from service.schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    ErrorResponse,
    HealthResponse,
    ModelResponse,
    Prediction,
    PredictRequest,
    PredictResponse,
    ReadyResponse,
    Recommendation,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
)

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (401, 413, 422, 503)
}
# Documented on the scoring routes: the store's and the model's share of the request
# (`deps.RequestTiming`).
_TIMED: dict[int | str, dict[str, object]] = {
    200: {
        "headers": {
            "Server-Timing": {
                "description": "`store;dur=<ms>, model;dur=<ms>`: the request's time in the "
                "history store and in encoding + ONNX Runtime",
                "schema": {"type": "string"},
            }
        }
    }
}
public = APIRouter()
api = APIRouter(responses=_ERRORS)  # + require_api_key when KT_API_KEY is set (service.app)


# -- prediction helpers ------------------------------------------------------------------------
def _request_ids(req: PredictRequest) -> list[int]:
    return [q.question_id for q in req.questions] + [i.question_id for i in req.interactions or []]


def _check_predict(
    state: ServiceState,
    bank: ExtendedBank,
    req: PredictRequest,
    loc: list,
    received_ms: int,
    candidates: np.ndarray,
) -> int | None:
    """Validate one predict request (`candidates`: its questions' bank indices); returns the moment
    (timestamp) of its candidates."""
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
    ids = [q.question_id for q in req.questions]
    check_unknown(state, bank, ids, [*loc, "questions"], candidates)
    if req.interactions:
        check_interactions(state, bank, req.interactions, [*loc, "interactions"], received_ms)
    return moments.pop() if moments else now_moment(state, received_ms)


def _candidate_request(
    bank: ExtendedBank, events: np.ndarray, candidates: np.ndarray, moment: int | None
) -> CandidateRequest:
    if moment is not None:  # only strictly earlier events are known at the moment of the prediction
        events = events[: int(np.searchsorted(events["timestamp"], moment, side="left"))]
    # No slicing to the window here: `encode` keeps the last window-1 items and uses the one before
    # them for the first item's lag, exactly as for offline evaluation on a full history.
    history = events_to_history(events, bank.vocab, bank.to_index)
    return CandidateRequest(history, candidates, moment)


def _candidates(bank: ExtendedBank, req: PredictRequest) -> np.ndarray:
    """The bank indices of a request's questions (UNKNOWN_QUESTION where unknown)."""
    return bank.to_index(np.asarray([q.question_id for q in req.questions], dtype=np.int64))


def _response(
    req: PredictRequest,
    predictor: Predictor,
    bank: ExtendedBank,
    n_events: int,
    probs: np.ndarray,
    candidates: np.ndarray,
) -> PredictResponse:
    cold = bank.is_registered(candidates).tolist()
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
@api.post("/predict", response_model=PredictResponse, responses=_TIMED, tags=["predict"])
async def predict(body: PredictRequest, request: Request) -> Response:
    """K candidate questions at one moment, scored as one virtual bundle in one forward pass."""
    received_ms = receive_time_ms()
    state, predictor = hot_path_context(request)
    timing = RequestTiming()
    bank = await request_bank(state, predictor, _request_ids(body))
    candidates = _candidates(bank, body)
    moment = _check_predict(state, bank, body, ["body"], received_ms, candidates)
    if body.interactions:
        result = await state.store_call(
            "append",
            state.store.append(
                body.user_id, to_events(body.interactions, received_ms), max_len(state, predictor)
            ),
            timing,
        )
        events = result.events
    else:
        events = await state.store_call("get", state.store.get(body.user_id), timing)
    state.metrics.history_length.observe(len(events))
    query = _candidate_request(bank, events, candidates, moment)
    (probs,) = await score(state, predictor, [query], bank, timing)
    payload = _response(body, predictor, bank, len(events), probs, candidates)
    # Serialised here: FastAPI would validate the returned model again, then serialise it.
    return Response(
        payload.model_dump_json(), media_type="application/json", headers=timing.header()
    )


@api.post("/recommend", response_model=RecommendResponse, responses=_TIMED, tags=["predict"])
async def recommend(
    body: RecommendRequest, state: State, predictor: CurrentPredictor, response: Response
) -> RecommendResponse:
    """The k questions of the bank (or of a filter of it) whose P(correct) for this learner is
    closest to `target_p` inside [p_min, p_max]; the bank is one virtual bundle, as in /predict."""
    if body.p_min > body.p_max:
        raise ApiError(422, "p_min must be <= p_max", ["body", "p_min"], "value_error")
    moment = body.timestamp if body.timestamp is not None else now_moment(state, receive_time_ms())
    timing = RequestTiming()
    bank = await request_bank(state, predictor, body.question_ids or [])
    if body.question_ids:
        check_unknown(state, bank, body.question_ids, ["body", "question_ids"])
    events = await state.store_call("get", state.store.get(body.user_id), timing)
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
    probs = await score_bundle(
        state, predictor, CandidateRequest(history, candidates, moment), bank, timing
    )
    response.headers.update(timing.header())
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


@api.post("/predict/batch", response_model=BatchPredictResponse, responses=_TIMED, tags=["predict"])
async def predict_batch(
    body: BatchPredictRequest, state: State, predictor: CurrentPredictor, response: Response
) -> BatchPredictResponse:
    """Many learners (each with its own history and candidates) in one ORT call."""
    check_count(
        len(body.requests),
        state.settings.max_batch_learners,
        "KT_MAX_BATCH_LEARNERS",
        "learners",
        ["body", "requests"],
    )
    bank = await request_bank(state, predictor, [q for r in body.requests for q in _request_ids(r)])
    received_ms = receive_time_ms()
    candidates = [_candidates(bank, r) for r in body.requests]
    moments = [
        _check_predict(state, bank, r, ["body", "requests", i], received_ms, c)
        for i, (r, c) in enumerate(zip(body.requests, candidates, strict=True))
    ]
    cap = max_len(state, predictor)
    timing = RequestTiming()
    writes = [r for r in body.requests if r.interactions]
    if writes:
        await state.store_call(
            "append",
            asyncio.gather(
                *(
                    state.store.append(r.user_id, to_events(r.interactions or [], received_ms), cap)
                    for r in writes
                )
            ),
            timing,
        )
    histories = await state.store_call(
        "get_many", state.store.get_many([r.user_id for r in body.requests]), timing
    )
    for events in histories:
        state.metrics.history_length.observe(len(events))
    requests = [
        _candidate_request(bank, ev, c, m)
        for ev, c, m in zip(histories, candidates, moments, strict=True)
    ]
    probs = await score(state, predictor, requests, bank, timing)
    response.headers.update(timing.header())
    return BatchPredictResponse(
        model_version=predictor.version,
        results=[
            _response(r, predictor, bank, len(ev), p, c)
            for r, ev, p, c in zip(body.requests, histories, probs, candidates, strict=True)
        ],
    )


# -- learners and the question catalogue (their own modules, in this order in the API) ----------
api.include_router(learner_routes.router)
api.include_router(question_routes.router)


# -- operations ---------------------------------------------------------------------------------
@api.get("/model", response_model=ModelResponse, tags=["ops"])
async def model_info(state: State, predictor: CurrentPredictor) -> ModelResponse:
    """Version, config and training metrics of the loaded artifact."""
    manifest = predictor.manifest
    metrics = manifest.get("metrics")
    fingerprint = manifest.get("data_fingerprint")
    spec = predictor.spec
    try:
        registered: int | None = len((await full_bank(state, predictor)).records)
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

"""Learner routes: record interactions and lectures, recent learners, history, mastery (now, at a
moment, as a timeline), erasure."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Query, Request

from models.features import CandidateRequest
from service import recommend as recommend_lib
from service.deps import ApiError, CurrentPredictor, ServiceState, State, check_user_id
from service.events import (
    MAX_SAFE_INT,
    answers,
    events_to_history,
    events_to_items,
    events_to_lectures,
)
from service.handling import (
    UserPath,
    before,
    check_interactions,
    check_times,
    max_len,
    now_moment,
    only_query,
    receive_time_ms,
    request_bank,
    score_bundle,
    to_events,
)
from service.predictor import Predictor
from service.schemas import (
    DeleteResponse,
    GroupMastery,
    HistoryResponse,
    InteractionsRequest,
    InteractionsResponse,
    MasteryPoint,
    MasteryResponse,
    MasteryTimelineResponse,
    RecentUser,
    RecentUsersResponse,
)

router = APIRouter()


@router.post("/interactions", response_model=InteractionsResponse, tags=["history"])
async def interactions(
    body: InteractionsRequest, state: State, predictor: CurrentPredictor
) -> InteractionsResponse:
    """Record answered questions and watched lectures: atomic, idempotent, sorted, capped, TTL
    refreshed."""
    received_ms = receive_time_ms()
    check_user_id(body.user_id, state.settings, ["body", "user_id"])
    if not body.interactions and not body.lectures:
        raise ApiError(
            422,
            "nothing to record: send at least one interaction or lecture",
            ["body", "interactions"],
            "value_error",
        )
    bank = await request_bank(state, predictor, [i.question_id for i in body.interactions])
    check_interactions(
        state,
        bank,
        body.interactions,
        ["body", "interactions"],
        received_ms,
        n_lectures=len(body.lectures),
    )
    check_times(state, body.lectures, ["body", "lectures"], received_ms)
    events = to_events(body.interactions, received_ms, body.lectures)
    cap = max_len(state, predictor)
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


@router.get("/users", response_model=RecentUsersResponse, tags=["history"])
async def recent_users(
    request: Request,
    state: State,
    limit: int = Query(20, ge=1, le=1000, description="At most this many learners."),
) -> RecentUsersResponse:
    """The learners with the most recent stored interactions, newest first (erased and expired
    learners are left out). Redis Cluster cannot tell: `supported` is false there."""
    only_query(request, {"limit"})
    rows = await state.store_call("recent_users", state.store.recent_users(limit))
    if rows is None:
        return RecentUsersResponse(supported=False, users=[])
    return RecentUsersResponse(
        supported=True, users=[RecentUser(user_id=u, last_write_at=ms) for u, ms in rows]
    )


@router.get("/users/{user_id}/history", response_model=HistoryResponse, tags=["history"])
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
    probs = await score_bundle(state, predictor, CandidateRequest(history, bank, at))
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


@router.get("/users/{user_id}/mastery", response_model=MasteryResponse, tags=["history"])
async def mastery(
    request: Request,
    state: State,
    predictor: CurrentPredictor,
    user_id: str = UserPath,
    at: int | None = Query(None, ge=0, le=MAX_SAFE_INT, description="Moment (ms); default now."),
) -> MasteryResponse:
    """Per part and per tag: the mean P(correct) over that group's questions for this learner at
    `at` (from the history before it), with the learner's answer count and last answer time."""
    only_query(request, {"at"})
    check_user_id(user_id, state.settings, ["path", "user_id"])
    events = await state.store_call("get", state.store.get(user_id))
    if at is None:
        at = now_moment(state, receive_time_ms())
    if at is not None:
        events = before(events, at)
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


@router.get(
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
    only_query(request, {"every"})
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
        known = before(events, at)  # its bundle-mates (same timestamp) are known too
        parts, tags = await _mastery_at(state, predictor, known, at)
        answered = int(np.searchsorted(answer_times, at, side="left"))
        points.append(MasteryPoint(at=at, answers=answered, parts=parts, tags=tags))
    return MasteryTimelineResponse(
        user_id=user_id, model_version=predictor.version, every=every, points=points
    )


@router.delete("/users/{user_id}", response_model=DeleteResponse, tags=["history"])
async def erase(state: State, user_id: str = UserPath) -> DeleteResponse:
    """Erase everything stored about a learner."""
    check_user_id(user_id, state.settings, ["path", "user_id"])
    deleted = await state.store_call("delete", state.store.delete(user_id))
    return DeleteResponse(user_id=user_id, deleted=deleted)

"""Request/response models of the HTTP API (pydantic v2; strict: no silent string->int coercion).

Static bounds (id ranges, the user id charset) live here; the configurable limits (KT_MAX_*) are
checked per request in `service.deps` so they can change without re-declaring the schemas.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from service.config import USER_ID_PATTERN
from service.events import MAX_ELAPSED_MS, MAX_SAFE_INT

UserId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        pattern=USER_ID_PATTERN,
        description="Learner id: letters, digits and . _ : @ -.",
        examples=["learner-42"],
    ),
]


def _integral_float_to_int(value: Any) -> Any:
    """JSON Schema's `integer` includes 413.0; accept it as 413. Fractions, NaN, inf, strings and
    booleans still fail the strict int check (found by schema fuzzing: 413.0 was rejected)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# The constraints come first: after a BeforeValidator, pydantic no longer turns them into JSON
# Schema `minimum`/`maximum` (they leak out as unknown `ge`/`le` keys).
_INTEGRAL = BeforeValidator(_integral_float_to_int)
QuestionId = Annotated[int, Field(ge=0, le=MAX_SAFE_INT, description="Raw question id."), _INTEGRAL]
TimestampMs = Annotated[
    int, Field(ge=0, le=MAX_SAFE_INT, description="Milliseconds (client clock)."), _INTEGRAL
]
ElapsedMs = Annotated[int, Field(ge=0, le=MAX_ELAPSED_MS), _INTEGRAL]
ContainerId = Annotated[int, Field(ge=0, le=MAX_SAFE_INT), _INTEGRAL]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class InteractionIn(_In):
    """One answered question."""

    question_id: QuestionId
    timestamp: TimestampMs | None = Field(
        None,
        description="When it was answered (ms). Absent: the server's receive time (KT_SERVER_TIME); "
        "then send interaction_id to make retries idempotent.",
    )
    correct: bool
    elapsed_time_ms: ElapsedMs | None = None
    had_explanation: bool | None = None
    container_id: ContainerId | None = Field(
        None, description="Bundle key: items sharing it (and the timestamp) form one bundle."
    )
    interaction_id: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        None,
        description="Idempotency key; when absent, the identity is (timestamp, question_id).",
    )


class InteractionOut(BaseModel):
    question_id: int
    timestamp: int
    correct: bool
    elapsed_time_ms: int | None = None
    had_explanation: bool | None = None
    container_id: int | None = None


class LectureIn(_In):
    """One watched lecture (a learning event: never predicted, read by later predictions)."""

    lecture_id: Annotated[
        int, Field(ge=0, le=MAX_SAFE_INT, description="Raw lecture id."), _INTEGRAL
    ]
    timestamp: TimestampMs | None = Field(
        None, description="When it was watched (ms). Absent: the server's receive time."
    )
    interaction_id: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        None,
        description="Idempotency key; when absent, the identity is (timestamp, lecture_id).",
    )


class LectureOut(BaseModel):
    lecture_id: int
    timestamp: int


class InteractionsRequest(_In):
    user_id: UserId
    interactions: list[InteractionIn] = Field(
        default_factory=list, description="Answered questions (this or `lectures` non-empty)."
    )
    lectures: list[LectureIn] = Field(
        default_factory=list,
        description="Watched lectures. A lecture id the model's lecture table does not know still "
        "counts as a lecture (without part and tag).",
    )


class InteractionsResponse(BaseModel):
    recorded: int = Field(description="New events stored by this call.")
    duplicates: int = Field(description="Events whose identity was already stored (retries).")
    stale: int = Field(0, description="New events older than a full history window (not stored).")
    stale_reason: str | None = Field(
        None, description="Why the stale events were not stored (null when there are none)."
    )
    history_length: int


class Candidate(_In):
    question_id: QuestionId
    timestamp: TimestampMs | None = Field(
        None,
        description="The moment of the prediction; all candidates of a request share it. Absent: "
        "just after the server's receive time (KT_SERVER_TIME), so the request's own "
        "interactions are history.",
    )


class PredictRequest(_In):
    user_id: UserId
    questions: list[Candidate] = Field(min_length=1)
    interactions: list[InteractionIn] | None = Field(
        None, description="Recorded first (same semantics as POST /interactions)."
    )


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
ColdStart = Annotated[
    bool, Field(description="Registered after training: predicted from its part and tags.")
]
GroupKey = Annotated[int, Field(ge=0, le=MAX_SAFE_INT), _INTEGRAL]


class RecommendRequest(_In):
    """Rank the question bank (or a filter of it) for one learner at one moment."""

    user_id: UserId
    timestamp: TimestampMs | None = Field(
        None,
        description="The moment of the recommendation (default: just after the server's receive "
        "time, as /predict).",
    )
    target_p: Probability = Field(
        0.7, description="Rank by closeness of P(correct) to this target (the difficulty you want)."
    )
    p_min: Probability = Field(0.0, description="Keep only questions with P(correct) >= p_min.")
    p_max: Probability = Field(1.0, description="Keep only questions with P(correct) <= p_max.")
    k: Annotated[int, Field(ge=1, le=1000), _INTEGRAL] = Field(
        10, description="How many questions to return."
    )
    parts: list[GroupKey] | None = Field(
        None, max_length=1000, description="Only questions of these parts."
    )
    tags: list[GroupKey] | None = Field(
        None, max_length=1000, description="Only questions carrying at least one of these tags."
    )
    question_ids: list[QuestionId] | None = Field(
        None, max_length=100_000, description="Only these questions."
    )
    exclude_answered: bool = Field(True, description="Leave out questions the learner answered.")
    exclude_within_ms: TimestampMs | None = Field(
        None,
        description="With exclude_answered: only answers within this period before the moment "
        "count (default: ever, within the stored history).",
    )


class Recommendation(BaseModel):
    question_id: int
    p_correct: float
    part: int
    tags: list[int]
    cold_start: ColdStart = False


class RecommendResponse(BaseModel):
    user_id: str
    model_version: str
    at: int | None = Field(
        None,
        description="The moment scored (ms): the request's timestamp, else the receive time + 1 ms "
        "(None with KT_SERVER_TIME=false and no timestamp: lag unknown).",
    )
    history_length: int
    scored: int = Field(description="Questions scored after the filters (one virtual bundle).")
    recommendations: list[Recommendation]


class GroupMastery(BaseModel):
    key: int = Field(description="The part, or the tag.")
    mastery: float = Field(description="Mean P(correct) over the group's questions, right now.")
    questions: int = Field(description="Questions of the bank in the group.")
    answers: int = Field(description="The learner's answers (known at the moment) in the group.")
    last_answer_at: int | None = Field(description="Timestamp of the last of them.")


class MasteryResponse(BaseModel):
    user_id: str
    model_version: str
    at: int | None = Field(description="The moment (None: after the stored history, lag unknown).")
    history_length: int = Field(description="Answers known at the moment.")
    parts: list[GroupMastery]
    tags: list[GroupMastery]


class MasteryPoint(BaseModel):
    at: int = Field(description="Just after this answer's timestamp (ms).")
    answers: int = Field(description="Answers known at that moment.")
    parts: list[GroupMastery]
    tags: list[GroupMastery]


class MasteryTimelineResponse(BaseModel):
    user_id: str
    model_version: str
    every: int
    points: list[MasteryPoint]


class Prediction(BaseModel):
    question_id: int
    p_correct: float
    cold_start: ColdStart = False


class PredictResponse(BaseModel):
    user_id: str
    model_version: str
    history_length: int
    predictions: list[Prediction]


class BatchPredictRequest(_In):
    requests: list[PredictRequest] = Field(min_length=1)


class BatchPredictResponse(BaseModel):
    model_version: str
    results: list[PredictResponse]


class HistoryResponse(BaseModel):
    user_id: str
    history_length: int = Field(description="Stored events: answers and lectures.")
    interactions: list[InteractionOut]
    lectures: list[LectureOut] = Field(default_factory=list)


class RecentUser(BaseModel):
    user_id: str
    last_write_at: int = Field(
        description="When an interaction was last stored (ms since the epoch)."
    )


class RecentUsersResponse(BaseModel):
    supported: bool = Field(
        description="False when the store cannot list learners (Redis Cluster): `users` is empty."
    )
    users: list[RecentUser] = Field(description="Newest first.")


class DeleteResponse(BaseModel):
    user_id: str
    deleted: bool


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    ready: bool
    model_loaded: bool
    model_version: str | None = None
    store: str
    store_ok: bool
    providers: list[str] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)


class ModelResponse(BaseModel):
    version: str
    name: str
    artifact_dir: str
    providers: list[str]
    window: int
    n_questions: int = Field(description="questions in the model's bank (not counting pad/unknown)")
    n_tags: int = Field(description="distinct tags / skills the model knows")
    data_fingerprint: str | None = Field(None, description="fingerprint of the training data")
    int8: bool = Field(False, description="the served graph is the INT8-quantized one")
    content_cold_start: bool = Field(
        False,
        description="new questions (PUT /questions/{id}) are scored from their part and tags",
    )
    registered_questions: int | None = Field(
        None, description="questions registered without retraining (null: the store is down)"
    )
    reads_lectures: bool = Field(
        False, description="the model reads the lectures of POST /interactions (lecture statistics)"
    )
    known_lectures: int = Field(
        0, description="lectures whose part and tag the model knows (its lecture table)"
    )
    config: dict[str, Any]
    metrics: dict[str, Any]
    manifest: dict[str, Any]


class QuestionOut(BaseModel):
    """One question of the model's bank, as the model sees it."""

    question_id: int
    part: int
    tags: list[int]
    bundle_id: int | None = Field(
        description="Bundle of the question (null: the training data had no questions table)."
    )
    trained: bool | None = Field(
        description="Whether the training data held answers to it (null: not recorded, an older "
        "artifact)."
    )
    train_answers: int | None = Field(
        description="Answers to it in the training data (validation learners not counted)."
    )
    p_correct_new_learner: Probability = Field(
        description="Its difficulty as the model sees it: P(correct) for a learner with no history."
    )
    cold_start: ColdStart = False


class QuestionIn(_In):
    """A question to register (PUT /questions/{id}): what the model can know of it."""

    part: Annotated[int, Field(ge=0, le=MAX_SAFE_INT), _INTEGRAL]
    tags: list[Annotated[int, Field(ge=0, le=MAX_SAFE_INT), _INTEGRAL]] = Field(
        default_factory=list, max_length=64, description="Tag / skill ids (raw)."
    )
    bundle_id: Annotated[int, Field(ge=0, le=MAX_SAFE_INT), _INTEGRAL] | None = None


class QuestionsResponse(BaseModel):
    model_version: str
    total: int = Field(description="Questions that pass the filters (all pages).")
    offset: int
    limit: int
    questions: list[QuestionOut]


class ReloadRequest(_In):
    model_dir: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="New artifact dir; default: the current one.",
    )


class ReloadResponse(BaseModel):
    reloaded: bool
    version: str
    previous_version: str | None
    artifact_dir: str


class ErrorItem(BaseModel):
    loc: list[str | int]
    field: str
    msg: str
    type: str


class ErrorResponse(BaseModel):
    detail: str | list[ErrorItem] | dict[str, Any]

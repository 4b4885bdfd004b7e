"""Question catalogue routes: the bank (paged, filtered), one question, registering a new one
(content-based cold start)."""

from __future__ import annotations

import weakref

import numpy as np
from fastapi import APIRouter, Path, Query, Request, Response

from models.features import CandidateRequest, History
from models.vocab import FIRST_QUESTION_INDEX
from service import recommend as recommend_lib
from service.catalogue import ExtendedBank, RegisteredQuestion
from service.deps import ApiError, CurrentPredictor, ServiceState, State
from service.events import MAX_SAFE_INT
from service.handling import full_bank, only_query, request_bank, score_bundle
from service.predictor import Predictor
from service.schemas import ErrorResponse, QuestionIn, QuestionOut, QuestionsResponse

router = APIRouter()


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
        scored = await score_bundle(state, predictor, CandidateRequest(History.empty(), every))
        model_p = np.concatenate([np.zeros(FIRST_QUESTION_INDEX), scored])
        _NEW_LEARNER_P[predictor] = model_p
    out = np.zeros(len(indices))
    is_reg = bank.is_registered(indices)
    out[~is_reg] = model_p[indices[~is_reg]]
    if is_reg.any():
        reg = indices[is_reg]
        request = CandidateRequest(History.empty(), reg)
        out[is_reg] = await score_bundle(state, predictor, request, bank)
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


@router.get("/questions", response_model=QuestionsResponse, tags=["questions"])
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
    only_query(request, {"part", "tag", "offset", "limit"})
    bank = await full_bank(state, predictor)
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


@router.get(
    "/questions/{question_id}",
    response_model=QuestionOut,
    tags=["questions"],
    responses={404: {"model": ErrorResponse}},
)
async def question(
    state: State, predictor: CurrentPredictor, question_id: int = QuestionPath
) -> QuestionOut:
    """One question of the bank (404 when it is neither trained on nor registered)."""
    bank = await request_bank(state, predictor, [question_id])
    index = int(bank.to_index(np.array([question_id]))[0])
    if index < FIRST_QUESTION_INDEX:
        raise ApiError(
            404, f"unknown question id {question_id}", ["path", "question_id"], "not_found"
        )
    (p_new,) = await _new_learner_p(state, predictor, bank, np.array([index]))
    return _question_out(bank, index, float(p_new))


@router.put(
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

"""Per-app state and FastAPI dependencies: auth, the current predictor, limits, structured errors."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.catalogue import Catalogue
from service.config import USER_ID_RE, Settings
from service.metrics import Metrics
from service.predictor import Predictor
from service.store import HistoryStore, StoreUnavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")


class ApiError(Exception):
    """A client or availability error with a status, the offending field and a message."""

    def __init__(
        self,
        status: int,
        msg: str,
        loc: Sequence[str | int] = (),
        type_: str = "value_error",
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(msg)
        self.status, self.msg, self.loc, self.type = status, msg, list(loc), type_
        self.headers = headers
        self.extra = extra or {}


@dataclass
class RequestTiming:
    """Seconds a request spent in the history store and in its scoring calls (encoding + ONNX
    Runtime), for its `Server-Timing: store;dur=<ms>, model;dur=<ms>` header: a client (and
    `bench.serve_bench`) can tell them from the rest of the request, request by request."""

    store_s: float = 0.0
    model_s: float = 0.0

    def header(self) -> dict[str, str]:
        store, model = self.store_s * 1000, self.model_s * 1000
        return {"Server-Timing": f"store;dur={store:.3f}, model;dur={model:.3f}"}


@dataclass
class ServiceState:
    """Everything one app instance owns; lives on `app.state.kt`."""

    settings: Settings
    store: HistoryStore
    metrics: Metrics
    executor: ThreadPoolExecutor
    predictor: Predictor | None = None
    load_error: str | None = None
    catalogue: Catalogue = field(default_factory=Catalogue)
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def store_call(
        self, op: str, awaitable: Awaitable[T], timing: RequestTiming | None = None
    ) -> T:
        """Time a store call (metrics, and `timing` when given); StoreUnavailable becomes 503 +
        Retry-After."""
        start = time.perf_counter()
        outcome = "ok"
        try:
            return await awaitable
        except StoreUnavailable as exc:
            outcome = "unavailable"
            raise ApiError(
                503,
                str(exc),
                type_="store_unavailable",
                headers={"Retry-After": str(self.settings.retry_after_s)},
            ) from exc
        finally:
            seconds = time.perf_counter() - start
            self.metrics.store_latency.labels(op, outcome).observe(seconds)
            if timing is not None:
                timing.store_s += seconds


async def get_state(request: Request) -> ServiceState:
    # async: a plain `def` dependency costs a threadpool hop per request (measured ~0.6 ms p50)
    return request.app.state.kt


State = Annotated[ServiceState, Depends(get_state)]
_bearer = HTTPBearer(auto_error=False)


async def require_api_key(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """When KT_API_KEY is set, `Authorization: Bearer <key>` must match (constant-time compare)."""
    expected = state.settings.api_key
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else ""
    # Header values arrive decoded as latin-1: encoding back gives the raw bytes the client sent,
    # compared with the key's UTF-8 bytes (so a non-ASCII key sent as UTF-8 matches).
    raw = given.encode("latin-1", errors="replace")
    if not hmac.compare_digest(raw, expected.get_secret_value().encode()):
        raise ApiError(
            401,
            "missing or invalid credentials",
            type_="unauthorized",
            headers={"WWW-Authenticate": "Bearer"},
        )


def loaded_predictor(state: ServiceState) -> Predictor:
    """The predictor now (a reload swaps the reference, never mutates it); 503 when none is loaded."""
    predictor = state.predictor
    if predictor is None:
        raise ApiError(
            503,
            "no model loaded" + (f": {state.load_error}" if state.load_error else ""),
            type_="model_unavailable",
            headers={"Retry-After": str(state.settings.retry_after_s)},
        )
    return predictor


async def current_predictor(state: State) -> Predictor:
    """The predictor at the start of the request."""
    return loaded_predictor(state)


def hot_path_context(request: Request) -> tuple[ServiceState, Predictor]:
    """`State` and `CurrentPredictor` without FastAPI's dependency solving, for `/predict`, the
    route every app calls per question shown. In process, a POST with the two dependencies and a
    response model cost 148 us, without them (the route serialises its own response) 121 us."""
    state: ServiceState = request.app.state.kt
    return state, loaded_predictor(state)


CurrentPredictor = Annotated[Predictor, Depends(current_predictor)]


def check_user_id(user_id: str, settings: Settings, loc: Sequence[str | int]) -> None:
    if len(user_id) > settings.user_id_max_length:
        raise ApiError(
            422,
            f"user_id longer than KT_USER_ID_MAX_LENGTH={settings.user_id_max_length}",
            loc,
            "limit_exceeded",
        )
    if not USER_ID_RE.match(user_id):
        raise ApiError(422, "user_id may only contain letters, digits and . _ : @ -", loc)


def check_count(n: int, limit: int, env: str, what: str, loc: Sequence[str | int]) -> None:
    if n > limit:
        raise ApiError(422, f"too many {what}: {n} > {env}={limit}", loc, "limit_exceeded")

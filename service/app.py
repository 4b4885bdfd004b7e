"""FastAPI application factory: `create_app(settings=None)`.

Nothing is built at import time. The lifespan creates the history store, the inference executor and
loads the model; SIGHUP (when the app runs in the main thread, i.e. under uvicorn) reloads the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import lifecycle, openapi, ui
from service.config import Settings, get_settings
from service.deps import ApiError, ServiceState, require_api_key
from service.metrics import Metrics
from service.middleware import BodyLimitMiddleware, MetricsMiddleware, UnhandledErrorMiddleware
from service.routes import api, index, public

logger = logging.getLogger(__name__)


def _field(loc: list[str | int]) -> str:
    """('body', 'interactions', 3, 'timestamp') -> 'interactions[3].timestamp'."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")] or list(loc)
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _error_item(loc: list[str | int], msg: str, type_: str) -> dict[str, object]:
    return {"loc": loc, "field": _field(loc), "msg": msg, "type": type_}


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    items = [
        _error_item(
            [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            str(e.get("msg", "")),
            str(e.get("type", "")),
        )
        for e in exc.errors()
    ]  # no "input" echo: it can be large and it is the caller's own data anyway
    return JSONResponse({"detail": items}, status_code=422)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    if exc.status in (401, 503):
        body: dict[str, object] = {"detail": exc.msg}
    else:
        body = {"detail": [_error_item(exc.loc, exc.msg, exc.type) | exc.extra]}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's only 400: a body it cannot decode (e.g. not UTF-8). Same class as malformed
        # JSON, so the same answer: 422 json_invalid naming the body (found by schema fuzzing).
        item = _error_item(["body"], "request body is not valid UTF-8 JSON", "json_invalid")
        return JSONResponse({"detail": [item]}, status_code=422)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _install_sighup(app: FastAPI, state: ServiceState) -> bool:
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return False
    loop = asyncio.get_running_loop()

    async def on_hup() -> None:
        logger.info("SIGHUP: reloading the model")
        try:
            await lifecycle.reload_model(state)
        except ApiError as exc:
            logger.error("SIGHUP reload failed: %s", exc.msg)

    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(on_hup()))
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app. Settings default to `get_settings()` (the KT_ environment)."""
    settings = settings or get_settings()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lifecycle.hold_freed_memory()  # in each worker process
        executor = ThreadPoolExecutor(
            max_workers=settings.inference_workers, thread_name_prefix="kt-infer"
        )
        state = ServiceState(
            settings=settings,
            store=lifecycle.build_store(settings),
            metrics=metrics,
            executor=executor,
        )
        app.state.kt = state
        try:
            await lifecycle.load_initial_model(state)
            hup = _install_sighup(app, state)
            yield
            if hup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        finally:
            await state.store.close()
            executor.shutdown(wait=False, cancel_futures=True)
            metrics.process_exited()

    app = FastAPI(
        title="Knowledge-tracing prediction service",
        version="1.0",
        summary="P(correct) for candidate questions from a learner's history (SAINT+/ONNX Runtime).",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from service.ui, with vendored assets (no CDN)
        redoc_url=None,
    )
    app.include_router(public)
    ui.install(app, settings, index)
    # Auth only when a key is configured: with none, the dependency would do nothing on every
    # request but cost its resolution (~2 of the 7 dependency solves of a /predict).
    app.include_router(api, dependencies=[Depends(require_api_key)] if settings.api_key else [])
    openapi.install(app, settings)  # limits and auth as configured
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(UnhandledErrorMiddleware)  # inside metrics: a 500 is still counted
    app.add_middleware(
        MetricsMiddleware, metrics=metrics
    )  # outermost: sees every status, 413 included
    return app

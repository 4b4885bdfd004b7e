"""Pure-ASGI middleware: request metrics (by route template, never by raw path), the body limit, and
the last-resort 500 (logged by route template and exception type only)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

logger = logging.getLogger("service.app")


def _too_large(limit: int) -> dict[str, Any]:
    return {"detail": f"request body exceeds KT_MAX_BODY_BYTES={limit}"}


class BodyLimitMiddleware:
    """Rejects bodies over `limit` bytes with 413: from Content-Length up front, else while reading.

    The body is read (at most `limit` bytes) before the app runs and replayed to it: the check must
    happen here, because FastAPI turns any exception raised while it reads a body into a 400.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await _send_json(send, 413, _too_large(self.limit))
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _send_json(send, 413, _too_large(self.limit))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def route_label(scope: Scope) -> str:
    """The matched route's template (`/users/{user_id}/history`), never the raw path."""
    return getattr(scope.get("route"), "path", None) or "unmatched"


class UnhandledErrorMiddleware:
    """Any exception that escapes the app -> 500 `{"detail": "internal server error"}`.

    Logs the exception type and route template only: messages and tracebacks may carry request
    data (user ids, histories). The exception is not re-raised, so neither Starlette's
    ServerErrorMiddleware nor uvicorn prints it with its message.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:  # the last resort: nothing may escape with its message
            logger.error(
                "unhandled %s on %s %s", type(exc).__name__, scope["method"], route_label(scope)
            )
            if not started:
                await _send_json(send, 500, {"detail": "internal server error"})


class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status code."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            labels = (scope["method"], route_label(scope), str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.request_latency.labels(*labels).observe(time.perf_counter() - start)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})

"""Request ids, the access log and the last word on unexpected errors.

One pure ASGI middleware, outermost among ours, so that:

* every request gets an id (``X-Request-ID``: the caller's when it is a plain token, else a new
  one), bound into every log line written while the request runs and returned in the response;
* every request, 5xx included, leaves one ``request`` line: method, route template, status and
  duration. The route template is logged instead of the URL, and query strings never are, so
  names or phone numbers typed into a search stay out of logs;
* an unexpected exception leaves exactly one ``unhandled_error`` line, carrying the exception's
  type and the frames it passed through but never its message (a database error's message can
  quote the row it refused), and is answered 500 here instead of being re-raised to the server,
  which would log a second traceback.
"""

from __future__ import annotations

import json
import re
import time
import traceback
import uuid
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError, StatementError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clinicsync.logging import get_logger

log = get_logger("clinicsync.request")

REQUEST_ID_HEADER = "x-request-id"
_ACCEPTED_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
STACK_FRAMES = 15


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER.encode():
            candidate = value.decode("latin-1")
            if _ACCEPTED_ID.match(candidate):
                return candidate
    return uuid.uuid4().hex


def describe_exception(exc: BaseException) -> dict[str, Any]:
    """Loggable facts about an exception: types, database codes and frames, never messages."""
    facts: dict[str, Any] = {"error_type": type(exc).__name__}
    if isinstance(exc, StatementError):
        original = exc.orig
        facts["database_error"] = type(original).__name__ if original is not None else None
        sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
        if sqlstate:
            facts["sqlstate"] = str(sqlstate)
        if isinstance(exc, DBAPIError):
            facts["connection_invalidated"] = exc.connection_invalidated
    causes: list[str] = []
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(causes) < 5:
        causes.append(type(cause).__name__)
        cause = cause.__cause__ or cause.__context__
    if causes:
        facts["caused_by"] = causes
    frames = traceback.extract_tb(exc.__traceback__)[-STACK_FRAMES:]
    facts["frames"] = [f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno} {frame.name}" for frame in frames]
    return facts


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        started = time.perf_counter()
        state = {"status": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                state["status"] = 500
                try:
                    facts = describe_exception(exc)
                except Exception:  # describing must never be what fails the request
                    facts = {"error_type": type(exc).__name__}
                log.error("unhandled_error", method=scope["method"], route=_route_of(scope), **facts)
                if not state["started"]:
                    await _send_internal_error(send, request_id)
            finally:
                status = int(state["status"])
                (log.error if status >= 500 else log.info)(
                    "request",
                    method=scope["method"],
                    route=_route_of(scope),
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                )


async def _send_internal_error(send: Send, request_id: str) -> None:
    body = json.dumps(
        {
            "error": {
                "code": "internal_error",
                "message": f"an unexpected error occurred; it has been logged as request {request_id}",
                "details": {"request_id": request_id},
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

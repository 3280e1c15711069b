"""Input limits applied before any route runs: body size (413), NUL characters and JSON bodies
that are not UTF-8 (422).

A NUL character is refused here, for every route and both databases alike: PostgreSQL cannot
store one in text and fails the write (with the row in its error), while SQLite would store it.
Bodies are read once, up to the limit, and handed on unchanged.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NUL_REASON = "contains a NUL character, which is not allowed"
ENCODING_REASON = "is not UTF-8 text, which JSON must be"


def _error(status: int, code: str, message: str, details: Any) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"code": code, "message": message, "details": details}}).encode()


def _nul_field(value: Any, path: tuple[str, ...] = ()) -> str | None:
    """The dotted path of the first string (or key) in a JSON document that holds a NUL."""
    if isinstance(value, str):
        return ".".join(path) or "body" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return ".".join((*path, key.replace("\x00", "\\u0000")))
            found = _nul_field(item, (*path, key))
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_field(item, (*path, str(index)))
            if found:
                return found
    return None


def _body_nul_field(body: bytes) -> str | None:
    if b"\x00" in body:
        return "body"
    if b"\\u0000" not in body:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None  # not JSON: the route's own parsing will refuse it
    return _nul_field(document)


def _query_nul_field(query_string: bytes) -> str | None:
    if b"%00" not in query_string and b"\x00" not in query_string:
        return None
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "\\u0000") or "query"
    return None


class InputLimits:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self._check_url(scope)
        if refused is None and scope["method"] in BODY_METHODS:
            refused, receive = await self._read_body(scope, receive)
        if refused is not None:
            await _respond(send, *refused)
            return
        await self.app(scope, receive, send)

    def _check_url(self, scope: Scope) -> tuple[int, bytes] | None:
        raw_path = scope.get("raw_path") or scope.get("path", "").encode()
        if b"%00" in raw_path or "\x00" in scope.get("path", ""):
            return _error(
                422, "validation_failed", f"path: {NUL_REASON}", [{"field": "path", "reason": NUL_REASON}]
            )
        field = _query_nul_field(scope.get("query_string", b""))
        if field is not None:
            return _error(
                422, "validation_failed", f"{field}: {NUL_REASON}", [{"field": field, "reason": NUL_REASON}]
            )
        return None

    def _too_large(self) -> tuple[int, bytes]:
        return _error(
            413,
            "payload_too_large",
            f"the request body is larger than {self.max_body_bytes} bytes",
            {"max_body_bytes": self.max_body_bytes},
        )

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[tuple[int, bytes] | None, Receive]:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    if int(value) > self.max_body_bytes:
                        return self._too_large(), receive
                except ValueError:
                    pass
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away; let the app see the disconnect as it would have.
                return None, _replay([message], receive)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return self._too_large(), receive
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        field = _body_nul_field(body)
        if field is not None:
            return _invalid(field, NUL_REASON), receive
        if _is_json(scope) and not _is_utf8(body):
            # The framework would answer 400 "error parsing the body"; a caller's mistake in the
            # body is a 422 naming it, as every other bad input is.
            return _invalid("body", ENCODING_REASON), receive
        return None, _replay([{"type": "http.request", "body": body, "more_body": False}], receive)


def _invalid(field: str, reason: str) -> tuple[int, bytes]:
    return _error(422, "validation_failed", f"{field}: {reason}", [{"field": field, "reason": reason}])


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media_type = value.split(b";", 1)[0].strip().lower()
            return media_type == b"application/json" or media_type.endswith(b"+json")
    return False


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        # The rest of the body was never read; the connection cannot carry another request.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

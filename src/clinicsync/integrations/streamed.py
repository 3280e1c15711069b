"""A function's records written out as they are fetched: the body of POST /api/integrations/{id}.

The body is the one JSON object callers always read, ``{"provider", "function",
"integration_id", "records": [...], "count", "pages"}``, but its ``records`` array is written a
page at a time while later pages are still being fetched, so a 50,000-record read never sits in
memory whole. ``count`` and ``pages`` follow the array because they are known only at its end.

Errors before the first record (an unknown function, a bad parameter, the provider refusing the
first page) are answered with their own status, as before. A page failing after records were
sent cannot change the status any more: the array is closed and the object carries ``error``
(``{"code", "message", "details"}``, the shape of our error bodies) beside the count of what came.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from pydantic_core import to_json

from clinicsync.errors import ClinicSyncError
from clinicsync.integrations.executor import RecordStream
from clinicsync.logging import get_logger

log = get_logger(__name__)

_NONE: list[dict[str, Any]] = []


async def first_page(stream: RecordStream) -> list[dict[str, Any]]:
    """The stream's first page; any error of it is raised here, before a response has started."""
    try:
        return await anext(stream.pages)
    except StopAsyncIteration:
        return _NONE
    except BaseException:
        await stream.pages.aclose()
        raise


async def json_body(stream: RecordStream, function: str, first: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    """The response body, one chunk per page: a page is sent before the next one is asked for."""
    integration = stream.resolution.integration
    head = {"provider": integration.provider_key, "function": function, "integration_id": integration.id}
    count = 0
    error: dict[str, Any] | None = None

    def encode(page: list[dict[str, Any]]) -> bytes:
        nonlocal count
        # A page's records as array elements, each after a comma but the very first.
        body = to_json(page)[1:-1]
        if not body:
            return b""
        separator = b"," if count else b""
        count += len(page)
        return separator + body

    yield to_json(head)[:-1] + b',"records":[' + encode(first)
    async with contextlib.aclosing(stream.pages) as pages:
        try:
            if first is not _NONE:
                async for page in pages:
                    if chunk := encode(page):
                        yield chunk
        except ClinicSyncError as exc:
            log.warning("provider read failed mid-stream", function=function, code=exc.code, records=count)
            error = exc.to_body()["error"]
    tail: dict[str, Any] = {"count": count, "pages": stream.result.pages}
    if error is not None:
        tail["error"] = error
    yield b"]," + to_json(tail)[1:]

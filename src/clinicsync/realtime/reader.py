"""A small reader of /api/v1/events for Python clients (tests and benchmarks use it too)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Message:
    id: str | None = None
    event: str = "message"
    data: str = ""
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.data)


class EventStream:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def _next_block(self) -> Message:
        message = Message()
        data: list[str] = []
        seen = False
        async for line in self._lines:
            if line == "":
                if seen:
                    message.data = "\n".join(data)
                    return message
                continue
            seen = True
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                message.comments.append(value)
            elif name == "id":
                message.id = value
            elif name == "event":
                message.event = value
            elif name == "data":
                data.append(value)
        raise EOFError("the stream ended")

    async def next_block(self, timeout: float = 15) -> Message:
        """The next block, comments included (heartbeats are comment-only blocks)."""
        return await asyncio.wait_for(self._next_block(), timeout)

    async def next_event(self, timeout: float = 15) -> Message:
        """The next block that carries an event (skips comments)."""

        async def read() -> Message:
            while True:
                block = await self._next_block()
                if block.data or block.event != "message":
                    return block

        return await asyncio.wait_for(read(), timeout)

    async def take(self, count: int, timeout: float = 15) -> list[Message]:
        return [await self.next_event(timeout) for _ in range(count)]


@asynccontextmanager
async def open_stream(
    base_url: str, token: str, *, last_event_id: str | None = None, cookies: dict[str, str] | None = None
) -> AsyncIterator[EventStream]:
    """Connects and waits for the server's first block, which it sends once it is subscribed."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30, read=None), cookies=cookies) as http,
        http.stream("GET", "/api/v1/events", headers=headers) as response,
    ):
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"stream refused: {response.status_code} {response.text}")
        stream = EventStream(response)
        first = await stream.next_block()
        if "connected" not in first.comments:
            raise RuntimeError("the stream did not start with its connected comment")
        yield stream

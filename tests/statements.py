"""Counts the SQL statements run on behalf of one request (matched by its X-Request-ID), so
background work of the server cannot blur the count: a change that adds a round trip to a hot path
fails the test that pins it."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog


class Statements:
    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = {}
        self.serving: dict[str, int] = {}
        self.clash_checks: list[tuple[str, Any]] = []  # as sent to the driver, with parameters

    def record(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        # Jobs a request wakes (an outbox push) carry its request id in their logs; only the task
        # that serves the request, the first to run a statement for it, counts.
        task = id(asyncio.current_task())
        if request_id is not None and self.serving.setdefault(request_id, task) == task:
            self.seen.setdefault(request_id, []).append(" ".join(statement.split())[:90])
            if "FROM appointments" in statement and "blocked_from" in statement:
                self.clash_checks.append((statement, parameters))

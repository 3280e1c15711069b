"""A sandbox served from a thread of its own, for callers whose own loop is busy or blocking
(Playwright's sync API owns the browser tests' loop)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from clinicsync.sandbox.core import SandboxServer
from clinicsync.sandbox.runner import run_sandbox


@contextmanager
def sandbox_in_thread(provider: str, **options: Any) -> Iterator[SandboxServer]:
    """Serves the sandbox until the block exits; yields it once it listens."""
    started: dict[str, Any] = {}
    ready = threading.Event()
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None

    async def serve() -> None:
        nonlocal stop, loop
        stop, loop = asyncio.Event(), asyncio.get_running_loop()
        try:
            async with run_sandbox(provider, **options) as server:
                started["server"] = server
                ready.set()
                await stop.wait()
        except BaseException as error:
            started["error"] = error
            ready.set()
            raise

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True, name=f"sandbox-{provider}")
    thread.start()
    if not ready.wait(30):
        raise RuntimeError(f"the {provider} sandbox did not start within 30 s")
    if "error" in started:
        raise RuntimeError(f"the {provider} sandbox did not start: {started['error']}")
    try:
        yield started["server"]
    finally:
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(15)

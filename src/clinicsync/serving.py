"""Serve the app in-process on a loopback port (tests, benchmarks, embedded use)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn

from clinicsync.logging import get_logger

log = get_logger(__name__)


class EmbeddedServer(uvicorn.Server):
    """uvicorn run as a task of a host program (the app in tests and ``clinicsync demo``, the
    sandboxes), stopped by ``stop_uvicorn``.

    It stops as soon as it is asked. uvicorn's own loop looks at ``should_exit`` every 0.1 s, and its
    shutdown sleeps a fixed 0.1 s before it looks at the open connections: a suite that starts a
    server for every test would wait both out hundreds of times. Here the loop wakes on the request
    and shutdown watches the connections close (an idle keep-alive one closes within a loop turn).
    With ``own_signals=False`` uvicorn leaves Ctrl-C and SIGTERM to the host program."""

    def __init__(self, config: uvicorn.Config, *, own_signals: bool = True) -> None:
        super().__init__(config)
        self._own_signals = own_signals
        self._exit_requested = asyncio.Event()

    def request_exit(self) -> None:
        self.should_exit = True
        self._exit_requested.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if not self._own_signals:
            yield
            return
        with super().capture_signals():
            yield

    async def main_loop(self) -> None:
        # uvicorn's ticks (the Date header once a second; a signal's should_exit), plus the wake-up.
        ticks = 0
        while not await self.on_tick(ticks):
            ticks = (ticks + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_requested.wait(), timeout=0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for listener in self.servers:
            listener.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # an idle one closes now; a busy one after its response
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                await self._connections_closed()
        except TimeoutError:
            # An event stream never ends by itself: past the grace period its request is cancelled.
            for request in self.server_state.tasks:
                request.cancel(msg="the server is stopping")
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _connections_closed(self) -> None:
        state = self.server_state
        # uvicorn signals no event when a connection closes; its sets are all there is to watch.
        while (state.connections or state.tasks) and not self.force_exit:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        for listener in self.servers:
            await listener.wait_closed()


@asynccontextmanager
async def serving(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, own_signals: bool = True
) -> AsyncIterator[str]:
    """Runs ``app`` under uvicorn on the current event loop; yields its base URL, stops on exit.
    With ``own_signals=False`` uvicorn leaves Ctrl-C to the caller (``clinicsync demo`` stops the
    server and its sandbox PMS together)."""
    # Event streams never end by themselves: past the grace period, shutdown cancels them.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = EmbeddedServer(config, own_signals=own_signals)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the server stopped while starting")
            await asyncio.sleep(0.01)
        bound_port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{bound_port}"
    finally:
        if not await stop_uvicorn(server, task, timeout=15):
            log.warning("server_shutdown_forced", after_seconds=15)


async def stop_uvicorn(server: uvicorn.Server, task: asyncio.Task[Any], *, timeout: float) -> bool:
    """Asks an embedded uvicorn to stop and waits for it; answers False if it had to be forced.

    A shutdown step that hangs (a stream that never ends, a stuck lifespan) must not hang the
    caller too: past ``timeout`` the server is forced and its task cancelled."""
    if isinstance(server, EmbeddedServer):
        server.request_exit()
    else:
        server.should_exit = True
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=timeout)
        return True
    except TimeoutError:
        server.force_exit = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def server_process(environment: dict[str, str], *, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Runs ``clinicsync serve`` in a child process with these CLINICSYNC_* settings; yields its base
    URL once /health answers, terminates it on exit. For tests and benchmarks that need a server
    that shares nothing with the caller but the database."""
    port = free_port(host)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clinicsync.cli",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        env={**os.environ, **environment},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    base_url = f"http://{host}:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url) as http:
            while True:
                if process.returncode is not None:
                    error = await process.stderr.read() if process.stderr else b""
                    raise RuntimeError(f"the server process exited: {error.decode(errors='replace')}")
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        yield base_url
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), timeout=15)

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


class _HostSignals(uvicorn.Server):
    """uvicorn leaving Ctrl-C and SIGTERM to the host program (which stops it by leaving the block)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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
    server = uvicorn.Server(config) if own_signals else _HostSignals(config)
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

"""Run sandbox servers in-process with uvicorn on loopback.

::

    async with run_sandbox("opendental", spec={"patients": 50}, faults={"error_rate": 0.1}) as server:
        httpx.get(server.base_url + "/appointments", headers=...)   # base_url includes the API prefix
        httpx.get(server.root_url + "/_sandbox/requests")

``provider`` is a registry name, a ``SandboxServer`` subclass or an instance; keyword options go to the
class constructor. ``port=0`` (the default) binds a free port. The server runs as a task on the
current event loop and is stopped (background tasks cancelled, state file written) on exit.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn

from clinicsync.sandbox.core import SandboxServer
from clinicsync.sandbox.registry import get_server_class
from clinicsync.serving import EmbeddedServer, stop_uvicorn

# The shape of test fixtures that start servers: ``await factory("opendental", spec={...})``.
SandboxFactory = Callable[..., Awaitable[SandboxServer]]
ControlClientFactory = Callable[[SandboxServer], Awaitable[httpx.AsyncClient]]


def make_server(provider: str | type[SandboxServer] | SandboxServer, **options: Any) -> SandboxServer:
    if isinstance(provider, SandboxServer):
        if options:
            raise TypeError("options cannot be combined with a server instance")
        return provider
    server_class = get_server_class(provider) if isinstance(provider, str) else provider
    return server_class(**options)


@asynccontextmanager
async def run_sandbox(
    provider: str | type[SandboxServer] | SandboxServer,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 10.0,
    **options: Any,
) -> AsyncIterator[SandboxServer]:
    """Serve a sandbox until the block exits; yields the server with ``root_url``/``base_url`` set."""
    server = make_server(provider, **options)
    # asyncio only turns on TCP_NODELAY for sockets whose protocol is IPPROTO_TCP, and accepted
    # connections inherit the listening socket's protocol. With the default 0, Nagle's algorithm
    # holds uvicorn's response body behind its headers until the client's delayed ACK (~40 ms a
    # request on a kept-alive connection).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        server.build_app(),
        log_level="warning",
        lifespan="on",
        access_log=False,
        # Hanging requests must not hold shutdown for long.
        timeout_graceful_shutdown=1,
    )
    uv_server = EmbeddedServer(config, own_signals=False)
    task = asyncio.create_task(uv_server.serve(sockets=[sock]), name=f"sandbox-{server.name}-{bound_port}")
    try:
        deadline = asyncio.get_running_loop().time() + startup_timeout
        while not uv_server.started:
            if task.done():
                task.result()
                raise RuntimeError(f"sandbox {server.name} stopped during startup")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"sandbox {server.name} did not start within {startup_timeout}s")
            await asyncio.sleep(0.005)
        server.root_url = f"http://{host}:{bound_port}"
        server.base_url = server.root_url + server.api_prefix
        yield server
    finally:
        server.shutdown_event.set()
        try:
            await stop_uvicorn(uv_server, task, timeout=10)
        finally:
            sock.close()

"""Fixtures for sandbox tests: start any registered simulator over real loopback HTTP.

    async def test_something(sandbox_factory):
        server = await sandbox_factory("opendental", spec={"patients": 20, "appointments": 50})
        async with httpx.AsyncClient(base_url=server.base_url) as client: ...

Every server started through the factory is stopped when the test ends. ``control`` gives an
``httpx.AsyncClient`` on a server's root URL for the ``/_sandbox`` control API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from clinicsync.sandbox import SandboxServer, run_sandbox
from clinicsync.sandbox.runner import ControlClientFactory, SandboxFactory


@pytest.fixture
async def sandbox_factory() -> AsyncIterator[SandboxFactory]:
    async with AsyncExitStack() as stack:

        async def start(provider: str | type[SandboxServer] | SandboxServer, **options: Any) -> SandboxServer:
            return await stack.enter_async_context(run_sandbox(provider, **options))

        yield start


@pytest.fixture
async def control() -> AsyncIterator[ControlClientFactory]:
    async with AsyncExitStack() as stack:

        async def open_client(server: SandboxServer) -> httpx.AsyncClient:
            assert server.root_url is not None
            client = httpx.AsyncClient(base_url=server.root_url + "/_sandbox", timeout=10)
            return await stack.enter_async_context(client)

        yield open_client

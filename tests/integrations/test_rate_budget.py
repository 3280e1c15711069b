"""One rate budget per integration, shared by every process that calls it (every executor of the
process on SQLite); live calls go first."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sandbox_integrations import connect_opendental
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tests.conftest import RunningServer

from clinicsync.config import Settings
from clinicsync.db.engine import create_engine, create_sessionmaker
from clinicsync.integrations.executor import IntegrationExecutor
from clinicsync.integrations.ratebudget import Priority
from clinicsync.sandbox import run_sandbox

PROCESS = Path(__file__).with_name("executor_process.py")
LIMIT, WINDOW = 6, 1.0  # burst 1, then 5 a second


def busiest_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(len([t for t in times[i:] if t < start + window]) for i, start in enumerate(times))


async def run_process(
    url: str, tenant: Any, integration_id: str, function: str, count: int
) -> list[dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PROCESS),
        url,
        str(tenant.organization_id),
        integration_id,
        function,
        str(count),
        "LIVE",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    # Log lines share stdout with the results; results are the JSON lines.
    return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]


async def run_in_process(url: str, tenant: Any, integration_id: str, function: str, count: int) -> int:
    executor, _, engine = executor_for(url)
    try:
        await asyncio.gather(
            *(
                executor.execute(tenant.organization_id, uuid.UUID(integration_id), function)
                for _ in range(count)
            )
        )
    finally:
        await engine.dispose()
    return count


async def test_two_processes_share_one_budget(
    server: RunningServer, client: httpx.AsyncClient, tenant_factory: Any, backend: str
) -> None:
    tenant = await tenant_factory()
    async with run_sandbox("opendental") as sandbox:
        integration_id = await connect_opendental(
            client, tenant.headers, sandbox, rate_limit={"requests": LIMIT, "per_seconds": WINDOW, "burst": 1}
        )
        sandbox.request_log.clear()
        url = server.settings.database_url
        if backend == "postgresql":
            first, second = await asyncio.gather(
                run_process(url, tenant, integration_id, "list_operatories", 8),
                run_process(url, tenant, integration_id, "list_operatories", 8),
            )
            assert len(first) == len(second) == 8 and all(call["ok"] for call in first + second)
        else:
            # The embedded SQLite deployment is one process: two executors with engines of their
            # own (a worker task and a request, say) share the process's budget.
            await asyncio.gather(
                run_in_process(url, tenant, integration_id, "list_operatories", 8),
                run_in_process(url, tenant, integration_id, "list_operatories", 8),
            )
        sent = [datetime.fromisoformat(entry.time).timestamp() for entry in sandbox.request_log]
        assert len(sent) == 16
        # Each process alone would have sent its 8 in about a second and a half; together they
        # keep to the one allowance, so no second holds more than the limit (give or take one
        # request that the loopback delayed into the next second).
        assert busiest_window(sent, WINDOW) <= LIMIT + 1
        assert max(sent) - min(sent) >= (16 - LIMIT) / LIMIT


def executor_for(url: str) -> tuple[IntegrationExecutor, async_sessionmaker[AsyncSession], Any]:
    engine = create_engine(url)
    settings = Settings(
        database_url=url,
        secret_key="test-secret-key-for-encryption-only",
        environment="test",
        migrate_on_start=False,
    )
    maker = create_sessionmaker(engine)
    return IntegrationExecutor(maker, settings), maker, engine


async def test_live_calls_go_before_background_reads(
    server: RunningServer, client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    async with run_sandbox("opendental") as sandbox:
        integration_id = uuid.UUID(
            await connect_opendental(
                client, tenant.headers, sandbox, rate_limit={"requests": 5, "per_seconds": 1, "burst": 1}
            )
        )
        # Two executors with engines of their own, as two processes would have.
        background, _, background_engine = executor_for(server.settings.database_url)
        live, _, live_engine = executor_for(server.settings.database_url)
        try:
            sandbox.request_log.clear()

            async def read() -> None:
                await background.execute(
                    tenant.organization_id, integration_id, "list_providers", priority=Priority.BACKGROUND
                )

            reads = [asyncio.create_task(read()) for _ in range(14)]
            await asyncio.sleep(0.7)
            await asyncio.gather(
                *(live.execute(tenant.organization_id, integration_id, "list_operatories") for _ in range(3))
            )
            await asyncio.gather(*reads)
        finally:
            await background_engine.dispose()
            await live_engine.dispose()
        order = ["live" if entry.path.endswith("/operatories") else "read" for entry in sandbox.request_log]
        assert order.count("live") == 3 and order.count("read") == 14
        first_live = order.index("live")
        last_live = len(order) - 1 - order[::-1].index("live")
        # The live calls did not queue behind the ten or so reads still waiting when they came:
        # those went after them. (A read that already held its turn, or whose request overtook
        # on the way, may land between them.)
        assert order[first_live : last_live + 1].count("read") <= 2
        assert order[last_live + 1 :].count("read") >= 8

"""PostgreSQL: two real `clinicsync worker` processes share the pushes; kill -9 of one loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.app import create_app
from clinicsync.db.engine import session_scope
from clinicsync.sandbox import run_sandbox
from clinicsync.serving import serving
from clinicsync.sync.models import OutboxItem, OutboxStatus
from tests.factories import TenantFactory, open_clinic
from tests.sync.conftest import (
    DUAL_WRITE,
    connect_opendental,
    drain_timeout,
    eventually,
    eventually_or_report,
    sync_settings,
)
from tests.sync.test_resilience import (
    SCALE,
    add_patients,
    book_many,
    pms_appointments,
    pms_patients,
    references_in,
    states,
)


def start_worker(database_url: str, log_path: Any) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "CLINICSYNC_DATABASE_URL": database_url,
        "CLINICSYNC_SECRET_KEY": "test-secret-key-for-encryption-only",
        "CLINICSYNC_MIGRATE_ON_START": "false",
        "CLINICSYNC_ENVIRONMENT": "test",
        "CLINICSYNC_SYNC_LEASE_SECONDS": "5",
        "CLINICSYNC_SYNC_SWEEP_INTERVAL_SECONDS": "1",
        "CLINICSYNC_SYNC_RETRY_BASE_SECONDS": "0.2",
        "CLINICSYNC_SYNC_RETRY_MAX_SECONDS": "1",
        "CLINICSYNC_SYNC_READ_BACK_DELAY_SECONDS": "0",
    }
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "clinicsync.cli", "worker", "--concurrency", "6"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def delivered_by(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with session_scope(sessionmaker, write=False) as session:
        rows = await session.scalars(
            select(OutboxItem.claimed_by).where(OutboxItem.status == OutboxStatus.DONE)
        )
        counts: dict[str, int] = {}
        for claimed_by in rows:
            pid = (claimed_by or "").split(":")[1] if claimed_by and claimed_by.count(":") >= 2 else "?"
            counts[pid] = counts.get(pid, 0) + 1
        return counts


@pytest.mark.slow
async def test_two_workers_deliver_everything_once_and_survive_a_kill(
    backend: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_factory: TenantFactory,
    tmp_path: Any,
) -> None:
    if backend != "postgresql":
        pytest.skip("`clinicsync worker` processes run on PostgreSQL; SQLite delivers inside the server")
    count, patient_count = int(120 * SCALE), int(20 * SCALE)
    settings = sync_settings(database_url, tmp_path / "var", sync_embedded_worker=False)
    workers = [start_worker(database_url, tmp_path / f"worker{n}.log") for n in range(2)]
    try:
        async with (
            run_sandbox(
                "opendental", spec={"patients": 3, "appointments": 0}, faults={"latency_ms": 15}
            ) as sandbox,
            serving(create_app(settings)) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=60) as client,
        ):
            tenant = await tenant_factory(time_zone="America/Chicago")
            integration_id, pms, provider = await connect_opendental(client, tenant, sandbox)
            name = f"{provider['FName']} {provider['LName']}"
            clinic = await open_clinic(client, tenant, name=name, start="00:00", end="23:59")
            configured = await client.post(
                "/api/admin/integration-settings",
                headers=tenant.headers,
                json={"integration_id": integration_id, **DUAL_WRITE},
            )
            assert configured.status_code == 201
            patients = await add_patients(client, clinic, patient_count, "w")
            booked = await book_many(client, clinic, patients, count)
            pids = {str(worker.pid) for worker in workers}

            async def both_working() -> bool:
                return pids <= set(await delivered_by(sessionmaker))

            await eventually(both_working, timeout=60, interval=0.2)
            os.kill(workers[0].pid, signal.SIGKILL)  # mid-delivery: it had pushes in flight
            workers[0].wait()

            async def all_confirmed() -> bool:
                return (await states(client, clinic))["confirmed"] == count

            await eventually_or_report(
                all_confirmed,
                sessionmaker,
                timeout=drain_timeout(count + patient_count, at_least=180),
                interval=1 if SCALE > 1 else 0.5,
            )
            in_pms = references_in(await pms_appointments(pms))
            assert sorted(in_pms) == sorted(item["booking_reference"] for item in booked)
            assert set(in_pms.values()) == {1}
            ours = [row for row in await pms_patients(pms) if str(row.get("LName", "")).startswith("Testerw")]
            assert len(ours) == patient_count
            await pms.aclose()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=20)

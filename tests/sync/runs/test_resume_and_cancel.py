"""Checkpoints: a run whose worker dies mid-run is failed as stale and the next run resumes from its
checkpoint with exact counts; cancel stops a run between pages. Both databases, real HTTP."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.app import create_app
from clinicsync.integrations.executor import IntegrationExecutor
from clinicsync.sandbox import SandboxServer
from clinicsync.sandbox.faults import FaultSettings
from clinicsync.serving import serving
from clinicsync.sync.delivery import SyncContext
from clinicsync.sync.models import ExternalReference, RecordType
from clinicsync.sync.runs import engine
from tests.conftest import RunningServer
from tests.factories import TenantFactory
from tests.sync.conftest import sync_settings
from tests.sync.runs import run_worker_process
from tests.sync.runs.conftest import (
    VET_CLINIC,
    ZONE,
    Pulling,
    cases,
    connect_vet,
    finished,
    pulling_opendental,
    start,
)


@pytest.fixture
async def quiet_server(
    database_url: str, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Any
) -> AsyncIterator[RunningServer]:
    """A server that runs no jobs: the test plays the worker, so it can kill it mid-run. (After the
    tables are emptied: the server loads the provider catalogue when it starts.)"""
    stale_seconds = run_worker_process.STALE_SECONDS
    settings = sync_settings(
        database_url, tmp_path / "var", sync_jobs="off", sync_run_stale_seconds=stale_seconds
    )
    async with serving(create_app(settings)) as base_url:
        yield RunningServer(base_url, settings)


def _worker_process(server: RunningServer, sync_id: str) -> subprocess.Popen[bytes]:
    """A worker in a process of its own that runs the run, for the test to kill mid-run."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.sync.runs.run_worker_process",
            server.settings.database_url,
            str(server.settings.var_dir),
            sync_id,
        ],
        stdout=subprocess.DEVNULL,
    )


def _kill(worker: subprocess.Popen[bytes]) -> None:
    """The machine dies: no cleanup runs; the operating system closes its connections."""
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)


async def _detail(client: httpx.AsyncClient, clinic: Pulling, sync_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/sync/runs/{sync_id}", headers=clinic.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _past_visits(clinic: Pulling, days: int) -> set[str]:
    local = clinic.sandbox.clock.local_now()  # type: ignore[attr-defined]
    first = datetime.combine(local.date() - timedelta(days=days), datetime.min.time(), tzinfo=local.tzinfo)
    now = clinic.sandbox.clock.now()  # type: ignore[attr-defined]
    return {
        str(row.id)
        for row in clinic.sandbox.store.appointments.values()  # type: ignore[attr-defined]
        if not row.deleted and first.astimezone(UTC) <= row.start < now
    }


async def test_a_run_whose_worker_died_is_failed_as_stale_and_the_next_resumes_from_its_checkpoint(
    quiet_server: RunningServer,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_factory: TenantFactory,
    sandboxes: Callable[..., Awaitable[SandboxServer]],
) -> None:
    async with httpx.AsyncClient(base_url=quiet_server.base_url, timeout=30) as client:
        pims = await sandboxes("vet_pims", spec=VET_CLINIC)
        tenant = await tenant_factory(time_zone=ZONE)
        vet = Pulling(tenant, pims, await connect_vet(client, tenant, pims))
        worker = SyncContext(
            sessionmaker, IntegrationExecutor(sessionmaker, quiet_server.settings), quiet_server.settings
        )
        pims.faults = FaultSettings(latency_ms=150, match_path="^/appointments/getCalendarEventData")
        first = await start(client, vet, sync_type="cases", backward_days=10)

        dying = _worker_process(quiet_server, first["sync_id"])
        try:
            for _ in range(400):
                checkpoint = (await _detail(client, vet, first["sync_id"]))["checkpoint"]
                if checkpoint and checkpoint["phase"] == "backward" and checkpoint["page"] >= 4:
                    break
                await asyncio.sleep(0.05)
        finally:
            _kill(dying)  # the worker is gone mid-page: its open transaction never commits
        died_at = await _detail(client, vet, first["sync_id"])
        assert died_at["status"] == "running"
        done_pages = died_at["checkpoint"]["page"]
        assert 4 <= done_pages < 11

        await asyncio.sleep(1.2)  # longer than the stale limit without a heartbeat
        cleaned = await client.post("/api/v1/sync/cleanup", headers=vet.headers)
        assert cleaned.status_code == 200, cleaned.text
        assert cleaned.json()["sync_ids"] == [first["sync_id"]]
        stale = await _detail(client, vet, first["sync_id"])
        assert stale["status"] == "failed" and stale["error_message"].startswith("stale")

        pims.request_log.clear()
        second = await start(client, vet, sync_type="cases", backward_days=10)
        assert second["resumed_from"] == first["sync_id"]
        assert await engine.execute(worker, uuid.UUID(second["sync_id"])) == "completed"

        resumed = await _detail(client, vet, second["sync_id"])
        pulled = {case["external_id"] for case in await cases(client, vet)}
        truth = _past_visits(vet, 10)
        assert pulled == truth
        # Exact counts: every past visit found and created once, across the two runs' work.
        assert resumed["counts"]["cases"] == {
            "found": len(truth),
            "created": len(truth),
            "updated": 0,
            "unchanged": 0,
            "deleted": 0,
            "failed": 0,
        }
        # It read only the days after the checkpoint, not from zero.
        calendar_reads = [
            entry for entry in pims.request_log if entry.path.endswith("/appointments/getCalendarEventData")
        ]
        assert len(calendar_reads) == 11 - done_pages


async def test_cancel_stops_a_run_between_pages_and_keeps_what_it_did(
    client: httpx.AsyncClient, vet: Pulling
) -> None:
    vet.sandbox.faults = FaultSettings(latency_ms=150, match_path="^/appointments/getCalendarEventData")
    started = await start(client, vet, backward_days=10)
    sync_id = started["sync_id"]
    for _ in range(200):
        progress = (await client.get(f"/api/v1/sync/progress/{sync_id}", headers=vet.headers)).json()
        if progress["records_processed"] > 0:
            break
        await asyncio.sleep(0.05)
    assert 0 < progress["progress_percentage"] < 100
    assert progress["current_step"] == "backward" and progress["total_steps"] == 4

    cancelled = await client.post(f"/api/v1/sync/{sync_id}/cancel", headers=vet.headers)
    assert cancelled.status_code == 200, cancelled.text
    run = await finished(client, vet, sync_id)

    assert run["status"] == "cancelled"
    assert run["completed_at"] is not None
    kept = await cases(client, vet)
    assert run["counts"]["cases"]["created"] == len(kept) > 0
    assert len(kept) < len(_past_visits(vet, 10))
    again = await client.post(f"/api/v1/sync/{sync_id}/cancel", headers=vet.headers)
    assert again.status_code == 409
    assert again.json()["error"]["details"]["error_code"] == "SYNC_FINISHED"


async def test_a_patient_import_whose_worker_died_resumes_from_its_page_with_exact_counts(
    quiet_server: RunningServer,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_factory: TenantFactory,
    sandboxes: Callable[..., Awaitable[SandboxServer]],
) -> None:
    async with httpx.AsyncClient(base_url=quiet_server.base_url, timeout=30) as client:
        clinic = await pulling_opendental(
            client,
            tenant_factory,
            sandboxes,
            {"seed": 7, "patients": 230, "appointments": 10, "days_before": 3, "days_after": 3},
        )
        od = clinic.sandbox
        worker = SyncContext(
            sessionmaker, IntegrationExecutor(sessionmaker, quiet_server.settings), quiet_server.settings
        )
        # OpenDental answers under /api/v1: each page of the patient list takes a second.
        od.faults = FaultSettings(latency_ms=1000, match_path="^/api/v1/patients/Simple$")
        first = await start(client, clinic, sync_type="import_patients")

        dying = _worker_process(quiet_server, first["sync_id"])
        try:
            for _ in range(400):
                checkpoint = (await _detail(client, clinic, first["sync_id"]))["checkpoint"]
                if checkpoint and checkpoint["phase"] == "patients" and checkpoint["page"] >= 1:
                    break
                await asyncio.sleep(0.05)
        finally:
            _kill(dying)
        died_at = await _detail(client, clinic, first["sync_id"])
        assert died_at["checkpoint"]["page"] in (1, 2)
        done = died_at["counts"]["patients"]["created"]
        assert done == 100 * died_at["checkpoint"]["page"]

        await asyncio.sleep(1.2)
        cleaned = await client.post("/api/v1/sync/cleanup", headers=clinic.headers)
        assert cleaned.json()["sync_ids"] == [first["sync_id"]]
        od.faults = FaultSettings()
        second = await start(client, clinic, sync_type="import_patients")
        assert second["resumed_from"] == first["sync_id"]
        assert await engine.execute(worker, uuid.UUID(second["sync_id"])) == "completed"

        resumed = await _detail(client, clinic, second["sync_id"])
        # Exact counts across the two runs: every PMS patient created and linked once.
        assert resumed["counts"]["patients"] == {
            "found": 230,
            "created": 230,
            "updated": 0,
            "unchanged": 0,
            "deleted": 0,
            "failed": 0,
        }
        async with sessionmaker() as session:
            linked = await session.scalar(
                select(func.count(func.distinct(ExternalReference.record_id))).where(
                    ExternalReference.integration_id == uuid.UUID(clinic.integration_id),
                    ExternalReference.record_type == RecordType.PATIENT,
                )
            )
        assert linked == 230

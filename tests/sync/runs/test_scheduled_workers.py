"""PostgreSQL: scheduled runs of 20 organizations on two real `clinicsync worker` processes. Each
run executes once, never two at once for one integration; `kill -9` of a worker mid-run leaves its
runs to be failed as stale, and the next scheduled run resumes from the checkpoint with exact counts."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.app import create_app
from clinicsync.db.engine import session_scope
from clinicsync.sandbox import SandboxServer
from clinicsync.sandbox.faults import FaultSettings
from clinicsync.serving import serving
from clinicsync.sync.runs.models import RunStatus, RunType, SyncRun
from tests.factories import TenantFactory
from tests.sync.conftest import eventually, sync_settings
from tests.sync.runs.conftest import VET_CLINIC, ZONE, connect_vet

ORGANIZATIONS = 20
STALE_SECONDS = 3


def start_worker(database_url: str, log_path: Any) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "CLINICSYNC_DATABASE_URL": database_url,
        "CLINICSYNC_SECRET_KEY": "test-secret-key-for-encryption-only",
        "CLINICSYNC_MIGRATE_ON_START": "false",
        "CLINICSYNC_ENVIRONMENT": "test",
        "CLINICSYNC_SYNC_SWEEP_INTERVAL_SECONDS": "1",
        "ENABLE_SYNC_SCHEDULER": "true",
        "SYNC_INTERVAL_MINUTES": "0.1",  # every 6 s, so the test sees several rounds
        "CLINICSYNC_SYNC_RUN_STALE_SECONDS": str(STALE_SECONDS),
    }
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "clinicsync.cli", "worker", "--concurrency", "6"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def all_runs(sessionmaker: async_sessionmaker[AsyncSession]) -> list[SyncRun]:
    async with session_scope(sessionmaker, write=False) as session:
        return list(await session.scalars(select(SyncRun).order_by(SyncRun.started_at)))


def _pid(run: SyncRun) -> str | None:
    return run.worker.rsplit(":", 1)[-1] if run.worker else None


@pytest.mark.slow
async def test_two_workers_run_every_schedule_once_and_resume_a_killed_run_from_its_checkpoint(
    backend: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_factory: TenantFactory,
    sandboxes: Callable[..., Awaitable[SandboxServer]],
    tmp_path: Any,
) -> None:
    if backend != "postgresql":
        pytest.skip("`clinicsync worker` processes run on PostgreSQL; SQLite runs jobs inside the server")
    settings = sync_settings(database_url, tmp_path / "var", sync_embedded_worker=False)
    # Every organization reads the same PIMS (its own login): complete runs must count alike.
    pims = await sandboxes("vet_pims", spec=VET_CLINIC)
    pims.faults = FaultSettings(latency_ms=40, match_path="^/(appointments|consultations)")
    workers: list[subprocess.Popen[bytes]] = []
    try:
        async with (
            serving(create_app(settings)) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=60) as client,
        ):
            for _ in range(ORGANIZATIONS):
                tenant = await tenant_factory(time_zone=ZONE)
                integration_id = await connect_vet(client, tenant, pims)
                # Short windows keep 20 clinics' runs light on a shared machine.
                windows = await client.put(
                    f"/api/v1/sync/settings/{integration_id}",
                    headers=tenant.headers,
                    json={"backward_days": 5, "forward_days": 2, "reconcile_days": 2},
                )
                assert windows.status_code == 200, windows.text
            workers = [start_worker(database_url, tmp_path / f"worker{n}.log") for n in range(2)]
            pids = {str(worker.pid) for worker in workers}

            # Kill one worker while it is inside a run, past a few checkpointed pages.
            async def victim() -> SyncRun | None:
                for run in await all_runs(sessionmaker):
                    checkpoint = run.checkpoint or {}
                    if (
                        run.status == RunStatus.RUNNING
                        and _pid(run) == str(workers[0].pid)
                        and checkpoint.get("phase") == "backward"
                        and checkpoint.get("page", 0) >= 2
                    ):
                        return run
                return None

            killed = await eventually(victim, timeout=90, interval=0.05)
            os.kill(workers[0].pid, signal.SIGKILL)
            workers[0].wait()

            async def resumed_and_done() -> list[SyncRun] | None:
                runs = await all_runs(sessionmaker)
                done = [
                    run for run in runs if run.resumed_from == killed.id and run.status == RunStatus.COMPLETED
                ]
                complete = {run.integration_id for run in runs if run.status == RunStatus.COMPLETED}
                return done if done and len(complete) == ORGANIZATIONS else None

            try:
                [resumed] = await eventually(resumed_and_done, timeout=300, interval=0.5)
            except AssertionError:
                mine = [
                    run for run in await all_runs(sessionmaker) if run.integration_id == killed.integration_id
                ]
                states = [
                    (r.status.value, r.steps, r.resumed_from, r.error_message, r.notes, r.checkpoint)
                    for r in mine
                ]
                complete = {
                    r.integration_id for r in await all_runs(sessionmaker) if r.status == RunStatus.COMPLETED
                }
                raise AssertionError(
                    f"{len(complete)} integrations completed; killed integration's runs: {states}"
                ) from None
            await asyncio.sleep(2 * 6)  # a couple more scheduling rounds, all on the surviving worker
            runs = await all_runs(sessionmaker)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()

    # The killed run was failed as stale (no heartbeat) and nothing else touched it.
    stale = next(run for run in runs if run.id == killed.id)
    assert stale.status == RunStatus.FAILED and (stale.error_message or "").startswith("stale")
    assert resumed.checkpoint is None and resumed.notes[-1].startswith(f"resumed from run {killed.id}")
    assert _pid(resumed) in pids - {str(workers[0].pid)}

    # Exact counts: the resumed run ends where an uninterrupted first run of another clinic ends.
    first_runs = [
        run
        for run in runs
        if run.run_type == RunType.SCHEDULED
        and run.status == RunStatus.COMPLETED
        and run.resumed_from is None
        and "backward" in run.steps
    ]
    assert first_runs
    reference = first_runs[0]
    assert resumed.counts == reference.counts
    assert resumed.counts["cases"]["created"] > 0

    # Every run ran once, and never two at once for one integration.
    by_integration: dict[Any, list[SyncRun]] = {}
    for run in runs:
        by_integration.setdefault(run.integration_id, []).append(run)
    assert len(by_integration) == ORGANIZATIONS
    for integration_runs in by_integration.values():
        ordered = sorted(integration_runs, key=lambda run: run.started_at or run.created_at)
        for earlier, later in itertools.pairwise(ordered):
            assert earlier.completed_at is not None and later.started_at is not None
            assert earlier.completed_at <= later.started_at or earlier.id == killed.id
        assert all(run.triggered_by == "scheduler" for run in integration_runs)
    unfinished = [run for run in runs if run.status in (RunStatus.STARTING, RunStatus.RUNNING)]
    assert len(unfinished) <= ORGANIZATIONS  # at most the round in flight when the workers stopped
    executed = [run for run in runs if run.status == RunStatus.COMPLETED]
    assert all(run.phases and all(p.get("status") for p in run.phases.values()) for run in executed)
    assert {_pid(run) for run in runs if run.worker} == pids  # both workers took runs

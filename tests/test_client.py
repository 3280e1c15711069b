"""clinicsync.client (async and blocking) and `clinicsync sync ...` against a live server and the
vet PIMS sandbox, over real HTTP, on both databases."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import httpx
import pytest

from clinicsync.client import AsyncSyncClient, SyncApiError, SyncClient
from clinicsync.sandbox.faults import FaultSettings
from tests.conftest import RunningServer
from tests.sync.conftest import sandboxes as sandboxes
from tests.sync.conftest import server as server
from tests.sync.runs.conftest import Pulling
from tests.sync.runs.conftest import vet as vet

WINDOWS = {"backward_days": 3, "forward_days": 3}


async def test_the_async_client_starts_follows_and_reads_history(server: RunningServer, vet: Pulling) -> None:
    seen: list[float] = []
    async with AsyncSyncClient(server.base_url, vet.tenant.token) as sync:
        started = await sync.trigger(vet.integration_id, **WINDOWS)
        done = await sync.wait_for_completion(
            started.sync_id, timeout=60, poll=0.1, on_progress=lambda p: seen.append(p.progress_percentage)
        )
        assert done.status == "completed" and done.progress_percentage == 100.0
        assert seen == sorted(seen)  # progress only moves forward
        run = await sync.run(started.sync_id)
        assert run.counts["cases"]["created"] > 0
        history = await sync.history(limit=5)
        assert history.total_syncs == history.successful_syncs == 1
        assert history.recent_syncs[0].sync_id == started.sync_id

        vet.sandbox.faults = FaultSettings(latency_ms=150, match_path="^/appointments")
        running = await sync.trigger(vet.integration_id, **WINDOWS)
        with pytest.raises(SyncApiError) as refused:
            await sync.trigger(vet.integration_id, **WINDOWS)
        assert refused.value.status == 409 and refused.value.details["sync_id"] == running.sync_id
        await sync.cancel(running.sync_id)
        assert (await sync.wait_for_completion(running.sync_id, timeout=30, poll=0.1)).status == "cancelled"


async def test_the_blocking_client_previews_without_writing(server: RunningServer, vet: Pulling) -> None:
    def preview() -> tuple[str, list[dict[str, Any]] | None, int]:
        with SyncClient(server.base_url, vet.tenant.token) as sync:
            started = sync.preview(vet.integration_id, **WINDOWS)
            assert sync.wait_for_completion(started.sync_id, timeout=60, poll=0.1).status == "completed"
            return started.sync_id, sync.run(started.sync_id).preview, sync.history().total_syncs

    _, report, total = await asyncio.to_thread(preview)
    assert report and all(item["action"] == "create" for item in report if item["entity"] == "cases")
    assert total == 0  # previews are not runs of the history
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        listed = await client.get("/api/v1/sync/cases", headers=vet.headers)
        assert listed.json() == []


async def _cli(server: RunningServer, vet: Pulling, *args: str) -> tuple[int, str]:
    env = os.environ | {
        "CLINICSYNC_URL": server.base_url,
        "CLINICSYNC_TOKEN": vet.tenant.token,
        "COLUMNS": "200",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clinicsync.cli",
        "sync",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode or 0, output.decode()


async def test_the_sync_command_runs_follows_and_reports(server: RunningServer, vet: Pulling) -> None:
    code, output = await _cli(
        server,
        vet,
        "run",
        "--integration-id",
        vet.integration_id,
        "--backward-days",
        "3",
        "--forward-days",
        "3",
    )
    assert code == 0, output
    assert "completed" in output and "backward" in output and "cases" in output

    code, output = await _cli(server, vet, "history", "--json")
    assert code == 0, output
    history = json.loads(output)
    assert history["total_syncs"] == history["successful_syncs"] == 1
    sync_id = history["recent_syncs"][0]["sync_id"]

    code, output = await _cli(server, vet, "status", sync_id, "--json")
    assert code == 0 and json.loads(output)["progress_percentage"] == 100.0

    code, output = await _cli(server, vet, "cancel", sync_id)
    assert code == 1 and "sync_finished" in output

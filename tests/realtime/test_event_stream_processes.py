"""Several server processes on one PostgreSQL: NOTIFY wakes every one of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from clinicsync.realtime.reader import open_stream
from clinicsync.serving import server_process
from tests.conftest import RunningServer
from tests.factories import Clinic, booking, future_day

# SQLite serves one process (its broadcast is in-process by design), so this runs on PostgreSQL only.
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]


@pytest.fixture
async def second_process(database_url: str, tmp_path: Any) -> AsyncIterator[str]:
    environment = {
        "CLINICSYNC_DATABASE_URL": database_url,
        "CLINICSYNC_MIGRATE_ON_START": "false",
        "CLINICSYNC_SECRET_KEY": "test-secret-key-for-encryption-only",
        "CLINICSYNC_VAR_DIR": str(tmp_path / "second"),
        "CLINICSYNC_ENVIRONMENT": "test",
        # No fallback polling within the test: only the NOTIFY can deliver the event in time.
        "CLINICSYNC_EVENTS_POLL_SECONDS": "3600",
    }
    async with server_process(environment) as base_url:
        yield base_url


async def test_an_event_committed_through_one_process_reaches_a_client_of_another(
    server: RunningServer, client: httpx.AsyncClient, clinic: Clinic, second_process: str
) -> None:
    async with open_stream(second_process, clinic.tenant.token) as stream:
        start = clinic.local(future_day(), 9)
        response = await client.post(
            "/api/v1/appointments", json=booking(clinic, start), headers=clinic.headers
        )
        assert response.status_code == 201
        event = await stream.next_event(timeout=20)
    assert event.json["entity_id"] == response.json()["id"]

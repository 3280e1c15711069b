"""The realtime tests run the real server with short heartbeats so a test can see one quickly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.app import create_app
from clinicsync.config import Settings
from clinicsync.serving import serving
from tests.conftest import RunningServer

HEARTBEAT_SECONDS = 0.3


@pytest.fixture
async def server(
    database_url: str, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Any
) -> AsyncIterator[RunningServer]:
    settings = Settings(
        database_url=database_url,
        migrate_on_start=False,
        environment="test",
        var_dir=tmp_path / "var",
        secret_key="test-secret-key-for-encryption-only",
        events_heartbeat_seconds=HEARTBEAT_SECONDS,
    )
    async with serving(create_app(settings)) as base_url:
        yield RunningServer(base_url, settings)

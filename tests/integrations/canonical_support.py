"""Connect an organization to a provider through the admin API, then drive canonical operations."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.config import Settings
from clinicsync.integrations import canonical
from clinicsync.integrations.canonical import OperationResult, SyncOperation
from clinicsync.integrations.executor import IntegrationExecutor

# Sandboxes answer in milliseconds; the shipped limits (OpenDental's 1 request/second) would only
# make the tests slow, so the integration overrides them the way a clinic could.
FAST = {"rate_limit": {"requests": 200, "per_seconds": 1}, "retry": {"attempts": 3, "base_delay": 0.05}}


@dataclass
class Connected:
    executor: IntegrationExecutor
    organization_id: uuid.UUID
    integration_id: uuid.UUID

    async def __call__(self, operation: SyncOperation, **payload: Any) -> OperationResult:
        return await canonical.perform(
            self.executor, self.organization_id, self.integration_id, operation, payload
        )

    async def one(self, operation: SyncOperation, **payload: Any) -> dict[str, Any]:
        result = await self(operation, **payload)
        assert len(result.records) == 1, result.records
        return result.records[0]


async def connect(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    integration: dict[str, Any],
    secrets: dict[str, str],
    organization_id: uuid.UUID,
) -> Connected:
    created = await client.post("/api/admin/integrations", headers=headers, json={**FAST, **integration})
    assert created.status_code == 201, created.text
    credential = await client.post(
        "/api/admin/api-credentials",
        headers=headers,
        json={"provider_key": integration["provider_key"], "secrets": secrets},
    )
    assert credential.status_code == 201, credential.text
    return Connected(
        IntegrationExecutor(sessionmaker, settings), organization_id, uuid.UUID(created.json()["id"])
    )

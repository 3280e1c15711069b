"""Sync status per integration, and the same figures as Prometheus metrics."""

from __future__ import annotations

import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.db.base import utcnow
from clinicsync.integrations.models import ExternalIntegration
from clinicsync.sync import configs
from clinicsync.sync.inbound_models import ConflictStatus, SyncConflict
from clinicsync.sync.models import ExternalReference, IntegrationSyncConfig, OutboxItem, OutboxStatus
from clinicsync.sync.schemas import IntegrationSyncStatus
from clinicsync.tenancy.principal import Principal


async def _counts(
    session: AsyncSession, organization_id: uuid.UUID | None
) -> tuple[dict[tuple[uuid.UUID, str], int], dict[uuid.UUID, Any], dict[tuple[uuid.UUID, str], int]]:
    outbox_query = select(OutboxItem.integration_id, OutboxItem.status, func.count()).group_by(
        OutboxItem.integration_id, OutboxItem.status
    )
    oldest_query = (
        select(OutboxItem.integration_id, func.min(OutboxItem.created_at))
        .where(OutboxItem.status.in_((OutboxStatus.PENDING, OutboxStatus.IN_FLIGHT)))
        .group_by(OutboxItem.integration_id)
    )
    state_query = select(
        ExternalReference.integration_id, ExternalReference.sync_state, func.count()
    ).group_by(ExternalReference.integration_id, ExternalReference.sync_state)
    if organization_id is not None:
        outbox_query = outbox_query.where(OutboxItem.organization_id == organization_id)
        oldest_query = oldest_query.where(OutboxItem.organization_id == organization_id)
        state_query = state_query.where(ExternalReference.organization_id == organization_id)
    by_status = {(row[0], str(row[1])): row[2] for row in await session.execute(outbox_query)}
    oldest = {row[0]: row[1] for row in await session.execute(oldest_query)}
    states = {(row[0], str(row[1])): row[2] for row in await session.execute(state_query)}
    return by_status, oldest, states


async def integration_status(session: AsyncSession, principal: Principal) -> list[IntegrationSyncStatus]:
    rows = list(
        await session.scalars(
            select(ExternalIntegration)
            .where(ExternalIntegration.organization_id == principal.organization_id)
            .order_by(ExternalIntegration.provider_key, ExternalIntegration.location_label)
        )
    )
    config_rows = {
        config.integration_id: config
        for config in await session.scalars(
            select(IntegrationSyncConfig).where(
                IntegrationSyncConfig.organization_id == principal.organization_id
            )
        )
    }
    by_status, oldest, states = await _counts(session, principal.organization_id)
    open_conflicts = (
        select(SyncConflict.integration_id, func.count())
        .where(
            SyncConflict.organization_id == principal.organization_id,
            SyncConflict.status == ConflictStatus.OPEN,
        )
        .group_by(SyncConflict.integration_id)
    )
    waiting = {row[0]: int(row[1]) for row in await session.execute(open_conflicts)}
    now = utcnow()
    result = []
    for row in rows:
        config = config_rows.get(row.id)
        first = oldest.get(row.id)
        result.append(
            IntegrationSyncStatus(
                integration_id=row.id,
                provider_key=row.provider_key,
                display_name=row.display_name,
                config=await configs.to_read(session, config) if config else None,
                last_sync_at=config.last_sync_at if config else None,
                last_sync_status=config.last_sync_status if config else None,
                last_sync_error=config.last_sync_error if config else None,
                outbox_depth=by_status.get((row.id, "pending"), 0) + by_status.get((row.id, "in_flight"), 0),
                oldest_pending_age_seconds=(now - first).total_seconds() if first else None,
                failed_count=by_status.get((row.id, "failed"), 0),
                conflicts_waiting=waiting.get(row.id, 0),
                states={
                    state: count for (integration, state), count in states.items() if integration == row.id
                },
            )
        )
    return result


async def metrics(session: AsyncSession) -> bytes:
    """Prometheus text for every organization's integrations (labelled by integration and provider)."""
    registry = CollectorRegistry()
    depth = Gauge(
        "clinicsync_sync_outbox_items",
        "Outbox items by status",
        ["integration_id", "provider", "status"],
        registry=registry,
    )
    oldest_age = Gauge(
        "clinicsync_sync_oldest_pending_age_seconds",
        "Age of the oldest owed push",
        ["integration_id", "provider"],
        registry=registry,
    )
    states_gauge = Gauge(
        "clinicsync_sync_records",
        "Records by sync state",
        ["integration_id", "provider", "state"],
        registry=registry,
    )
    last_ok = Gauge(
        "clinicsync_sync_last_sync_timestamp_seconds",
        "When the integration last synced",
        ["integration_id", "provider"],
        registry=registry,
    )
    providers = {row.id: row.provider_key for row in await session.scalars(select(ExternalIntegration))}
    by_status, oldest, states = await _counts(session, None)
    now = utcnow()
    for (integration, status), count in by_status.items():
        depth.labels(str(integration), providers.get(integration, ""), status).set(count)
    for integration, first in oldest.items():
        oldest_age.labels(str(integration), providers.get(integration, "")).set((now - first).total_seconds())
    for (integration, state), count in states.items():
        states_gauge.labels(str(integration), providers.get(integration, ""), state).set(count)
    for config in await session.scalars(select(IntegrationSyncConfig)):
        if config.last_sync_at is not None:
            last_ok.labels(str(config.integration_id), providers.get(config.integration_id, "")).set(
                config.last_sync_at.timestamp()
            )
    return generate_latest(registry)

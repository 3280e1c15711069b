"""Sync configs: one per integration, owners and admins only; contradictions refused with the reason."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.errors import Conflict, NotFound, ValidationFailed
from clinicsync.integrations import service as integration_service
from clinicsync.integrations.canonical import SyncOperation, supported_operations
from clinicsync.integrations.definitions import DefinitionError
from clinicsync.integrations.models import ExternalIntegration
from clinicsync.sync import outbox
from clinicsync.sync.models import (
    UNFINISHED_STATUSES,
    IntegrationSyncConfig,
    OutboxItem,
    ScheduleSource,
    SyncDirection,
)
from clinicsync.sync.schemas import OwedPushes, SyncConfigCreate, SyncConfigRead, SyncConfigUpdate
from clinicsync.tenancy.principal import Principal

DEFAULTS: dict[str, Any] = {
    "sync_enabled": False,
    "sync_direction": SyncDirection.LOCAL_ONLY,
    "sync_on_create": True,
    "sync_on_update": True,
    "sync_on_delete": False,
    "always_keep_local_copy": True,
    "schedule_source": ScheduleSource.LOCAL,
}
# What a config needs the provider to do, by the toggles it turns on.
NEEDED_FOR_PUSH = {
    # Patients are pushed where the provider keeps them (a calendar does not).
    "sync_on_create": (SyncOperation.APPOINTMENT_CREATE,),
    "sync_on_update": (SyncOperation.APPOINTMENT_UPDATE,),
    "sync_on_delete": (SyncOperation.APPOINTMENT_CANCEL,),
}


def mode(config: IntegrationSyncConfig) -> str:
    if not config.sync_enabled or config.sync_direction == SyncDirection.LOCAL_ONLY:
        return "local_only"
    if config.sync_direction == SyncDirection.TO_EXTERNAL:
        return "dual_write" if config.always_keep_local_copy else "external_only"
    return config.sync_direction.value


async def _integration(
    session: AsyncSession, principal: Principal, integration_id: uuid.UUID
) -> ExternalIntegration:
    row = await session.get(ExternalIntegration, integration_id)
    if row is None or row.organization_id != principal.organization_id:
        raise ValidationFailed(
            "integration_id", f"integration {integration_id} not found in this organization"
        )
    return row


async def _check(
    session: AsyncSession, principal: Principal, config: IntegrationSyncConfig, row: ExternalIntegration
) -> None:
    """Refuses settings that contradict each other or that the provider cannot honour."""
    direction = config.sync_direction
    if not config.always_keep_local_copy:
        if direction != SyncDirection.TO_EXTERNAL:
            raise ValidationFailed(
                "always_keep_local_copy",
                f"false means external-only (the PMS is the only copy), which needs sync_direction "
                f"to_external, not {direction.value}: with {direction.value} the clinic's writes would "
                "exist nowhere",
            )
        if not config.sync_enabled:
            raise ValidationFailed(
                "always_keep_local_copy",
                "false (external-only) needs sync_enabled true: writes would be lost",
            )
        if not config.sync_on_create:
            raise ValidationFailed(
                "sync_on_create", "external-only needs sync_on_create true: a new booking would exist nowhere"
            )
        others = await session.scalar(
            select(func.count())
            .select_from(IntegrationSyncConfig)
            .where(
                IntegrationSyncConfig.organization_id == principal.organization_id,
                IntegrationSyncConfig.id != config.id,
                IntegrationSyncConfig.sync_enabled.is_(True),
                IntegrationSyncConfig.always_keep_local_copy.is_(False),
            )
        )
        if others:
            raise ValidationFailed(
                "always_keep_local_copy",
                "another integration is already the external-only source of truth; a clinic has one",
            )
    if config.schedule_source == ScheduleSource.PMS_SLOTS:
        slot_sources = await session.scalar(
            select(func.count())
            .select_from(IntegrationSyncConfig)
            .where(
                IntegrationSyncConfig.organization_id == principal.organization_id,
                IntegrationSyncConfig.id != config.id,
                IntegrationSyncConfig.schedule_source == ScheduleSource.PMS_SLOTS,
            )
        )
        if slot_sources:
            raise ValidationFailed(
                "schedule_source",
                "another integration already supplies this clinic's slots; a clinic has one slot schedule",
            )
    if not config.sync_enabled or direction == SyncDirection.LOCAL_ONLY:
        return
    try:
        definition = await integration_service.build_definition(session, row)
    except DefinitionError as exc:
        raise ValidationFailed("integration_id", f"the integration's definition is unusable: {exc}") from None
    supported = supported_operations(definition)
    if direction in (SyncDirection.TO_EXTERNAL, SyncDirection.BIDIRECTIONAL):
        for toggle, operations in NEEDED_FOR_PUSH.items():
            missing = [op.value for op in operations if op not in supported]
            if getattr(config, toggle) and missing:
                raise ValidationFailed(
                    toggle,
                    f"{row.provider_key} cannot do {', '.join(missing)} (its definition maps no function "
                    f"to it); turn {toggle} off or map the operation",
                )
    if direction in (SyncDirection.FROM_EXTERNAL, SyncDirection.BIDIRECTIONAL) and (
        SyncOperation.APPOINTMENT_LIST_CHANGED not in supported
    ):
        raise ValidationFailed(
            "sync_direction",
            f"{direction.value} needs a way to learn of changes in {row.provider_key}, and its definition "
            "maps no function to appointment.list_changed",
        )


async def owed_count(session: AsyncSession, integration_id: uuid.UUID) -> int:
    return (
        await session.scalar(
            select(func.count())
            .select_from(OutboxItem)
            .where(OutboxItem.integration_id == integration_id, OutboxItem.status.in_(UNFINISHED_STATUSES))
        )
        or 0
    )


async def to_read(session: AsyncSession, config: IntegrationSyncConfig) -> SyncConfigRead:
    row = await session.get(ExternalIntegration, config.integration_id)
    return SyncConfigRead.model_validate(
        {
            **{
                column: getattr(config, column)
                for column in SyncConfigRead.model_fields
                if hasattr(config, column)
            },
            "provider_key": row.provider_key if row else None,
            "mode": mode(config),
            "owed_pushes": OwedPushes(count=await owed_count(session, config.integration_id)),
        }
    )


async def list_configs(session: AsyncSession, principal: Principal) -> list[IntegrationSyncConfig]:
    query = select(IntegrationSyncConfig).where(
        IntegrationSyncConfig.organization_id == principal.organization_id
    )
    return list(await session.scalars(query.order_by(IntegrationSyncConfig.created_at)))


async def get_config(
    session: AsyncSession, principal: Principal, config_id: uuid.UUID
) -> IntegrationSyncConfig:
    config = await session.get(IntegrationSyncConfig, config_id)
    if config is None or config.organization_id != principal.organization_id:
        raise NotFound(f"sync config {config_id} not found")
    return config


async def create_config(
    session: AsyncSession, principal: Principal, data: SyncConfigCreate
) -> IntegrationSyncConfig:
    row = await _integration(session, principal, data.integration_id)
    existing = await session.scalar(
        select(IntegrationSyncConfig.id).where(IntegrationSyncConfig.integration_id == row.id)
    )
    if existing is not None:
        raise Conflict(
            f"integration_id: integration {row.id} already has sync config {existing}; change it with PUT",
            details={"config_id": str(existing)},
        )
    given = data.model_dump(exclude_unset=True)
    for field, value in given.items():
        if value is None:
            raise ValidationFailed(field, "may not be null")
    values = DEFAULTS | given
    values.pop("integration_id", None)
    config = IntegrationSyncConfig(
        id=uuid.uuid4(), organization_id=principal.organization_id, integration_id=row.id, **values
    )
    await _check(session, principal, config, row)
    session.add(config)
    await session.flush()
    return config


async def update_config(
    session: AsyncSession, principal: Principal, config_id: uuid.UUID, data: SyncConfigUpdate
) -> IntegrationSyncConfig:
    config = await get_config(session, principal, config_id)
    changes = data.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if value is None:
            raise ValidationFailed(field, "may not be null")
    for field, value in changes.items():
        setattr(config, field, value)
    row = await _integration(session, principal, config.integration_id)
    await _check(session, principal, config, row)
    await session.flush()
    return config


async def delete_config(
    session: AsyncSession,
    principal: Principal,
    config_id: uuid.UUID,
    *,
    discard_owed: bool,
    reason: str | None,
) -> tuple[int, int]:
    """Deletes the config; owed pushes stay owed unless the caller asks, with a reason, to discard them.

    Returns (still owed, discarded)."""
    config = await get_config(session, principal, config_id)
    discarded = 0
    if discard_owed:
        if not reason or not reason.strip():
            raise ValidationFailed("reason", "is required to discard owed pushes")
        discarded = await outbox.discard_owed(session, config.integration_id, reason.strip())
    integration_id = config.integration_id
    await session.delete(config)
    await session.flush()
    return await owed_count(session, integration_id), discarded


PROVIDER_KEYS = "clinicsync.sync.provider_keys"


async def configs_for(session: AsyncSession, organization_id: uuid.UUID) -> list[IntegrationSyncConfig]:
    """The organization's configs that push local writes (dual-write, external-only, bidirectional).

    Their providers' keys are read in the same query and kept for the session (``provider_key_of``),
    so a write's answer can name the PMS it is owed to without another read."""
    rows = (await session.execute(_PUSHING, {"organization_id": organization_id})).all()
    keys: dict[uuid.UUID, str] = session.info.setdefault(PROVIDER_KEYS, {})
    keys.update((config.integration_id, provider_key) for config, provider_key in rows)
    return [config for config, _ in rows]


def provider_key_of(session: AsyncSession, integration_id: uuid.UUID) -> str | None:
    """The provider of a pushing integration this session has read (see ``configs_for``)."""
    keys: dict[uuid.UUID, str] = session.info.get(PROVIDER_KEYS, {})
    return keys.get(integration_id)


# Built once: every booking and change runs it (see configs_for).
_PUSHING = (
    select(IntegrationSyncConfig, ExternalIntegration.provider_key)
    .join(ExternalIntegration, ExternalIntegration.id == IntegrationSyncConfig.integration_id)
    .where(
        IntegrationSyncConfig.organization_id == bindparam("organization_id"),
        IntegrationSyncConfig.sync_enabled.is_(True),
        IntegrationSyncConfig.sync_direction.in_((SyncDirection.TO_EXTERNAL, SyncDirection.BIDIRECTIONAL)),
    )
    .order_by(IntegrationSyncConfig.created_at)
)

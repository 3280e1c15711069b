"""Admin routes for sync: integration settings, the outbox, status, manual links; /metrics."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST

from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.deps import PUBLIC, Requires, SessionDep
from clinicsync.sync import configs, outbox, refs
from clinicsync.sync import status as sync_status
from clinicsync.sync.manager import RUNNER_KEY
from clinicsync.sync.models import OutboxStatus
from clinicsync.sync.schemas import (
    OWED_PUSHES_POLICY,
    DiscardRequest,
    ExternalLinkCreate,
    ExternalRefRead,
    IntegrationSyncStatus,
    OutboxItemRead,
    OutboxPage,
    OwedPushes,
    RetryResult,
    SyncConfigCreate,
    SyncConfigDeleted,
    SyncConfigRead,
    SyncConfigUpdate,
)
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal

router = APIRouter(prefix="/api/admin", tags=["sync"])
SyncReader = Annotated[Principal, Requires(Capability.SYNC_READ)]
SyncManagerRole = Annotated[Principal, Requires(Capability.SYNC_MANAGE)]
metrics_router = APIRouter(tags=["ops"])


def _bind_runner(request: Request, session: SessionDep) -> None:
    runner = getattr(request.app.state, "sync_runner", None)
    if runner is not None:
        session.sync_session.info[RUNNER_KEY] = runner


@router.get("/integration-settings", response_model=list[SyncConfigRead])
async def list_settings(session: SessionDep, principal: SyncReader) -> list[SyncConfigRead]:
    return [
        await configs.to_read(session, config) for config in await configs.list_configs(session, principal)
    ]


@router.post(
    "/integration-settings",
    response_model=SyncConfigRead,
    status_code=status.HTTP_201_CREATED,
    description="Create the sync config of one integration. " + OWED_PUSHES_POLICY,
)
async def create_settings(
    body: SyncConfigCreate, session: SessionDep, principal: SyncManagerRole
) -> SyncConfigRead:
    return await configs.to_read(session, await configs.create_config(session, principal, body))


@router.get("/integration-settings/{config_id}", response_model=SyncConfigRead)
async def read_settings(config_id: uuid.UUID, session: SessionDep, principal: SyncReader) -> SyncConfigRead:
    return await configs.to_read(session, await configs.get_config(session, principal, config_id))


@router.put(
    "/integration-settings/{config_id}",
    response_model=SyncConfigRead,
    description="Partial update: only the fields sent change. " + OWED_PUSHES_POLICY,
)
async def update_settings(
    config_id: uuid.UUID, body: SyncConfigUpdate, session: SessionDep, principal: SyncManagerRole
) -> SyncConfigRead:
    return await configs.to_read(session, await configs.update_config(session, principal, config_id, body))


@router.delete(
    "/integration-settings/{config_id}",
    response_model=SyncConfigDeleted,
    description="Delete the config (new writes stop being pushed). " + OWED_PUSHES_POLICY,
)
async def delete_settings(
    config_id: uuid.UUID,
    session: SessionDep,
    principal: SyncManagerRole,
    discard_owed: bool = False,
    reason: Annotated[str | None, Query(max_length=500)] = None,
) -> SyncConfigDeleted:
    owed, discarded = await configs.delete_config(
        session, principal, config_id, discard_owed=discard_owed, reason=reason
    )
    return SyncConfigDeleted(id=config_id, owed_pushes=OwedPushes(count=owed), discarded=discarded)


def _item(item: object) -> OutboxItemRead:
    read = OutboxItemRead.model_validate(
        {
            **{k: getattr(item, k) for k in OutboxItemRead.model_fields if k != "age_seconds"},
            "age_seconds": 0.0,
        }
    )
    read.age_seconds = round((utcnow() - read.created_at).total_seconds(), 3)
    return read


@router.get("/sync/outbox", response_model=OutboxPage)
async def list_outbox(
    session: SessionDep,
    principal: SyncReader,
    status_: Annotated[list[OutboxStatus] | None, Query(alias="status")] = None,
    integration_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> OutboxPage:
    items, total = await outbox.list_items(
        session, principal, statuses=status_, integration_id=integration_id, limit=limit, offset=offset
    )
    return OutboxPage(items=[_item(item) for item in items], total=total)


@router.post("/sync/outbox/retry-all", response_model=RetryResult)
async def retry_all(
    request: Request, session: SessionDep, principal: SyncManagerRole, integration_id: uuid.UUID | None = None
) -> RetryResult:
    _bind_runner(request, session)
    return RetryResult(retried=len(await outbox.retry_all(session, principal, integration_id)))


@router.post("/sync/outbox/{item_id}/retry", response_model=OutboxItemRead)
async def retry_one(
    item_id: uuid.UUID, request: Request, session: SessionDep, principal: SyncManagerRole
) -> OutboxItemRead:
    _bind_runner(request, session)
    return _item(await outbox.retry(session, principal, item_id))


@router.post("/sync/outbox/{item_id}/discard", response_model=OutboxItemRead)
async def discard_one(
    item_id: uuid.UUID, body: DiscardRequest, session: SessionDep, principal: SyncManagerRole
) -> OutboxItemRead:
    return _item(await outbox.discard(session, principal, item_id, body.reason.strip()))


@router.get("/sync/status", response_model=list[IntegrationSyncStatus])
async def read_status(session: SessionDep, principal: SyncReader) -> list[IntegrationSyncStatus]:
    return await sync_status.integration_status(session, principal)


@router.post("/sync/links", response_model=ExternalRefRead, status_code=status.HTTP_201_CREATED)
async def create_link(
    body: ExternalLinkCreate, session: SessionDep, principal: SyncManagerRole
) -> ExternalRefRead:
    return ExternalRefRead.model_validate(await refs.link(session, principal, body))


@metrics_router.get("/metrics", include_in_schema=False, dependencies=[PUBLIC])
async def metrics(request: Request) -> Response:
    async with session_scope(request.app.state.sessionmaker, write=False) as session:
        body = await sync_status.metrics(session)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

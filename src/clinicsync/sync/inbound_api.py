"""Routes for inbound sync: the conflict review queue, the audit trail, webhook endpoints."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from clinicsync.deps import PUBLIC, Requires, SessionDep, writes_in_own_transactions
from clinicsync.edge.openapi import errors
from clinicsync.jobs import tasks
from clinicsync.logging import get_logger
from clinicsync.sync import audit, conflicts, webhooks
from clinicsync.sync.inbound_models import ConflictStatus
from clinicsync.sync.models import RecordType
from clinicsync.sync.schemas_inbound import (
    AuditEntryRead,
    ConflictPage,
    ConflictRead,
    ConflictResolve,
    WebhookAck,
    WebhookEndpointRead,
    WebhookSubscribe,
    WebhookSubscription,
)
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal

log = get_logger(__name__)
router = APIRouter(prefix="/api/admin/sync", tags=["sync"])
webhook_router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])

SyncReader = Annotated[Principal, Requires(Capability.SYNC_READ)]
SyncAdmin = Annotated[Principal, Requires(Capability.SYNC_MANAGE)]


@router.get("/conflicts", response_model=ConflictPage)
async def list_conflicts(
    principal: SyncReader,
    session: SessionDep,
    status: ConflictStatus | None = ConflictStatus.OPEN,
    integration_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ConflictPage:
    rows, total = await conflicts.list_conflicts(
        session, principal, status=status, integration_id=integration_id, limit=limit, offset=offset
    )
    return ConflictPage(items=[ConflictRead.model_validate(row) for row in rows], total=total)


@router.get("/conflicts/{conflict_id}", response_model=ConflictRead)
async def read_conflict(conflict_id: uuid.UUID, principal: SyncReader, session: SessionDep) -> ConflictRead:
    return ConflictRead.model_validate(await conflicts.get_conflict(session, principal, conflict_id))


@router.post("/conflicts/{conflict_id}/resolve", response_model=ConflictRead)
async def resolve_conflict(
    conflict_id: uuid.UUID, body: ConflictResolve, principal: SyncAdmin, session: SessionDep
) -> ConflictRead:
    return ConflictRead.model_validate(await conflicts.resolve(session, principal, conflict_id, body))


@router.get("/audit/{record_type}/{record_id}", response_model=list[AuditEntryRead])
async def read_audit(
    record_type: RecordType, record_id: uuid.UUID, principal: SyncReader, session: SessionDep
) -> list[AuditEntryRead]:
    entries = await audit.trail(session, principal.organization_id, record_type, record_id)
    return [AuditEntryRead.model_validate(entry) for entry in entries]


@router.get("/webhooks/{integration_id}", response_model=WebhookEndpointRead)
async def read_webhook_endpoint(
    integration_id: uuid.UUID, principal: SyncReader, session: SessionDep
) -> WebhookEndpointRead:
    return WebhookEndpointRead(**await webhooks.describe(session, principal, integration_id))


@router.post("/webhooks/{integration_id}/secret", response_model=WebhookEndpointRead, status_code=201)
async def issue_webhook_secret(
    integration_id: uuid.UUID, request: Request, principal: SyncAdmin, session: SessionDep
) -> WebhookEndpointRead:
    cipher = request.app.state.sync_manager.ctx.executor.cipher
    return WebhookEndpointRead(**await webhooks.issue_secret(session, cipher, principal, integration_id))


@router.post(
    "/webhooks/{integration_id}/subscribe",
    response_model=WebhookSubscription,
    status_code=201,
    dependencies=[Depends(writes_in_own_transactions)],
)
async def subscribe_webhooks(
    integration_id: uuid.UUID,
    body: WebhookSubscribe,
    request: Request,
    principal: SyncAdmin,
    session: SessionDep,
) -> WebhookSubscription:
    """Opens the PMS's deliveries to this integration's webhook URL (OpenDental's subscriptions,
    Google's watch channel), as the provider's definition says."""
    ctx = request.app.state.sync_manager.ctx
    return WebhookSubscription(
        **await webhooks.subscribe(session, ctx, principal, integration_id, body.public_url)
    )


@webhook_router.post(
    "/{provider}/{integration_id}",
    response_model=WebhookAck,
    dependencies=[PUBLIC],
    responses={202: {"model": WebhookAck}, **errors(401, 404)},
)
async def receive_webhook(provider: str, integration_id: uuid.UUID, request: Request) -> Response:
    """Public, and proven by the provider's own scheme; stored before the answer, applied by a job."""
    ctx = request.app.state.sync_manager.ctx
    body = await request.body()
    received = await webhooks.receive(ctx, provider, integration_id, dict(request.headers), body)
    if received.event_id is not None:
        runner = getattr(request.app.state, "sync_runner", None)
        if runner is not None:
            try:
                await runner.defer(tasks.APPLY_WEBHOOK, event_id=str(received.event_id))
            except Exception:
                # Stored and acknowledged either way: the sweep defers events no job took.
                log.exception("webhook_defer_failed", event_id=str(received.event_id))
        return JSONResponse(
            WebhookAck(status="accepted", event_id=received.event_id).model_dump(mode="json"), 202
        )
    return JSONResponse(WebhookAck(status=received.status).model_dump(mode="json"), 200)

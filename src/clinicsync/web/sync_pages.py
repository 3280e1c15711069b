"""Admin sync pages: integration settings, the conflicts queue and the outbox of owed pushes.

Thin: every rule lives in the sync services the JSON API uses (configs, conflicts, outbox); these
routes turn forms into their inputs and their refusals into errors next to the fields.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from clinicsync.deps import SessionDep
from clinicsync.errors import ClinicSyncError
from clinicsync.sync import configs, conflicts, outbox
from clinicsync.sync import status as sync_status
from clinicsync.sync.inbound_models import ConflictStatus
from clinicsync.sync.manager import RUNNER_KEY
from clinicsync.sync.models import ConflictResolution, OutboxStatus, SyncDirection
from clinicsync.sync.schemas import SyncConfigCreate, SyncConfigUpdate
from clinicsync.sync.schemas_inbound import ConflictResolve
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal
from clinicsync.web import service
from clinicsync.web.render import render
from clinicsync.web.session import Page

router = APIRouter(prefix="/admin/sync", include_in_schema=False)

SyncViewer = Annotated[Principal, Page(Capability.SYNC_READ)]
SyncAdmin = Annotated[Principal, Page(Capability.SYNC_MANAGE)]

TOGGLES = ("sync_enabled", "sync_on_create", "sync_on_update", "sync_on_delete", "always_keep_local_copy")
CHOICES = ("sync_direction", "conflict_resolution")
DIRECTIONS = {
    SyncDirection.LOCAL_ONLY: "Local only (nothing sent or read)",
    SyncDirection.TO_EXTERNAL: "To the PMS",
    SyncDirection.FROM_EXTERNAL: "From the PMS",
    SyncDirection.BIDIRECTIONAL: "Both ways",
}
STRATEGIES = {
    ConflictResolution.EXTERNAL_WINS: "The PMS wins",
    ConflictResolution.LOCAL_WINS: "clinicsync wins",
    ConflictResolution.LATEST_TIMESTAMP_WINS: "The later change wins",
    ConflictResolution.MANUAL: "Ask a person (conflicts queue)",
}
OUTBOX_SHOWN = (OutboxStatus.PENDING, OutboxStatus.IN_FLIGHT, OutboxStatus.FAILED)


# --- integration settings ---------------------------------------------------------------------------


def _values_of(entry: Any) -> dict[str, Any]:
    """The form's values: the saved config, or the defaults a new config would take."""
    source = entry.config
    if source is None:
        values = dict(configs.DEFAULTS) | {"conflict_resolution": ConflictResolution.EXTERNAL_WINS}
    else:
        values = {name: getattr(source, name) for name in (*TOGGLES, *CHOICES)}
    return {name: str(value) if name in CHOICES else value for name, value in values.items()}


async def _settings_page(
    request: Request,
    principal: Principal,
    session: SessionDep,
    *,
    typed: dict[str, dict[str, Any]] | None = None,
    errors: dict[str, dict[str, str]] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    entries = await sync_status.integration_status(session, principal)
    forms = {str(entry.integration_id): _values_of(entry) for entry in entries} | (typed or {})
    return render(
        request,
        "admin_sync.html",
        {
            "entries": entries,
            "forms": forms,
            "errors": errors or {},
            "directions": DIRECTIONS,
            "strategies": STRATEGIES,
            "done": request.query_params.get("done"),
        },
        principal=principal,
        status_code=status_code,
    )


@router.get("")
async def settings(request: Request, principal: SyncViewer, session: SessionDep) -> HTMLResponse:
    return await _settings_page(request, principal, session)


@router.get("/status")
async def settings_status(request: Request, principal: SyncViewer, session: SessionDep) -> HTMLResponse:
    """The status cards alone, for the page to swap in when a sync event arrives."""
    entries = await sync_status.integration_status(session, principal)
    return render(request, "_sync_status.html", {"entries": entries}, principal=principal)


@router.post("/{integration_id}/settings")
async def save_settings(
    request: Request, integration_id: uuid.UUID, principal: SyncAdmin, session: SessionDep
) -> Response:
    form = await request.form()
    typed: dict[str, Any] = {name: form.get(name) == "on" for name in TOGGLES}
    typed |= {name: str(form.get(name) or "") for name in CHOICES}
    key = str(integration_id)
    errors: dict[str, str] = {}
    try:
        fields = SyncConfigUpdate(**typed)
        existing = [
            c for c in await configs.list_configs(session, principal) if c.integration_id == integration_id
        ]
        if existing:
            await configs.update_config(session, principal, existing[0].id, fields)
        else:
            body = fields.model_dump() | {"integration_id": integration_id}
            await configs.create_config(session, principal, SyncConfigCreate(**body))
    except ValidationError as error:
        errors = service.field_errors(error)
    except ClinicSyncError as error:
        await session.rollback()
        field, reason = service.domain_error_field(error)
        errors = {field if field in typed else "form": reason}
    if errors:
        return await _settings_page(
            request, principal, session, typed={key: typed}, errors={key: errors}, status_code=422
        )
    return RedirectResponse(f"/admin/sync?done=saved#integration-{key}", status_code=303)


# --- conflicts ----------------------------------------------------------------------------------------


def _shown(value: Any, zone: ZoneInfo) -> str:
    """A conflict's JSON value as a person reads it: instants in the clinic's zone."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str) and "T" in value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
        if moment.tzinfo is not None:
            return moment.astimezone(zone).strftime("%a %d %b %Y %H:%M")
    return str(value)


def _side_by_side(conflict: Any, zone: ZoneInfo) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "base": _shown((conflict.base or {}).get(name), zone),
            "local": _shown(conflict.local.get(name), zone),
            "external": _shown(conflict.external.get(name), zone),
        }
        for name in conflict.fields
    ]


async def _conflicts_context(session: SessionDep, principal: Principal) -> dict[str, Any]:
    rows, total = await conflicts.list_conflicts(
        session, principal, status=ConflictStatus.OPEN, integration_id=None, limit=100, offset=0
    )
    zone = await service.clinic_zone(session, principal)
    return {
        "conflicts": [{"row": row, "diff": _side_by_side(row, zone)} for row in rows],
        "total": total,
        "zone": zone,
    }


async def _conflicts_page(
    request: Request,
    principal: Principal,
    session: SessionDep,
    *,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    context = await _conflicts_context(session, principal)
    context |= {"errors": errors or {}, "done": request.query_params.get("done")}
    return render(request, "admin_conflicts.html", context, principal=principal, status_code=status_code)


@router.get("/conflicts")
async def conflicts_queue(request: Request, principal: SyncViewer, session: SessionDep) -> HTMLResponse:
    return await _conflicts_page(request, principal, session)


@router.get("/conflicts/list")
async def conflicts_list(request: Request, principal: SyncViewer, session: SessionDep) -> HTMLResponse:
    context = await _conflicts_context(session, principal) | {"errors": {}}
    return render(request, "_conflicts.html", context, principal=principal)


@router.post("/conflicts/{conflict_id}/resolve")
async def resolve_conflict(
    request: Request, conflict_id: uuid.UUID, principal: SyncAdmin, session: SessionDep
) -> Response:
    form = await request.form()
    resolution = str(form.get("resolution") or "")
    chosen = {
        name.removeprefix("field_"): str(value)
        for name, value in form.items()
        if name.startswith("field_") and isinstance(value, str)
    }
    error_key = str(conflict_id)
    try:
        body = ConflictResolve.model_validate(
            {"resolution": resolution, **({"fields": chosen} if resolution == "merge" else {})}
        )
        await conflicts.resolve(session, principal, conflict_id, body)
    except ValidationError as error:
        reasons = service.field_errors(error)
        return await _conflicts_page(
            request, principal, session, errors={error_key: "; ".join(reasons.values())}, status_code=422
        )
    except ClinicSyncError as error:
        await session.rollback()
        _field, reason = service.domain_error_field(error)
        return await _conflicts_page(
            request, principal, session, errors={error_key: reason}, status_code=error.status_code
        )
    return RedirectResponse("/admin/sync/conflicts?done=resolved", status_code=303)


# --- outbox -------------------------------------------------------------------------------------------


async def _outbox_context(session: SessionDep, principal: Principal) -> dict[str, Any]:
    items, total = await outbox.list_items(
        session, principal, statuses=list(OUTBOX_SHOWN), integration_id=None, limit=200, offset=0
    )
    return {
        "failed": [item for item in items if item.status == OutboxStatus.FAILED],
        "waiting": [item for item in items if item.status != OutboxStatus.FAILED],
        "total": total,
    }


async def _outbox_page(
    request: Request,
    principal: Principal,
    session: SessionDep,
    *,
    errors: dict[str, dict[str, str]] | None = None,
    typed: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    context = await _outbox_context(session, principal)
    context |= {"errors": errors or {}, "typed": typed or {}, "done": request.query_params.get("done")}
    return render(request, "admin_outbox.html", context, principal=principal, status_code=status_code)


@router.get("/outbox")
async def outbox_page(request: Request, principal: SyncViewer, session: SessionDep) -> HTMLResponse:
    return await _outbox_page(request, principal, session)


@router.get("/outbox/list")
async def outbox_list(request: Request, principal: SyncViewer, session: SessionDep) -> HTMLResponse:
    context = await _outbox_context(session, principal) | {"errors": {}, "typed": {}}
    return render(request, "_outbox.html", context, principal=principal)


@router.post("/outbox/{item_id}/retry")
async def retry_item(
    request: Request, item_id: uuid.UUID, principal: SyncAdmin, session: SessionDep
) -> Response:
    runner = getattr(request.app.state, "sync_runner", None)
    if runner is not None:
        # The retried push is handed to the job runner when this transaction commits.
        session.sync_session.info[RUNNER_KEY] = runner
    try:
        await outbox.retry(session, principal, item_id)
    except ClinicSyncError as error:
        await session.rollback()
        _field, reason = service.domain_error_field(error)
        errors = {str(item_id): {"form": reason}}
        return await _outbox_page(request, principal, session, errors=errors, status_code=error.status_code)
    return RedirectResponse("/admin/sync/outbox?done=retried", status_code=303)


@router.post("/outbox/{item_id}/discard")
async def discard_item(
    request: Request, item_id: uuid.UUID, principal: SyncAdmin, session: SessionDep
) -> Response:
    form = await request.form()
    reason = str(form.get("reason") or "").strip()
    key = str(item_id)
    if not reason:
        errors = {key: {"reason": "say why this push is no longer owed"}}
        return await _outbox_page(request, principal, session, errors=errors, status_code=422)
    if len(reason) > 500:
        errors = {key: {"reason": "at most 500 characters"}}
        return await _outbox_page(
            request, principal, session, errors=errors, typed={key: reason}, status_code=422
        )
    try:
        await outbox.discard(session, principal, item_id, reason)
    except ClinicSyncError as error:
        await session.rollback()
        _field, message = service.domain_error_field(error)
        errors = {key: {"form": message}}
        return await _outbox_page(
            request, principal, session, errors=errors, typed={key: reason}, status_code=error.status_code
        )
    return RedirectResponse("/admin/sync/outbox?done=discarded", status_code=303)

"""The sync dashboard: Full Sync, the advanced operations with dry-run preview, active runs with
live progress and ETA, the history table and a chart of runs over time, and for a person whose
email has accounts in several organizations, a selector that signs into another one's account
with that account's own password.

Runs start through the same function as POST /api/v1/sync/trigger (``sync.runs.api``), so the
rules (one active run per integration, windows from the run settings) live in one place.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.db.engine import session_scope
from clinicsync.deps import SessionDep, get_sessionmaker, writes_in_own_transactions
from clinicsync.errors import ClinicSyncError, Unauthorized
from clinicsync.integrations.models import ExternalIntegration
from clinicsync.sync.runs import api as runs_api
from clinicsync.sync.runs import service as runs
from clinicsync.sync.runs.models import ACTIVE_RUN_STATUSES, RunStatus, RunType, SyncRun
from clinicsync.sync.runs.schemas import RunAsk
from clinicsync.tenancy import permissions
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Organization
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal
from clinicsync.web import service
from clinicsync.web.charts import RunPoint, runs_chart
from clinicsync.web.render import render
from clinicsync.web.session import Page, set_session_cookie, via_cookie

router = APIRouter(prefix="/admin/sync/runs", include_in_schema=False)

RunViewer = Annotated[Principal, Page(Capability.SYNC_RUNS_READ)]
RunStarter = Annotated[Principal, Page(Capability.SYNC_RUNS_START)]
OWN_TRANSACTIONS = [Depends(writes_in_own_transactions)]

FULL_SYNC_DAYS = 14
HISTORY_ROWS = 20
CHART_RUNS = 30
OPERATIONS = {
    RunType.FULL: "Full sync: past visits, their notes, upcoming appointments, reconciliation",
    RunType.INBOUND: "Upcoming appointments and free slots only",
    RunType.CASES: "Notes of past visits only (enrichment)",
    RunType.RECONCILE: "Reconcile: find records the PMS no longer has",
    RunType.IMPORT_PATIENTS: "Import patients",
}
ADVANCED_FIELDS = ("integration_id", "sync_type", "backward_days", "forward_days", "reconcile_days")


async def _integrations(session: AsyncSession, principal: Principal) -> list[ExternalIntegration]:
    rows = await session.scalars(
        select(ExternalIntegration)
        .where(ExternalIntegration.organization_id == principal.organization_id)
        .order_by(ExternalIntegration.provider_key, ExternalIntegration.location_label)
    )
    return list(rows)


def _duration(run: SyncRun) -> float | None:
    if run.started_at is None or run.completed_at is None:
        return None
    return max(0.0, (run.completed_at - run.started_at).total_seconds())


async def _active_context(session: AsyncSession, principal: Principal) -> dict[str, Any]:
    rows = await session.scalars(
        select(SyncRun)
        .where(SyncRun.organization_id == principal.organization_id, SyncRun.status.in_(ACTIVE_RUN_STATUSES))
        .order_by(SyncRun.created_at)
    )
    return {"active": [runs.progress(run) for run in rows]}


async def _history_context(session: AsyncSession, principal: Principal) -> dict[str, Any]:
    figures = await runs.history(session, principal.organization_id, limit=HISTORY_ROWS)
    recent: list[SyncRun] = figures["recent_syncs"]
    finished = [run for run in recent if run.status != RunStatus.RUNNING and run.started_at is not None]
    chart = runs_chart(
        [
            RunPoint(
                run.started_at, _duration(run) or 0.0, run.records_processed, run.status == RunStatus.FAILED
            )
            for run in finished[:CHART_RUNS]
            if run.started_at is not None and run.completed_at is not None
        ]
    )
    previews = await session.scalars(
        select(SyncRun)
        .where(SyncRun.organization_id == principal.organization_id, SyncRun.dry_run.is_(True))
        .order_by(SyncRun.created_at.desc())
        .limit(5)
    )
    return {
        "figures": figures,
        "history": [{"run": run, "seconds": _duration(run)} for run in recent],
        "chart": chart,
        "previews": list(previews),
    }


async def _organizations(session: AsyncSession, principal: Principal) -> list[Organization]:
    """The organizations the selector offers: where the same email has an account that may see
    this dashboard. Only their names reach the page."""
    return await tenancy_service.organizations_of_same_email(session, principal, Capability.SYNC_RUNS_READ)


async def _dashboard(
    request: Request,
    principal: Principal,
    session: AsyncSession,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    switch: dict[str, Any] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    integrations = await _integrations(session, principal)
    organizations = await _organizations(session, principal)
    if not any(organization.id == principal.organization_id for organization in organizations):
        organizations = []
    context = {
        "organizations": organizations if len(organizations) > 1 else [],
        "switch": {"chosen": str(principal.organization_id), "errors": {}, **(switch or {})},
        "integrations": integrations,
        "operations": OPERATIONS,
        "full_days": FULL_SYNC_DAYS,
        "values": values or {"sync_type": RunType.FULL.value, "dry_run": True},
        "errors": errors or {},
        "started": request.query_params.get("started"),
        **await _active_context(session, principal),
        **await _history_context(session, principal),
    }
    return render(request, "admin_runs.html", context, principal=principal, status_code=status_code)


@router.get("")
async def dashboard(request: Request, principal: RunViewer, session: SessionDep) -> HTMLResponse:
    return await _dashboard(request, principal, session)


@router.get("/active")
async def active_runs(request: Request, principal: RunViewer, session: SessionDep) -> HTMLResponse:
    """The active runs alone, for the page to swap in as their progress events arrive."""
    return render(
        request, "_runs_active.html", await _active_context(session, principal), principal=principal
    )


@router.get("/history")
async def run_history(request: Request, principal: RunViewer, session: SessionDep) -> HTMLResponse:
    return render(
        request, "_runs_history.html", await _history_context(session, principal), principal=principal
    )


async def _refused(
    request: Request,
    principal: Principal,
    values: dict[str, Any] | None,
    errors: dict[str, str] | None,
    status_code: int,
    *,
    switch: dict[str, Any] | None = None,
) -> HTMLResponse:
    async with session_scope(get_sessionmaker(request), write=False) as session:
        return await _dashboard(
            request, principal, session, values=values, errors=errors, switch=switch, status_code=status_code
        )


async def _launch(request: Request, principal: Principal, ask: RunAsk, values: dict[str, Any]) -> Response:
    try:
        run, _started = await runs_api._start(request, principal, ask)
    except ClinicSyncError as error:
        field, reason = service.domain_error_field(error)
        if error.code == "sync_already_running":
            field = "form"
        errors = {field if field in ADVANCED_FIELDS else "form": reason}
        return await _refused(request, principal, values, errors, error.status_code)
    target = f"/admin/sync/runs/{run.id}" if run.dry_run else f"/admin/sync/runs?started={run.id}"
    return RedirectResponse(target, status_code=303)


@router.post("/full", dependencies=OWN_TRANSACTIONS)
async def full_sync(request: Request, principal: RunStarter) -> Response:
    form = await request.form()
    chosen = str(form.get("integration_id") or "")
    values: dict[str, Any] = {"integration_id": chosen, "sync_type": RunType.FULL.value}
    try:
        ask = RunAsk(
            integration_id=chosen or None,
            sync_type=RunType.FULL,
            backward_days=FULL_SYNC_DAYS,
            forward_days=FULL_SYNC_DAYS,
        )
    except ValidationError as error:
        return await _refused(request, principal, values, service.field_errors(error), 422)
    return await _launch(request, principal, ask, values)


@router.post("/start", dependencies=OWN_TRANSACTIONS)
async def start_operation(request: Request, principal: RunStarter) -> Response:
    """The advanced section: one operation, its windows, and whether it is only a preview."""
    form = await request.form()
    values: dict[str, Any] = {name: str(form.get(name) or "").strip() for name in ADVANCED_FIELDS}
    values["dry_run"] = form.get("dry_run") == "on"
    try:
        ask = RunAsk.model_validate(
            {
                "integration_id": values["integration_id"] or None,
                "sync_type": values["sync_type"],
                "dry_run": values["dry_run"],
                **{
                    name: values[name]
                    for name in ("backward_days", "forward_days", "reconcile_days")
                    if values[name] != ""
                },
            }
        )
    except ValidationError as error:
        return await _refused(request, principal, values, service.field_errors(error), 422)
    return await _launch(request, principal, ask, values)


@router.post("/organization", dependencies=OWN_TRANSACTIONS)
async def switch_organization(request: Request, principal: RunViewer, session: SessionDep) -> Response:
    """Signs into the same email's account in another organization, with that account's password,
    through the sign-in service and its throttle; the new session replaces this one."""
    form = await request.form()
    chosen = str(form.get("organization_id") or "").strip()
    password = form.get("password")
    password = password if isinstance(password, str) else ""
    target = next((item for item in await _organizations(session, principal) if str(item.id) == chosen), None)
    if target is not None and target.id == principal.organization_id:
        return RedirectResponse("/admin/sync/runs", status_code=303)

    async def refuse(field: str, reason: str, status_code: int) -> HTMLResponse:
        switch = {"chosen": chosen, "errors": {field: reason}}
        return await _refused(request, principal, None, None, status_code, switch=switch)

    if target is None:
        return await refuse("organization_id", "choose one of the organizations listed", 422)
    if not password:
        return await refuse("password", f"enter the password of your account at {target.name}", 422)
    email = (await tenancy_service.get_user(session, principal, principal.user_id)).email
    # The sign-in gives the request's connection back (expiring what it loaded): keep the name.
    name, slug = target.name, target.slug
    try:
        issued = await tenancy_service.login(
            session,
            email,
            password,
            slug,
            throttle=request.app.state.login_throttle,
            address=request.client.host if request.client else "unknown",
            sessionmaker=get_sessionmaker(request),
        )
    except Unauthorized:
        return await refuse("password", f"the password is wrong for your account at {name}", 401)
    except ClinicSyncError as error:
        return await refuse("password", error.message, error.status_code)
    if via_cookie(request) and principal.token_id is not None:
        # The new account's session replaces this one: this sign-in ends.
        async with session_scope(get_sessionmaker(request)) as write:
            await tenancy_service.revoke_token(write, principal, principal.token_id)
    allowed = permissions.allows(issued.role, Capability.SYNC_RUNS_READ)
    response = RedirectResponse("/admin/sync/runs" if allowed else "/start", status_code=303)
    set_session_cookie(request, response, issued.token)
    return response


async def _run_context(session: AsyncSession, principal: Principal, run_id: uuid.UUID) -> dict[str, Any]:
    run = await runs.get_run(session, principal.organization_id, run_id)
    return {"run": run, "progress": runs.progress(run), "seconds": _duration(run)}


@router.get("/{run_id}")
async def run_detail(
    request: Request, run_id: uuid.UUID, principal: RunViewer, session: SessionDep
) -> HTMLResponse:
    context = await _run_context(session, principal, run_id)
    return render(request, "admin_run.html", context, principal=principal)


@router.get("/{run_id}/summary")
async def run_summary(
    request: Request, run_id: uuid.UUID, principal: RunViewer, session: SessionDep
) -> HTMLResponse:
    """The run's status, phases and preview alone, swapped in as its change events arrive."""
    context = await _run_context(session, principal, run_id)
    return render(request, "_run_summary.html", context, principal=principal)


@router.post("/{run_id}/cancel")
async def cancel_run(run_id: uuid.UUID, principal: RunStarter, session: SessionDep) -> Response:
    await runs.request_cancel(session, principal.organization_id, run_id)
    return RedirectResponse(f"/admin/sync/runs/{run_id}", status_code=303)

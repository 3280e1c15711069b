"""Sync run routes, on the reference's paths (docs/api.md has the map). Thin: rules live in
service.py, the work in engine.py; a started run is committed, then its job is deferred."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.deps import Requires, SessionDep, get_sessionmaker, writes_in_own_transactions
from clinicsync.errors import NotFound, ValidationFailed
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.executor import IntegrationExecutor
from clinicsync.integrations.models import ExternalIntegration
from clinicsync.jobs import tasks
from clinicsync.sync import inbound
from clinicsync.sync.models import IntegrationSyncConfig
from clinicsync.sync.runs import service
from clinicsync.sync.runs.models import (
    ACTIVE_RUN_STATUSES,
    PmsAppointment,
    RunMode,
    RunSettings,
    RunStatus,
    RunType,
    SyncCase,
    SyncRun,
)
from clinicsync.sync.runs.schemas import (
    CaseRead,
    CleanupResult,
    ConnectionTest,
    FullSyncAsk,
    PmsAppointmentRead,
    ProviderStatus,
    RecentSync,
    RunAsk,
    RunSettingsRead,
    RunSettingsWrite,
    SchedulerStatus,
    SyncHistory,
    SyncProgress,
    SyncRunRead,
    SyncStarted,
)
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal

router = APIRouter(tags=["sync runs"])
RunReader = Annotated[Principal, Requires(Capability.SYNC_RUNS_READ)]
RunStarter = Annotated[Principal, Requires(Capability.SYNC_RUNS_START)]
OWN_TRANSACTIONS = [Depends(writes_in_own_transactions)]


def _same_organization(principal: Principal, organization_id: uuid.UUID) -> None:
    # Another organization's id answers exactly as a missing one does.
    if organization_id != principal.organization_id:
        raise NotFound("organization not found", details={"organization_id": str(organization_id)})


async def _pull_integration(
    session: AsyncSession, principal: Principal, integration_id: uuid.UUID | None, provider: str | None = None
) -> uuid.UUID:
    """The integration asked for, or the organization's one integration that takes PMS data in."""
    if integration_id is not None:
        await service.integration_of(session, principal.organization_id, integration_id)
        return integration_id
    query = (
        select(IntegrationSyncConfig.integration_id, IntegrationSyncConfig)
        .join(ExternalIntegration, ExternalIntegration.id == IntegrationSyncConfig.integration_id)
        .where(IntegrationSyncConfig.organization_id == principal.organization_id)
    )
    if provider is not None:
        query = query.where(ExternalIntegration.provider_key == provider)
    candidates = [
        found for found, config in (await session.execute(query)).all() if inbound.takes_inbound(config)
    ]
    if len(candidates) == 1:
        return uuid.UUID(str(candidates[0]))
    if not candidates:
        raise ValidationFailed(
            "integration_id",
            "no integration of this organization takes PMS data in (sync on, direction from_external or "
            "bidirectional); name one with integration_id",
        )
    raise ValidationFailed("integration_id", f"{len(candidates)} integrations pull from a PMS: name one")


async def _start(
    request: Request, principal: Principal, ask: RunAsk, *, provider: str | None = None
) -> tuple[SyncRun, SyncStarted]:
    settings = request.app.state.settings
    async with session_scope(get_sessionmaker(request)) as session:
        integration_id = await _pull_integration(session, principal, ask.integration_id, provider)
        run = await service.start_run(
            session,
            principal.organization_id,
            integration_id,
            service.RunRequest(
                run_type=ask.sync_type,
                mode=ask.sync_mode,
                dry_run=ask.dry_run,
                incremental=ask.incremental,
                backward_days=ask.backward_days,
                forward_days=ask.forward_days,
                reconcile_days=ask.reconcile_days,
                max_delete_share=ask.max_delete_share,
                enrichment_concurrency=ask.enrichment_concurrency,
                triggered_by=f"user:{principal.user_id}",
            ),
            settings,
        )
    runner = getattr(request.app.state, "sync_runner", None)
    if runner is not None:
        await runner.defer(tasks.RUN_SYNC, run_id=str(run.id))
    kind = "preview" if run.dry_run else "sync"
    return run, SyncStarted(
        message=f"{kind} started successfully in {run.mode.value} mode",
        sync_started=True,
        sync_id=str(run.id),
        sync_type=run.run_type.value,
        sync_mode=run.mode.value,
        dry_run=run.dry_run,
        organization_id=str(run.organization_id),
        integration_id=str(run.integration_id),
        started_at=run.started_at,
        timestamp=utcnow(),
        resumed_from=str(run.resumed_from) if run.resumed_from else None,
    )


ACCEPTED = status.HTTP_202_ACCEPTED


@router.post(
    "/api/v1/sync/trigger", response_model=SyncStarted, status_code=ACCEPTED, dependencies=OWN_TRANSACTIONS
)
async def trigger(request: Request, principal: RunStarter, ask: RunAsk | None = None) -> SyncStarted:
    """Start a run now (a full sync unless `sync_type` says otherwise)."""
    return (await _start(request, principal, ask or RunAsk()))[1]


@router.post(
    "/api/v1/sync/preview", response_model=SyncStarted, status_code=ACCEPTED, dependencies=OWN_TRANSACTIONS
)
async def preview(request: Request, principal: RunStarter, ask: RunAsk | None = None) -> SyncStarted:
    """A dry run: reads the PMS and reports record by record what the run would create, update
    and delete (`GET /api/v1/sync/runs/{id}` → `preview`), writing nothing."""
    chosen = (ask or RunAsk()).model_copy(update={"dry_run": True})
    return (await _start(request, principal, chosen))[1]


@router.post(
    "/api/v1/sync/start/{organization_id}",
    response_model=SyncStarted,
    status_code=ACCEPTED,
    dependencies=OWN_TRANSACTIONS,
)
async def start(
    organization_id: uuid.UUID,
    request: Request,
    principal: RunStarter,
    sync_mode: RunMode = RunMode.ACTIVE,
    integration_id: uuid.UUID | None = None,
    dry_run: bool = False,
) -> SyncStarted:
    """Start a run with progress tracking: `active` pulls upcoming appointments, `comprehensive`
    the full sync."""
    _same_organization(principal, organization_id)
    run_type = RunType.INBOUND if sync_mode == RunMode.ACTIVE else RunType.FULL
    if sync_mode == RunMode.PATIENTS_ONLY:
        run_type = RunType.IMPORT_PATIENTS
    ask = RunAsk(integration_id=integration_id, sync_type=run_type, sync_mode=sync_mode, dry_run=dry_run)
    return (await _start(request, principal, ask))[1]


@router.post(
    "/api/sync/full", response_model=SyncStarted, status_code=ACCEPTED, dependencies=OWN_TRANSACTIONS
)
async def full(request: Request, principal: RunStarter, body: FullSyncAsk) -> SyncStarted:
    """The reference's full sync: backward, enrichment, forward and reconciliation."""
    _same_organization(principal, body.clinic_id)
    ask = RunAsk(
        integration_id=body.integration_id,
        sync_type=RunType.FULL if body.bidirectional else RunType.INBOUND,
        backward_days=body.backward_days,
        forward_days=body.forward_days,
        dry_run=body.dry_run,
    )
    return (await _start(request, principal, ask))[1]


@router.get("/api/v1/sync/progress/{sync_id}", response_model=SyncProgress)
async def progress(sync_id: uuid.UUID, session: SessionDep, principal: RunReader) -> dict[str, Any]:
    return service.progress(await service.get_run(session, principal.organization_id, sync_id))


@router.get("/api/v1/sync/runs/{sync_id}", response_model=SyncRunRead)
async def run_detail(sync_id: uuid.UUID, session: SessionDep, principal: RunReader) -> SyncRun:
    """Everything the run recorded: per-phase results, counts per entity, errors, a preview's
    record-by-record report, requests made against the provider's budget."""
    return await service.get_run(session, principal.organization_id, sync_id)


@router.post("/api/v1/sync/{sync_id}/cancel", response_model=SyncProgress)
async def cancel(sync_id: uuid.UUID, session: SessionDep, principal: RunStarter) -> dict[str, Any]:
    """Stops the run between pages; what it did so far stays recorded."""
    return service.progress(await service.request_cancel(session, principal.organization_id, sync_id))


@router.get("/api/v1/sync/history/{organization_id}", response_model=SyncHistory)
async def history(
    organization_id: uuid.UUID,
    session: SessionDep,
    principal: RunReader,
    limit: Annotated[int, Query(ge=1, le=200)] = 10,
    integration_id: uuid.UUID | None = None,
) -> SyncHistory:
    _same_organization(principal, organization_id)
    figures = await service.history(session, organization_id, limit=limit, integration_id=integration_id)
    figures["recent_syncs"] = [_recent(run) for run in figures["recent_syncs"]]
    return SyncHistory(**figures)


def _recent(run: SyncRun) -> RecentSync:
    failed = sum(int(values.get("failed", 0)) for values in run.counts.values())
    return RecentSync(
        sync_id=str(run.id),
        sync_type=run.run_type.value,
        started_at=run.started_at,
        completed_at=run.completed_at,
        status=run.status.value,
        records_processed=run.records_processed,
        records_success=max(0, run.records_processed - failed),
        records_failed=failed,
        error_message=run.error_message,
        metadata={
            "sync_type": run.run_type.value,
            "sync_mode": run.mode.value,
            "counts": run.counts,
            "phases": {name: result.get("status") for name, result in run.phases.items()},
            "requests_used": run.requests_used,
            "notes": run.notes,
        },
    )


@router.post("/api/v1/sync/cleanup", response_model=CleanupResult)
async def cleanup(request: Request, session: SessionDep, principal: RunStarter) -> CleanupResult:
    """Fails this organization's runs whose worker stopped beating; the next run of the same
    kind resumes from their checkpoint."""
    stale = request.app.state.settings.sync_run_stale_seconds
    from datetime import timedelta

    ids = await service.fail_stale(session, timedelta(seconds=stale), principal.organization_id)
    return CleanupResult(
        message=f"Cleaned up {len(ids)} stale syncs",
        cleaned_syncs=len(ids),
        sync_ids=[str(run_id) for run_id in ids],
        timestamp=utcnow(),
    )


@router.get("/api/v1/sync/scheduler/status", response_model=SchedulerStatus)
async def scheduler_status(request: Request, session: SessionDep, principal: RunReader) -> SchedulerStatus:
    settings = request.app.state.settings
    running = await session.scalar(
        select(SyncRun).where(
            SyncRun.organization_id == principal.organization_id, SyncRun.status.in_(ACTIVE_RUN_STATUSES)
        )
    )
    last = await session.scalar(
        select(func.max(SyncRun.started_at)).where(SyncRun.organization_id == principal.organization_id)
    )
    rows = await session.scalars(
        select(RunSettings).where(RunSettings.organization_id == principal.organization_id)
    )
    return SchedulerStatus(
        organization_id=str(principal.organization_id),
        sync_running=running is not None,
        running_sync_id=str(running.id) if running is not None else None,
        last_sync_time=last,
        scheduler_active=settings.enable_sync_scheduler,
        interval_minutes=settings.sync_interval_minutes,
        integrations=[RunSettingsRead.model_validate(row).model_dump(mode="json") for row in rows],
        message="Scheduler status retrieved successfully",
    )


@router.post(
    "/api/v1/sync/scheduler/trigger",
    response_model=SyncStarted,
    status_code=ACCEPTED,
    dependencies=OWN_TRANSACTIONS,
)
async def scheduler_trigger(
    request: Request, principal: RunStarter, ask: RunAsk | None = None
) -> SyncStarted:
    """Run the scheduled sync of an integration now, as the scheduler would."""
    chosen = (ask or RunAsk()).model_copy(update={"sync_type": RunType.SCHEDULED, "dry_run": False})
    return (await _start(request, principal, chosen))[1]


@router.put("/api/v1/sync/settings/{integration_id}", response_model=RunSettingsRead)
async def put_settings(
    integration_id: uuid.UUID, body: RunSettingsWrite, session: SessionDep, principal: RunStarter
) -> RunSettings:
    """An integration's schedule (interval, on/off) and run defaults (windows, delete guard)."""
    await service.integration_of(session, principal.organization_id, integration_id)
    row = await service.settings_of(session, integration_id)
    if row is None:
        row = RunSettings(organization_id=principal.organization_id, integration_id=integration_id)
        session.add(row)
    for name, value in body.model_dump(exclude_unset=True).items():
        setattr(row, name, value)
    if row.schedule_enabled is None:
        row.schedule_enabled = True
    await session.flush()
    await session.refresh(row)
    return row


@router.get("/api/v1/sync/cases", response_model=list[CaseRead])
async def cases(
    session: SessionDep,
    principal: RunReader,
    integration_id: uuid.UUID | None = None,
    include_deleted: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[SyncCase]:
    """Past visits brought in by backward syncs, with their consultation notes."""
    query = select(SyncCase).where(SyncCase.organization_id == principal.organization_id)
    if integration_id is not None:
        query = query.where(SyncCase.integration_id == integration_id)
    if not include_deleted:
        query = query.where(SyncCase.deleted_at.is_(None))
    rows = await session.scalars(query.order_by(SyncCase.starts_at, SyncCase.id).offset(offset).limit(limit))
    return list(rows)


@router.get("/api/v1/sync/pms-appointments", response_model=list[PmsAppointmentRead])
async def pms_appointments(
    session: SessionDep,
    principal: RunReader,
    integration_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[PmsAppointment]:
    """Upcoming appointments as the PMS holds them (forward syncs)."""
    query = select(PmsAppointment).where(
        PmsAppointment.organization_id == principal.organization_id, PmsAppointment.deleted_at.is_(None)
    )
    if integration_id is not None:
        query = query.where(PmsAppointment.integration_id == integration_id)
    rows = await session.scalars(
        query.order_by(PmsAppointment.starts_at, PmsAppointment.id).offset(offset).limit(limit)
    )
    return list(rows)


# ---- provider-scoped (the reference's /api/v1/cliniko/...) ----------------------------------------


async def _provider_integration(
    session: AsyncSession, principal: Principal, provider: str
) -> ExternalIntegration:
    rows = list(
        await session.scalars(
            select(ExternalIntegration).where(
                ExternalIntegration.organization_id == principal.organization_id,
                ExternalIntegration.provider_key == provider,
            )
        )
    )
    if not rows:
        raise NotFound(f"this organization has no {provider} integration", details={"provider": provider})
    if len(rows) > 1:
        raise ValidationFailed(
            "provider", f"{len(rows)} {provider} integrations: use /api/v1/sync/trigger with integration_id"
        )
    return rows[0]


@router.post(
    "/api/v1/pms/{provider}/sync/{organization_id}",
    response_model=SyncStarted,
    status_code=ACCEPTED,
    dependencies=OWN_TRANSACTIONS,
)
async def provider_sync(
    provider: str,
    organization_id: uuid.UUID,
    request: Request,
    principal: RunStarter,
    mode: RunMode = RunMode.COMPREHENSIVE,
) -> SyncStarted:
    _same_organization(principal, organization_id)
    async with session_scope(get_sessionmaker(request), write=False) as session:
        integration = await _provider_integration(session, principal, provider)
    run_type = {RunMode.PATIENTS_ONLY: RunType.IMPORT_PATIENTS, RunMode.ACTIVE: RunType.INBOUND}.get(
        mode, RunType.FULL
    )
    ask = RunAsk(integration_id=integration.id, sync_type=run_type, sync_mode=mode)
    return (await _start(request, principal, ask))[1]


@router.post(
    "/api/v1/pms/{provider}/import-patients/{organization_id}",
    response_model=SyncStarted,
    status_code=ACCEPTED,
    dependencies=OWN_TRANSACTIONS,
)
async def provider_import_patients(
    provider: str, organization_id: uuid.UUID, request: Request, principal: RunStarter
) -> SyncStarted:
    _same_organization(principal, organization_id)
    async with session_scope(get_sessionmaker(request), write=False) as session:
        integration = await _provider_integration(session, principal, provider)
    ask = RunAsk(
        integration_id=integration.id, sync_type=RunType.IMPORT_PATIENTS, sync_mode=RunMode.PATIENTS_ONLY
    )
    return (await _start(request, principal, ask))[1]


@router.get("/api/v1/pms/{provider}/status/{organization_id}", response_model=ProviderStatus)
async def provider_status(
    provider: str, organization_id: uuid.UUID, session: SessionDep, principal: RunReader
) -> ProviderStatus:
    _same_organization(principal, organization_id)
    integration = await _provider_integration(session, principal, provider)
    config = await inbound.config_of(session, integration.id)
    running = await service.active_run(session, integration.id)
    last = await session.scalar(
        select(SyncRun)
        .where(SyncRun.integration_id == integration.id, SyncRun.dry_run.is_(False))
        .order_by(SyncRun.started_at.desc())
        .limit(1)
    )
    case_count = await session.scalar(
        select(func.count())
        .select_from(SyncCase)
        .where(SyncCase.integration_id == integration.id, SyncCase.deleted_at.is_(None))
    )
    upcoming = await session.scalar(
        select(func.count())
        .select_from(PmsAppointment)
        .where(
            PmsAppointment.integration_id == integration.id,
            PmsAppointment.deleted_at.is_(None),
            PmsAppointment.starts_at >= utcnow(),
        )
    )
    health = "never_synced" if last is None else {RunStatus.FAILED: "failing"}.get(last.status, "healthy")
    return ProviderStatus(
        organization_id=str(organization_id),
        provider=provider,
        integration_id=str(integration.id),
        connected=True,
        sync_enabled=bool(config and config.sync_enabled),
        sync_direction=config.sync_direction.value if config else None,
        last_sync=last.completed_at if last else None,
        last_sync_status=last.status.value if last else None,
        sync_running=running is not None,
        cases=case_count or 0,
        upcoming_appointments=upcoming or 0,
        sync_status=health,
    )


@router.get(
    "/api/v1/pms/{provider}/test-connection/{organization_id}",
    response_model=ConnectionTest,
    dependencies=OWN_TRANSACTIONS,
)
async def provider_test_connection(
    provider: str, organization_id: uuid.UUID, request: Request, principal: RunStarter
) -> ConnectionTest:
    """Calls the provider's test function once and times it."""
    _same_organization(principal, organization_id)
    sessionmaker = get_sessionmaker(request)
    async with session_scope(sessionmaker, write=False) as session:
        integration = await _provider_integration(session, principal, provider)
    executor = IntegrationExecutor(sessionmaker, request.app.state.settings)
    resolution = await executor.resolve_id(principal.organization_id, integration.id)
    function = resolution.resolved.definition.test_function
    began = time.perf_counter()
    message: str | None = None
    try:
        if function is None:
            raise ValidationFailed("provider", f"{provider} names no test function")
        await executor.execute(principal.organization_id, integration.id, function, {}, max_records=1)
        healthy = True
    except IntegrationError as exc:
        healthy, message = False, f"{exc.code}: {exc}"
    elapsed = round((time.perf_counter() - began) * 1000)
    return ConnectionTest(
        success=healthy,
        connection_status="healthy" if healthy else "failing",
        provider=provider,
        integration_id=str(integration.id),
        response_time_ms=elapsed,
        message=message,
        test_timestamp=utcnow(),
    )

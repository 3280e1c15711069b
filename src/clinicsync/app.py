"""The FastAPI application: routers, error shapes and the lifespan (engine, migrations)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from clinicsync import __version__
from clinicsync.agents.api import router as agents_router
from clinicsync.agents.mcp_server import build_server as build_mcp_server
from clinicsync.booking.api import router as booking_router
from clinicsync.config import Settings, get_settings
from clinicsync.db import migrate
from clinicsync.db.engine import WalCheckpointer, create_engine, create_sessionmaker, sqlite_path
from clinicsync.deps import PUBLIC
from clinicsync.edge.apidocs import install_api_docs
from clinicsync.edge.headers import SecurityHeaders
from clinicsync.edge.limits import InputLimits
from clinicsync.edge.openapi import document_errors
from clinicsync.edge.requests import RequestContext
from clinicsync.errors import ClinicSyncError
from clinicsync.integrations.api import router as integrations_router
from clinicsync.integrations.executor import IntegrationExecutor
from clinicsync.integrations.service import load_catalogue
from clinicsync.jobs import runtime as job_runtime
from clinicsync.logging import configure_logging, get_logger
from clinicsync.realtime.api import router as realtime_router
from clinicsync.realtime.hub import Hub
from clinicsync.sync.api import metrics_router
from clinicsync.sync.api import router as sync_router
from clinicsync.sync.delivery import SyncContext
from clinicsync.sync.inbound_api import router as inbound_router
from clinicsync.sync.inbound_api import webhook_router
from clinicsync.sync.manager import SyncManager
from clinicsync.sync.runs.api import router as sync_runs_router
from clinicsync.sync.slots.api import router as schedule_slots_router
from clinicsync.tenancy.api import router as tenancy_router
from clinicsync.tenancy.throttle import LoginThrottle
from clinicsync.web import WEB_ASSETS
from clinicsync.web.admin import router as admin_pages_router
from clinicsync.web.pages import router as pages_router
from clinicsync.web.render import install_page_errors
from clinicsync.web.runs_pages import router as runs_pages_router
from clinicsync.web.sync_pages import router as sync_pages_router

log = get_logger(__name__)


def _field_name(location: Sequence[Any]) -> str:
    # ("body", "patient", "phone") -> "patient.phone"; the request part is noise to a caller.
    parts = [str(part) for part in location if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or ".".join(str(part) for part in location)


def _reason(message: str) -> str:
    # pydantic prefixes messages raised by our validators; the caller needs only the reason.
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _detail(error: Any, body: Any) -> dict[str, str]:
    """One validation error as {"field", "reason"}, in the words a person reads.

    A body that is not JSON at all arrives as loc ("body", <character offset>); the offset is
    turned into the line and column an editor shows, and the field is the body itself.
    """
    if error.get("type") == "json_invalid":
        location = error.get("loc", ())
        offset = location[1] if len(location) > 1 and isinstance(location[1], int) else None
        text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
        where = ""
        if offset is not None:
            before = text[:offset]
            line = before.count("\n") + 1
            column = offset - (before.rfind("\n") + 1) + 1
            where = f" at line {line} column {column}"
        cause = (error.get("ctx") or {}).get("error")
        return {"field": "body", "reason": f"invalid JSON{where}" + (f" ({cause.lower()})" if cause else "")}
    return {"field": _field_name(error.get("loc", ())), "reason": _reason(error.get("msg", "invalid"))}


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"code": code, "message": message, "details": details}}
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ClinicSyncError)
    async def _domain_error(_request: Request, exc: ClinicSyncError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content=exc.to_body(), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [_detail(error, exc.body) for error in exc.errors()]
        message = "; ".join(f"{item['field']}: {item['reason']}" for item in details)
        return _error(422, "validation_failed", message, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
            exc.status_code, "http_error"
        )
        return _error(exc.status_code, code, str(exc.detail))

    # Unexpected exceptions are answered and logged once by edge.requests.RequestContext.


def install_edge(app: FastAPI, settings: Settings) -> None:
    """Middleware, innermost first: security headers, input limits, then request ids, the access
    log and 500s (outermost, so even a refused body is logged with its request id)."""
    app.add_middleware(SecurityHeaders)
    app.add_middleware(InputLimits, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.json_logs)
    mcp_server = build_mcp_server(
        lambda: app.state.sessionmaker,
        sync_of=lambda: app.state.sync_manager,
        auth_base_url=f"http://{settings.host}:{settings.port}",
    )
    mcp_app = mcp_server.streamable_http_app(
        streamable_http_path="/mcp", stateless_http=True, json_response=True, host=settings.host
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A thread computing (slot search, the SQLite driver) hands the GIL to a waiting event loop
        # after 1 ms rather than Python's default 5: every socket read and write of the loop waits
        # for that handover while such a thread runs.
        sys.setswitchinterval(0.001)
        engine = create_engine(settings.database_url, background_checkpoints=True)
        database_file = sqlite_path(engine)
        checkpointer = WalCheckpointer(database_file) if database_file is not None else None
        if checkpointer is not None:
            checkpointer.start()
        if settings.migrate_on_start:
            await migrate.upgrade(engine)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        await load_catalogue(app.state.sessionmaker)
        hub = Hub(
            app.state.sessionmaker,
            settings.database_url,
            poll_seconds=settings.events_poll_seconds,
            heartbeat_seconds=settings.events_heartbeat_seconds,
            retention=timedelta(hours=settings.events_retention_hours),
        )
        await hub.start()
        app.state.hub = hub
        # Sync: the SyncManager for every booking write, and the job runner that delivers its pushes.
        sync_context = SyncContext(
            app.state.sessionmaker, IntegrationExecutor(app.state.sessionmaker, settings), settings
        )
        runner = await job_runtime.start_for_server(sync_context, engine)
        app.state.sync_runner = runner
        app.state.sync_manager = SyncManager(sync_context, runner)
        log.info("started", database=engine.dialect.name, version=__version__)
        try:
            async with mcp_server.session_manager.run():
                yield
        finally:
            await hub.stop()
            if runner is not None:
                await runner.stop()
            await engine.dispose()
            if checkpointer is not None:
                await checkpointer.stop()

    app = FastAPI(
        title="clinicsync",
        version=__version__,
        description="Booking for clinics, kept in step with their practice-management system.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.login_throttle = LoginThrottle(
        account_limit=settings.login_failures_per_account,
        address_limit=settings.login_failures_per_address,
        window_seconds=settings.login_failure_window_seconds,
    )
    install_error_handlers(app)
    install_edge(app, settings)
    install_api_docs(app)

    @app.get("/health", tags=["ops"], dependencies=[PUBLIC])
    async def health(request: Request) -> JSONResponse:
        try:
            async with request.app.state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("health_database_unreachable", error_type=type(exc).__name__)
            return _error(503, "database_unreachable", "the database is not reachable")
        return JSONResponse({"status": "ok", "database": request.app.state.engine.dialect.name})

    app.include_router(tenancy_router)
    app.include_router(booking_router)
    app.include_router(integrations_router)
    app.include_router(realtime_router)
    app.include_router(pages_router)
    app.include_router(admin_pages_router)
    app.include_router(runs_pages_router)
    app.include_router(sync_pages_router)
    install_page_errors(app)
    app.mount("/assets", StaticFiles(directory=WEB_ASSETS), name="assets")
    app.include_router(sync_router)
    app.include_router(inbound_router)
    app.include_router(webhook_router)
    app.include_router(sync_runs_router)
    app.include_router(metrics_router)
    app.include_router(agents_router)
    app.include_router(schedule_slots_router)
    # The MCP app answers /mcp only (auth, transport and all); every other path stays ours.
    app.router.routes.append(Route("/mcp", endpoint=mcp_app, methods=["GET", "POST", "DELETE"]))
    document_errors(app)
    return app

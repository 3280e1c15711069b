"""`clinicsync worker`: a Procrastinate worker delivering sync pushes (PostgreSQL only)."""

from __future__ import annotations

from clinicsync.config import Settings
from clinicsync.db import migrate
from clinicsync.db.engine import create_engine, create_sessionmaker
from clinicsync.integrations.executor import IntegrationExecutor
from clinicsync.jobs.procrastinate_runner import ProcrastinateRunner
from clinicsync.logging import configure_logging, get_logger
from clinicsync.sync.delivery import SyncContext

log = get_logger(__name__)


class WorkerNeedsPostgres(Exception):
    pass


async def run_worker(settings: Settings, *, concurrency: int | None = None) -> None:
    """Runs until SIGINT/SIGTERM; any number of these may run on any number of machines."""
    configure_logging(settings.log_level, settings.json_logs)
    engine = create_engine(settings.database_url)
    if engine.dialect.name != "postgresql":
        await engine.dispose()
        raise WorkerNeedsPostgres(
            "clinicsync worker needs PostgreSQL; on SQLite the server delivers pushes in its own process"
        )
    try:
        if settings.migrate_on_start:
            await migrate.upgrade(engine)
        sessionmaker = create_sessionmaker(engine)
        ctx = SyncContext(sessionmaker, IntegrationExecutor(sessionmaker, settings), settings)
        runner = ProcrastinateRunner(
            ctx,
            concurrency=concurrency or settings.sync_worker_concurrency,
            sweep_interval=settings.sync_sweep_interval_seconds,
        )
        await runner.open()
        log.info("worker_started", concurrency=runner.concurrency)
        try:
            await runner.run_worker()
        finally:
            await runner.app.close_async()
    finally:
        await engine.dispose()

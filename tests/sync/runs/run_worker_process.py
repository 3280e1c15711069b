"""One sync run executed by a worker in a process of its own, so a test can kill it mid-run the way a
machine or a container dies: the operating system ends its connections and frees its locks.

    python -m tests.sync.runs.run_worker_process DATABASE_URL VAR_DIR RUN_ID
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

from clinicsync.db.engine import create_engine, create_sessionmaker
from clinicsync.integrations.executor import IntegrationExecutor
from clinicsync.sync.delivery import SyncContext
from clinicsync.sync.runs import engine
from tests.sync.conftest import sync_settings

# As the quiet server's: a run without a heartbeat for a second is stale.
STALE_SECONDS = 1.0


async def run(database_url: str, var_dir: Path, run_id: uuid.UUID) -> str:
    settings = sync_settings(database_url, var_dir, sync_jobs="off", sync_run_stale_seconds=STALE_SECONDS)
    database = create_engine(settings.database_url)
    sessionmaker = create_sessionmaker(database)
    try:
        worker = SyncContext(sessionmaker, IntegrationExecutor(sessionmaker, settings), settings)
        return await engine.execute(worker, run_id)
    finally:
        await database.dispose()


if __name__ == "__main__":
    database_url, var_dir, run_id = sys.argv[1:4]
    print(asyncio.run(run(database_url, Path(var_dir), uuid.UUID(run_id))), flush=True)

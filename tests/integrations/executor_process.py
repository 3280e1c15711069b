"""A second clinicsync process for tests: calls one integration through its own executor.

    python tests/integrations/executor_process.py DATABASE_URL ORG_ID INTEGRATION_ID FUNCTION COUNT PRIORITY

It connects with its own engine (its own pool, its own in-process state), starts all
COUNT calls at once, and prints one JSON line per finished call: {"at": epoch, "ok": bool, "error"}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

from clinicsync.config import Settings
from clinicsync.db.engine import create_engine, create_sessionmaker
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.executor import IntegrationExecutor
from clinicsync.integrations.ratebudget import Priority

SECRET_KEY = "test-secret-key-for-encryption-only"


async def main(
    url: str, organization: str, integration: str, function: str, count: int, priority: str
) -> None:
    engine = create_engine(url)
    settings = Settings(database_url=url, secret_key=SECRET_KEY, environment="test", migrate_on_start=False)
    executor = IntegrationExecutor(create_sessionmaker(engine), settings)

    async def one() -> None:
        ok, error = True, None
        try:
            await executor.execute(
                uuid.UUID(organization), uuid.UUID(integration), function, {}, priority=Priority[priority]
            )
        except IntegrationError as exc:
            ok, error = False, f"{exc.code}: {exc.message}"
        print(json.dumps({"at": time.time(), "ok": ok, "error": error}), flush=True)

    try:
        await asyncio.gather(*(one() for _ in range(count)))
    finally:
        await engine.dispose()


if __name__ == "__main__":
    url, organization, integration, function, count, priority = sys.argv[1:7]
    asyncio.run(main(url, organization, integration, function, int(count), priority))

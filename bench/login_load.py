"""/health latency while 16 logins run at once: argon2 must not stall the event loop.

    python -m bench.login_load [--rounds N] [--output BENCHMARKS.md]

A live server on loopback (SQLite) gets a staff login; /health is timed idle (the floor), then
again while bursts of 16 concurrent correct logins are in flight. The section "Login under load"
of the output file is replaced with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.document import write_section
from clinicsync.app import create_app
from clinicsync.config import Settings
from clinicsync.db.engine import create_engine, create_sessionmaker, session_scope
from clinicsync.serving import serving
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.schemas import OrganizationCreate, UserCreate

PASSWORD = "correct horse battery staple"
CONCURRENT_LOGINS = 16
SECTION = "## Login under load"


async def _staff(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            organization = await tenancy_service.create_organization(
                session, OrganizationCreate(name="Bench Clinic", time_zone="UTC")
            )
            await tenancy_service.create_user(
                session,
                organization.id,
                UserCreate(email="desk@example.com", role=Role.STAFF, password=PASSWORD),
            )
    finally:
        await engine.dispose()


async def _health_ms(client: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    response = await client.get("/health")
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000


async def measure(rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{Path(scratch) / 'bench.sqlite3'}"
        settings = Settings(
            database_url=url, environment="test", var_dir=Path(scratch) / "var", log_level="WARNING"
        )
        # Generous limits: this measures hashing, not throttling.
        settings.login_failures_per_account = 10_000
        async with serving(create_app(settings)) as base_url:
            await _staff(url)
            async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
                idle = [await _health_ms(client) for _ in range(50)]
                busy: list[float] = []
                logins: list[float] = []

                async def login() -> None:
                    started = time.perf_counter()
                    response = await client.post(
                        "/api/v1/auth/login", json={"email": "desk@example.com", "password": PASSWORD}
                    )
                    response.raise_for_status()
                    logins.append((time.perf_counter() - started) * 1000)

                for _ in range(rounds):
                    burst = [asyncio.create_task(login()) for _ in range(CONCURRENT_LOGINS)]
                    while not all(task.done() for task in burst):
                        busy.append(await _health_ms(client))
                    await asyncio.gather(*burst)
    return {
        "health p50 ms, idle": statistics.median(idle),
        "health p50 ms, 16 logins in flight": statistics.median(busy),
        "health p95 ms, 16 logins in flight": statistics.quantiles(busy, n=20)[-1],
        "busy / idle p50": statistics.median(busy) / statistics.median(idle),
        "login p50 ms (in a burst of 16)": statistics.median(logins),
        "health samples during bursts": len(busy),
    }


def report(figures: dict[str, float], rounds: int) -> str:
    lines = [
        SECTION,
        "",
        f"Command: `python -m bench.login_load --rounds {rounds}` (SQLite; machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        "| measure | value |",
        "| --- | --- |",
    ]
    lines += [f"| {key} | {value:.1f} |" for key, value in figures.items()]
    lines += [
        "",
        "argon2 runs in a thread pool of its own (one thread per core, at most four), so the event loop "
        "answers /health while logins queue for the hasher.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", default="BENCHMARKS.md")
    args = parser.parse_args()
    section = report(asyncio.run(measure(args.rounds)), args.rounds)
    write_section(Path(args.output), "login", section)
    sys.stdout.write(section)

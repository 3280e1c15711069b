"""Benchmarks: booking and slot search on SQLite and PostgreSQL side by side, over real HTTP.

    python -m bench.run [--bookings N] [--postgres-url URL] [--output BENCHMARKS.md]

Each backend gets a fresh database and a live server on loopback; the same workload runs on
both in one process, one after the other, and the report gives ratios as well as times,
because absolute numbers on a shared machine drift from run to run.
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
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as wall_time
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from bench.document import write_section
from clinicsync.app import create_app
from clinicsync.config import Settings
from clinicsync.db.engine import create_engine, create_sessionmaker, session_scope
from clinicsync.sandbox.generator import generate_clinic
from clinicsync.serving import serving
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.schemas import OrganizationCreate, UserCreate

ZONE = ZoneInfo("America/New_York")


@dataclass
class Result:
    backend: str
    figures: dict[str, float] = field(default_factory=dict)


async def _owner_token(database_url: str) -> str:
    engine = create_engine(database_url)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            organization = await tenancy_service.create_organization(
                session, OrganizationCreate(name="Bench Clinic", time_zone=ZONE.key)
            )
            user = await tenancy_service.create_user(
                session, organization.id, UserCreate(email="bench@example.com", role=Role.OWNER)
            )
            return (await tenancy_service.issue_token(session, user)).token
    finally:
        await engine.dispose()


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def run_backend(name: str, database_url: str, bookings: int, tmp: Path) -> Result:
    settings = Settings(
        database_url=database_url, environment="test", log_level="WARNING", var_dir=tmp / name
    )
    result = Result(name)
    async with serving(create_app(settings)) as base:
        headers = {"Authorization": f"Bearer {await _owner_token(database_url)}"}
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120, limits=limits) as http:
            practitioners = []
            for index in range(5):
                created = (await http.post("/api/v1/practitioners", json={"name": f"Dr. {index}"})).json()
                week = [{"day_of_week": d, "start_time": "07:00", "end_time": "19:00"} for d in range(7)]
                await http.put(
                    f"/api/v1/practitioners/{created['id']}/availability", json={"intervals": week}
                )
                practitioners.append(created["id"])
            patient = (
                await http.post("/api/v1/patients", json={"first_name": "B", "last_name": "Ench"})
            ).json()

            # 1. Sequential bookings at distinct free times: request latency.
            first_day = date.today() + timedelta(days=2)
            latencies = []
            for index in range(bookings):
                day = first_day + timedelta(days=index // 24)
                start = datetime.combine(day, wall_time(7), tzinfo=ZONE) + timedelta(
                    minutes=30 * (index % 24)
                )
                body = {
                    "patient_id": patient["id"],
                    "practitioner_id": practitioners[index % 5],
                    "start": start.isoformat(),
                }
                started = time.perf_counter()
                response = await http.post("/api/v1/appointments", json=body)
                latencies.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 201, response.text
            result.figures["book p50 ms"] = statistics.median(latencies)
            result.figures["book p95 ms"] = _percentile(latencies, 0.95)

            # 2. Contention: 50 overlapping requests for one practitioner at once.
            contested = datetime.combine(first_day + timedelta(days=40), wall_time(12), tzinfo=ZONE)
            body = {
                "patient_id": patient["id"],
                "practitioner_id": practitioners[0],
                "start": contested.isoformat(),
            }
            started = time.perf_counter()
            responses = await asyncio.gather(
                *(http.post("/api/v1/appointments", json=body) for _ in range(50))
            )
            result.figures["50-way race s"] = time.perf_counter() - started
            assert sorted(r.status_code for r in responses).count(201) == 1

            # 3. Slot search over 14 days for all practitioners with the diary above.
            searches = []
            for _ in range(20):
                started = time.perf_counter()
                response = await http.get(
                    "/api/v1/slots",
                    params={
                        "from": first_day.isoformat(),
                        "to": (first_day + timedelta(days=13)).isoformat(),
                    },
                )
                searches.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            result.figures["slot search 14d x5 p50 ms"] = statistics.median(searches)
            result.figures["slots returned"] = float(len(response.json()["slots"]))
    return result


async def _fresh_postgres(admin_url: str) -> tuple[str, str]:
    name = f"clinicsync_bench_{uuid.uuid4().hex[:8]}"
    plain = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(plain)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    return plain, make_url(plain).set(database=name).render_as_string(hide_password=False)


async def _drop_postgres(plain_admin_url: str, url: str) -> None:
    connection = await asyncpg.connect(plain_admin_url)
    await connection.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    await connection.close()


def generator_figures() -> dict[str, float]:
    started = time.perf_counter()
    clinic = generate_clinic(seed=7, patients=10_000, appointments=50_000, today=datetime.now(UTC).date())
    elapsed = time.perf_counter() - started
    return {
        "generate 10k patients + 50k appointments s": elapsed,
        "appointments generated": len(clinic.appointments),
    }


async def main(arguments: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        results = [await run_backend("sqlite", f"sqlite:///{tmp / 'bench.sqlite3'}", arguments.bookings, tmp)]
        if arguments.postgres_url:
            plain, url = await _fresh_postgres(arguments.postgres_url)
            try:
                results.append(await run_backend("postgresql", url, arguments.bookings, tmp))
            finally:
                await _drop_postgres(plain, url)
    lines = [
        "## Booking API",
        "",
        f"Command: `python -m bench.run --bookings {arguments.bookings}"
        + (" --postgres-url ...`" if arguments.postgres_url else "`"),
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Both backends ran in one process, one after the other, "
        "each against a live server on loopback.",
        "",
        "| measure | "
        + " | ".join(r.backend for r in results)
        + (" | postgresql / sqlite |" if len(results) > 1 else " |"),
        "| --- | " + " | ".join("---" for _ in results) + (" | --- |" if len(results) > 1 else " |"),
    ]
    for measure in results[0].figures:
        values = [r.figures[measure] for r in results]
        row = f"| {measure} | " + " | ".join(f"{v:.1f}" if v < 1000 else f"{v:.0f}" for v in values)
        if len(values) > 1:
            row += f" | {values[1] / values[0]:.2f}"
        lines.append(row + " |")
    lines += ["", "## Sandbox data generator", "", "| measure | value |", "| --- | --- |"]
    lines += [f"| {key} | {value:g} |" for key, value in generator_figures().items()]
    lines += [
        "",
        "What the measures are: `book` is one POST /appointments at a free time (validation, availability "
        "check, overlap check, insert) end to end over HTTP; `50-way race` is 50 simultaneous requests "
        "for one overlapping time, of which exactly one must win; `slot search` computes every free "
        "30-minute start for 5 practitioners over 14 days with the diary booked above.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bookings", type=int, default=300)
    parser.add_argument("--postgres-url", default=os.environ.get("CLINICSYNC_TEST_POSTGRES_URL"))
    parser.add_argument("--output", default="BENCHMARKS.md")
    args = parser.parse_args()
    report = asyncio.run(main(args))
    write_section(Path(args.output), "booking", report)
    sys.stdout.write(report)

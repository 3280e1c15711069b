"""Booking speed against a floor, cost against history, SQLite fairness, slot search beside
/health, and several workers: on SQLite and PostgreSQL, in one run.

    python -m bench.speed [--requests N] [--postgres-url URL] [--output BENCHMARKS-speed.md]

Every server is a separate process on loopback (``clinicsync serve`` or the floor app,
bench/bare_app.py); the load comes from this process. Throughput is compared A-B-A: the floor,
then clinicsync, then the floor again, at concurrency 1, 10 and 50, and the ratio is
clinicsync's bookings/s over the mean of the two floor runs, so drift on a shared machine
shows up as a difference between the two A runs rather than as a false ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from clinicsync.booking.models import Appointment
from clinicsync.db import migrate
from clinicsync.db.engine import create_engine, create_sessionmaker, session_scope
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.schemas import OrganizationCreate, UserCreate

CONCURRENCY = (1, 10, 50)
ZONE = "Etc/UTC"
PRACTITIONERS = 50
HISTORY = 50_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


@asynccontextmanager
async def process(command: list[str], env: dict[str, str], port: int) -> AsyncIterator[str]:
    """Starts a server process and yields its URL once /health answers; stops it on exit."""
    with tempfile.TemporaryFile() as errors:
        child = await asyncio.create_subprocess_exec(
            *command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=errors
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 240
            async with httpx.AsyncClient(base_url=base, timeout=5) as http:
                while True:
                    if child.returncode is not None:
                        errors.seek(0)
                        raise RuntimeError(f"{command} exited: {errors.read().decode()[-2000:]}")
                    try:
                        if (await http.get("/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{command} did not start")
                    await asyncio.sleep(0.1)
            yield base
        finally:
            if child.returncode is None:
                child.terminate()
                try:
                    await asyncio.wait_for(child.wait(), timeout=15)
                except TimeoutError:
                    child.kill()


def clinicsync_server(url: str, var: Path, *extra: str) -> tuple[list[str], dict[str, str], int]:
    port = free_port()
    env = {
        "CLINICSYNC_DATABASE_URL": url,
        "CLINICSYNC_LOG_LEVEL": "WARNING",
        "CLINICSYNC_VAR_DIR": str(var),
        "CLINICSYNC_SECRET_KEY": "bench-secret-key-for-encryption-only",
    }
    return [sys.executable, "-m", "clinicsync.cli", "serve", "--port", str(port), *extra], env, port


def bare_server(url: str) -> tuple[list[str], dict[str, str], int]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.bare_app:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    return command, {"BARE_DATABASE_URL": url}, port


@dataclass
class Clinic:
    token: str
    patient_id: str
    practitioner_ids: list[str]
    next_slot: int = 0
    first_day: date = field(default_factory=lambda: datetime.now(UTC).date() + timedelta(days=2))

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def booking(self) -> dict[str, Any]:
        """A free, on-grid, non-conflicting 15-minute booking, a new one each call."""
        index = self.next_slot
        self.next_slot += 1
        practitioner = self.practitioner_ids[index % len(self.practitioner_ids)]
        slot = index // len(self.practitioner_ids)
        start = datetime.combine(self.first_day + timedelta(days=slot // 90), datetime.min.time(), tzinfo=UTC)
        start += timedelta(hours=1, minutes=15 * (slot % 90))
        return {
            "patient_id": self.patient_id,
            "practitioner_id": practitioner,
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=15)).isoformat(),
            "booking_source": "api",
        }


async def owner_token(url: str) -> str:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
        async with session_scope(create_sessionmaker(engine)) as session:
            organization = await tenancy_service.create_organization(
                session, OrganizationCreate(name=f"Bench {uuid.uuid4().hex[:6]}", time_zone=ZONE)
            )
            user = await tenancy_service.create_user(
                session,
                organization.id,
                UserCreate(email=f"{uuid.uuid4().hex[:8]}@bench.example", role=Role.OWNER),
            )
            return (await tenancy_service.issue_token(session, user)).token
    finally:
        await engine.dispose()


async def open_clinic(
    base: str, url: str, practitioners: int, hours: tuple[str, str] = ("00:00", "23:45")
) -> Clinic:
    token = await owner_token(url)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
        settings = {"min_notice_minutes": 0, "slot_interval_minutes": 15, "default_appointment_minutes": 15}
        assert (await http.patch("/api/v1/organization", json=settings)).status_code == 200
        ids = []
        week = [{"day_of_week": d, "start_time": hours[0], "end_time": hours[1]} for d in range(7)]
        for index in range(practitioners):
            created = (await http.post("/api/v1/practitioners", json={"name": f"Dr. {index:03d}"})).json()
            response = await http.put(
                f"/api/v1/practitioners/{created['id']}/availability", json={"intervals": week}
            )
            assert response.status_code == 200, response.text
            ids.append(created["id"])
        patient = await http.post("/api/v1/patients", json={"first_name": "Bench", "last_name": "Patient"})
        assert patient.status_code == 201, patient.text
    return Clinic(token, patient.json()["id"], ids)


@dataclass
class Load:
    rate: float  # completed requests per second
    p50: float  # ms
    p99: float  # ms


async def drive(
    base: str,
    path: str,
    make_body: Callable[[], dict[str, Any]],
    headers: dict[str, str],
    *,
    total: int,
    concurrency: int,
) -> Load:
    """``total`` POSTs from ``concurrency`` clients at once; every one must answer 201."""
    latencies: list[float] = []
    remaining = total
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120, limits=limits) as http:

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                body = make_body()
                started = time.perf_counter()
                response = await http.post(path, json=body)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 201:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text}")

        await asyncio.gather(*(client() for _ in range(min(concurrency, 5))))  # warm up connections
        latencies.clear()
        remaining = total
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Load(len(latencies) / elapsed, statistics.median(latencies), percentile(latencies, 0.99))


async def throughput(backend: str, url: str, bare_url: str, tmp: Path, requests: int) -> dict[str, Any]:
    """A-B-A at each concurrency: floor, clinicsync, floor."""
    figures: dict[str, Any] = {}
    command, env, port = clinicsync_server(url, tmp / f"var-{backend}")
    bare_command, bare_env, bare_port = bare_server(bare_url)
    async with process(command, env, port) as base:
        clinic = await open_clinic(base, url, PRACTITIONERS)
        for concurrency in CONCURRENCY:
            runs = []
            for label in ("A", "B", "A"):
                if label == "A":
                    async with process(bare_command, bare_env, bare_port) as bare_base:
                        runs.append(
                            await drive(
                                bare_base,
                                "/bookings",
                                clinic.booking,
                                {},
                                total=requests,
                                concurrency=concurrency,
                            )
                        )
                else:
                    runs.append(
                        await drive(
                            base,
                            "/api/v1/appointments",
                            clinic.booking,
                            clinic.headers,
                            total=requests,
                            concurrency=concurrency,
                        )
                    )
            floor = (runs[0].rate + runs[2].rate) / 2
            figures[concurrency] = {"floor": runs[0::2], "clinicsync": runs[1], "ratio": runs[1].rate / floor}
    return figures


async def seed_history(url: str, organization_token: str, practitioner_id: str, patient_id: str) -> None:
    """50,000 past appointments left confirmed (never closed: the worst case for the active index)."""
    engine = create_engine(url)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            principal, _ = await tenancy_service.authenticate(session, organization_token)
            organization_id = principal.organization_id
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
            days=HISTORY // 20 + 2
        )
        rows = []
        for index in range(HISTORY):
            at = start + timedelta(minutes=30 * (index % 20) + 24 * 60 * (index // 20))
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "organization_id": organization_id,
                    "patient_id": uuid.UUID(patient_id),
                    "practitioner_id": uuid.UUID(practitioner_id),
                    "starts_at": at,
                    "ends_at": at + timedelta(minutes=30),
                    "blocked_from": at,
                    "blocked_until": at + timedelta(minutes=30),
                    "buffer_before_minutes": 0,
                    "buffer_after_minutes": 0,
                    "status": "confirmed",
                    "booking_source": "pms_sync",
                    "booking_reference": f"H{index:09d}",
                    "notes": "",
                    "practitioner_name": "history",
                    "version": 1,
                    "created_at": at,
                    "updated_at": at,
                }
            )
        # Seeding only: bulk rows straight into the table, in chunks the drivers accept.
        for chunk in range(0, len(rows), 5000):
            async with session_scope(create_sessionmaker(engine)) as session:
                await session.execute(insert(Appointment), rows[chunk : chunk + 5000])
    finally:
        await engine.dispose()


async def history(backend: str, url: str, tmp: Path) -> dict[str, float]:
    """Booking and a 14-day search for a practitioner with 50,000 past appointments vs one with none."""
    command, env, port = clinicsync_server(url, tmp / f"var-history-{backend}")
    async with process(command, env, port) as base:
        clinic = await open_clinic(base, url, 2)
        busy, empty = clinic.practitioner_ids
        await seed_history(url, clinic.token, busy, clinic.patient_id)
        figures: dict[str, float] = {}
        async with httpx.AsyncClient(base_url=base, headers=clinic.headers, timeout=60) as http:
            for name, practitioner in (("empty", empty), ("history", busy)):
                solo = Clinic(
                    clinic.token,
                    clinic.patient_id,
                    [practitioner],
                    first_day=clinic.first_day + timedelta(days=3),
                )
                booked = await drive(
                    base, "/api/v1/appointments", solo.booking, clinic.headers, total=200, concurrency=1
                )
                figures[f"book p50 ms ({name})"] = booked.p50
                searches = []
                for _ in range(30):
                    started = time.perf_counter()
                    response = await http.get(
                        "/api/v1/slots",
                        params={
                            "from": str(clinic.first_day),
                            "to": str(clinic.first_day + timedelta(days=13)),
                            "practitioner_id": practitioner,
                        },
                    )
                    searches.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, response.text
                figures[f"14-day search p50 ms ({name})"] = statistics.median(searches)
        figures["book history / empty"] = figures["book p50 ms (history)"] / figures["book p50 ms (empty)"]
        figures["search history / empty"] = (
            figures["14-day search p50 ms (history)"] / figures["14-day search p50 ms (empty)"]
        )
    return figures


async def search_beside_health(backend: str, url: str, tmp: Path) -> dict[str, float]:
    """Four clients page through 60-day searches over 50 practitioners while /health is polled."""
    command, env, port = clinicsync_server(url, tmp / f"var-search-{backend}")
    async with process(command, env, port) as base:
        clinic = await open_clinic(base, url, PRACTITIONERS, hours=("08:00", "18:00"))
        health: list[float] = []
        sizes: list[int] = []
        counts: list[int] = []
        done = asyncio.Event()
        async with httpx.AsyncClient(base_url=base, headers=clinic.headers, timeout=120) as http:

            async def poll() -> None:
                while not done.is_set():
                    started = time.perf_counter()
                    assert (await http.get("/health")).status_code == 200
                    health.append((time.perf_counter() - started) * 1000)
                    await asyncio.sleep(0.02)

            async def walk(days: int) -> None:
                params: dict[str, Any] = {
                    "from": str(clinic.first_day),
                    "to": str(clinic.first_day + timedelta(days=days - 1)),
                    "limit": 2000,
                }
                found = 0
                while True:
                    response = await http.get("/api/v1/slots", params=params)
                    assert response.status_code == 200, response.text
                    sizes.append(len(response.content))
                    body = response.json()
                    found += len(body["slots"])
                    if body["next_cursor"] is None:
                        break
                    params["cursor"] = body["next_cursor"]
                counts.append(found)

            poller = asyncio.create_task(poll())
            started = time.perf_counter()
            await asyncio.gather(*(walk(60) for _ in range(4)))
            elapsed = time.perf_counter() - started
            done.set()
            await poller
            ninety_started = time.perf_counter()
            await walk(90)
            ninety = time.perf_counter() - ninety_started
    return {
        "health p50 ms": statistics.median(health),
        "health p99 ms": percentile(health, 0.99),
        "4 x 60-day searches s": elapsed,
        "slots per 60-day search": float(counts[0]),
        "bytes per slot": sum(sizes[:-1]) / max(1, sum(counts[:4])) if len(sizes) > 1 else 0.0,
        "largest page KB": max(sizes) / 1024,
        "90-day search s": ninety,
        "slots per 90-day search": float(counts[-1]),
    }


async def workers(backend: str, make_url_: Callable[[], Any], tmp: Path, tries: int = 3) -> dict[str, float]:
    """``clinicsync serve --workers 2`` on a fresh database, ``tries`` times: each must start,
    answer and book through both workers, with the migrations applied once."""
    started_ok = 0
    for attempt in range(tries):
        url, cleanup = await make_url_()
        try:
            command, env, port = clinicsync_server(
                url, tmp / f"var-workers-{backend}-{attempt}", "--workers", "2"
            )
            async with process(command, env, port) as base:
                clinic = await open_clinic(base, url, 2)
                await drive(
                    base, "/api/v1/appointments", clinic.booking, clinic.headers, total=40, concurrency=8
                )
                started_ok += 1
        finally:
            await cleanup()
    return {"fresh starts with 2 workers that served bookings": float(started_ok), "tries": float(tries)}


async def fresh_postgres(admin_url: str) -> tuple[str, Callable[[], Any]]:
    name = f"clinicsync_speed_{uuid.uuid4().hex[:8]}"
    plain = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(plain)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()

    async def drop() -> None:
        dropping = await asyncpg.connect(plain)
        await dropping.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await dropping.close()

    return make_url(plain).set(database=name).render_as_string(hide_password=False), drop


def fresh_sqlite(tmp: Path) -> Callable[[], Any]:
    async def make() -> tuple[str, Callable[[], Any]]:
        path = tmp / f"{uuid.uuid4().hex[:8]}.sqlite3"

        async def nothing() -> None:
            return None

        return f"sqlite:///{path}", nothing

    return make


async def run(arguments: argparse.Namespace) -> str:
    backends: dict[str, Callable[[], Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        backends["sqlite"] = fresh_sqlite(tmp)
        if arguments.postgres_url:

            async def pg() -> tuple[str, Callable[[], Any]]:
                return await fresh_postgres(arguments.postgres_url)

            backends["postgresql"] = pg
        results: dict[str, dict[str, Any]] = {}
        for backend, fresh in backends.items():
            figures: dict[str, Any] = {}
            url, cleanup = await fresh()
            bare_url, bare_cleanup = await fresh()
            try:
                figures["throughput"] = await throughput(backend, url, bare_url, tmp, arguments.requests)
            finally:
                await cleanup()
                await bare_cleanup()
            url, cleanup = await fresh()
            try:
                figures["history"] = await history(backend, url, tmp)
            finally:
                await cleanup()
            url, cleanup = await fresh()
            try:
                figures["search"] = await search_beside_health(backend, url, tmp)
            finally:
                await cleanup()
            figures["workers"] = await workers(backend, fresh, tmp)
            results[backend] = figures
            print(backend, figures, file=sys.stderr, flush=True)
    return report(arguments, results)


SECTION = "## Booking speed, history, fairness, search and workers"


def write_section(path: Path, text: str) -> None:
    """Replaces this benchmark's section of ``path`` (from its heading to the end), or appends it."""
    existing = path.read_text() if path.exists() else "# Benchmarks\n"
    kept = existing.split(SECTION)[0].rstrip("\n")
    path.write_text(kept + "\n\n" + text)


def table_head(*columns: str) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]


def report(arguments: argparse.Namespace, results: dict[str, dict[str, Any]]) -> str:
    command = f"python -m bench.speed --requests {arguments.requests}" + (
        " --postgres-url $CLINICSYNC_TEST_POSTGRES_URL" if arguments.postgres_url else ""
    )
    lines = [
        SECTION,
        "",
        f"Command: `{command}` (one run; {platform.machine()}, {os.cpu_count()} cores shared with "
        f"other work, Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC).",
        "",
        "### Bookings per second against the floor (A-B-A)",
        "",
        "The floor is bench/bare_app.py: same uvicorn, FastAPI, pydantic, SQLAlchemy and driver, a "
        "POST that validates a body and INSERTs one comparable row in one transaction. clinicsync is "
        "`clinicsync serve` (one process, log level WARNING) booking free, non-conflicting 15-minute "
        f"slots over 50 practitioners. {arguments.requests} requests per run; ratio = clinicsync / "
        "mean of the two floor runs. Target >= 0.5.",
        "",
        *table_head(
            "database",
            "clients",
            "floor A1 req/s",
            "clinicsync req/s",
            "floor A2 req/s",
            "ratio",
            "clinicsync p50 ms",
            "p99 ms",
            "p99 / p50",
        ),
    ]
    for backend, figures in results.items():
        for concurrency, run in figures["throughput"].items():
            first, second = run["floor"]
            ours = run["clinicsync"]
            lines.append(
                f"| {backend} | {concurrency} | {first.rate:.0f} | {ours.rate:.0f} | {second.rate:.0f} | "
                f"{run['ratio']:.2f} | {ours.p50:.1f} | {ours.p99:.1f} | {ours.p99 / ours.p50:.1f} |"
            )
    lines += [
        "",
        "SQLite fairness target: p99 / p50 <= 5 at 10 and 50 clients (the sqlite rows above).",
        "",
        f"### Cost flat in history ({HISTORY:,} past appointments of one practitioner, left confirmed)",
        "",
        *table_head(
            "database",
            "book p50 ms, none",
            "book p50 ms, history",
            "ratio",
            "14-day search p50 ms, none",
            "with history",
            "ratio",
        ),
    ]
    for backend, figures in results.items():
        h = figures["history"]
        lines.append(
            f"| {backend} | {h['book p50 ms (empty)']:.1f} | {h['book p50 ms (history)']:.1f} | "
            f"{h['book history / empty']:.2f} | {h['14-day search p50 ms (empty)']:.1f} | "
            f"{h['14-day search p50 ms (history)']:.1f} | {h['search history / empty']:.2f} |"
        )
    lines += [
        "",
        "Target: both ratios <= 1.2.",
        "",
        "### Slot search beside /health (4 clients paging 60-day searches over 50 practitioners, limit 2000)",
        "",
        *table_head(
            "database",
            "/health p50 ms",
            "/health p99 ms",
            "4 searches s",
            "slots per search",
            "bytes per slot",
            "largest page KB",
            "90-day search s",
            "90-day slots",
        ),
    ]
    for backend, figures in results.items():
        s = figures["search"]
        lines.append(
            f"| {backend} | {s['health p50 ms']:.1f} | {s['health p99 ms']:.1f} | "
            f"{s['4 x 60-day searches s']:.1f} | "
            f"{s['slots per 60-day search']:.0f} | {s['bytes per slot']:.0f} | {s['largest page KB']:.0f} | "
            f"{s['90-day search s']:.1f} | {s['slots per 90-day search']:.0f} |"
        )
    lines += [
        "",
        "Target: /health p99 < 50 ms during the searches.",
        "",
        "### Several workers",
        "",
        "| database | fresh databases started with `clinicsync serve --workers 2` and booked through |",
        "| --- | --- |",
    ]
    for backend, figures in results.items():
        w = figures["workers"]
        lines.append(
            f"| {backend} | {w['fresh starts with 2 workers that served bookings']:.0f} of {w['tries']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--postgres-url", default=os.environ.get("CLINICSYNC_TEST_POSTGRES_URL"))
    parser.add_argument("--output", default="BENCHMARKS.md")
    args = parser.parse_args()
    text = asyncio.run(run(args))
    write_section(Path(args.output), text)
    sys.stdout.write(text)

"""Booking speed against a floor, cost against history, SQLite fairness, slot search beside
/health, and several workers: on SQLite and PostgreSQL, in one run.

    python -m bench.speed [--requests N] [--history N] [--search-days N] [--postgres-url URL]
                          [--only throughput,history,search,workers] [--output BENCHMARKS.md | -]

Every server is a separate process on loopback (``clinicsync serve`` or the floor app,
bench/bare_app.py); the load comes from this process. Throughput is compared A-B-A: the floor,
then clinicsync, then the floor again, at concurrency 1, 10 and 50, and the ratio is
clinicsync's bookings/s over the mean of the two floor runs, so drift on a shared machine
shows up as a difference between the two A runs rather than as a false ratio. Both servers are
started once per database and stay up (idle) while the other is measured.

The defaults finish in a few minutes on a 2-core machine; every size is an option.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

from bench import bare_app
from bench.document import write_section
from clinicsync.booking.models import Appointment
from clinicsync.db import migrate
from clinicsync.db.engine import create_engine, create_sessionmaker, session_scope
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.schemas import OrganizationCreate, UserCreate

ZONE = "Etc/UTC"
SECTIONS = ("throughput", "history", "search", "workers")
Fresh = Callable[[], Awaitable[tuple[str, Callable[[], Awaitable[None]]]]]
STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# The pid of each server process by its URL, for reading the CPU time it spends.
PIDS: dict[str, int] = {}
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(base: str) -> float | None:
    """CPU time (user + system, all threads) the server at ``base`` has used so far; None when it
    has several worker processes (their time is not summed here)."""
    pid = PIDS.get(base)
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


@dataclass(frozen=True)
class Sizes:
    requests: int
    practitioners: int
    concurrency: tuple[int, ...]
    history: int
    history_bookings: int
    history_searches: int
    search_practitioners: int
    search_days: int
    search_clients: int
    long_search_days: int
    workers: int
    worker_tries: int


@asynccontextmanager
async def process(command: list[str], env: dict[str, str], port: int) -> AsyncIterator[str]:
    """Starts a server process and yields its URL once /health answers; stops it on exit."""
    with tempfile.TemporaryFile() as errors:
        child = await asyncio.create_subprocess_exec(
            *command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=errors
        )
        base = f"http://127.0.0.1:{port}"
        single = "--workers" not in command or command[command.index("--workers") + 1] == "1"
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
            if single:
                PIDS[base] = child.pid
            yield base
        finally:
            PIDS.pop(base, None)
            if child.returncode is None:
                child.terminate()
                try:
                    await asyncio.wait_for(child.wait(), timeout=15)
                except TimeoutError:
                    child.kill()
                    await child.wait()


def clinicsync_server(url: str, var: Path, workers: int = 1) -> tuple[list[str], dict[str, str], int]:
    port = free_port()
    env = {
        "CLINICSYNC_DATABASE_URL": url,
        "CLINICSYNC_LOG_LEVEL": "WARNING",
        "CLINICSYNC_VAR_DIR": str(var),
        "CLINICSYNC_SECRET_KEY": "bench-secret-key-for-encryption-only",
    }
    command = [sys.executable, "-m", "clinicsync.cli", "serve", "--port", str(port)]
    return [*command, "--workers", str(workers)] if workers > 1 else command, env, port


async def bare_server(url: str, workers: int = 1) -> tuple[list[str], dict[str, str], int]:
    """The floor's command; its table is made here first, so several workers never race to."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(bare_app.metadata.create_all)
    finally:
        await engine.dispose()
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port)]
    command += ["--log-level", "warning", "--workers", str(workers)]
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
    latencies: list[float]  # ms
    client_cpu: float  # share of one core the load generator used
    server_cpu_ms: float | None  # server CPU time per request (one-process servers only)
    dropped: int = 0  # requests whose connection broke (not in the latencies)

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)

    def spread(self) -> str:
        """min / p50 / p99 / max, in ms."""
        return f"{min(self.latencies):.1f} / {self.p50:.1f} / {self.p99:.1f} / {max(self.latencies):.1f}"


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
    errors: list[int] = []
    remaining = total
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120, limits=limits) as http:

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                body = make_body()
                started = time.perf_counter()
                try:
                    response = await http.post(path, json=body)
                except httpx.TransportError:
                    # A dropped keep-alive connection on a starved machine: counted, not timed.
                    errors.append(1)
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 201:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text}")

        # Warm up: open the connections (and the server's pool) before the clock starts.
        remaining = concurrency
        await asyncio.gather(*(client() for _ in range(concurrency)))
        latencies.clear()
        remaining = total
        server_before = cpu_seconds(base)
        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        server_after = cpu_seconds(base)
    server_ms = None
    if server_before is not None and server_after is not None:
        server_ms = (server_after - server_before) * 1000 / len(latencies)
    if len(errors) > total // 20:
        raise RuntimeError(f"{path}: {len(errors)} of {total} requests lost their connection")
    return Load(len(latencies) / elapsed, latencies, cpu / elapsed, server_ms, len(errors))


async def aba(floor_base: str, base: str, clinic: Clinic, *, total: int, concurrency: int) -> dict[str, Any]:
    """Floor, clinicsync, floor at one concurrency; ratio against the mean of the floor runs."""
    runs = []
    for target in (floor_base, base, floor_base):
        ours = target == base
        runs.append(
            await drive(
                target,
                "/api/v1/appointments" if ours else "/bookings",
                clinic.booking,
                clinic.headers if ours else {},
                total=total,
                concurrency=concurrency,
            )
        )
    floor = (runs[0].rate + runs[2].rate) / 2
    return {"floor": (runs[0], runs[2]), "clinicsync": runs[1], "ratio": runs[1].rate / floor}


async def throughput(backend: str, fresh: Fresh, tmp: Path, sizes: Sizes) -> dict[int, Any]:
    """A-B-A at each concurrency against one clinicsync process and one floor process."""
    figures: dict[int, Any] = {}
    url, cleanup = await fresh()
    bare_url, bare_cleanup = await fresh()
    try:
        command, env, port = clinicsync_server(url, tmp / f"var-{backend}")
        bare_command, bare_env, bare_port = await bare_server(bare_url)
        async with process(command, env, port) as base, process(bare_command, bare_env, bare_port) as floor:
            clinic = await open_clinic(base, url, sizes.practitioners)
            for concurrency in sizes.concurrency:
                progress(f"{backend}: throughput at {concurrency} clients")
                figures[concurrency] = await aba(
                    floor, base, clinic, total=sizes.requests, concurrency=concurrency
                )
    finally:
        await cleanup()
        await bare_cleanup()
    return figures


async def seed_history(
    url: str, organization_token: str, practitioner_id: str, patient_id: str, count: int
) -> None:
    """``count`` past appointments left confirmed (never closed: the worst case for the active index)."""
    engine = create_engine(url)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            principal, _ = await tenancy_service.authenticate(session, organization_token)
            organization_id = principal.organization_id
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=count // 20 + 2)
        rows = []
        for index in range(count):
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
        # As autovacuum would soon after such an import: the planner sees the table's real size.
        async with engine.connect() as connection:
            await connection.execute(text("ANALYZE"))
            await connection.commit()
    finally:
        await engine.dispose()


async def history(backend: str, fresh: Fresh, tmp: Path, sizes: Sizes) -> dict[str, Any]:
    """Booking and a 14-day search for a practitioner with a long past vs one with none, in
    alternating rounds (none, history, none, history, ...) so drift hits both alike: bookings in
    blocks of a quarter each, searches one by one."""
    url, cleanup = await fresh()
    try:
        command, env, port = clinicsync_server(url, tmp / f"var-history-{backend}")
        async with process(command, env, port) as base:
            clinic = await open_clinic(base, url, 2)
            busy, empty = clinic.practitioner_ids
            progress(f"{backend}: seeding {sizes.history:,} past appointments")
            await seed_history(url, clinic.token, busy, clinic.patient_id, sizes.history)
            later = clinic.first_day + timedelta(days=3)
            diaries = {
                name: Clinic(clinic.token, clinic.patient_id, [pid], first_day=later)
                for name, pid in (("none", empty), ("history", busy))
            }
            booked: dict[str, list[float]] = {"none": [], "history": []}
            searched: dict[str, list[float]] = {"none": [], "history": []}
            rounds = 4
            progress(f"{backend}: booking and searching beside the history")
            async with httpx.AsyncClient(base_url=base, headers=clinic.headers, timeout=60) as http:

                async def search(diary: Clinic) -> float:
                    started = time.perf_counter()
                    response = await http.get(
                        "/api/v1/slots",
                        params={
                            "from": str(clinic.first_day),
                            "to": str(clinic.first_day + timedelta(days=13)),
                            "practitioner_id": diary.practitioner_ids[0],
                            "limit": 2000,
                        },
                    )
                    assert response.status_code == 200, response.text
                    return (time.perf_counter() - started) * 1000

                await search(diaries["none"])  # starts the search process before the clock
                for _ in range(rounds):
                    for name, diary in diaries.items():
                        load = await drive(
                            base,
                            "/api/v1/appointments",
                            diary.booking,
                            clinic.headers,
                            total=max(1, sizes.history_bookings // rounds),
                            concurrency=1,
                        )
                        booked[name] += load.latencies
                    # Searches alternate one by one, so a pause of the machine hits both alike.
                    for _ in range(max(1, sizes.history_searches // rounds)):
                        for name, diary in diaries.items():
                            searched[name].append(await search(diary))
    finally:
        await cleanup()
    return {"book": booked, "search": searched}


async def start_health_probe(base: str, *extra: str) -> asyncio.subprocess.Process:
    """/health timed from a process of its own (bench/health_probe.py): the load generator parses
    373 KB pages, which a probe in its process would time as well."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.health_probe",
        base,
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def stop_health_probe(prober: asyncio.subprocess.Process) -> list[float]:
    output, _ = await prober.communicate(b"")
    samples: list[float] = json.loads(output)
    return samples


async def health_probe(base: str, *, count: int) -> list[float]:
    return await stop_health_probe(await start_health_probe(base, "--count", str(count)))


async def search_beside_health(backend: str, fresh: Fresh, tmp: Path, sizes: Sizes) -> dict[str, float]:
    """Clients page through long searches over many practitioners while /health is polled."""
    url, cleanup = await fresh()
    try:
        command, env, port = clinicsync_server(url, tmp / f"var-search-{backend}")
        async with process(command, env, port) as base:
            clinic = await open_clinic(base, url, sizes.search_practitioners, hours=("08:00", "18:00"))
            sizes_seen: list[int] = []
            counts: list[int] = []
            async with httpx.AsyncClient(base_url=base, headers=clinic.headers, timeout=120) as http:
                idle = await health_probe(base, count=50)
                prober = await start_health_probe(base)

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
                        sizes_seen.append(len(response.content))
                        body = response.json()
                        found += len(body["slots"])
                        if body["next_cursor"] is None:
                            break
                        params["cursor"] = body["next_cursor"]
                    counts.append(found)

                progress(f"{backend}: {sizes.search_clients} x {sizes.search_days}-day searches, /health")
                started = time.perf_counter()
                await asyncio.gather(*(walk(sizes.search_days) for _ in range(sizes.search_clients)))
                elapsed = time.perf_counter() - started
                health = await stop_health_probe(prober)
                progress(f"{backend}: one {sizes.long_search_days}-day search")
                long_started = time.perf_counter()
                await walk(sizes.long_search_days)
                long_search = time.perf_counter() - long_started
    finally:
        await cleanup()
    return {
        "idle": statistics.median(idle),
        "min": min(health),
        "p50": statistics.median(health),
        "p99": percentile(health, 0.99),
        "max": max(health),
        "samples": float(len(health)),
        "searches s": elapsed,
        "slots": float(counts[0]),
        "bytes per slot": sum(sizes_seen) / max(1, sum(counts)),
        "largest page KB": max(sizes_seen) / 1024,
        "long s": long_search,
        "long slots": float(counts[-1]),
    }


async def workers(backend: str, fresh: Fresh, tmp: Path, sizes: Sizes) -> dict[str, Any]:
    """``clinicsync serve --workers N`` on a fresh database, ``worker_tries`` times: each must
    start (migrating once) and book; the last try also runs A-B-A at the highest concurrency
    against the floor with as many workers."""
    started_ok = 0
    result: dict[str, Any] = {"tries": sizes.worker_tries, "workers": sizes.workers}
    concurrency = max(sizes.concurrency)
    for attempt in range(sizes.worker_tries):
        progress(f"{backend}: --workers {sizes.workers}, fresh database {attempt + 1}/{sizes.worker_tries}")
        url, cleanup = await fresh()
        try:
            var = tmp / f"var-workers-{backend}-{attempt}"
            command, env, port = clinicsync_server(url, var, sizes.workers)
            async with process(command, env, port) as base:
                clinic = await open_clinic(base, url, sizes.practitioners)
                await drive(
                    base, "/api/v1/appointments", clinic.booking, clinic.headers, total=40, concurrency=8
                )
                started_ok += 1
                if attempt == sizes.worker_tries - 1:
                    bare_url, bare_cleanup = await fresh()
                    try:
                        bare = await bare_server(bare_url, sizes.workers)
                        async with process(*bare) as floor:
                            progress(f"{backend}: --workers {sizes.workers} at {concurrency} clients")
                            result["aba"] = await aba(
                                floor, base, clinic, total=sizes.requests, concurrency=concurrency
                            )
                    finally:
                        await bare_cleanup()
        finally:
            await cleanup()
    result["started"] = started_ok
    return result


async def fresh_postgres(admin_url: str) -> tuple[str, Callable[[], Awaitable[None]]]:
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


def fresh_sqlite(tmp: Path) -> Fresh:
    async def make() -> tuple[str, Callable[[], Awaitable[None]]]:
        path = tmp / f"{uuid.uuid4().hex[:8]}.sqlite3"

        async def nothing() -> None:
            return None

        return f"sqlite:///{path}", nothing

    return make


MEASURES = {"throughput": throughput, "history": history, "search": search_beside_health, "workers": workers}


async def run(arguments: argparse.Namespace, sizes: Sizes) -> str:
    backends: dict[str, Fresh] = {}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        if "sqlite" in arguments.backends:
            backends["sqlite"] = fresh_sqlite(tmp)
        if "postgresql" in arguments.backends and arguments.postgres_url:
            admin_url = arguments.postgres_url

            async def pg() -> tuple[str, Callable[[], Awaitable[None]]]:
                return await fresh_postgres(admin_url)

            backends["postgresql"] = pg
        results: dict[str, dict[str, Any]] = {}
        for backend, fresh in backends.items():
            results[backend] = {}
            for section in arguments.only:
                results[backend][section] = await MEASURES[section](backend, fresh, tmp, sizes)
    progress("done")
    return report(arguments, sizes, results)


SECTION = "## Booking speed, history, fairness, search and workers"


def table_head(*columns: str) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]


def cpu_cell(first: Load, second: Load, ours: Load) -> str:
    if first.server_cpu_ms is None or second.server_cpu_ms is None or ours.server_cpu_ms is None:
        return "-"
    floor = (first.server_cpu_ms + second.server_cpu_ms) / 2
    return f"{floor:.1f} / {ours.server_cpu_ms:.1f}"


def spread(samples: list[float]) -> str:
    return f"{min(samples):.1f} / {statistics.median(samples):.1f} / {max(samples):.1f}"


def report(arguments: argparse.Namespace, sizes: Sizes, results: dict[str, dict[str, Any]]) -> str:
    lines = [
        SECTION,
        "",
        f"Command: `{arguments.command_line}`",
        "",
        f"One run; {platform.machine()}, {os.cpu_count()} cores shared with other work (load average "
        f"{os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Only the ratios, taken side by side in this run, "
        "are comparable between runs. Latencies are in ms, as min / p50 / p99 / max.",
    ]
    with_throughput = [b for b, r in results.items() if "throughput" in r]
    if with_throughput:
        lines += [
            "",
            "### Bookings per second against the floor (A-B-A)",
            "",
            "The floor is bench/bare_app.py: same uvicorn, FastAPI, pydantic, SQLAlchemy and driver, a "
            "POST that validates a body and INSERTs one comparable row in one transaction. clinicsync is "
            "`clinicsync serve` (one process, log level WARNING) booking free, non-conflicting 15-minute "
            f"slots over {sizes.practitioners} practitioners. {sizes.requests} requests per run; ratio = "
            "clinicsync / mean of the two floor runs. Target >= 0.5. The load generator shares the 2 "
            "cores; its CPU share (of one core) during the clinicsync run is shown. Server CPU ms per "
            "request is the server process's own CPU time (all threads) over the run divided by the "
            "requests: the figure least moved by other work on the machine. Dropped: requests (of "
            "the three runs) whose keep-alive connection broke, left out of the times; past 5% of a "
            "run the bench stops.",
            "",
            *table_head(
                "database",
                "clients",
                "floor A1 req/s",
                "clinicsync req/s",
                "floor A2 req/s",
                "ratio",
                "floor latency",
                "clinicsync latency",
                "p99 / p50",
                "server CPU ms/req, floor / clinicsync",
                "client CPU",
                "dropped",
            ),
        ]
        for backend in with_throughput:
            for concurrency, run in results[backend]["throughput"].items():
                first, second = run["floor"]
                ours = run["clinicsync"]
                lines.append(
                    f"| {backend} | {concurrency} | {first.rate:.0f} | {ours.rate:.0f} | {second.rate:.0f} | "
                    f"{run['ratio']:.2f} | {first.spread()} | {ours.spread()} | "
                    f"{ours.p99 / ours.p50:.1f} | {cpu_cell(first, second, ours)} | {ours.client_cpu:.2f} | "
                    f"{first.dropped + ours.dropped + second.dropped} |"
                )
        lines += ["", "SQLite fairness target: p99 / p50 <= 5 at 10 and 50 clients (the sqlite rows above)."]
    with_history = [b for b, r in results.items() if "history" in r]
    if with_history:
        lines += [
            "",
            f"### Cost flat in history ({sizes.history:,} past appointments of one practitioner, "
            "left confirmed)",
            "",
            f"One server; {sizes.history_bookings} bookings (one client) and {sizes.history_searches} "
            "14-day searches per practitioner, in alternating rounds: one practitioner with no past, one "
            "with the history (bookings in blocks, searches one by one, after one untimed search that "
            "starts the search process). Ratio = p50 with history / p50 with none. Target <= 1.2.",
            "",
            *table_head(
                "database",
                "book, none",
                "book, history",
                "ratio",
                "14-day search, none",
                "search, history",
                "ratio",
            ),
        ]
        for backend in with_history:
            h = results[backend]["history"]
            book, search = h["book"], h["search"]
            lines.append(
                f"| {backend} | {spread(book['none'])} | {spread(book['history'])} | "
                f"{statistics.median(book['history']) / statistics.median(book['none']):.2f} | "
                f"{spread(search['none'])} | {spread(search['history'])} | "
                f"{statistics.median(search['history']) / statistics.median(search['none']):.2f} |"
            )
        lines += ["", "(min / p50 / max per cell.)"]
    with_search = [b for b, r in results.items() if "search" in r]
    if with_search:
        lines += [
            "",
            f"### Slot search beside /health ({sizes.search_clients} clients paging {sizes.search_days}-day "
            f"searches over {sizes.search_practitioners} practitioners, 08:00-18:00 every day, limit 2000)",
            "",
            *table_head(
                "database",
                "/health idle p50",
                "/health during searches (min / p50 / p99 / max)",
                "samples",
                "searches s",
                "slots per search",
                "bytes per slot",
                "largest page KB",
                f"{sizes.long_search_days}-day search s",
                f"{sizes.long_search_days}-day slots",
            ),
        ]
        for backend in with_search:
            s = results[backend]["search"]
            lines.append(
                f"| {backend} | {s['idle']:.1f} | {s['min']:.1f} / {s['p50']:.1f} / {s['p99']:.1f} / "
                f"{s['max']:.1f} | {s['samples']:.0f} | {s['searches s']:.1f} | {s['slots']:.0f} | "
                f"{s['bytes per slot']:.0f} | {s['largest page KB']:.0f} | {s['long s']:.1f} | "
                f"{s['long slots']:.0f} |"
            )
        lines += ["", "Target: /health p99 < 50 ms during the searches."]
    with_workers = [b for b, r in results.items() if "workers" in r]
    if with_workers:
        lines += [
            "",
            f"### Several workers (`clinicsync serve --workers {sizes.workers}`)",
            "",
            "Each try is a fresh database: the server must start (the parent migrates once), open a "
            "clinic and book through its workers. On the last try, A-B-A against the floor run with "
            f"as many uvicorn workers, at {max(sizes.concurrency)} clients.",
            "",
            *table_head(
                "database",
                "fresh starts that booked",
                "floor A1 req/s",
                "clinicsync req/s",
                "floor A2 req/s",
                "ratio",
                "clinicsync latency",
            ),
        ]
        for backend in with_workers:
            w = results[backend]["workers"]
            cells = "| - | - | - | - | - |"
            if "aba" in w:
                first, second = w["aba"]["floor"]
                ours = w["aba"]["clinicsync"]
                cells = (
                    f"| {first.rate:.0f} | {ours.rate:.0f} | {second.rate:.0f} | "
                    f"{w['aba']['ratio']:.2f} | {ours.spread()} |"
                )
            lines.append(f"| {backend} | {w['started']} of {w['tries']} {cells}")
    lines += [
        "",
        "### Statements per booking",
        "",
        "Pinned by tests/booking/test_booking_statements.py on both databases (SQLAlchemy's cursor "
        "event, only the request's own statements): 8 per `POST /appointments` on SQLite and 7 on "
        "PostgreSQL, one more with an Idempotency-Key, the same with 2,000 past appointments as with "
        "none. SQLite: BEGIN (deferred), token + user + organization, the organization's sync settings, "
        "one query for the practitioner, the patient check, the day's hours and overrides and the "
        "bounded clash check, BEGIN IMMEDIATE, INSERT, sync audit row, change event. PostgreSQL: the "
        "same reads, the organization's change-event lock, INSERT, audit row, change event with its "
        "NOTIFY in the same statement. The same file pins the clash check's plan: a range of the "
        "partial active index bounded on both sides (before, SQLite scanned the whole table: the "
        "query said `status IN (?, ?)`, which SQLite cannot match to the index's literal WHERE).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="bookings per throughput run")
    parser.add_argument("--practitioners", type=int, default=50)
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--history", type=int, default=50_000, help="past appointments of one practitioner")
    parser.add_argument("--history-bookings", type=int, default=120)
    parser.add_argument("--history-searches", type=int, default=20)
    parser.add_argument("--search-practitioners", type=int, default=50)
    parser.add_argument("--search-days", type=int, default=60)
    parser.add_argument("--search-clients", type=int, default=4)
    parser.add_argument("--long-search-days", type=int, default=90)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-tries", type=int, default=2)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections to run: " + ",".join(SECTIONS))
    parser.add_argument("--postgres-url", default=os.environ.get("CLINICSYNC_TEST_POSTGRES_URL"))
    parser.add_argument("--output", default="BENCHMARKS.md", help="section rewritten there; - for none")
    args = parser.parse_args()
    args.only = [name for name in args.only.split(",") if name]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown sections {sorted(unknown)}")
    args.backends = args.backends.split(",")
    # The command as run, without the database's address.
    shown = list(sys.argv[1:])
    for index in range(1, len(shown)):
        if shown[index - 1] == "--postgres-url":
            shown[index] = "$CLINICSYNC_TEST_POSTGRES_URL"
    from_environment = args.postgres_url and "--postgres-url" not in shown
    prefix = ["CLINICSYNC_TEST_POSTGRES_URL=..."] if from_environment else []
    args.command_line = " ".join([*prefix, "python -m bench.speed", *shown])
    sizes = Sizes(
        requests=args.requests,
        practitioners=args.practitioners,
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        history=args.history,
        history_bookings=args.history_bookings,
        history_searches=args.history_searches,
        search_practitioners=args.search_practitioners,
        search_days=args.search_days,
        search_clients=args.search_clients,
        long_search_days=args.long_search_days,
        workers=args.workers,
        worker_tries=args.worker_tries,
    )
    text_ = asyncio.run(run(args, sizes))
    if args.output != "-":
        write_section(Path(args.output), "speed", text_)
    sys.stdout.write(text_)


if __name__ == "__main__":
    main()

"""Commit-to-client latency of change events with many connected SSE clients.

    python -m bench.realtime [--clients 100] [--changes 100] [--postgres-url URL] [--output BENCHMARKS.md]

The server runs as its own process (``clinicsync serve``) so that the clients' parsing doesn't share
its event loop. Every client is subscribed to the same organization; the bench books
``--changes`` appointments one after another and each client notes when each event arrives. The
latency of one delivery is the arrival time minus the event's ``created_at``, which is stamped at
flush, just before commit, so it slightly over-counts. The floor is a plain GET /health round trip
in the same run. The report replaces the section between the realtime markers of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as wall_time
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

from bench.document import write_section
from bench.run import _drop_postgres, _fresh_postgres, _owner_token, _percentile
from clinicsync.db import migrate
from clinicsync.db.engine import create_engine
from clinicsync.serving import server_process

ZONE = ZoneInfo("America/New_York")


@dataclass
class Figures:
    backend: str
    latencies_ms: list[float] = field(default_factory=list)
    floor_ms: float = 0.0
    deliveries: int = 0


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


async def run_backend(name: str, url: str, clients: int, processes: int, changes: int, tmp: Path) -> Figures:
    await _migrate(url)
    token = await _owner_token(url)
    environment = {
        "CLINICSYNC_DATABASE_URL": url,
        "CLINICSYNC_MIGRATE_ON_START": "false",
        "CLINICSYNC_VAR_DIR": str(tmp / name),
        "CLINICSYNC_ENVIRONMENT": "test",
        "CLINICSYNC_LOG_LEVEL": "WARNING",
    }
    figures = Figures(name)
    async with (
        server_process(environment) as base,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
    ):
        practitioner = (await http.post("/api/v1/practitioners", json={"name": "Dr. Bench"})).json()
        week = [{"day_of_week": d, "start_time": "07:00", "end_time": "19:00"} for d in range(7)]
        await http.put(f"/api/v1/practitioners/{practitioner['id']}/availability", json={"intervals": week})
        patient = (await http.post("/api/v1/patients", json={"first_name": "B", "last_name": "Ench"})).json()
        floor = []
        for _ in range(50):
            started = time.perf_counter()
            await http.get("/health")
            floor.append((time.perf_counter() - started) * 1000)
        figures.floor_ms = statistics.median(floor)

        per_process = -(-clients // processes)
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.realtime_clients",
                base,
                token,
                str(min(per_process, clients - index * per_process)),
                str(changes),
                stdout=asyncio.subprocess.PIPE,
            )
            for index in range(processes)
        ]
        for worker in workers:
            assert worker.stdout is not None
            assert (await worker.stdout.readline()).strip() == b"ready"
        first_day = date.today() + timedelta(days=2)
        for index in range(changes):
            day = first_day + timedelta(days=index // 24)
            start = datetime.combine(day, wall_time(7), tzinfo=ZONE) + timedelta(minutes=30 * (index % 24))
            body = {
                "patient_id": patient["id"],
                "practitioner_id": practitioner["id"],
                "start": start.isoformat(),
            }
            response = await http.post("/api/v1/appointments", json=body)
            assert response.status_code == 201, response.text
            await asyncio.sleep(0.1)  # one change at a time: latency, not a backlog
        for worker in workers:
            assert worker.stdout is not None
            figures.latencies_ms += json.loads(await worker.stdout.readline())
            await worker.wait()
    figures.deliveries = len(figures.latencies_ms)
    return figures


def report(results: list[Figures], arguments: argparse.Namespace) -> str:
    lines = [
        "## Real-time events (commit to SSE client)",
        "",
        f"Command: `python -m bench.realtime --clients {arguments.clients} --processes {arguments.processes} "
        f"--changes {arguments.changes}" + (" --postgres-url ...`" if arguments.postgres_url else "`"),
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), "
        f"Python {platform.python_version()}; run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. "
        "Server in its own process; clients spread over separate processes, as over machines. "
        f"Load average at the end: {os.getloadavg()[0]:.1f}.",
        "",
        "| measure | " + " | ".join(r.backend for r in results) + " |",
        "| --- | " + " | ".join("---" for _ in results) + " |",
        "| SSE clients | " + " | ".join(str(arguments.clients) for _ in results) + " |",
        "| deliveries | " + " | ".join(str(r.deliveries) for r in results) + " |",
    ]
    rows = {
        "latency p50 ms": lambda r: statistics.median(r.latencies_ms),
        "latency p99 ms": lambda r: _percentile(r.latencies_ms, 0.99),
        "latency max ms": lambda r: max(r.latencies_ms),
        "floor: GET /health p50 ms": lambda r: r.floor_ms,
        "p50 / floor": lambda r: statistics.median(r.latencies_ms) / r.floor_ms,
    }
    for label, measure in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{measure(r):.1f}" for r in results) + " |")
    lines += [
        "",
        "Target: p99 < 100 ms on both databases. A delivery is one event reaching one client; the "
        "latency counts from the event's flush (just before commit) to the client having parsed it.",
    ]
    return "\n".join(lines)


async def main(arguments: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        results = [
            await run_backend(
                "sqlite",
                f"sqlite:///{tmp / 'rt.sqlite3'}",
                arguments.clients,
                arguments.processes,
                arguments.changes,
                tmp,
            )
        ]
        if arguments.postgres_url:
            plain, url = await _fresh_postgres(arguments.postgres_url)
            try:
                results.append(
                    await run_backend(
                        "postgresql", url, arguments.clients, arguments.processes, arguments.changes, tmp
                    )
                )
            finally:
                await _drop_postgres(plain, url)
    return report(results, arguments)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument(
        "--processes", type=int, default=4, help="client processes the clients are spread over"
    )
    parser.add_argument("--postgres-url", default=os.environ.get("CLINICSYNC_TEST_POSTGRES_URL"))
    parser.add_argument("--output", default="BENCHMARKS.md")
    args = parser.parse_args()
    section = asyncio.run(main(args))
    write_section(Path(args.output), "realtime", section)
    print(section)

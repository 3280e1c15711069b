"""Pull benchmark: a sync run's forward pull of a large vet clinic, side by side with its floor.

    python -m bench.pull [--patients 10000] [--appointments 50000] [--diary-days 365] [--capacity 10]
                         [--days 60] [--rate 2] [--sample 1000] [--output BENCHMARKS.md]
                         (--rate: requests/s in (b); --capacity: visits a 15-minute slot holds)

One vet PIMS sandbox (its own process) holds the clinic, its appointments laid over the next
`--diary-days` days (a run's window reaches 366 days at most, so its slots hold `--capacity`
visits each for all 50,000 to fit: about 140 a day). Each measured stage runs in a process of its
own, so its CPU seconds and peak RSS are its own:

* floor: the day pages of today and the next `--days` days fetched 8 at a time, JSON parsed,
  nothing stored;
* (a) a sync run's forward pull (run type inbound) over the same days, no added latency: every
  visit written, each page checkpointed; then a full run (all four phases) for the cursor;
* (b) the same pull with 20 ms per request and the integration held to `--rate` requests/s,
  against the rate-limit floor (pages / rate);
* (c) an incremental run right after, nothing changed in the PMS;
* (d) a plain loop: list each day's ids, then one request per record (a `--sample` of records,
  its rate reported);
* (e) dlt's rest_api source (the `bench` extra: pip install -e '.[bench]') reading the same day
  pages one after another into DuckDB, merged on the visit id; skipped, and said so, without dlt;
* the floor and (a) again over the whole diary (every appointment of the clinic), in a fresh
  database: peak RSS at the two sizes shows whether memory grows with the records;
* POST /api/integrations/vet_pims `search_patients` served in the stage's process and read by a
  streaming client that keeps nothing: `--sample` patients, then all of them (peak RSS twice).

The section between the pull markers in BENCHMARKS.md is replaced; the rest is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from bench.document import write_section
from clinicsync.config import Settings
from clinicsync.db import migrate
from clinicsync.db.engine import create_engine, create_sessionmaker, session_scope
from clinicsync.integrations.definitions import RateLimitSpec
from clinicsync.integrations.executor import IntegrationExecutor
from clinicsync.integrations.ratebudget import BucketShape
from clinicsync.sync.delivery import SyncContext
from clinicsync.sync.runs import engine, service
from clinicsync.sync.runs.models import RunType, SyncRun

ZONE = "America/Chicago"


def _usage() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime, own.ru_maxrss / 1024.0  # CPU s, peak RSS MiB (Linux: KiB)


# ---- the sandbox process ----------------------------------------------------------------------


async def _serve_sandbox(port: int, patients: int, appointments: int, diary_days: int, capacity: int) -> None:
    from clinicsync.sandbox import run_sandbox

    spec = {
        "seed": 9,
        "patients": patients,
        "appointments": appointments,
        "days_before": 0,
        "days_after": diary_days,
    }
    async with run_sandbox(
        "vet_pims", spec={**spec, "timezone": ZONE}, settings={"capacity_per_slot": capacity}, port=port
    ) as pims:
        # The sandbox lays the visits over the diary, never more than its slots hold.
        zone = ZoneInfo(ZONE)
        last = max(row.start for row in pims.store.appointments.values()).astimezone(zone).date()
        diary_days = (last - datetime.now(zone).date()).days
        held = len(pims.store.appointments)
        found = {"root_url": pims.root_url, "diary_days": diary_days, "appointments": held}
        found |= pims.credentials()
        print(json.dumps(found), flush=True)
        await asyncio.Event().wait()


# ---- stages (each in its own process) ---------------------------------------------------------


def _settings(database_url: str, var_dir: str) -> Settings:
    return Settings(
        database_url=database_url,
        migrate_on_start=False,
        environment="test",
        var_dir=Path(var_dir),
        secret_key="bench-secret-key-for-encryption-only",
        outbound_allowlist=["127.0.0.0/8"],  # the sandbox listens on loopback,
    )


async def _run_stage(args: argparse.Namespace) -> dict[str, Any]:
    settings = _settings(args.database_url, args.var_dir)
    db = create_engine(settings.database_url)
    sessionmaker = create_sessionmaker(db)
    ctx = SyncContext(sessionmaker, IntegrationExecutor(sessionmaker, settings), settings)
    cpu0, _ = _usage()
    began = time.perf_counter()
    async with session_scope(sessionmaker) as session:
        run = await service.start_run(
            session,
            uuid.UUID(args.organization_id),
            uuid.UUID(args.integration_id),
            service.RunRequest(
                # (a) and (b): the forward pull alone, today and the next `days` days, the floor's
                # pages; "full": all four phases (one-day windows back and reconciled), after
                # which (c) is incremental.
                run_type=RunType.INBOUND if args.kind in ("a", "b") else RunType.FULL,
                incremental=args.kind == "c",
                backward_days=0,
                reconcile_days=0,
                forward_days=args.days,
            ),
            settings,
        )
        run_id = run.id
    status = await engine.execute(ctx, run_id)
    elapsed = time.perf_counter() - began
    async with session_scope(sessionmaker, write=False) as session:
        done = await session.get(SyncRun, run_id)
        assert done is not None
        found = sum(int(values.get("found", 0)) for values in done.counts.values() if values)
        appointments = (done.counts.get("appointments") or {}).get("found", 0)
        requests, steps = done.requests_used, done.steps
    await db.dispose()
    cpu1, rss = _usage()
    return {
        "stage": args.kind,
        "status": status,
        "seconds": elapsed,
        "records": appointments or found,
        "requests": requests,
        "cpu": cpu1 - cpu0,
        "rss_mib": rss,
        "steps": steps,
    }


async def _login(client: httpx.AsyncClient, username: str, password: str) -> None:
    answer = await client.post("/login", data={"username": username, "password": password})
    assert answer.status_code in (200, 302, 303), answer.text


def _days(days: int) -> list[date]:
    today = datetime.now(ZoneInfo(ZONE)).date()
    return [today + timedelta(days=offset) for offset in range(days + 1)]


async def _floor_stage(args: argparse.Namespace) -> dict[str, Any]:
    """8 day pages in flight, each parsed; nothing stored: what any client must spend."""
    cpu0, _ = _usage()
    began = time.perf_counter()
    records = requests = 0
    gate = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=args.root_url, timeout=60) as client:
        await _login(client, args.username, args.password)

        async def page(day: date) -> int:
            async with gate:
                answer = await client.get(
                    "/appointments/getCalendarEventData",
                    params={
                        "start": str(day),
                        "end": str(day + timedelta(days=1)),
                        "include_cancelled": "true",
                    },
                )
                return len(json.loads(answer.content))

        counts = await asyncio.gather(*(page(day) for day in _days(args.days)))
        records, requests = sum(counts), len(counts)
    cpu1, rss = _usage()
    return {
        "stage": "floor",
        "seconds": time.perf_counter() - began,
        "records": records,
        "requests": requests,
        "cpu": cpu1 - cpu0,
        "rss_mib": rss,
    }


async def _loop_stage(args: argparse.Namespace) -> dict[str, Any]:
    """The plain way: list a day's ids, then ask for each record on its own, one at a time."""
    cpu0, _ = _usage()
    began = time.perf_counter()
    fetched = requests = 0
    async with httpx.AsyncClient(base_url=args.root_url, timeout=60) as client:
        await _login(client, args.username, args.password)
        for day in _days(args.days):
            listed = await client.get(
                "/appointments/getCalendarEventData",
                params={"start": str(day), "end": str(day + timedelta(days=1))},
            )
            requests += 1
            for event in listed.json():
                if fetched >= args.sample:
                    break
                record = await client.get("/appointments/getAppointment", params={"id": event["id"]})
                record.json()
                fetched += 1
                requests += 1
            if fetched >= args.sample:
                break
    cpu1, rss = _usage()
    return {
        "stage": "d",
        "seconds": time.perf_counter() - began,
        "records": fetched,
        "requests": requests,
        "cpu": cpu1 - cpu0,
        "rss_mib": rss,
    }


def _dlt_stage(args: argparse.Namespace) -> dict[str, Any]:
    """dlt's rest_api source over the same day pages, one request each, merged into DuckDB on the
    visit id (as the sync run upserts): the generic loader a clinic might reach for instead."""
    work = Path(args.var_dir) / "dlt"
    # No telemetry, and dlt's own files under the bench's directory.
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ["DLT_DATA_DIR"] = str(work / "data")
    import dlt
    from dlt.sources.helpers.rest_client.paginators import BasePaginator
    from dlt.sources.rest_api import rest_api_source

    days = _days(args.days)

    class DayPaginator(BasePaginator):  # type: ignore[misc]
        """One page per local day, as the sync run and the floor ask for them."""

        def __init__(self) -> None:
            super().__init__()
            self.index = 0

        def init_request(self, request: Any) -> None:
            self._ask(request)

        def update_state(self, response: Any, data: Any = None) -> None:
            self.index += 1
            self._has_next_page = self.index < len(days)

        def update_request(self, request: Any) -> None:
            self._ask(request)

        def _ask(self, request: Any) -> None:
            if self.index >= len(days):
                return  # dlt asks for the next request before it checks has_next_page
            day = days[self.index]
            request.params = {
                **(request.params or {}),
                "start": str(day),
                "end": str(day + timedelta(days=1)),
                "include_cancelled": "true",
            }

    cpu0 = _all_cpu()
    began = time.perf_counter()
    with httpx.Client(base_url=args.root_url, timeout=60) as client:
        answer = client.post("/login", data={"username": args.username, "password": args.password})
        assert answer.status_code in (200, 302, 303), answer.text
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    paginator = DayPaginator()
    source = rest_api_source(
        {
            "client": {"base_url": args.root_url, "headers": {"Cookie": cookie}, "paginator": paginator},
            "resources": [
                {
                    "name": "appointments",
                    "primary_key": "id",
                    "write_disposition": "merge",
                    "endpoint": {"path": "appointments/getCalendarEventData"},
                }
            ],
        }
    )
    pipeline = dlt.pipeline(
        pipeline_name="bench_pull",
        destination=dlt.destinations.duckdb(str(work / "pull.duckdb")),
        dataset_name="pims",
        pipelines_dir=str(work / "pipelines"),
    )
    pipeline.run(source)
    records = int(pipeline.last_trace.last_normalize_info.row_counts.get("appointments", 0))
    _, rss = _usage()
    return {
        "stage": "e",
        "version": dlt.__version__,
        "seconds": time.perf_counter() - began,
        "records": records,
        "requests": len(days) + 1,  # the day pages and the login
        "cpu": _all_cpu() - cpu0,
        "rss_mib": rss,
    }


def _all_cpu() -> float:
    """CPU seconds of this process and of any it waited for (a loader's worker processes)."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def _endpoint_stage(args: argparse.Namespace) -> dict[str, Any]:
    """The app serves POST /api/integrations/vet_pims in this process; a client here reads the
    streamed answer chunk by chunk and keeps only its tail (for count and pages)."""
    from clinicsync.app import create_app
    from clinicsync.serving import serving

    settings = _settings(args.database_url, args.var_dir)
    cpu0, _ = _usage()
    began = time.perf_counter()
    size, tail = 0, b""
    async with (
        serving(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=300) as client,
    ):
        request = {"function": "search_patients", "params": {}, "max_records": args.sample or None}
        async with client.stream(
            "POST",
            "/api/integrations/vet_pims",
            headers={"Authorization": f"Bearer {args.token}"},
            json=request,
        ) as answer:
            assert answer.status_code == 200, (await answer.aread()).decode()
            async for chunk in answer.aiter_bytes():
                size += len(chunk)
                tail = (tail + chunk)[-1024:]
    found = re.search(rb'"count":(\d+),"pages":(\d+)', tail)
    assert found is not None and b'"error"' not in tail, tail.decode(errors="replace")
    cpu1, rss = _usage()
    return {
        "stage": "endpoint",
        "seconds": time.perf_counter() - began,
        "records": int(found.group(1)),
        "requests": int(found.group(2)),
        "cpu": cpu1 - cpu0,
        "rss_mib": rss,
        "bytes": size,
    }


def _stage_main(args: argparse.Namespace) -> None:
    if args.kind == "e":
        print(json.dumps(_dlt_stage(args)), flush=True)
        return
    runner = {"floor": _floor_stage, "d": _loop_stage, "endpoint": _endpoint_stage}.get(args.kind, _run_stage)
    print(json.dumps(asyncio.run(runner(args))), flush=True)


# ---- the orchestration ------------------------------------------------------------------------


def _stage(kind: str, common: list[str], *extra: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.pull", "stage", "--kind", kind, *common, *extra],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        # The stage's own traceback, not just its exit status.
        sys.stderr.write(done.stderr[-4000:])
        done.check_returncode()
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def _prepare(
    database_url: str, var_dir: str, sandbox: dict[str, Any], rate: int | None
) -> tuple[str, str, str]:
    """An organization with a vet PIMS integration whose sync config pulls."""
    from clinicsync.app import create_app
    from clinicsync.serving import serving
    from clinicsync.tenancy import service as tenancy_service
    from clinicsync.tenancy.models import Role
    from clinicsync.tenancy.schemas import OrganizationCreate, UserCreate

    settings = _settings(database_url, var_dir)
    db = create_engine(database_url)
    await migrate.upgrade(db)
    async with session_scope(create_sessionmaker(db)) as session:
        organization = await tenancy_service.create_organization(
            session, OrganizationCreate(name="Bench Vets", time_zone=ZONE)
        )
        user = await tenancy_service.create_user(
            session, organization.id, UserCreate(email="owner@bench.example", role=Role.OWNER)
        )
        token = (await tenancy_service.issue_token(session, user)).token
    await db.dispose()
    headers = {"Authorization": f"Bearer {token}"}
    limit = (
        {"rate_limit": {"requests": rate, "per_seconds": 1}}
        if rate
        else {"rate_limit": {"requests": 100000, "per_seconds": 1}}
    )
    async with (
        serving(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=60) as client,
    ):
        created = await client.post(
            "/api/admin/integrations",
            headers=headers,
            json={
                "provider_key": "vet_pims",
                "base_url": sandbox["root_url"],
                "settings": {"timezone": ZONE},
                **limit,
            },
        )
        assert created.status_code == 201, created.text
        integration_id = created.json()["id"]
        secret = await client.post(
            "/api/admin/api-credentials",
            headers=headers,
            json={
                "provider_key": "vet_pims",
                "integration_id": integration_id,
                "secrets": {"username": sandbox["username"], "password": sandbox["password"]},
            },
        )
        assert secret.status_code == 201, secret.text
        config = await client.post(
            "/api/admin/integration-settings",
            headers=headers,
            json={
                "integration_id": integration_id,
                "sync_enabled": True,
                "sync_direction": "from_external",
            },
        )
        assert config.status_code == 201, config.text
    return str(organization.id), integration_id, token


def _row(name: str, result: dict[str, Any]) -> str:
    rate = result["records"] / result["seconds"] if result["seconds"] else 0.0
    return (
        f"| {name} | {result['records']:,} | {result['requests']:,} | {result['seconds']:.2f} "
        f"| {rate:,.0f} | {result['cpu']:.2f} | {result['rss_mib']:.0f} |"
    )


def _orchestrate(args: argparse.Namespace) -> None:
    args.load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="clinicsync-pull-bench-"))
    sandbox_process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.pull",
            "sandbox",
            "--patients",
            str(args.patients),
            "--appointments",
            str(args.appointments),
            "--diary-days",
            str(args.diary_days),
            "--capacity",
            str(args.capacity),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    results: dict[str, dict[str, Any]] = {}
    try:
        assert sandbox_process.stdout is not None
        sandbox = json.loads(sandbox_process.stdout.readline())
        args.diary_days = int(sandbox["diary_days"])
        args.held = int(sandbox["appointments"])
        for label, rate in (("fast", None), ("whole", None), ("limited", args.rate)):
            database_url = f"sqlite:///{work / label}.sqlite3"
            organization_id, integration_id, token = asyncio.run(
                _prepare(database_url, str(work / "var"), sandbox, rate)
            )
            common = [
                "--database-url",
                database_url,
                "--var-dir",
                str(work / "var"),
                "--organization-id",
                organization_id,
                "--integration-id",
                integration_id,
                "--root-url",
                sandbox["root_url"],
                "--username",
                sandbox["username"],
                "--password",
                sandbox["password"],
                "--token",
                token,
            ]
            window = ["--days", str(args.days), "--sample", str(args.sample)]
            if label == "fast":
                results["floor"] = _stage("floor", common, *window)
                results["a"] = _stage("a", common, *window)
                results["full"] = _stage("full", common, *window)
                results["c"] = _stage("c", common, *window)
                results["d"] = _stage("d", common, *window)
                if importlib.util.find_spec("dlt") is not None:
                    results["e"] = _stage("e", common, *window)
                results["endpoint_sample"] = _stage("endpoint", common, *window)
                results["endpoint_all"] = _stage("endpoint", common, "--days", "0", "--sample", "0")
            elif label == "whole":
                diary = ["--days", str(args.diary_days), "--sample", str(args.sample)]
                results["floor_whole"] = _stage("floor", common, *diary)
                results["a_whole"] = _stage("a", common, *diary)
            else:
                httpx.put(
                    f"{sandbox['root_url']}/_sandbox/faults", json={"latency_ms": 20}
                ).raise_for_status()
                results["b"] = _stage("b", common, *window)
                httpx.post(f"{sandbox['root_url']}/_sandbox/faults/reset").raise_for_status()
    finally:
        sandbox_process.terminate()
        sandbox_process.wait(timeout=20)
    _report(args, results)


def _records_per_second(result: dict[str, Any]) -> float:
    return float(result["records"] / result["seconds"]) if result["seconds"] else 0.0


def _report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    floor, a, b, c, d = (results[key] for key in ("floor", "a", "b", "c", "d"))
    e = results.get("e")
    floor_whole, a_whole = results["floor_whole"], results["a_whole"]
    sample, everyone = results["endpoint_sample"], results["endpoint_all"]
    rate = _records_per_second
    # The limiter lets no more than `rate` requests into any second: a burst of `capacity`, then
    # `shape.rate` a second (ratebudget.BucketShape), which is the floor a perfect client meets.
    shape = BucketShape.of(RateLimitSpec(requests=args.rate, per_seconds=1))
    rate_floor_seconds = max(0.0, b["requests"] - shape.capacity) / shape.rate
    whole_days = args.diary_days + 1
    rows = [
        _row("floor: 8 pages in flight, parsed, not stored", floor),
        _row("(a) sync run's forward pull, no latency", a),
        _row("full sync run after (a): backward, enrichment, forward, reconcile", results["full"]),
        _row(f"(b) forward pull, 20 ms/request, {args.rate} requests/s", b),
        _row("(c) incremental, nothing changed", c),
        _row(f"(d) one request per record (sample of {args.sample:,})", d),
        _row("(e) dlt rest_api source into DuckDB, same day pages", e)
        if e is not None
        else "| (e) dlt rest_api source | not run: dlt is not installed (pip install -e '.[bench]') "
        "| | | | | |",
        _row(f"floor, whole diary ({whole_days:,} days)", floor_whole),
        _row(f"(a) forward pull, whole diary ({whole_days:,} days, fresh database)", a_whole),
        _row(f"POST /api/integrations/vet_pims search_patients, {args.sample:,} records", sample),
        _row("POST /api/integrations/vet_pims search_patients, all records", everyone),
    ]
    lines = [
        "## Sync pull",
        "",
        f"### Pull ({floor['records']:,} visits in the next {args.days + 1} days of a sandbox vet clinic "
        f"generated with {args.patients:,} patients and {args.held:,} appointments over the next "
        f"{whole_days:,} days (about {args.held / whole_days:.0f} a day); "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, SQLite; `python -m bench.pull`)",
        "",
        "| stage | records | requests | seconds | records/s | CPU s | peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"- (a) reaches {rate(a) / rate(floor):.0%} of the floor's records/s (target 70%), with "
        f"{a['cpu'] / max(floor['cpu'], 1e-9):.1f}x its CPU (it also writes every record and "
        f"checkpoints each page, and its process pays the run's one-time costs: the credential key, "
        f"the provider's login); {rate(a) / max(rate(d), 1e-9):.1f}x the per-record loop (target 20x)"
        + (f"; {rate(a) / max(rate(e), 1e-9):.1f}x dlt (target 15x)." if e is not None else "."),
        f"- Over the whole diary, where one-time costs are spread over {a_whole['records']:,} records, "
        f"(a) reaches {rate(a_whole) / rate(floor_whole):.0%} of the floor's records/s, with "
        f"{a_whole['cpu'] / max(floor_whole['cpu'], 1e-9):.1f}x its CPU.",
        f"- (b) took {b['seconds']:.1f} s for {b['requests']} requests; the rate-limit floor "
        f"(a burst of {shape.capacity:.0f}, then {shape.rate:g}/s, so that no second sees more than "
        f"{args.rate}) is {rate_floor_seconds:.1f} s ({b['seconds'] / max(rate_floor_seconds, 1e-9):.2f}x; "
        "target 1.1x).",
        f"- (c) made {c['requests']} request(s) for the one entity.",
        (
            f"- (e) dlt {e.get('version', '')}: {e['records']:,} records in {e['requests']} requests "
            f"(the day pages and its login), {rate(e):,.0f} records/s with {e['cpu']:.2f} CPU s."
            if e is not None
            else "- (e) dlt's rest_api source was not measured: dlt is not installed here "
            "(it is the `bench` extra: pip install -e '.[bench]')."
        ),
        f"- Peak RSS in the number of records, each size in a process of its own: the sync run "
        f"{a['rss_mib']:.0f} MiB for {a['records']:,} records, {a_whole['rss_mib']:.0f} MiB for "
        f"{a_whole['records']:,} ({a_whole['rss_mib'] / max(a['rss_mib'], 1e-9):.2f}x for "
        f"{a_whole['records'] / max(a['records'], 1):.0f}x the records); the floor "
        f"{floor['rss_mib']:.0f} and {floor_whole['rss_mib']:.0f} MiB; the streamed POST "
        f"/api/integrations answer {sample['rss_mib']:.0f} MiB for {sample['records']:,} records "
        f"({sample['bytes'] / 1e6:.1f} MB), {everyone['rss_mib']:.0f} MiB for {everyone['records']:,} "
        f"({everyone['bytes'] / 1e6:.1f} MB; {everyone['rss_mib'] / max(sample['rss_mib'], 1e-9):.2f}x). "
        "Each process starts at about 150 MiB of imported code.",
    ]
    lines.append(
        f"- The machine's load average was {args.load[0]:.1f} at the start and {os.getloadavg()[0]:.1f} "
        "at the end (others' work shares its 2 cores): rates move with it from run to run."
    )
    section = "\n".join(lines)
    print(section)
    if args.output:
        write_section(Path(args.output), "pull", section)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", nargs="?", default="bench", choices=["bench", "sandbox", "stage"])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--appointments", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--diary-days", type=int, default=365)
    parser.add_argument("--capacity", type=int, default=10)
    parser.add_argument("--rate", type=int, default=2)
    parser.add_argument("--sample", type=int, default=1_000)
    parser.add_argument("--output", default=None)
    parser.add_argument("--kind")
    parser.add_argument("--database-url")
    parser.add_argument("--var-dir")
    parser.add_argument("--organization-id")
    parser.add_argument("--integration-id")
    parser.add_argument("--root-url")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--token")
    args = parser.parse_args()
    if args.command == "sandbox":
        asyncio.run(_serve_sandbox(0, args.patients, args.appointments, args.diary_days, args.capacity))
    elif args.command == "stage":
        _stage_main(args)
    else:
        _orchestrate(args)


if __name__ == "__main__":
    main()

"""Sync fixtures: the app with fast retry settings, and clinics connected to sandbox PMSs.

Delivery runs the way it does in production for each backend: in the server's process on
SQLite; on PostgreSQL through Procrastinate (a worker embedded in the test server, the same
task functions `clinicsync worker` runs).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.app import create_app
from clinicsync.config import Settings
from clinicsync.sandbox import SandboxServer, run_sandbox
from clinicsync.serving import serving
from tests.conftest import RunningServer
from tests.factories import Clinic, Tenant, TenantFactory, open_clinic

SYNC_SETTINGS: dict[str, Any] = {
    "sync_retry_base_seconds": 0.2,
    "sync_retry_max_seconds": 1.0,
    "sync_sweep_interval_seconds": 1.0,
    "sync_read_back_delay_seconds": 0.0,
    "sync_lease_seconds": 10.0,
    "sync_embedded_worker": True,
    "sync_worker_concurrency": 8,
}


def sync_settings(database_url: str, var_dir: Any, **overrides: Any) -> Settings:
    return Settings(
        database_url=database_url,
        migrate_on_start=False,
        environment="test",
        var_dir=var_dir,
        secret_key="test-secret-key-for-encryption-only",
        **(SYNC_SETTINGS | overrides),
    )


@pytest.fixture
async def server(
    database_url: str, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Any
) -> AsyncIterator[RunningServer]:
    settings = sync_settings(database_url, tmp_path / "var")
    async with serving(create_app(settings)) as base_url:
        yield RunningServer(base_url, settings)


@pytest.fixture
async def sandboxes() -> AsyncIterator[Callable[..., Awaitable[SandboxServer]]]:
    async with AsyncExitStack() as stack:

        async def start(provider: str, **options: Any) -> SandboxServer:
            return await stack.enter_async_context(run_sandbox(provider, **options))

        yield start


@dataclass
class Connected:
    """A clinic whose organization has an integration with a sandbox PMS."""

    clinic: Clinic
    sandbox: SandboxServer
    integration_id: str
    pms: httpx.AsyncClient  # straight to the sandbox's API, as the PMS's own staff would see it

    @property
    def headers(self) -> dict[str, str]:
        return self.clinic.headers


FAST_HTTP = {
    "rate_limit": {"requests": 2000, "per_seconds": 1},
    "retry": {"attempts": 2, "base_delay": 0.05, "max_delay": 0.2, "max_retry_after": 2},
    "timeout_seconds": 2,
}


async def connect_opendental(
    client: httpx.AsyncClient, tenant: Tenant, sandbox: SandboxServer, **integration: Any
) -> tuple[str, httpx.AsyncClient, dict[str, Any]]:
    od: Any = sandbox.od  # type: ignore[attr-defined]
    writer = next(key for key, access in od.customer_keys.items() if access == "readwrite")
    pms = httpx.AsyncClient(
        base_url=sandbox.base_url,
        headers={"Authorization": f"ODFHIR {od.developer_key}/{writer}", "Content-Type": "application/json"},
        timeout=10,
    )
    operatories = (await pms.get("/operatories")).json()
    providers = (await pms.get("/providers")).json()
    created = await client.post(
        "/api/admin/integrations",
        headers=tenant.headers,
        json={
            "provider_key": "opendental",
            "base_url": sandbox.base_url,
            "settings": {"operatory_id": operatories[0]["OperatoryNum"], "timezone": tenant.time_zone},
            **(FAST_HTTP | integration),
        },
    )
    assert created.status_code == 201, created.text
    integration_id = created.json()["id"]
    credential = await client.post(
        "/api/admin/api-credentials",
        headers=tenant.headers,
        json={
            "provider_key": "opendental",
            "integration_id": integration_id,
            "secrets": {"developer_key": od.developer_key, "customer_key": writer},
        },
    )
    assert credential.status_code == 201, credential.text
    return integration_id, pms, providers[0]


@pytest.fixture
async def opendental(
    client: httpx.AsyncClient,
    tenant_factory: TenantFactory,
    sandboxes: Callable[..., Awaitable[SandboxServer]],
) -> AsyncIterator[Connected]:
    """A clinic connected to a fresh OpenDental sandbox; its practitioner has a provider's name there."""
    sandbox = await sandboxes("opendental", spec={"patients": 3, "appointments": 0})
    tenant = await tenant_factory(time_zone="America/Chicago")
    integration_id, pms, provider = await connect_opendental(client, tenant, sandbox)
    clinic = await open_clinic(
        client, tenant, name=f"{provider['FName']} {provider['LName']}", start="00:00", end="23:59"
    )
    try:
        yield Connected(clinic, sandbox, integration_id, pms)
    finally:
        await pms.aclose()


async def configure(client: httpx.AsyncClient, connected: Connected, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/admin/integration-settings",
        headers=connected.headers,
        json={"integration_id": connected.integration_id, **fields},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


DUAL_WRITE = {"sync_enabled": True, "sync_direction": "to_external", "always_keep_local_copy": True}
EXTERNAL_ONLY = {"sync_enabled": True, "sync_direction": "to_external", "always_keep_local_copy": False}


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 20.0, interval: float = 0.1
) -> Any:
    """Polls until ``check`` returns something truthy (delivery is asynchronous by design)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last result: {result!r}")
        await asyncio.sleep(interval)


async def outbox_report(sessionmaker: async_sessionmaker[AsyncSession]) -> str:
    """The outbox's state in a few lines, for a failed wait: what is owed, why, and what blocks it.

    Status counts; per unfinished status the attempts, the oldest next attempt and the last
    errors; how many pending items are held back by their chain (something earlier or in
    flight) and by what; references by sync state (with mismatches and read-back attempts);
    and, on PostgreSQL, Procrastinate's jobs by status.
    """
    from sqlalchemy import func, select, text

    from clinicsync.db.base import utcnow
    from clinicsync.db.engine import session_scope
    from clinicsync.sync import outbox
    from clinicsync.sync.models import ExternalReference, OutboxItem, OutboxStatus

    lines: list[str] = [f"outbox at {utcnow().isoformat()}:"]
    async with session_scope(sessionmaker, write=False) as session:
        by_status = await session.execute(
            select(OutboxItem.status, OutboxItem.record_type, func.count(), func.max(OutboxItem.attempts))
            .group_by(OutboxItem.status, OutboxItem.record_type)
            .order_by(OutboxItem.status)
        )
        for status, record_type, count, attempts in by_status:
            lines.append(f"  {status.value:<9} {record_type.value:<11} {count:>6}  max attempts {attempts}")
        unfinished = list(
            await session.scalars(
                select(OutboxItem)
                .where(
                    OutboxItem.status.in_((OutboxStatus.PENDING, OutboxStatus.IN_FLIGHT, OutboxStatus.FAILED))
                )
                .order_by(OutboxItem.seq)
            )
        )
        now = utcnow()
        if unfinished:
            due = [
                item
                for item in unfinished
                if item.status == OutboxStatus.PENDING and item.next_attempt_at <= now
            ]
            lease_gone = [
                item
                for item in unfinished
                if item.status == OutboxStatus.IN_FLIGHT
                and item.lease_until is not None
                and item.lease_until < now
            ]
            chains = {(item.integration_id, item.chain_key) for item in unfinished}
            blocked = 0
            for item in due:
                blocked += bool(
                    await session.scalar(
                        select(
                            outbox._chain_blocked(
                                item.seq, item.integration_id, item.chain_key, item.id, item.record_id
                            )
                        )
                    )
                )
            lines.append(
                f"  unfinished {len(unfinished)} in {len(chains)} chains; pending and due {len(due)}"
                f" (held back by their chain {blocked}); in flight past their lease {len(lease_gone)};"
                f" maybe_sent {sum(item.maybe_sent for item in unfinished)}"
            )
            later = [item.next_attempt_at for item in unfinished if item.next_attempt_at > now]
            if later:
                soonest, latest = ((when - now).total_seconds() for when in (min(later), max(later)))
                lines.append(f"  next attempts from +{soonest:.1f} s to +{latest:.1f} s")
            errors: Counter[str] = Counter(
                f"{item.status.value} {item.last_error_code}: {(item.last_error or '')[:100]}"
                for item in unfinished
            )
            for error, count in errors.most_common(8):
                lines.append(f"  {count:>6} x {error}")
            for item in unfinished[:5]:
                lines.append(
                    f"  e.g. seq {item.seq} {item.record_type.value} {item.operation.value}"
                    f" {item.status.value}"
                    f" attempts {item.attempts} next {item.next_attempt_at:%H:%M:%S} lease {item.lease_until}"
                    f" by {item.claimed_by}"
                )
        ref_states = await session.execute(
            select(
                ExternalReference.record_type,
                ExternalReference.sync_state,
                func.count(),
                func.count(ExternalReference.mismatch),
                func.max(ExternalReference.read_back_attempts),
            ).group_by(ExternalReference.record_type, ExternalReference.sync_state)
        )
        for record_type, state, count, mismatched, read_backs in ref_states:
            lines.append(
                f"  ref {record_type.value:<12} {state.value:<10} {count:>6}"
                f"  mismatched {mismatched}  max read-back attempts {read_backs}"
            )
        if session.get_bind().dialect.name == "postgresql":
            jobs = await session.execute(
                text("SELECT task_name, status, count(*) FROM procrastinate_jobs GROUP BY 1, 2 ORDER BY 1, 2")
            )
            lines.extend(f"  job {task:<14} {status:<10} {count:>6}" for task, status, count in jobs)
    return "\n".join(lines)


# How long to wait for a backlog of owed pushes to be delivered and read back. CLINICSYNC_SYNC_SCALE
# multiplies the counts of the slow tests, and a fixed wait that suits the default sizes then
# fails for want of time, not of a push: the outbox state printed on such failures showed every
# item delivered or due, no chain held back and no lease left behind. So the wait grows with the
# work, from the slowest drain measured: PostgreSQL, the test server's embedded worker, 2 cores
# shared with other builds (load average about 7), delivered 3.7 outbox items a second and read
# back 11 a second, about 2.8 pushes a second delivered and confirmed; half of that is allowed.
CONFIRMED_PER_SECOND = 1.4


def drain_timeout(pushes: int, *, at_least: float) -> float:
    """Seconds to wait for ``pushes`` owed items to be confirmed (never less than ``at_least``)."""
    return max(at_least, 60 + pushes / CONFIRMED_PER_SECOND)


async def eventually_or_report(
    check: Callable[[], Awaitable[Any]],
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    timeout: float,
    interval: float = 0.5,
) -> Any:
    """`eventually`, and when it times out the failure carries the outbox's state (readable in CI).

    Every ten seconds it prints one line of counts (seen with ``pytest -s``), which is how the
    drain rate behind the scaled waits was measured.
    """
    loop = asyncio.get_running_loop()
    started = last = loop.time()

    async def check_and_tell() -> Any:
        nonlocal last
        if loop.time() - last >= 10:
            last = loop.time()
            print(f"[{last - started:5.0f} s] {await outbox_counts(sessionmaker)}", flush=True)
        return await check()

    try:
        return await eventually(check_and_tell, timeout=timeout, interval=interval)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{await outbox_report(sessionmaker)}") from None


async def outbox_counts(sessionmaker: async_sessionmaker[AsyncSession]) -> str:
    from sqlalchemy import func, select

    from clinicsync.db.engine import session_scope
    from clinicsync.sync.models import ExternalReference, OutboxItem

    async with session_scope(sessionmaker, write=False) as session:
        items = await session.execute(select(OutboxItem.status, func.count()).group_by(OutboxItem.status))
        refs = await session.execute(
            select(ExternalReference.sync_state, func.count()).group_by(ExternalReference.sync_state)
        )
        outbox_part = " ".join(f"{status.value}={count}" for status, count in items)
        refs_part = " ".join(f"{state.value}={count}" for state, count in refs)
    return f"outbox {outbox_part}; refs {refs_part}"


async def refs_of(client: httpx.AsyncClient, connected: Connected, path: str) -> list[dict[str, Any]]:
    response = await client.get(path, headers=connected.headers)
    assert response.status_code == 200, response.text
    refs: list[dict[str, Any]] = response.json()["external_refs"]
    return refs


def new_id() -> str:
    return str(uuid.uuid4())


async def connect_google(
    client: httpx.AsyncClient, tenant: Tenant, google: SandboxServer
) -> tuple[str, httpx.AsyncClient, str]:
    """A Google Calendar integration with a bearer credential; answers its id, a client of the
    calendar's own API and the calendar id."""
    info = google.credentials()
    created = await client.post(
        "/api/admin/integrations",
        headers=tenant.headers,
        json={
            "provider_key": "google_calendar",
            "base_url": google.base_url,
            "auth": {"type": "bearer"},
            "settings": {"calendar_id": info["calendar_id"]},
            **FAST_HTTP,
        },
    )
    assert created.status_code == 201, created.text
    integration_id = str(created.json()["id"])
    credential = await client.post(
        "/api/admin/api-credentials",
        headers=tenant.headers,
        json={
            "provider_key": "google_calendar",
            "integration_id": integration_id,
            "secrets": {"token": info["access_token"]},
        },
    )
    assert credential.status_code == 201, credential.text
    api = httpx.AsyncClient(
        base_url=google.base_url, headers={"Authorization": f"Bearer {info['access_token']}"}, timeout=10
    )
    return integration_id, api, info["calendar_id"]

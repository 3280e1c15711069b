"""Shared fixtures: every database test runs on SQLite and on PostgreSQL, against a live server.

* ``database_url`` is parametrized over both backends. PostgreSQL comes from
  CLINICSYNC_TEST_POSTGRES_URL; each xdist worker gets a fresh database of its own,
  dropped at the end. Under CI=true a missing PostgreSQL fails the run instead of skipping.
* ``sessionmaker`` empties every table before the test, so tests see committed data on
  real connections (races and cross-connection reads need that; a rolled-back outer
  transaction would hide them).
* ``server`` runs the real app under uvicorn on a free loopback port.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.app import create_app
from clinicsync.config import Settings
from clinicsync.db import migrate
from clinicsync.db.engine import create_engine, create_sessionmaker, session_scope
from clinicsync.db.models import metadata
from clinicsync.serving import serving
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.schemas import OrganizationCreate, UserCreate
from tests.factories import Clinic, Tenant, TenantFactory, open_clinic
from tests.statements import Statements

BACKENDS = ("sqlite", "postgresql")
T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also from a thread whose loop is busy (Playwright's sync API keeps one running)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


# The sandbox PMS servers listen on loopback; tests allow it as an operator would allow a PMS
# on the clinic's own network. Tests of the refusal build their Settings with an empty list.
os.environ.setdefault("CLINICSYNC_OUTBOUND_ALLOWLIST", '["127.0.0.0/8", "::1/128", "localhost"]')


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


async def _create_postgres_database(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop_postgres_database(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


def _backend_of(item: pytest.Item) -> object:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("database_url") if callspec is not None else None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow go first within each backend's run of tests (pytest has grouped them by
    backend, so each database is set up once). Under xdist a worker that draws a 40 s test near
    the end would otherwise finish alone while the other waits."""
    ordered: list[pytest.Item] = []
    for _, group in itertools.groupby(items, key=_backend_of):
        run = list(group)
        ordered += sorted(run, key=lambda item: item.get_closest_marker("slow") is None)
    items[:] = ordered


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'clinicsync.sqlite3'}"
        run_async(_migrate(url))
        yield url
        return
    admin_url = os.environ.get("CLINICSYNC_TEST_POSTGRES_URL")
    if not admin_url:
        message = "CLINICSYNC_TEST_POSTGRES_URL is not set; PostgreSQL tests cannot run"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    name = f"clinicsync_test_{_worker()}_{uuid.uuid4().hex[:8]}"
    plain_admin_url = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        run_async(_create_postgres_database(plain_admin_url, name))
    except (OSError, asyncpg.PostgresError) as error:
        pytest.fail(f"PostgreSQL at CLINICSYNC_TEST_POSTGRES_URL is not usable: {error}")
    url = make_url(plain_admin_url).set(database=name).render_as_string(hide_password=False)
    run_async(_migrate(url))
    yield url
    run_async(_drop_postgres_database(plain_admin_url, name))


@pytest.fixture
def backend(database_url: str) -> str:
    return make_url(database_url).get_backend_name()


# Children before parents, so each DELETE meets no row that another table still points at.
_TABLES = [table.name for table in reversed(metadata.sorted_tables)]
# Which tables hold rows, in one round trip: most tests write to a handful of the tables.
_TABLES_WITH_ROWS = " UNION ALL ".join(
    f"SELECT '{name}' WHERE EXISTS (SELECT 1 FROM \"{name}\")" for name in _TABLES
)


# The provider catalogue (the shipped definitions, organization_id NULL) stays: every server
# loads it as it starts and finds it unchanged, as a restarted server does; loading it afresh
# cost each test about 0.2 s. No API writes to it (catalogue providers are read-only).
_TENANT_INTEGRATIONS = "SELECT id FROM external_integrations WHERE organization_id IS NOT NULL"
_KEEP_CATALOGUE = {
    "external_integrations": " WHERE organization_id IS NOT NULL",
    "integration_endpoints": f" WHERE integration_id IN ({_TENANT_INTEGRATIONS})",
    "integration_parameter_maps": f" WHERE integration_id IN ({_TENANT_INTEGRATIONS})",
}


async def _empty_all_tables(maker: async_sessionmaker[AsyncSession]) -> None:
    """Deletes every row the last test left but the catalogue. Only tables holding rows are
    touched: a TRUNCATE of every table costs PostgreSQL about 0.1 s even when all are empty (new
    files for each table), while a DELETE of a few rows costs a millisecond."""
    async with session_scope(maker) as session:
        written = set((await session.execute(text(_TABLES_WITH_ROWS))).scalars())
        for name in _TABLES:
            if name in written:
                await session.execute(text(f'DELETE FROM "{name}"' + _KEEP_CATALOGUE.get(name, "")))


@pytest.fixture
async def sessionmaker(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    maker = create_sessionmaker(engine)
    await _empty_all_tables(maker)
    yield maker
    await engine.dispose()


@dataclass
class RunningServer:
    base_url: str
    settings: Settings


@pytest.fixture
async def server(
    database_url: str, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Any
) -> AsyncIterator[RunningServer]:
    settings = Settings(
        database_url=database_url,
        migrate_on_start=False,
        environment="test",
        var_dir=tmp_path / "var",
        secret_key="test-secret-key-for-encryption-only",
    )
    async with serving(create_app(settings)) as base_url:
        yield RunningServer(base_url, settings)


@pytest.fixture
def tenant_factory(sessionmaker: async_sessionmaker[AsyncSession]) -> TenantFactory:
    async def make(
        *,
        time_zone: str = "America/New_York",
        role: Role = Role.OWNER,
        organization_id: uuid.UUID | None = None,
    ) -> Tenant:
        async with session_scope(sessionmaker) as session:
            if organization_id is None:
                organization = await tenancy_service.create_organization(
                    session, OrganizationCreate(name=f"Clinic {uuid.uuid4().hex[:6]}", time_zone=time_zone)
                )
                organization_id = organization.id
            else:
                organization = await tenancy_service.get_organization(session, organization_id)
            user = await tenancy_service.create_user(
                session,
                organization_id,
                UserCreate(email=f"{role.value}-{uuid.uuid4().hex[:6]}@example.com", role=role),
            )
            issued = await tenancy_service.issue_token(session, user, name="test")
            return Tenant(organization_id, user.id, issued.token, organization.time_zone)

    return make


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        yield http


@pytest.fixture
async def clinic(client: httpx.AsyncClient, tenant_factory: TenantFactory) -> Clinic:
    return await open_clinic(client, await tenant_factory())


@pytest.fixture
def statements() -> Iterator[Statements]:
    """The SQL statements each request runs (see tests/statements.py)."""
    counter = Statements()
    event.listen(Engine, "before_cursor_execute", counter.record)
    yield counter
    event.remove(Engine, "before_cursor_execute", counter.record)

"""The `clinicsync` command: serve, demo, db, admin (and the sandbox and providers groups)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
import uvicorn
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.config import get_settings
from clinicsync.db import migrate
from clinicsync.db.engine import create_engine, create_sessionmaker, session_scope
from clinicsync.errors import ClinicSyncError, NotFound
from clinicsync.integrations.cli import app as providers_app
from clinicsync.integrations.cli import rotate_key_command
from clinicsync.sandbox.cli import app as sandbox_app
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Role, User
from clinicsync.tenancy.schemas import OrganizationCreate, UserCreate

app = typer.Typer(help="clinicsync: booking for clinics, kept in step with their PMS.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
admin_app = typer.Typer(help="Organizations, users and tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(providers_app, name="providers")
admin_app.command("rotate-key")(rotate_key_command)
console = Console(soft_wrap=True)


T = TypeVar("T")


def _in_session(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Runs one unit of admin work in a transaction on a migrated database; domain errors exit 2."""

    async def run() -> T:
        engine = create_engine(get_settings().database_url)
        try:
            await migrate.upgrade(engine)
            async with session_scope(create_sessionmaker(engine)) as session:
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except ClinicSyncError as error:
        raise _fail(error.message) from None


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
) -> None:
    """Run the HTTP API (migrates the database first)."""
    settings = get_settings()
    from clinicsync.app import create_app

    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level="warning",
        timeout_graceful_shutdown=5,  # event streams never end by themselves
    )


@app.command()
def demo(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
) -> None:
    """Seed a demo clinic on the embedded database and start the server."""
    from clinicsync.app import create_app
    from clinicsync.demo import DEMO_PASSWORD, seed_demo

    settings = get_settings()
    if not settings.outbound_allowlist:
        # The demo's PMS is a sandbox on this machine.
        settings = settings.model_copy(update={"outbound_allowlist": ["127.0.0.0/8", "::1/128", "localhost"]})
    seeded = asyncio.run(seed_demo(settings.database_url))
    base = f"http://{host}:{port}"
    console.print(f"[bold green]clinicsync demo[/bold green] running at {base}  (API docs: {base}/docs)")
    console.print(f"Organization: {seeded.organization_name} ({seeded.time_zone})")
    console.print(f"Admin token:  {seeded.admin_token}")
    console.print(f"Pages: {base}/login  (password for every login: {DEMO_PASSWORD})")
    for role, email in seeded.logins:
        console.print(f"  {role:<22} {email}")
    console.print(f'Try:  curl -H "Authorization: Bearer {seeded.admin_token}" {base}/api/v1/practitioners')
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Pushes delivered at once by this process")] = None,
) -> None:
    """Deliver sync pushes (PostgreSQL): run as many of these as you like, on any machines."""
    from clinicsync.jobs.worker import WorkerNeedsPostgres, run_worker

    try:
        asyncio.run(run_worker(get_settings(), concurrency=concurrency))
    except WorkerNeedsPostgres as error:
        raise _fail(str(error)) from None


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""

    async def run() -> None:
        engine = create_engine(get_settings().database_url)
        try:
            await migrate.upgrade(engine, revision)
        finally:
            await engine.dispose()

    asyncio.run(run())
    console.print(f"database upgraded to {revision}")


@admin_app.command("create-org")
def create_org(
    name: Annotated[str, typer.Option(help="Clinic name")],
    time_zone: Annotated[str, typer.Option("--time-zone", help="IANA zone, e.g. America/New_York")],
    slug: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Create an organization and print its id."""
    try:
        data = OrganizationCreate(name=name, time_zone=time_zone, slug=slug)
    except ValueError as error:
        raise _fail(str(error)) from None

    async def create(session: AsyncSession) -> uuid.UUID:
        return (await tenancy_service.create_organization(session, data)).id

    console.print(str(_in_session(create)))


@admin_app.command("create-user")
def create_user(
    organization_id: Annotated[uuid.UUID, typer.Option("--org", help="Organization id")],
    email: Annotated[str, typer.Option()],
    role: Annotated[Role, typer.Option()] = Role.ADMIN,
    password: Annotated[str | None, typer.Option(help="Omit for a token-only (e.g. service) user")] = None,
    full_name: Annotated[str, typer.Option()] = "",
) -> None:
    """Create a user and print its id."""
    try:
        data = UserCreate(email=email, role=role, password=password, full_name=full_name)
    except ValueError as error:
        raise _fail(str(error)) from None

    async def create(session: AsyncSession) -> uuid.UUID:
        await tenancy_service.get_organization(session, organization_id)
        return (await tenancy_service.create_user(session, organization_id, data)).id

    console.print(str(_in_session(create)))


@admin_app.command("create-token")
def create_token(
    user_id: Annotated[uuid.UUID, typer.Option("--user", help="User id")],
    name: Annotated[str, typer.Option()] = "cli",
    expires_in_days: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Issue an API token for a user; it is printed once and only its hash is stored."""

    async def issue(session: AsyncSession) -> str:
        user = await session.get(User, user_id)
        if user is None or not user.is_active:
            raise NotFound(f"--user: no active user {user_id}")
        issued = await tenancy_service.issue_token(session, user, name=name, expires_in_days=expires_in_days)
        return issued.token

    console.print(_in_session(issue))


if __name__ == "__main__":
    app()

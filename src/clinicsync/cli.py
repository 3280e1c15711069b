"""The `clinicsync` command: serve, demo, db, admin (and the sandbox and providers groups)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import httpx
import typer
import uvicorn
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.config import Settings, get_settings
from clinicsync.db import migrate
from clinicsync.db.engine import create_engine, create_sessionmaker, session_scope
from clinicsync.errors import ClinicSyncError, NotFound
from clinicsync.integrations.cli import app as providers_app
from clinicsync.integrations.cli import rotate_key_command
from clinicsync.sandbox.cli import app as sandbox_app
from clinicsync.sync.runs.cli import sync_app
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Role, User
from clinicsync.tenancy.schemas import OrganizationCreate, UserCreate

if TYPE_CHECKING:
    from clinicsync.demo import DemoClinic
    from clinicsync.demo_pms import DemoPms

app = typer.Typer(help="clinicsync: booking for clinics, kept in step with their PMS.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
admin_app = typer.Typer(help="Organizations, users and tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(providers_app, name="providers")
app.add_typer(sync_app, name="sync")
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
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Processes serving requests (default: $WEB_CONCURRENCY or 1)"),
    ] = None,
) -> None:
    """Run the HTTP API (migrates the database first, once, whatever the number of workers)."""
    settings = get_settings()
    count = workers or _web_concurrency()
    bind_host, bind_port = host or settings.host, port or settings.port
    if count == 1:
        from clinicsync.app import create_app

        uvicorn.run(
            create_app(settings),
            host=bind_host,
            port=bind_port,
            log_level="warning",
            timeout_graceful_shutdown=5,  # event streams never end by themselves
        )
        return
    if settings.migrate_on_start:
        _migrate(settings.database_url)
    # The workers are fresh processes that read their settings from the environment: the
    # migrations above are done, so they skip theirs.
    os.environ["CLINICSYNC_MIGRATE_ON_START"] = "false"
    uvicorn.run(
        "clinicsync.app:create_app",
        factory=True,
        host=bind_host,
        port=bind_port,
        workers=count,
        log_level="warning",
        # A worker must report ready within this; the app's start (imports, catalogue, job
        # runner) takes longer than uvicorn's 5 s default on a busy machine, and the supervisor
        # would kill and restart it forever.
        timeout_worker_healthcheck=120,
        timeout_graceful_shutdown=5,  # event streams never end by themselves
    )


def _web_concurrency() -> int:
    raw = os.environ.get("WEB_CONCURRENCY", "1")
    try:
        count = int(raw)
    except ValueError:
        raise _fail(f"WEB_CONCURRENCY: {raw!r} is not a number of workers") from None
    if not 1 <= count <= 64:
        raise _fail("WEB_CONCURRENCY: give 1 to 64 workers")
    return count


def _migrate(database_url: str) -> None:
    async def run() -> None:
        engine = create_engine(database_url)
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())


@app.command()
def demo(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: $CLINICSYNC_HOST)")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: $CLINICSYNC_PORT or 8000)")
    ] = None,
) -> None:
    """Seed a demo clinic, connect it to a sandbox OpenDental on this machine, print the logins,
    pages and commands to paste, and serve both until Ctrl-C."""
    settings = get_settings()
    updates: dict[str, object] = {
        # On PostgreSQL too the pushes are delivered inside the demo's one process.
        "sync_embedded_worker": True,
    }
    if not settings.outbound_allowlist:
        # The demo's PMS is a sandbox on this machine.
        updates["outbound_allowlist"] = ["127.0.0.0/8", "::1/128", "localhost"]
    settings = settings.model_copy(update=updates)
    bind_host, bind_port = host or settings.host, port or settings.port
    # Before anything is printed: a busy port would otherwise fail after the instructions.
    _ensure_port_free(bind_host, bind_port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run_demo(settings, bind_host, bind_port))
    console.print("demo stopped")


async def _run_demo(settings: Settings, host: str, port: int) -> None:
    """The clinic's server and its sandbox PMS in one event loop; Ctrl-C or SIGTERM stops both."""
    from clinicsync import demo_pms
    from clinicsync.app import create_app
    from clinicsync.demo import seed_demo
    from clinicsync.sandbox.runner import run_sandbox
    from clinicsync.serving import serving

    # One line a request is the server's own log; the demo's calls to itself and its PMS are not news.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    seeded = await seed_demo(settings.database_url)
    # Written before the server answers: whoever sees /health up can source it.
    environment = seeded.environment(f"http://{host}:{port}")
    env_file = settings.var_dir / "demo.env"
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text("".join(f"export {key}='{value}'\n" for key, value in environment.items()))
    env_file.chmod(0o600)
    state_file = settings.var_dir / "demo-opendental.json"
    spec = demo_pms.pms_spec(seeded.time_zone)
    async with (
        run_sandbox(demo_pms.DemoOpenDental, spec=spec, state_file=state_file) as sandbox,
        serving(create_app(settings), host=host, port=port, own_signals=False) as base,
    ):
        headers = {"Authorization": f"Bearer {seeded.admin_token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
            pms = await demo_pms.connect(http, sandbox, seeded.time_zone)
        _print_demo(seeded, pms, base, env_file, environment)
        await stop.wait()
        console.print("stopping the server and the sandbox PMS")


def _ensure_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            raise _fail(
                f"port {port} on {host} is already in use (another clinicsync demo?). Pick another: "
                f"make demo PORT={port + 11}  or  CLINICSYNC_PORT={port + 11} clinicsync demo"
            ) from None


def _print_demo(
    seeded: DemoClinic, pms: DemoPms, base: str, env_file: Path, environment: dict[str, str]
) -> None:
    token = seeded.admin_token
    auth = f'-H "Authorization: Bearer {token}"'
    body = (
        f'{{"patient_id": "{seeded.patient_id}", "practitioner_id": "{seeded.practitioner_id}", '
        f'"start": "{seeded.slot_start}", "booking_source": "chatbot"}}'
    )
    from clinicsync.demo import DEMO_PASSWORD

    say = console.print
    say(f"[bold green]clinicsync demo[/bold green] running at {base}  (API docs: {base}/docs)")
    say(f"Organization: {seeded.organization_name} ({seeded.time_zone}), id {seeded.organization_id}")
    say("\n[bold]Pages[/bold] (sign in first):", highlight=False)
    pages = [
        ("Sign in", "/login"),
        ("Booking page", "/book"),
        ("Practitioner portal", "/portal"),
        ("Admin sync dashboard", "/admin/sync/runs"),
        ("Integration settings", "/admin/sync"),
        ("Conflicts queue", "/admin/sync/conflicts"),
        ("Outbox", "/admin/sync/outbox"),
        ("Practitioners and diaries", "/admin/practitioners"),
    ]
    for label, path in pages:
        say(f"  {label:<26} {base}{path}", highlight=False)
    say(f"\n[bold]Logins[/bold], password {DEMO_PASSWORD} for every one:", highlight=False)
    for role, email in seeded.logins:
        say(f"  {role:<13} {email}", highlight=False)
    say(
        f"\n[bold]PMS[/bold]: a sandbox OpenDental at {pms.pms_url} "
        f"(what it holds: {pms.control_url}/state), syncing both ways; bookings made here are pushed to it.",
        highlight=False,
    )
    say(
        f"Its front desk (move or cancel a booking as the practice would): GET {pms.control_url}/actions; "
        "changes come back through its API Events within a minute, at once after "
        f"POST {pms.control_url}/actions/deliver_events",
        highlight=False,
    )
    if pms.sync_id:
        say(f"First Full Sync started: {base}/admin/sync/runs/{pms.sync_id}", highlight=False)
    say(f"\nAdmin token:  {token}")
    say(f"Chatbot (service) token: {seeded.service_token}")
    say(
        f"Free slot: {seeded.slot_start} with {seeded.practitioner_name} ({seeded.practitioner_id}) "
        f"for {seeded.patient_name} ({seeded.patient_id})"
    )
    say("\nPaste into another terminal:\n", highlight=False)
    commands = [
        f"curl {auth} {base}/api/v1/practitioners",
        f'curl {auth} "{base}/api/v1/slots?from={seeded.slot_date}&to={seeded.slot_date}'
        f'&practitioner_id={seeded.practitioner_id}&limit=5"',
        f'curl {auth} -H "Content-Type: application/json" '
        f'-H "Idempotency-Key: {environment["IDEMPOTENCY_KEY"]}" '
        f"-d '{body}' {base}/api/v1/appointments",
        f"curl {auth} {base}/api/v1/sync/history/{seeded.organization_id}",
    ]
    for line in commands:
        say(line, highlight=False, markup=False, crop=False, overflow="ignore")
    say(f"\nThe same values, for scripts: . {env_file}", highlight=False)
    say("Ctrl-C stops the server and the sandbox PMS.", highlight=False)


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

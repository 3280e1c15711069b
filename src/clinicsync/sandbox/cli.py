"""``clinicsync sandbox PROVIDER|all``: serve simulated PMS APIs on loopback until Ctrl-C.

    clinicsync sandbox opendental --port 8701 --patients 500 --appointments 3000
    clinicsync sandbox opendental --fault-rate 0.1 --latency-ms 200 --state-file var/od.json
    clinicsync sandbox all --port 8700        # every registered provider on 8700, 8701, ...

Prints each server's base URL, control URL and credentials. Bad input (unknown provider, a fault
setting out of range, a bad time zone) exits with status 2 and a message naming the value.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from clinicsync.sandbox.clock import load_zone
from clinicsync.sandbox.core import SandboxServer, validation_errors
from clinicsync.sandbox.faults import FaultSettings
from clinicsync.sandbox.generator import ClinicSpec
from clinicsync.sandbox.registry import UnknownProviderError, get_server_class, provider_names
from clinicsync.sandbox.runner import run_sandbox

# A group whose callback is the command, so it mounts as ``clinicsync sandbox PROVIDER [OPTIONS]``;
# interspersed args let options follow the provider name.
app = typer.Typer(
    help=f"Run simulated PMS APIs with fault injection. Providers: {', '.join(provider_names())}.",
    context_settings={"allow_interspersed_args": True},
    subcommand_metavar="",
)
console = Console(soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def _describe_errors(exc: ValidationError, flags: dict[str, str]) -> str:
    parts = []
    for error in validation_errors(exc):
        flag = flags.get(error["field"], error["field"])
        parts.append(f"{flag}: {error['message']}")
    return "; ".join(parts)


def build_servers(
    providers: list[str],
    *,
    seed: int,
    patients: int,
    appointments: int,
    fault_rate: float,
    latency_ms: float,
    timezone: str,
    state_file: Path | None,
) -> list[SandboxServer]:
    """Validate every option and construct the servers; raises ``typer.Exit`` with a clear message."""
    try:
        load_zone(timezone)
    except ValueError as exc:
        raise _fail(f"--timezone: {exc}") from exc
    try:
        spec = ClinicSpec(seed=seed, patients=patients, appointments=appointments, timezone=timezone)
    except ValidationError as exc:
        raise _fail(
            _describe_errors(exc, {"patients": "--patients", "appointments": "--appointments"})
        ) from exc
    try:
        faults = FaultSettings(error_rate=fault_rate, latency_ms=latency_ms)
    except ValidationError as exc:
        flags = {"error_rate": f"--fault-rate {fault_rate}", "latency_ms": f"--latency-ms {latency_ms}"}
        raise _fail(_describe_errors(exc, flags)) from exc
    servers = []
    for name in providers:
        try:
            server_class = get_server_class(name)
        except UnknownProviderError as exc:
            raise _fail(str(exc)) from exc
        target = state_file
        if target is not None and len(providers) > 1:
            target = target.with_name(f"{target.stem}-{name}{target.suffix or '.json'}")
        try:
            servers.append(server_class(spec=spec, faults=faults.model_copy(), state_file=target))
        except ValueError as exc:
            raise _fail(f"--state-file {target}: {exc}") from exc
    return servers


def _table(servers: list[SandboxServer]) -> Table:
    table = Table(title="clinicsync sandbox", show_lines=True)
    # Fold rather than truncate: a URL or key cut short with an ellipsis is useless.
    table.add_column("provider", style="bold", overflow="fold")
    table.add_column("base URL", overflow="fold")
    table.add_column("control API", overflow="fold")
    table.add_column("credentials", overflow="fold")
    for server in servers:
        credentials = "\n".join(f"{key}: {value}" for key, value in server.credentials().items() if value)
        table.add_row(server.name, server.base_url or "", f"{server.root_url}/_sandbox", credentials or "-")
    return table


async def serve(
    servers: list[SandboxServer], host: str, port: int, ready: asyncio.Event | None = None
) -> None:
    """Run ``servers`` on consecutive ports from ``port`` (free ports when 0) until cancelled."""
    main_task = asyncio.current_task()
    if main_task is not None:
        # SIGTERM stops as cleanly as Ctrl-C does (state files are written on the way out).
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    async with AsyncExitStack() as stack:
        for index, server in enumerate(servers):
            await stack.enter_async_context(run_sandbox(server, host=host, port=port + index if port else 0))
        console.print(_table(servers))
        for server in servers:
            # One plain line per server, easy to copy and to parse from scripts.
            print(f"{server.name} base_url={server.base_url} control={server.root_url}/_sandbox", flush=True)
        console.print("Press Ctrl-C to stop.")
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()


@app.callback(invoke_without_command=True)
def sandbox(
    provider: Annotated[
        str,
        typer.Argument(
            help=f"One of: {', '.join(provider_names())}; or 'all' for every one",
            metavar="PROVIDER",
        ),
    ],
    port: Annotated[
        int, typer.Option(help="Port (first of consecutive ports for 'all'); 0 picks free")
    ] = 8700,
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    seed: Annotated[int, typer.Option(help="Data generator seed")] = 1,
    patients: Annotated[int, typer.Option(help="Patients to generate")] = 200,
    appointments: Annotated[int, typer.Option(help="Appointments to generate")] = 1000,
    fault_rate: Annotated[
        float, typer.Option(help="Share of requests answered with a 5xx error (0-1)")
    ] = 0.0,
    latency_ms: Annotated[float, typer.Option(help="Added latency per request, in ms")] = 0.0,
    timezone: Annotated[str, typer.Option(help="Office IANA time zone")] = "America/New_York",
    state_file: Annotated[
        Path | None, typer.Option(help="Load state from / save state to this JSON file")
    ] = None,
) -> None:
    """Serve one simulated PMS API (or all of them) until Ctrl-C."""
    names = provider_names() if provider == "all" else [provider]
    servers = build_servers(
        names,
        seed=seed,
        patients=patients,
        appointments=appointments,
        fault_rate=fault_rate,
        latency_ms=latency_ms,
        timezone=timezone,
        state_file=state_file,
    )
    try:
        asyncio.run(serve(servers, host, port))
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("stopped")
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


if __name__ == "__main__":
    app()

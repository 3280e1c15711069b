"""`clinicsync sync run|preview|status|history|cancel`: sync runs from a terminal, over the HTTP
API (clinicsync.client), with a progress bar that follows the run's own progress and ETA."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from clinicsync.client import SyncApiError, SyncClient, SyncTimeout
from clinicsync.sync.runs.schemas import SyncProgress

sync_app = typer.Typer(
    help="Sync runs against a clinicsync server (its URL and a token).", no_args_is_help=True
)
console = Console()

Url = Annotated[
    str, typer.Option("--url", envvar="CLINICSYNC_URL", help="The server, e.g. http://127.0.0.1:8000")
]
Token = Annotated[
    str, typer.Option("--token", envvar="CLINICSYNC_TOKEN", help="An owner's or admin's API token")
]
Integration = Annotated[str | None, typer.Option(help="Which integration (optional with one that pulls)")]
Kind = Annotated[str, typer.Option("--type", help="full, manual, inbound, cases, reconcile, import_patients")]
Days = Annotated[int | None, typer.Option(min=0, max=366)]
Wait = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the run until it ends")]
Timeout = Annotated[float, typer.Option(help="Seconds to follow it")]


def _fail(error: Exception) -> typer.Exit:
    console.print(f"[red]{error}[/red]")
    return typer.Exit(code=1)


def _eta(progress: SyncProgress) -> str:
    if progress.estimated_completion is None:
        return ""
    left = (progress.estimated_completion - datetime.now(UTC)).total_seconds()
    return f"ETA {max(0, round(left))} s"


def _follow(client: SyncClient, sync_id: str, timeout: float) -> SyncProgress:
    """A bar driven by the run's progress_percentage, its current operation and its estimate."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[eta]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("starting", total=100, eta="")

        def show(progress: SyncProgress) -> None:
            label = progress.current_operation or progress.current_step or progress.status
            bar.update(
                task, completed=progress.progress_percentage, description=label[:60], eta=_eta(progress)
            )

        return client.wait_for_completion(sync_id, timeout, poll=0.5, on_progress=show)


def _summary(client: SyncClient, sync_id: str) -> None:
    run = client.run(sync_id)
    table = Table(title=f"run {run.id} · {run.run_type.value} · {run.status}")
    for column in ("phase", "status", "reason"):
        table.add_column(column)
    for name in run.steps:
        result = run.phases.get(name) or {}
        table.add_row(name, str(result.get("status", "-")), str(result.get("reason") or ""))
    console.print(table)
    counts = Table(title="counts")
    keys = ("found", "created", "updated", "unchanged", "deleted", "failed")
    counts.add_column("entity")
    for key in keys:
        counts.add_column(key, justify="right")
    for entity, values in run.counts.items():
        counts.add_row(entity, *(str(values.get(key, 0)) for key in keys))
    console.print(counts)
    console.print(
        f"requests to the PMS: {run.requests_used}"
        + ("  [yellow]review required[/yellow]" if run.review_required else "")
    )
    for note in run.notes:
        console.print(f"note: {note}")


def _start(url: str, token: str, *, preview: bool, wait: bool, timeout: float, ask: dict[str, Any]) -> None:
    with SyncClient(url, token) as client:
        try:
            started = (client.preview if preview else client.trigger)(
                **{k: v for k, v in ask.items() if v is not None}
            )
            console.print(
                f"{'preview' if preview else 'sync'} {started.sync_id} started ({started.sync_type})"
            )
            if not wait:
                return
            _follow(client, started.sync_id, timeout)
            _summary(client, started.sync_id)
            if preview:
                run = client.run(started.sync_id)
                changes = [item for item in run.preview or [] if item["action"] != "unchanged"]
                console.print(f"{len(changes)} records would change:")
                for item in changes[:200]:
                    console.print(
                        f"  {item['phase']}: {item['action']} {item['entity']} {item['external_id']}"
                    )
        except (SyncApiError, SyncTimeout) as error:
            raise _fail(error) from None


@sync_app.command("run")
def run_command(
    url: Url,
    token: Token,
    integration_id: Integration = None,
    kind: Kind = "full",
    backward_days: Days = None,
    forward_days: Days = None,
    incremental: Annotated[bool, typer.Option(help="Only what changed since the last pull")] = False,
    wait: Wait = True,
    timeout: Timeout = 3600.0,
) -> None:
    """Start a run and follow it."""
    ask = {
        "integration_id": integration_id,
        "sync_type": kind,
        "backward_days": backward_days,
        "forward_days": forward_days,
        "incremental": incremental or None,
    }
    _start(url, token, preview=False, wait=wait, timeout=timeout, ask=ask)


@sync_app.command("preview")
def preview_command(
    url: Url,
    token: Token,
    integration_id: Integration = None,
    kind: Kind = "full",
    backward_days: Days = None,
    forward_days: Days = None,
    timeout: Timeout = 3600.0,
) -> None:
    """A dry run: what a run would create, update and delete, record by record; writes nothing."""
    ask = {
        "integration_id": integration_id,
        "sync_type": kind,
        "backward_days": backward_days,
        "forward_days": forward_days,
    }
    _start(url, token, preview=True, wait=True, timeout=timeout, ask=ask)


@sync_app.command("status")
def status_command(
    sync_id: str,
    url: Url,
    token: Token,
    follow: Annotated[bool, typer.Option("--follow", help="Follow until it ends")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A run's progress (and, when it has ended, its phases and counts)."""
    with SyncClient(url, token) as client:
        try:
            progress = _follow(client, sync_id, 3600.0) if follow else client.progress(sync_id)
            if as_json:
                console.print_json(progress.model_dump_json())
                return
            console.print(
                f"{progress.status} · {progress.progress_percentage}% · {progress.current_step or '-'} · "
                f"{progress.records_processed} records · {_eta(progress)}"
            )
            if progress.status not in ("starting", "running"):
                _summary(client, sync_id)
        except SyncApiError as error:
            raise _fail(error) from None


@sync_app.command("history")
def history_command(
    url: Url,
    token: Token,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 10,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Totals, success rate, average duration and the recent runs of your organization."""
    with SyncClient(url, token) as client:
        try:
            history = client.history(limit=limit)
        except SyncApiError as error:
            raise _fail(error) from None
    if as_json:
        console.print_json(history.model_dump_json())
        return
    console.print(
        f"{history.total_syncs} runs: {history.successful_syncs} completed, {history.failed_syncs} failed, "
        f"{history.cancelled_syncs} cancelled; average {history.average_sync_duration_seconds or 0:.1f} s"
    )
    table = Table()
    for column in ("sync_id", "type", "status", "started", "records", "error"):
        table.add_column(column)
    for run in history.recent_syncs:
        started = run.started_at.isoformat(timespec="seconds") if run.started_at else "-"
        table.add_row(
            run.sync_id,
            run.sync_type,
            run.status,
            started,
            str(run.records_processed),
            run.error_message or "",
        )
    console.print(table)


@sync_app.command("cancel")
def cancel_command(sync_id: str, url: Url, token: Token) -> None:
    """Stop a run between pages; what it did stays recorded."""
    with SyncClient(url, token) as client:
        try:
            progress = client.cancel(sync_id)
        except SyncApiError as error:
            raise _fail(error) from None
    console.print(json.dumps({"sync_id": progress.sync_id, "status": progress.status}))

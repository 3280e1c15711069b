"""The phases of a run: backward, enrichment, forward (with the slot grid), reconciliation and
the incremental pull. Each reads the PMS outside any transaction and writes page by page through
`context.commit_page`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.sync_spec import SyncOperation
from clinicsync.sync import inbound
from clinicsync.sync.models import ScheduleSource
from clinicsync.sync.runs import apply, cursors
from clinicsync.sync.runs.apply import PageOutcome
from clinicsync.sync.runs.context import (
    NeedsReview,
    PhaseSkipped,
    RunContext,
    commit_page,
    iso,
    span,
    update_run,
)
from clinicsync.sync.runs.models import SyncCase

ENRICHMENT_BATCH = 25
READ_AHEAD = 4  # day pages in flight while one is written

# ---- the phases --------------------------------------------------------------------------------


# (session, records starting inside the page's window, all records of its days, the window)
PageWrite = Callable[
    [AsyncSession, list[dict[str, Any]], list[dict[str, Any]], tuple[datetime, datetime]],
    Awaitable[PageOutcome],
]


async def _paged_pull(
    rc: RunContext,
    phase: str,
    pages: list[tuple[datetime, datetime]],
    write: PageWrite,
    *,
    extra_pages: int = 0,
) -> None:
    await update_run(rc, phase=(phase, {"pages_total": len(pages) + extra_pages}))
    first = rc.resume_page(phase)
    # Pages are read ahead (inside the rate budget) while earlier ones are written; they are
    # still written and checkpointed strictly in order.
    reads: dict[int, asyncio.Task[tuple[list[dict[str, Any]], list[dict[str, Any]]]]] = {}
    try:
        for index in range(first, len(pages)):
            for ahead in range(index, min(index + READ_AHEAD, len(pages))):
                if ahead not in reads:
                    reads[ahead] = asyncio.create_task(rc.read_days(pages[ahead]))
            inside, whole = await reads.pop(index)
            await _write_page(rc, phase, pages, index, inside, whole, write, extra_pages)
    finally:
        for task in reads.values():
            task.cancel()
        for task in reads.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _write_page(
    rc: RunContext,
    phase: str,
    pages: list[tuple[datetime, datetime]],
    index: int,
    inside: list[dict[str, Any]],
    whole: list[dict[str, Any]],
    write: PageWrite,
    extra_pages: int,
) -> None:
    window = pages[index]

    async def work(session: AsyncSession) -> PageOutcome:
        return await write(session, inside, whole, window)

    day = window[0].astimezone(rc.windows.zone).date().isoformat()
    await commit_page(
        rc,
        phase,
        index,
        work,
        operation=f"{phase}: {day} ({len(inside)} appointments)",
        last=index == len(pages) - 1 and not extra_pages,
    )


async def backward(rc: RunContext) -> None:
    async def write(
        session: AsyncSession, records: list[dict[str, Any]], _whole: Any, _window: Any
    ) -> PageOutcome:
        return await apply.upsert_cases(session, rc.organization_id, rc.integration_id, records)

    await _paged_pull(rc, "backward", rc.windows.backward(), write)


async def _slot_grid(rc: RunContext) -> dict[str, Any] | None:
    """The PMS's diary grid when this clinic's schedule is the PMS's slots (one request)."""
    if not rc.supports(SyncOperation.SCHEDULE_CONFIG):
        return None
    async with session_scope(rc.ctx.sessionmaker, write=False) as session:
        config = await inbound.config_of(session, rc.integration_id)
    if config is None or config.schedule_source != ScheduleSource.PMS_SLOTS:
        return None
    found = await rc.read(SyncOperation.SCHEDULE_CONFIG, {})
    return found[0] if found else None


async def forward(rc: RunContext) -> None:
    pages = rc.windows.forward()
    grid = await _slot_grid(rc)

    async def write(
        session: AsyncSession,
        records: list[dict[str, Any]],
        whole: list[dict[str, Any]],
        window: tuple[datetime, datetime],
    ) -> PageOutcome:
        outcome = await apply.upsert_pms_appointments(
            session, rc.organization_id, rc.integration_id, records, run_id=rc.run_id
        )
        if grid is not None:
            await apply.upsert_slots(
                session,
                rc.organization_id,
                rc.integration_id,
                grid,
                window,
                whole,
                outcome,
                zone=str(rc.windows.zone),
                seen_at=rc.windows.as_of,
            )
        return outcome

    await _paged_pull(rc, "forward", pages, write, extra_pages=1 if grid is not None else 0)
    window = span(pages)
    if grid is None or window is None or rc.resume_page("forward") > len(pages):
        return

    async def recount(session: AsyncSession) -> PageOutcome:
        return await apply.settle_slots(
            session, rc.organization_id, rc.integration_id, window, seen_at=rc.windows.as_of
        )

    await commit_page(rc, "forward", len(pages), recount, operation="forward: slot counts", last=True)


async def _enrichment_targets(
    rc: RunContext, window: tuple[datetime, datetime]
) -> dict[str, dict[str, Any] | None]:
    """The window's live cases and the consultation each holds (external id -> consultation)."""
    async with session_scope(rc.ctx.sessionmaker, write=False) as session:
        rows = (
            await session.execute(
                select(SyncCase.external_id, SyncCase.consultation, SyncCase.starts_at).where(
                    SyncCase.integration_id == rc.integration_id,
                    SyncCase.starts_at >= window[0],
                    SyncCase.starts_at < window[1],
                    SyncCase.deleted_at.is_(None),
                )
            )
        ).all()
    targets: dict[str, dict[str, Any] | None] = {external_id: held for external_id, held, _ in rows}
    for external_id, values in rc.overlay.items():
        starts = values["starts_at"]
        if values.get("deleted_at") is None and window[0] <= starts < window[1]:
            targets[external_id] = values.get("consultation")
    return targets


async def enrichment(rc: RunContext) -> None:
    if not (rc.supports(SyncOperation.CONSULTATION_LIST) and rc.supports(SyncOperation.CONSULTATION_GET)):
        raise PhaseSkipped(f"{rc.resolved.definition.key} maps no consultation.list/consultation.get")
    window = span(rc.windows.backward())
    if window is None:
        raise PhaseSkipped("the backward window is empty")
    listed = await rc.read(
        SyncOperation.CONSULTATION_LIST,
        {"starts_from": window[0], "starts_to": window[1] - timedelta(seconds=1)},
    )
    targets = await _enrichment_targets(rc, window)
    wanted = []
    for summary in listed:
        visit = str(summary.get("appointment_id") or "")
        if visit not in targets:
            continue  # not a past visit of this window (or its case was removed)
        held = targets[visit]
        if held is None or held.get("updated_at") != iso(summary.get("updated_at")):
            wanted.append(str(summary["id"]))
    batches = [wanted[i : i + ENRICHMENT_BATCH] for i in range(0, len(wanted), ENRICHMENT_BATCH)]
    await update_run(rc, phase=("enrichment", {"pages_total": len(batches), "pages_done": 0}))
    gate = asyncio.Semaphore(int(rc.params.get("enrichment_concurrency") or 5))

    async def get(consultation_id: str) -> list[dict[str, Any]]:
        async with gate:
            return await rc.read(SyncOperation.CONSULTATION_GET, {"id": consultation_id})

    for index, batch in enumerate(batches):
        # Targets are recomputed from the cases, so a resumed run never fetches one twice.
        fetched = await asyncio.gather(*(get(consultation_id) for consultation_id in batch))
        records = [record for found in fetched for record in found]

        async def work(session: AsyncSession, records: list[dict[str, Any]] = records) -> PageOutcome:
            return await apply.attach_consultations(session, rc.integration_id, records)

        await commit_page(
            rc,
            "enrichment",
            index,
            work,
            operation=f"enrichment: {len(records)} consultations",
            last=index == len(batches) - 1,
        )


async def reconcile(rc: RunContext) -> None:
    pages = rc.windows.reconcile()
    window = span(pages)
    if window is None:
        raise PhaseSkipped("the reconciliation window is empty")
    await update_run(
        rc, phase=("reconcile", {"pages_total": len(pages) + 1, "window": [iso(window[0]), iso(window[1])]})
    )
    fetched: dict[str, dict[str, Any]] = {}
    for index, page in enumerate(pages):
        for record in await rc.read_window(page):
            fetched[str(record["id"])] = record
        await update_run(
            rc,
            phase=("reconcile", {"pages_done": index + 1}),
            current_operation=f"reconcile: read {index + 1} of {len(pages)} days",
        )
    stopped: list[str] = []

    async def work(session: AsyncSession) -> PageOutcome:
        outcome, reason = await apply.reconcile_cases(
            session,
            rc.integration_id,
            window,
            fetched,
            max_delete_share=float(rc.params.get("max_delete_share", 0.2)),
            run_id=rc.run_id,
        )
        if reason:
            stopped.append(reason)
        return outcome

    await commit_page(
        rc, "reconcile", len(pages), work, operation="reconcile: compared with the PMS", last=True
    )
    if stopped:
        raise NeedsReview(stopped[0])


async def pull(rc: RunContext) -> None:
    """An incremental pull: only what changed since the cursor, over the run's whole window
    (backward start to forward end), through the same page writes as the full sync. A token
    cursor is asked alone (the PMS answers its changes wherever they are; the window's are
    kept)."""
    started = utcnow()
    async with session_scope(rc.ctx.sessionmaker, write=False) as session:
        previous = await cursors.load(session, rc.integration_id)
    backward, forward_pages = rc.windows.backward(), rc.windows.forward()
    window = (
        (backward or forward_pages)[0][0],
        (forward_pages or backward)[-1][1],
    )
    ask_from, ask_to = rc.windows.whole_days(*window)
    whole_window: dict[str, Any] = {"starts_from": ask_from, "starts_to": ask_to}
    payload: dict[str, Any]
    if previous is None:
        payload = whole_window
    elif previous.token is not None:
        payload = {"sync_token": previous.token}
    else:
        payload = {**whole_window, "updated_since": previous.asked_from()}
    await update_run(
        rc,
        phase=(
            "pull",
            {
                "pages_total": 1,
                "cursor": previous.shown() if previous else None,
                "asked_with": previous.kind if previous else None,
            },
        ),
    )
    try:
        result = await rc.read_result(SyncOperation.APPOINTMENT_LIST_CHANGED, payload)
    except IntegrationError as exc:
        if exc.code != "gone" or previous is None:
            raise
        rc.requests += 1  # the refused request counts against the budget too
        # The PMS no longer answers from this cursor (Google's 410): read the whole window.
        refused = (
            "the PMS refused the sync token (410)"
            if previous.token is not None
            else f"the cursor from {previous.value} was refused (410)"
        )
        note = f"{refused}: the full window was read"
        await update_run(rc, note=note, phase=("pull", {"fallback": "full_window", "fallback_reason": note}))
        result = await rc.read_result(SyncOperation.APPOINTMENT_LIST_CHANGED, whole_window)
    records = result.records
    # Deleted entries that carry only their id (Google's): cancel what is held for them.
    gone = [
        str(record["id"])
        for record in records
        if record.get("starts_at") is None and record.get("status") == "cancelled"
    ]
    if gone:
        async with session_scope(rc.ctx.sessionmaker, write=False) as session:
            records = [*records, *await apply.known_visits(session, rc.integration_id, gone)]
    inside = {
        str(record["id"]): record
        for record in records
        if record.get("starts_at") is not None and window[0] <= record["starts_at"] < window[1]
    }
    past = [record for record in inside.values() if record["starts_at"] < rc.windows.as_of]
    upcoming = [record for record in inside.values() if record["starts_at"] >= rc.windows.as_of]
    cursor = cursors.next_value(result.server_time, started, previous, sync_token=result.sync_token)
    if previous is not None and previous.kind == cursor.kind == cursors.SERVER_TIME:
        assert cursor.instant is not None and previous.instant is not None
        if cursor.instant < previous.instant:
            cursor = previous

    async def work(session: AsyncSession) -> PageOutcome:
        outcome = await apply.upsert_cases(session, rc.organization_id, rc.integration_id, past)
        more = await apply.upsert_pms_appointments(
            session, rc.organization_id, rc.integration_id, upcoming, run_id=rc.run_id
        )
        outcome.merge(more)
        await cursors.save(session, rc.organization_id, rc.integration_id, cursor, run_id=rc.run_id)
        return outcome

    await commit_page(rc, "pull", 0, work, operation=f"pull: {len(inside)} changed appointments", last=True)
    await update_run(rc, phase=("pull", {"next_cursor": cursor.shown(), "cursor_kind": cursor.kind}))


async def save_full_cursor(rc: RunContext, started: datetime) -> None:
    """After a complete full read of both windows, the next pull asks only for what changed. The
    PMS's first token (or clock) of this run is the earliest, so nothing after it is missed; a
    resumed run's earlier pages were read before it, so it keeps neither."""
    fresh = not rc.checkpoint
    cursor = cursors.next_value(
        rc.first_server_time if fresh else None,
        started,
        sync_token=rc.first_sync_token if fresh else None,
    )
    async with session_scope(rc.ctx.sessionmaker) as session:
        await cursors.save(session, rc.organization_id, rc.integration_id, cursor, run_id=rc.run_id)


async def patients(rc: RunContext) -> None:
    """The PMS's whole patient list, a provider page at a time, each page upserted and
    checkpointed in one transaction. A resumed import reads the pages it had written again
    (a provider's list has no stable page address to jump to) but writes from its checkpoint."""
    if not rc.supports(SyncOperation.PATIENT_LIST_CHANGED):
        raise PhaseSkipped(f"{rc.resolved.definition.key} maps no patient.list_changed: it lists no patients")
    first = rc.resume_page("patients")
    await update_run(rc, phase=("patients", {"pages_done": first}))
    index = 0
    async with contextlib.aclosing(rc.read_pages(SyncOperation.PATIENT_LIST_CHANGED, {})) as pages:
        async for records in pages:
            if index < first:
                index += 1
                continue

            async def work(session: AsyncSession, records: list[dict[str, Any]] = records) -> PageOutcome:
                return await apply.upsert_patients(
                    session, rc.organization_id, rc.integration_id, records, run_id=rc.run_id
                )

            await commit_page(rc, "patients", index, work, operation=f"patients: page {index + 1}")
            index += 1


PHASES: dict[str, Callable[[RunContext], Awaitable[None]]] = {
    "backward": backward,
    "enrichment": enrichment,
    "forward": forward,
    "reconcile": reconcile,
    "patients": patients,
    "pull": pull,
}

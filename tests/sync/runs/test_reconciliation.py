"""Reconciliation: cases whose PMS visit is gone are soft-deleted inside the window, never outside
it, and a mass delete stops for review. Real HTTP against the vet PIMS sandbox, both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.sync.runs.conftest import Pulling, cases, run_to_end


def _visits(clinic: Pulling) -> list[Any]:
    rows = clinic.sandbox.store.appointments.values()  # type: ignore[attr-defined]
    return sorted((row for row in rows if not row.deleted), key=lambda row: row.start)


def _window_start(clinic: Pulling, days: int) -> datetime:
    local = clinic.sandbox.clock.local_now()  # type: ignore[attr-defined]
    return datetime.combine(
        local.date() - timedelta(days=days), datetime.min.time(), tzinfo=local.tzinfo
    ).astimezone(UTC)


async def test_reconciliation_soft_deletes_exactly_what_the_pms_removed_inside_its_window(
    client: httpx.AsyncClient, vet: Pulling
) -> None:
    first = await run_to_end(client, vet, backward_days=10, forward_days=1, reconcile_days=7)
    assert first["status"] == "completed", first
    live = {case["external_id"] for case in await cases(client, vet)}

    now = vet.sandbox.clock.now()  # type: ignore[attr-defined]
    inside_from, outside_before = _window_start(vet, 7), _window_start(vet, 7) - timedelta(hours=1)
    inside = [row for row in _visits(vet) if inside_from <= row.start < now - timedelta(hours=1)][:2]
    outside = [row for row in _visits(vet) if row.start < outside_before and str(row.id) in live][:1]
    assert len(inside) == 2 and len(outside) == 1
    for row in inside + outside:
        row.deleted = True  # removed at the PMS (deleted visits never show in its calendar)

    run = await run_to_end(client, vet, sync_type="reconcile", reconcile_days=7)

    assert run["status"] == "completed", run
    assert run["phases"]["reconcile"]["status"] == "completed"
    assert run["counts"]["cases"]["deleted"] == 2
    everything = {case["external_id"]: case for case in await cases(client, vet, include_deleted=True)}
    deleted = {external_id for external_id, case in everything.items() if case["deleted_at"]}
    assert deleted == {str(row.id) for row in inside}
    assert all(everything[external_id]["reconciliation"]["run_id"] == run["id"] for external_id in deleted)
    # Outside the window the case stays, though its visit is gone too: that range was not read.
    assert everything[str(outside[0].id)]["deleted_at"] is None


async def test_a_mass_delete_stops_at_the_guard_and_flags_the_run_for_review(
    client: httpx.AsyncClient, vet: Pulling
) -> None:
    await run_to_end(client, vet, backward_days=7, forward_days=1, reconcile_days=7)
    live = await cases(client, vet)
    now = vet.sandbox.clock.now()  # type: ignore[attr-defined]
    window_from = _window_start(vet, 7)
    in_window = [row for row in _visits(vet) if window_from <= row.start < now]
    # A PMS answering with far fewer visits than before (a filter changed, a bad export): 30% gone.
    doomed = in_window[: max(2, int(len(in_window) * 0.3))]
    for row in doomed:
        row.deleted = True

    run = await run_to_end(client, vet, sync_type="reconcile", reconcile_days=7)

    assert run["review_required"] is True
    assert run["phases"]["reconcile"]["status"] == "needs_review"
    assert "nothing was deleted" in run["phases"]["reconcile"]["reason"]
    assert run["counts"]["cases"].get("deleted", 0) == 0
    assert [case["external_id"] for case in await cases(client, vet)] == [
        case["external_id"] for case in live
    ]

    # Someone checked the PMS: the removals are real, so the guard is raised for this run.
    allowed = await run_to_end(client, vet, sync_type="reconcile", reconcile_days=7, max_delete_share=0.5)
    assert allowed["review_required"] is False
    assert allowed["counts"]["cases"]["deleted"] == len(doomed)

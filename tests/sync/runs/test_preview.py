"""A dry run reads the PMS, reports record by record, writes nothing, and reports exactly what the
real run then does. Real HTTP against the vet PIMS sandbox, both databases."""

from __future__ import annotations

from typing import Any

import httpx

from tests.sync.runs.conftest import Pulling, cases, run_to_end

WINDOWS = {"backward_days": 7, "forward_days": 5, "reconcile_days": 7}


async def _upcoming(client: httpx.AsyncClient, clinic: Pulling) -> dict[str, dict[str, Any]]:
    page = await client.get("/api/v1/sync/pms-appointments", headers=clinic.headers, params={"limit": 500})
    assert page.status_code == 200, page.text
    return {row["external_id"]: row for row in page.json()}


def _ids(preview: list[dict[str, Any]], entity: str, action: str) -> set[str]:
    return {item["external_id"] for item in preview if item["entity"] == entity and item["action"] == action}


async def test_a_dry_run_reports_exactly_what_the_real_run_then_does(
    client: httpx.AsyncClient, vet: Pulling
) -> None:
    await run_to_end(client, vet, **WINDOWS)
    pims = vet.sandbox
    now = pims.clock.now()  # type: ignore[attr-defined]
    visits = sorted(pims.store.appointments.values(), key=lambda row: row.start)  # type: ignore[attr-defined]
    # The PMS moves on: a past visit with notes is recorded, an upcoming one cancelled, and a
    # visit of yesterday deleted.
    animal = next(iter(pims.store.patients))  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=pims.root_url or "") as control:
        added = await control.post(
            "/_sandbox/actions/add_past_consultation",
            json={"patient_id": animal, "days_ago": 2, "time": "08:05"},
        )
        assert added.status_code == 200, added.text
        upcoming = next(
            row for row in visits if row.start > now and row.status != "cancelled" and not row.deleted
        )
        cancelled = await control.post("/_sandbox/actions/cancel_appointment", json={"id": upcoming.id})
        assert cancelled.status_code == 200, cancelled.text
    gone = next(row for row in reversed(visits) if row.start < now and not row.deleted)
    gone.deleted = True
    before_cases = await cases(client, vet, include_deleted=True)
    before_upcoming = await _upcoming(client, vet)

    preview = await run_to_end(client, vet, dry_run=True, **WINDOWS)

    assert preview["status"] == "completed" and preview["dry_run"] is True, preview
    assert await cases(client, vet, include_deleted=True) == before_cases  # nothing written
    assert await _upcoming(client, vet) == before_upcoming
    report = preview["preview"]
    assert report and {"phase", "entity", "external_id", "action", "fields"} <= set(report[0])
    new_case = str(added.json()["appointment"]["id"])
    assert _ids(report, "cases", "create") == {new_case}
    assert _ids(report, "cases", "delete") == {str(gone.id)}
    assert _ids(report, "appointments", "update") == {str(upcoming.id)}
    assert _ids(report, "consultations", "create") == {str(added.json()["consultation"]["id"])}

    real = await run_to_end(client, vet, **WINDOWS)

    assert real["status"] == "completed", real
    assert real["counts"] == preview["counts"]
    after_cases = {case["external_id"]: case for case in await cases(client, vet, include_deleted=True)}
    before = {case["external_id"]: case for case in before_cases}
    assert set(after_cases) - set(before) == _ids(report, "cases", "create")
    newly_deleted = {
        external_id
        for external_id, case in after_cases.items()
        if case["deleted_at"] and not (before.get(external_id) or {}).get("deleted_at")
    }
    assert newly_deleted == _ids(report, "cases", "delete")
    enriched = {
        external_id
        for external_id, case in after_cases.items()
        if case["consultation"] and not (before.get(external_id) or {}).get("consultation")
    }
    assert enriched == {new_case}
    after_upcoming = await _upcoming(client, vet)
    changed = {
        external_id for external_id, row in after_upcoming.items() if row != before_upcoming.get(external_id)
    }
    assert changed == _ids(report, "appointments", "update") | _ids(report, "appointments", "create")
    assert after_upcoming[str(upcoming.id)]["status"] == "cancelled"

"""Incremental pulls: a cursor per integration, the PMS's own clock, at most 2 requests per entity
when nothing changed. Real HTTP against the sandboxes, both databases."""

from __future__ import annotations

import httpx

from tests.sync.runs.conftest import Pulling, run_to_end

WINDOWS = {"backward_days": 5, "forward_days": 5}


def _calls(clinic: Pulling, path: str) -> int:
    return sum(1 for entry in clinic.sandbox.request_log if entry.path.endswith(path))


async def test_opendental_pulls_only_changes_from_its_server_clock(
    client: httpx.AsyncClient, opendental_pull: Pulling
) -> None:
    od = opendental_pull
    full = await run_to_end(client, od, **WINDOWS)
    assert full["status"] == "completed", full

    od.sandbox.request_log.clear()
    quiet = await run_to_end(client, od, incremental=True, **WINDOWS)

    assert quiet["status"] == "completed", quiet
    assert quiet["steps"] == ["pull"] and quiet["incremental"] is True
    assert quiet["requests_used"] <= 2
    assert _calls(od, "/appointments") <= 2
    assert quiet["phases"]["pull"]["cursor"] is not None
    # OpenDental's own clock (serverDateTime), kept when nothing answered with a newer one.
    assert quiet["phases"]["pull"]["cursor_kind"] == "server_time"
    assert all(values["created"] == values["updated"] == 0 for values in quiet["counts"].values())

    # The front desk breaks one upcoming visit: the next pull brings exactly that one.
    listed = await client.get("/api/v1/sync/pms-appointments", headers=od.headers, params={"limit": 500})
    upcoming = next(row for row in listed.json() if row["status"] == "pending")
    pms = od.sandbox.od  # type: ignore[attr-defined]
    writer = next(key for key, access in pms.customer_keys.items() if access == "readwrite")
    async with httpx.AsyncClient(
        base_url=od.sandbox.base_url, headers={"Authorization": f"ODFHIR {pms.developer_key}/{writer}"}
    ) as desk:
        changed = await desk.put(
            f"/appointments/{upcoming['external_id']}/Break", json={"sendToUnscheduledList": False}
        )
        assert changed.status_code == 200, changed.text

    moved = await run_to_end(client, od, incremental=True, **WINDOWS)
    assert moved["counts"]["appointments"]["updated"] == 1
    assert moved["counts"]["appointments"]["found"] == 1
    assert moved["requests_used"] <= 2


async def test_an_edit_in_the_same_second_as_the_cursor_is_still_pulled(
    client: httpx.AsyncClient, opendental_pull: Pulling
) -> None:
    # OpenDental stamps whole seconds and answers rows changed strictly after DateTStamp; with its
    # clock held still, the front desk's edit shares the cursor's second.
    od = opendental_pull
    od.sandbox.clock.set(od.sandbox.clock.now().replace(microsecond=0), frozen=True)
    full = await run_to_end(client, od, **WINDOWS)
    assert full["status"] == "completed", full

    listed = await client.get("/api/v1/sync/pms-appointments", headers=od.headers, params={"limit": 500})
    upcoming = next(row for row in listed.json() if row["status"] == "pending")
    pms = od.sandbox.od  # type: ignore[attr-defined]
    writer = next(key for key, access in pms.customer_keys.items() if access == "readwrite")
    async with httpx.AsyncClient(
        base_url=od.sandbox.base_url, headers={"Authorization": f"ODFHIR {pms.developer_key}/{writer}"}
    ) as desk:
        changed = await desk.put(
            f"/appointments/{upcoming['external_id']}/Break", json={"sendToUnscheduledList": False}
        )
        assert changed.status_code == 200, changed.text

    pulled = await run_to_end(client, od, incremental=True, **WINDOWS)
    assert pulled["counts"]["appointments"]["updated"] == 1


async def test_a_vet_pims_without_a_change_filter_still_pulls_in_one_request(
    client: httpx.AsyncClient, vet: Pulling
) -> None:
    await run_to_end(client, vet, **WINDOWS)
    vet.sandbox.request_log.clear()

    quiet = await run_to_end(client, vet, incremental=True, **WINDOWS)

    assert quiet["steps"] == ["pull"] and quiet["status"] == "completed", quiet
    assert quiet["requests_used"] <= 2
    assert _calls(vet, "/appointments/getCalendarEventData") == 1
    assert quiet["counts"].get("cases", {}).get("created", 0) == 0

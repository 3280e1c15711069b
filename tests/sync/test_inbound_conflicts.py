"""A booking changed in clinicsync and in OpenDental since it was last synced, per conflict rule.

Each test books locally (pushed to the OpenDental sandbox and read back), moves the booking here
through the API, moves it again at OpenDental's front desk, and lets OpenDental's API Events
tell clinicsync, over HTTP, through the webhook, the stored event and its job.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import httpx

from tests.conftest import RunningServer
from tests.factories import booking, future_day
from tests.sync.conftest import Connected, eventually
from tests.sync.inbound_support import (
    advance_pms_clock,
    audit_trail,
    conflicts,
    front_desk,
    instant,
    linked_booking,
    local_appointment,
    od_time,
    opendental,
    pms_appointment,
    setup_bidirectional,
    subscribe,
)

__all__ = ["opendental"]  # the fixture, in the clinic's time zone


async def _moved_on_both_sides(
    client: httpx.AsyncClient, server: RunningServer, od: Connected, strategy: str, *, pms_later: bool = True
) -> tuple[str, str, datetime, datetime]:
    await setup_bidirectional(client, od, strategy)
    day = future_day()
    body, apt_num = await linked_booking(client, od, od.clinic.local(day, 10))
    await subscribe(server, od)
    ours = od.clinic.local(day, 11)
    theirs = od.clinic.local(day, 14)
    if not pms_later:
        await front_desk(od, "reschedule", AptNum=int(apt_num), AptDateTime=od_time(theirs))
        await asyncio.sleep(1.5)  # OpenDental stamps to the second: our edit comes clearly later
    moved = await client.patch(
        f"/api/v1/appointments/{body['id']}",
        json={"start": ours.isoformat(), "end": (ours + timedelta(minutes=30)).isoformat()},
        headers=od.headers,
    )
    assert moved.status_code == 200, moved.text
    if pms_later:
        await advance_pms_clock(od, 5)  # the front desk edits a few seconds after us
        await front_desk(od, "reschedule", AptNum=int(apt_num), AptDateTime=od_time(theirs))
    await front_desk(od, "deliver_events")
    return body["id"], apt_num, ours, theirs


async def _settled(client: httpx.AsyncClient, od: Connected, record_id: str) -> dict[str, Any] | None:
    found = [c for c in await conflicts(client, od, "settled") if c["record_id"] == record_id]
    return found[0] if found else None


async def _starts(client: httpx.AsyncClient, od: Connected, appointment_id: str) -> datetime:
    return instant((await local_appointment(client, od, appointment_id))["start"])


async def test_external_wins_applies_the_pms_time_and_records_what_it_overwrote(
    client: httpx.AsyncClient, server: RunningServer, opendental: Connected
) -> None:
    od = opendental
    appointment_id, _apt, ours, theirs = await _moved_on_both_sides(client, server, od, "external_wins")
    conflict = await eventually(lambda: _settled(client, od, appointment_id))
    assert conflict["resolution"] == "keep_external" and conflict["reason"] == "both_changed"
    assert instant(conflict["local"]["starts_at"]) == ours
    assert instant(conflict["external"]["starts_at"]) == theirs
    assert await _starts(client, od, appointment_id) == theirs
    trail = await audit_trail(client, od, "appointment", appointment_id)
    overwrite = [e for e in trail if e["source"] == "webhook" and e["side"] == "local"]
    assert len(overwrite) == 1
    assert instant(overwrite[0]["changes"]["starts_at"]["before"]) == ours
    assert instant(overwrite[0]["changes"]["starts_at"]["after"]) == theirs
    assert overwrite[0]["conflict_id"] == conflict["id"]
    assert overwrite[0]["actor"].startswith("webhook:")
    # Our own move is on the trail too, made through the API by the clinic's admin.
    assert any(e["source"] == "api" and "starts_at" in e["changes"] for e in trail)


async def test_local_wins_keeps_our_time_and_sends_it_back_to_the_pms(
    client: httpx.AsyncClient, server: RunningServer, opendental: Connected
) -> None:
    od = opendental
    appointment_id, apt_num, ours, theirs = await _moved_on_both_sides(client, server, od, "local_wins")
    conflict = await eventually(lambda: _settled(client, od, appointment_id))
    assert conflict["resolution"] == "keep_local"

    async def pms_has_ours() -> bool:
        return (await pms_appointment(od, apt_num))["AptDateTime"] == od_time(ours)

    await eventually(pms_has_ours)
    assert await _starts(client, od, appointment_id) == ours
    trail = await audit_trail(client, od, "appointment", appointment_id)
    pushed = [e for e in trail if e["side"] == "external"]
    assert len(pushed) == 1 and pushed[0]["conflict_id"] == conflict["id"]
    assert instant(pushed[0]["changes"]["starts_at"]["before"]) == theirs
    assert instant(pushed[0]["changes"]["starts_at"]["after"]) == ours
    assert not [e for e in trail if e["source"] == "webhook" and e["side"] == "local"]


async def test_latest_timestamp_wins_takes_the_side_changed_last(
    client: httpx.AsyncClient, server: RunningServer, opendental: Connected
) -> None:
    od = opendental
    appointment_id, _apt, _ours, theirs = await _moved_on_both_sides(
        client, server, od, "latest_timestamp_wins", pms_later=True
    )
    conflict = await eventually(lambda: _settled(client, od, appointment_id))
    assert conflict["resolution"] == "keep_external"
    assert await _starts(client, od, appointment_id) == theirs


async def test_latest_timestamp_wins_keeps_ours_when_the_pms_edit_is_older(
    client: httpx.AsyncClient, server: RunningServer, opendental: Connected
) -> None:
    od = opendental
    appointment_id, apt_num, ours, _theirs = await _moved_on_both_sides(
        client, server, od, "latest_timestamp_wins", pms_later=False
    )
    conflict = await eventually(lambda: _settled(client, od, appointment_id))
    assert conflict["resolution"] == "keep_local"
    assert await _starts(client, od, appointment_id) == ours

    async def pms_has_ours() -> bool:
        return (await pms_appointment(od, apt_num))["AptDateTime"] == od_time(ours)

    await eventually(pms_has_ours)


async def test_manual_changes_neither_side_until_a_person_decides(
    client: httpx.AsyncClient, server: RunningServer, opendental: Connected
) -> None:
    od = opendental
    appointment_id, apt_num, ours, theirs = await _moved_on_both_sides(client, server, od, "manual")

    async def queued() -> list[dict[str, Any]]:
        return [c for c in await conflicts(client, od) if c["record_id"] == appointment_id]

    [conflict] = await eventually(queued)
    assert conflict["status"] == "open" and sorted(conflict["fields"]) == ["ends_at", "starts_at"]
    status = (await client.get("/api/admin/sync/status", headers=od.headers)).json()
    assert status[0]["conflicts_waiting"] == 1
    # A second delivery of the same PMS state keeps one item in the queue.
    await front_desk(od, "deliver_events")
    await asyncio.sleep(1.5)
    assert len(await queued()) == 1
    assert await _starts(client, od, appointment_id) == ours
    assert (await pms_appointment(od, apt_num))["AptDateTime"] == od_time(theirs)

    refused = await client.post(
        f"/api/admin/sync/conflicts/{conflict['id']}/resolve",
        json={"resolution": "merge", "fields": {"starts_at": "external"}},
        headers=od.headers,
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"][0]["field"] == "fields.ends_at"

    resolved = await client.post(
        f"/api/admin/sync/conflicts/{conflict['id']}/resolve",
        json={"resolution": "merge", "fields": {"starts_at": "external", "ends_at": "external"}},
        headers=od.headers,
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "resolved"
    assert resolved.json()["chosen"] == {"starts_at": "external", "ends_at": "external"}
    assert await _starts(client, od, appointment_id) == theirs
    trail = await audit_trail(client, od, "appointment", appointment_id)
    decided = [e for e in trail if e["source"] == "conflict_resolution"]
    assert len(decided) == 1 and instant(decided[0]["changes"]["starts_at"]["before"]) == ours
    assert decided[0]["actor"].startswith("user:")
    again = await client.post(
        f"/api/admin/sync/conflicts/{conflict['id']}/resolve",
        json={"resolution": "keep_local"},
        headers=od.headers,
    )
    assert again.status_code == 409


async def test_manual_patient_conflict_is_merged_field_by_field(
    client: httpx.AsyncClient, server: RunningServer, opendental: Connected
) -> None:
    od = opendental
    await setup_bidirectional(client, od, "manual")
    _body, apt_num = await linked_booking(client, od, od.clinic.local(future_day(), 10))
    pat_num = (await pms_appointment(od, apt_num))["PatNum"]
    await subscribe(server, od, "Patient")
    patient_path = f"/api/v1/patients/{od.clinic.patient_id}"
    ours = await client.patch(
        patient_path, json={"email": "ours@example.org", "phone": "+13125550101"}, headers=od.headers
    )
    assert ours.status_code == 200, ours.text
    await front_desk(
        od, "edit_patient", PatNum=pat_num, Email="theirs@example.org", WirelessPhone="(312) 555-0199"
    )
    await front_desk(od, "deliver_events")

    async def queued() -> list[dict[str, Any]]:
        return [c for c in await conflicts(client, od) if c["record_type"] == "patient"]

    [conflict] = await eventually(queued)
    assert sorted(conflict["fields"]) == ["email", "phone"]
    assert (await client.get(patient_path, headers=od.headers)).json()["email"] == "ours@example.org"
    resolved = await client.post(
        f"/api/admin/sync/conflicts/{conflict['id']}/resolve",
        json={"resolution": "merge", "fields": {"email": "local", "phone": "external"}},
        headers=od.headers,
    )
    assert resolved.status_code == 200, resolved.text
    patient = (await client.get(patient_path, headers=od.headers)).json()
    assert (patient["email"], patient["phone"]) == ("ours@example.org", "+13125550199")

    async def pms_has_our_email() -> bool:
        row = (await od.pms.get(f"/patients/{pat_num}")).json()
        return bool(row["Email"] == "ours@example.org")

    await eventually(pms_has_our_email)
    trail = await audit_trail(client, od, "patient", str(od.clinic.patient_id))
    decided = [e for e in trail if e["source"] == "conflict_resolution"]
    assert {e["side"] for e in decided} == {"local", "external"}
    local_side = next(e for e in decided if e["side"] == "local")
    assert local_side["changes"] == {"phone": {"before": "+13125550101", "after": "+13125550199"}}


async def test_an_inbound_double_booking_becomes_a_conflict(
    client: httpx.AsyncClient, server: RunningServer, opendental: Connected
) -> None:
    od = opendental
    await setup_bidirectional(client, od, "external_wins")
    day = future_day()
    first, apt_num = await linked_booking(client, od, od.clinic.local(day, 10))
    second = await client.post(
        "/api/v1/appointments", json=booking(od.clinic, od.clinic.local(day, 12)), headers=od.headers
    )
    assert second.status_code == 201, second.text
    await subscribe(server, od)
    # Another chair at the PMS, so OpenDental itself accepts the move; our practitioner is busy then.
    operatories = (await od.pms.get("/operatories")).json()
    await front_desk(
        od,
        "reschedule",
        AptNum=int(apt_num),
        AptDateTime=od_time(od.clinic.local(day, 12)),
        Op=operatories[-1]["OperatoryNum"],
    )
    await front_desk(od, "deliver_events")

    async def queued() -> list[dict[str, Any]]:
        return [c for c in await conflicts(client, od) if c["record_id"] == first["id"]]

    [conflict] = await eventually(queued)
    assert conflict["reason"] == "double_booking"
    assert second.json()["booking_reference"] in conflict["detail"]
    assert await _starts(client, od, first["id"]) == od.clinic.local(day, 10)
    refused = await client.post(
        f"/api/admin/sync/conflicts/{conflict['id']}/resolve",
        json={"resolution": "keep_external"},
        headers=od.headers,
    )
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "double_booking"
    status = await client.get(f"/api/admin/sync/webhooks/{od.integration_id}", headers=od.headers)
    assert status.status_code == 200 and status.json()["failed"] == 0

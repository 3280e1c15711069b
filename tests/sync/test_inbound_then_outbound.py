"""A PMS change applied here, then a local change of the same booking: it reaches the PMS.

The inbound apply moves the record's snapshot to the PMS's version; the next local edit must still
be owed and delivered, and the PMS's event for our own push must come back as nothing new (no
conflict, no roll-back of our time).
"""

from __future__ import annotations

from datetime import timedelta

import httpx

from tests.conftest import RunningServer
from tests.factories import future_day
from tests.sync.conftest import Connected, configure, eventually
from tests.sync.inbound_support import (
    conflicts,
    front_desk,
    inbound_settled,
    instant,
    linked_booking,
    local_appointment,
    od_time,
    opendental,
    pms_appointment,
    subscribe,
)

__all__ = ["opendental"]  # the fixture, in the clinic's time zone


async def test_a_local_edit_after_an_applied_pms_edit_reaches_the_pms(
    client: httpx.AsyncClient, server: RunningServer, opendental: Connected
) -> None:
    od = opendental
    await configure(
        client,
        od,
        sync_enabled=True,
        sync_direction="bidirectional",
        conflict_resolution="latest_timestamp_wins",
    )
    day = future_day()
    body, apt_num = await linked_booking(client, od, od.clinic.local(day, 10))
    await subscribe(server, od)
    theirs, ours = od.clinic.local(day, 14), od.clinic.local(day, 11)

    await front_desk(od, "reschedule", AptNum=int(apt_num), AptDateTime=od_time(theirs))
    await front_desk(od, "deliver_events")

    async def applied_here() -> bool:
        return instant((await local_appointment(client, od, body["id"]))["start"]) == theirs

    await eventually(applied_here)
    moved = await client.patch(
        f"/api/v1/appointments/{body['id']}",
        json={"start": ours.isoformat(), "end": (ours + timedelta(minutes=30)).isoformat()},
        headers=od.headers,
    )
    assert moved.status_code == 200, moved.text

    async def pms_has_ours() -> bool:
        return (await pms_appointment(od, apt_num))["AptDateTime"] == od_time(ours)

    await eventually(pms_has_ours, timeout=8)
    # OpenDental reports our own push as a change: it is what we already hold.
    await front_desk(od, "deliver_events")
    await inbound_settled(server, od)
    assert instant((await local_appointment(client, od, body["id"]))["start"]) == ours
    assert [c for c in await conflicts(client, od, "settled") if c["record_id"] == body["id"]] == []
    assert [c for c in await conflicts(client, od) if c["record_id"] == body["id"]] == []

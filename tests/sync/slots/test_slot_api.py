"""GET /api/v1/schedule-slots: the PMS's slots, paged, with places left; one clinic's only."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from clinicsync.db.engine import session_scope
from clinicsync.sync.slots import service as slots
from clinicsync.tenancy.models import Role
from tests.factories import TenantFactory
from tests.sync.slots.vet_support import ZONE, book_in_pims, connect_vet, read_schedule, start_vet_pims


async def test_slots_are_listed_in_pages_with_places_left_and_only_to_their_clinic(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, sandboxes: Any, sessionmaker: Any
) -> None:
    tenant = await tenant_factory(time_zone=ZONE)
    vet = await connect_vet(client, tenant, await start_vet_pims(sandboxes))
    day: date = datetime.now(ZoneInfo(ZONE)).date() + timedelta(days=2)
    nine = datetime.combine(day, datetime.min.time().replace(hour=9), tzinfo=ZoneInfo(ZONE))
    for _ in range(2):
        assert (await book_in_pims(vet.pims, nine)).status_code == 201
    schedule, visits = await read_schedule(vet.pims, day, day)
    async with session_scope(sessionmaker) as session:
        await slots.upsert_page(
            session,
            tenant.organization_id,
            uuid.UUID(vet.integration_id),
            slots.slots_from_schedule(schedule, day, day, visits=visits),
        )

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"from": str(day), "to": str(day), "limit": "10", **({"cursor": cursor} if cursor else {})}
        page = await client.get("/api/v1/schedule-slots", params=params, headers=tenant.headers)
        assert page.status_code == 200, page.text
        seen += page.json()["slots"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 32 and len({row["id"] for row in seen}) == 32
    assert [row["starts_at"] for row in seen] == sorted(row["starts_at"] for row in seen)
    first = seen[0]
    assert (first["capacity"], first["booked_count"], first["remaining"]) == (2, 2, 0)
    assert page.json()["time_zone"] == ZONE

    available = await client.get(
        "/api/v1/schedule-slots",
        params={"from": str(day), "to": str(day), "available": "true", "limit": "500"},
        headers=tenant.headers,
    )
    assert len(available.json()["slots"]) == 31

    # A service token (what an agent uses) may read them too: times and counts, no patient data.
    service = await tenant_factory(role=Role.SERVICE, organization_id=tenant.organization_id)
    as_agent = await client.get(
        "/api/v1/schedule-slots", params={"from": str(day), "to": str(day)}, headers=service.headers
    )
    assert as_agent.status_code == 200 and len(as_agent.json()["slots"]) == 32

    other = await tenant_factory(time_zone=ZONE)
    elsewhere = await client.get(
        "/api/v1/schedule-slots", params={"from": str(day), "to": str(day)}, headers=other.headers
    )
    assert elsewhere.status_code == 200 and elsewhere.json()["slots"] == []


async def test_bad_ranges_and_cursors_are_refused_naming_the_field(
    client: httpx.AsyncClient, tenant_factory: TenantFactory
) -> None:
    tenant = await tenant_factory(time_zone=ZONE)
    backwards = await client.get(
        "/api/v1/schedule-slots", params={"from": "2030-01-10", "to": "2030-01-01"}, headers=tenant.headers
    )
    assert backwards.status_code == 422 and "to" in backwards.text
    too_long = await client.get(
        "/api/v1/schedule-slots", params={"from": "2030-01-01", "to": "2030-06-01"}, headers=tenant.headers
    )
    assert too_long.status_code == 422 and "92 days" in too_long.text
    bad_cursor = await client.get(
        "/api/v1/schedule-slots",
        params={"from": "2030-01-01", "to": "2030-01-02", "cursor": "not-a-cursor"},
        headers=tenant.headers,
    )
    assert bad_cursor.status_code == 422 and "cursor" in bad_cursor.text

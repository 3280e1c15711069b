"""Patients (duplicates, the clinic's phone country, the clinic's today), practitioners coming
back, and paging on every list."""

from __future__ import annotations

import time as clock
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.factories import Clinic, TenantFactory, booking, future_day, open_clinic


@pytest.fixture
def server_in_pago_pago(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The server's own zone set 24 hours behind Auckland (UTC-11), so the server's date is always
    the day before an Auckland clinic's (23 hours in NZ winter: all but one hour of the day)."""
    monkeypatch.setenv("TZ", "Pacific/Pago_Pago")
    clock.tzset()
    yield
    monkeypatch.undo()
    clock.tzset()


async def test_a_patient_born_today_in_an_auckland_clinic_is_valid_whatever_the_servers_zone(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, server_in_pago_pago: None
) -> None:
    clinic = await open_clinic(client, await tenant_factory(time_zone="Pacific/Auckland"))
    auckland_today = datetime.now(ZoneInfo("Pacific/Auckland")).date()
    born = await client.post(
        "/api/v1/patients",
        json={"first_name": "Aroha", "last_name": "Ngata", "date_of_birth": auckland_today.isoformat()},
        headers=clinic.headers,
    )
    assert born.status_code == 201, born.text
    tomorrow = await client.post(
        "/api/v1/patients",
        json={
            "first_name": "Nikau",
            "last_name": "Ngata",
            "date_of_birth": str(auckland_today + timedelta(days=1)),
        },
        headers=clinic.headers,
    )
    assert tomorrow.status_code == 422
    assert tomorrow.json()["error"]["details"][0]["field"] == "date_of_birth"


async def test_an_auckland_clinics_today_bounds_search_and_booking(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, server_in_pago_pago: None
) -> None:
    clinic = await open_clinic(
        client, await tenant_factory(time_zone="Pacific/Auckland"), start="00:00", end="23:45"
    )
    await client.patch(
        "/api/v1/organization",
        json={"booking_horizon_days": 1, "min_notice_minutes": 0},
        headers=clinic.headers,
    )
    auckland_today = datetime.now(clinic.zone).date()
    response = await client.get(
        "/api/v1/slots",
        params={
            "from": str(auckland_today - timedelta(days=1)),
            "to": str(auckland_today + timedelta(days=3)),
        },
        headers=clinic.headers,
    )
    days = {datetime.fromisoformat(s["start"]).date() for s in response.json()["slots"]}
    # Today (what is left of it) and tomorrow in Auckland, nothing on the server's "today" before it.
    assert days <= {auckland_today, auckland_today + timedelta(days=1)}
    assert auckland_today + timedelta(days=1) in days
    day_after = await client.post(
        "/api/v1/appointments",
        json=booking(clinic, clinic.local(auckland_today + timedelta(days=2), 9)),
        headers=clinic.headers,
    )
    assert day_after.status_code == 422
    assert "1 days ahead" in day_after.json()["error"]["message"]


async def test_a_likely_duplicate_patient_answers_409_with_the_existing_id(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    first = await client.post(
        "/api/v1/patients",
        json={
            "first_name": "Ada",
            "last_name": "King",
            "date_of_birth": "1990-12-10",
            "email": "ada@example.com",
        },
        headers=clinic.headers,
    )
    existing = first.json()["id"]
    attempts = [
        {"first_name": "ADA", "last_name": "king", "date_of_birth": "1990-12-10"},
        {
            "first_name": "Augusta",
            "last_name": "Byron",
            "date_of_birth": "1990-12-10",
            "email": "ADA@example.com",
        },
    ]
    for body in attempts:
        again = await client.post("/api/v1/patients", json=body, headers=clinic.headers)
        assert again.status_code == 409, again.text
        assert again.json()["error"]["code"] == "duplicate_patient"
        assert again.json()["error"]["details"]["existing_id"] == existing
    grace_phone = await client.get(f"/api/v1/patients/{clinic.patient_id}", headers=clinic.headers)
    await client.patch(
        f"/api/v1/patients/{clinic.patient_id}", json={"date_of_birth": "1985-01-01"}, headers=clinic.headers
    )
    same_phone = await client.post(
        "/api/v1/patients",
        json={
            "first_name": "G",
            "last_name": "H",
            "date_of_birth": "1985-01-01",
            "phone": grace_phone.json()["phone"],
        },
        headers=clinic.headers,
    )
    assert same_phone.status_code == 409
    assert same_phone.json()["error"]["details"]["matched_on"] == "phone and date_of_birth"

    twin = await client.post(
        "/api/v1/patients", json={**attempts[0], "allow_duplicate": True}, headers=clinic.headers
    )
    assert twin.status_code == 201
    assert twin.json()["id"] != existing
    other_birthday = await client.post(
        "/api/v1/patients", json={**attempts[0], "date_of_birth": "1991-12-10"}, headers=clinic.headers
    )
    assert other_birthday.status_code == 201


async def test_an_australian_clinic_reads_local_phone_numbers_as_australian(
    client: httpx.AsyncClient, tenant_factory: TenantFactory
) -> None:
    clinic = await open_clinic(client, await tenant_factory(time_zone="Australia/Sydney"))
    organization = (await client.get("/api/v1/organization", headers=clinic.headers)).json()
    assert organization["phone_region"] == "AU"
    patient = await client.post(
        "/api/v1/patients",
        json={"first_name": "Kylie", "last_name": "M", "phone": "0412 345 678"},
        headers=clinic.headers,
    )
    assert patient.status_code == 201, patient.text
    assert patient.json()["phone"] == "+61412345678"

    changed = await client.patch("/api/v1/organization", json={"phone_region": "gb"}, headers=clinic.headers)
    assert changed.json()["phone_region"] == "GB"
    british = await client.post(
        "/api/v1/patients",
        json={"first_name": "Tom", "last_name": "B", "phone": "07911 123456"},
        headers=clinic.headers,
    )
    assert british.json()["phone"] == "+447911123456"
    wrong = await client.post(
        "/api/v1/patients",
        json={"first_name": "X", "last_name": "Y", "phone": "0412 345"},
        headers=clinic.headers,
    )
    assert wrong.status_code == 422
    assert wrong.json()["error"]["details"][0]["field"] == "phone"
    bad_region = await client.patch(
        "/api/v1/organization", json={"phone_region": "XX"}, headers=clinic.headers
    )
    assert bad_region.status_code == 422


async def test_readding_a_removed_practitioner_restores_their_login(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    body = {"name": "Dr. Rua", "email": "rua@example.com", "password": "first-password-1"}
    first = (await client.post("/api/v1/practitioners", json=body, headers=clinic.headers)).json()
    await client.delete(f"/api/v1/practitioners/{first['id']}", headers=clinic.headers)
    again = await client.post(
        "/api/v1/practitioners", json={**body, "password": "second-password-2"}, headers=clinic.headers
    )
    assert again.status_code == 201, again.text
    assert again.json()["user_id"] == first["user_id"]
    login = await client.post(
        "/api/v1/auth/login", json={"email": "rua@example.com", "password": "second-password-2"}
    )
    assert login.status_code == 200
    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {login.json()['token']}"})
    assert me.json()["role"] == "practitioner"
    # A login that belongs to someone still here is not taken over.
    await client.post(
        "/api/v1/users", json={"email": "desk@example.com", "role": "staff"}, headers=clinic.headers
    )
    clash = await client.post(
        "/api/v1/practitioners", json={"name": "Desk", "email": "desk@example.com"}, headers=clinic.headers
    )
    assert clash.status_code == 409


async def test_patients_page_by_cursor_and_limit_has_a_maximum(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    for index in range(5):
        await client.post(
            "/api/v1/patients", json={"first_name": f"P{index}", "last_name": "Same"}, headers=clinic.headers
        )
    seen: list[str] = []
    params: dict[str, object] = {"limit": 2}
    while True:
        page = await client.get("/api/v1/patients", params=params, headers=clinic.headers)
        assert page.status_code == 200, page.text
        seen.extend(patient["id"] for patient in page.json())
        cursor = page.headers.get("x-next-cursor")
        if cursor is None:
            assert "link" not in page.headers
            break
        assert 'rel="next"' in page.headers["link"]
        params = {"limit": 2, "cursor": cursor}
    assert len(seen) == len(set(seen)) == 6
    too_many = await client.get("/api/v1/patients", params={"limit": 501}, headers=clinic.headers)
    assert too_many.status_code == 422
    assert too_many.json()["error"]["details"][0]["field"] == "limit"
    bogus = await client.get("/api/v1/patients", params={"cursor": "not-a-cursor"}, headers=clinic.headers)
    assert bogus.status_code == 422
    assert bogus.json()["error"]["details"][0]["field"] == "cursor"


async def test_appointments_page_by_cursor_and_other_lists_by_limit(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    day = future_day()
    for hour in (9, 10, 11, 12, 13):
        made = await client.post(
            "/api/v1/appointments", json=booking(clinic, clinic.local(day, hour)), headers=clinic.headers
        )
        assert made.status_code == 201
    starts: list[str] = []
    params: dict[str, object] = {"limit": 2}
    while True:
        page = (await client.get("/api/v1/appointments", params=params, headers=clinic.headers)).json()
        starts.extend(item["start"] for item in page["items"])
        if page["next_cursor"] is None:
            break
        params = {"limit": 2, "cursor": page["next_cursor"]}
    assert starts == sorted(starts) and len(set(starts)) == 5

    for name in ("Dr. B", "Dr. C"):
        await client.post("/api/v1/practitioners", json={"name": name}, headers=clinic.headers)
    first = await client.get("/api/v1/practitioners", params={"limit": 2}, headers=clinic.headers)
    assert len(first.json()) == 2 and first.headers["x-next-offset"] == "2"
    rest = await client.get("/api/v1/practitioners", params={"limit": 2, "offset": 2}, headers=clinic.headers)
    assert len(rest.json()) == 1 and "x-next-offset" not in rest.headers
    for path in ("/api/v1/practitioners", "/api/v1/appointments", "/api/v1/appointment-types"):
        refused = await client.get(path, params={"limit": 10_000}, headers=clinic.headers)
        assert refused.status_code == 422, path

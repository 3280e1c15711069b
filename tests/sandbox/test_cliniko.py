"""Contract tests for the Cliniko simulator, over real HTTP through the sandbox runner."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from clinicsync.sandbox import SandboxServer
from clinicsync.sandbox.cliniko import DEFAULT_API_KEY, DEFAULT_USER_AGENT, ClinikoSandbox
from clinicsync.sandbox.runner import ControlClientFactory, SandboxFactory

SMALL_CLINIC = {"seed": 3, "patients": 40, "appointments": 120}


def client_for(server: SandboxServer, key: str = DEFAULT_API_KEY, **headers: str) -> httpx.AsyncClient:
    assert server.base_url is not None
    return httpx.AsyncClient(
        base_url=server.base_url,
        auth=(key, ""),
        headers={"User-Agent": DEFAULT_USER_AGENT, "Accept": "application/json", **headers},
        timeout=10,
    )


@pytest.fixture
async def cliniko(sandbox_factory: SandboxFactory) -> SandboxServer:
    return await sandbox_factory("cliniko", spec=SMALL_CLINIC)


@pytest.fixture
async def api(cliniko: SandboxServer) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(cliniko) as client:
        yield client


async def read_all(
    client: httpx.AsyncClient, path: str, key: str, params: Any = None
) -> list[dict[str, Any]]:
    """Follow links.next to the end, as Cliniko asks clients to."""
    response = await client.get(path, params=params)
    rows: list[dict[str, Any]] = []
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        rows.extend(body[key])
        next_url = body["links"].get("next")
        if next_url is None:
            return rows
        response = await client.get(next_url)


async def references(api: httpx.AsyncClient) -> dict[str, str]:
    business = (await api.get("/businesses")).json()["businesses"][0]["id"]
    practitioner = (await api.get("/practitioners")).json()["practitioners"][0]["id"]
    types = (await api.get(f"/practitioners/{practitioner}/appointment_types")).json()["appointment_types"]
    patient = (await api.get("/patients", params={"per_page": 1})).json()["patients"][0]["id"]
    return {
        "business_id": business,
        "practitioner_id": practitioner,
        "appointment_type_id": types[0]["id"],
        "patient_id": patient,
        "duration": str(types[0]["duration_in_minutes"]),
    }


async def book(api: httpx.AsyncClient, starts_at: str, **extra: Any) -> dict[str, Any]:
    refs = await references(api)
    body = (
        {name: value for name, value in refs.items() if name != "duration"} | {"starts_at": starts_at} | extra
    )
    response = await api.post("/individual_appointments", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


# ------------------------------------------------------------------------- transport


async def test_basic_auth_key_and_user_agent_are_required(cliniko: SandboxServer) -> None:
    assert cliniko.base_url is not None
    async with httpx.AsyncClient(
        base_url=cliniko.base_url, headers={"User-Agent": DEFAULT_USER_AGENT}
    ) as bare:
        response = await bare.get("/patients")
        assert response.status_code == 401
        assert response.json() == {"message": "HTTP Basic: Access denied."}
        assert response.headers["WWW-Authenticate"].startswith("Basic")

    async with client_for(cliniko, key="someone-elses-key-au1") as stranger:
        assert (await stranger.get("/patients")).status_code == 401

    # The same key, sent to a shard it does not belong to, is refused as the real per-shard hosts do.
    key_body = DEFAULT_API_KEY.rsplit("-", 1)[0]
    async with client_for(cliniko, key=f"{key_body}-uk1") as wrong_shard:
        assert (await wrong_shard.get("/patients")).status_code == 401
    # Without the suffix a key means au1, which is this server's shard.
    async with client_for(cliniko, key=key_body) as no_suffix:
        assert (await no_suffix.get("/patients")).status_code == 200

    for agent in ("python-httpx/0.27", "My app", "My app (not-an-email)"):
        async with client_for(cliniko, **{"User-Agent": agent}) as anonymous:
            response = await anonymous.get("/patients")
            assert response.status_code == 403
            assert "User-Agent" in response.json()["message"]


async def test_a_server_on_another_shard_accepts_only_that_shards_keys(
    sandbox_factory: SandboxFactory,
) -> None:
    server = await sandbox_factory(
        "cliniko",
        spec={"patients": 3, "appointments": 0},
        settings={"shard": "uk1", "api_keys": ["abcdef-uk1"]},
    )
    async with client_for(server, key="abcdef-uk1") as right, client_for(server, key="abcdef-au1") as wrong:
        assert (await right.get("/patients")).status_code == 200
        assert (await wrong.get("/patients")).status_code == 401
    # Without a suffix the key is an au1 key, which this uk1 server does not know.
    async with client_for(server, key="abcdef") as legacy:
        assert (await legacy.get("/patients")).status_code == 401
    raw = base64.b64encode(b"abcdef-uk1:").decode()
    async with httpx.AsyncClient(
        base_url=server.base_url or "",
        headers={"Authorization": f"Basic {raw}", "User-Agent": DEFAULT_USER_AGENT},
    ) as manual:
        assert (await manual.get("/businesses")).status_code == 200


async def test_rate_limit_answers_429_with_reset_epoch(sandbox_factory: SandboxFactory, control: Any) -> None:
    server = await sandbox_factory(
        "cliniko", spec={"patients": 3, "appointments": 0}, settings={"rate_limit_per_minute": 3}
    )
    async with client_for(server) as api:
        statuses = [(await api.get("/patients")).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        limited = await api.get("/patients")
        assert limited.status_code == 429
        reset = int(limited.headers["X-RateLimit-Reset"])
        assert time.time() < reset <= time.time() + 62
        # The limit is per key: another key of the account has its own minute.
        ctl = await control(server)
        await ctl.put("/settings", json={"api_keys": [DEFAULT_API_KEY, "second-key-au1"]})
        async with client_for(server, key="second-key-au1") as other:
            assert (await other.get("/patients")).status_code == 200
        # Lifting the limit (0 = unlimited) lets the first key through again.
        await ctl.put("/settings", json={"rate_limit_per_minute": 0})
        assert (await api.get("/patients")).status_code == 200


async def test_injected_429_uses_cliniko_headers(
    cliniko: SandboxServer, api: httpx.AsyncClient, control: ControlClientFactory
) -> None:
    ctl = await control(cliniko)
    await ctl.put("/faults", json={"rate_limit_next": 1, "retry_after_seconds": 5})
    response = await api.get("/patients")
    assert response.status_code == 429
    assert abs(int(response.headers["X-RateLimit-Reset"]) - (time.time() + 5)) < 3
    assert (await api.get("/patients")).status_code == 200


# ------------------------------------------------------------------------- pagination


async def test_pages_carry_total_entries_and_links(api: httpx.AsyncClient) -> None:
    first = (await api.get("/patients")).json()
    assert len(first["patients"]) == 40 and first["total_entries"] == 40  # default per_page is 50
    assert "next" not in first["links"] and "previous" not in first["links"]

    page_two = await api.get("/patients", params={"per_page": 15, "page": 2, "q[]": "first_name:?"})
    body = page_two.json()
    assert body["total_entries"] == 40 and len(body["patients"]) == 15
    links = body["links"]
    assert "page=2" in links["self"] and "page=3" in links["next"] and "page=1" in links["previous"]
    # Links keep the filter, so following them repeats the same question.
    assert "first_name%3A%3F" in links["next"]
    last = (await api.get(links["next"])).json()
    assert len(last["patients"]) == 10 and "next" not in last["links"]

    everything = await read_all(api, "/patients", "patients", {"per_page": 7})
    assert len({row["id"] for row in everything}) == 40

    too_big = await api.get("/patients", params={"per_page": 101})
    assert too_big.status_code == 422
    assert too_big.json() == {
        "message": "Validation Failed",
        "errors": {"per_page": "must be between 1 and 100"},
    }
    assert (await api.get("/patients", params={"per_page": 100})).status_code == 200


async def test_ids_are_strings_beyond_javascript_precision(api: httpx.AsyncClient) -> None:
    patient = (await api.get("/patients", params={"per_page": 1})).json()["patients"][0]
    assert isinstance(patient["id"], str) and int(patient["id"]) > 2**53
    assert patient["links"]["self"].endswith(f"/v1/patients/{patient['id']}")


async def test_default_order_is_created_at_and_sort_order_params_work(api: httpx.AsyncClient) -> None:
    rows = await read_all(api, "/patients", "patients", {"per_page": 100})
    created = [row["created_at"] for row in rows]
    assert created == sorted(created)
    by_name = (
        await api.get("/patients", params={"sort": "last_name,first_name:desc", "per_page": 100})
    ).json()
    keys = [(row["last_name"], row["first_name"]) for row in by_name["patients"]]
    assert [k[0] for k in keys] == sorted(k[0] for k in keys)
    newest_first = (await api.get("/patients", params={"order": "desc", "per_page": 100})).json()["patients"]
    assert [row["created_at"] for row in newest_first] == sorted(created, reverse=True)
    assert (await api.get("/patients", params={"sort": "shoe_size"})).status_code == 422


# ------------------------------------------------------------------------- filters


async def test_filter_operators_per_field_type(api: httpx.AsyncClient) -> None:
    rows = await read_all(api, "/patients", "patients", {"per_page": 100})
    sample = rows[5]
    ids = [row["id"] for row in rows]

    async def matching(*filters: str) -> list[dict[str, Any]]:
        return await read_all(api, "/patients", "patients", {"q[]": list(filters), "per_page": 100})

    assert [row["id"] for row in await matching(f"id:={sample['id']}")] == [sample["id"]]
    assert {row["id"] for row in await matching(f"id:={ids[0]},{ids[1]},{ids[2]}")} == set(ids[:3])
    assert sample["id"] not in {row["id"] for row in await matching(f"id:!={sample['id']}")}
    assert len(await matching(f"id:>{ids[9]}")) == 30
    assert len(await matching(f"id:>={ids[9]}")) == 31
    assert len(await matching(f"id:<{ids[9]}")) == 9
    assert len(await matching(f"id:<={ids[9]}")) == 10

    last_name = sample["last_name"]
    exact = await matching(f"last_name:={last_name}")
    assert exact and all(row["last_name"] == last_name for row in exact)
    assert all(row["last_name"] != last_name for row in await matching(f"last_name:!={last_name}"))
    contains = await matching(f"last_name:~{last_name[1:4].upper()}")
    assert sample["id"] in {row["id"] for row in contains}
    wildcard = await matching(f"last_name:~~{last_name[0]}%{last_name[-1]}")
    assert sample["id"] in {row["id"] for row in wildcard}
    assert all(row["last_name"].lower().startswith(last_name[0].lower()) for row in wildcard)
    with_email = await matching("email:?")
    without_email = await matching("email:!?")
    assert len(with_email) + len(without_email) == 40 and all(row["email"] for row in with_email)

    birthday = sample["date_of_birth"]
    same_month = await matching(f"date_of_birth:=****-{birthday[5:7]}-**")
    assert sample["id"] in {row["id"] for row in same_month}
    assert all(row["date_of_birth"][5:7] == birthday[5:7] for row in same_month)
    assert all(row["date_of_birth"] > birthday for row in await matching(f"date_of_birth:>{birthday}"))

    stamp = sample["created_at"]
    assert all(row["created_at"] > stamp for row in await matching(f"created_at:>{stamp}"))
    assert all(row["created_at"] <= stamp for row in await matching(f"created_at:<={stamp}"))
    # Combined filters are ANDed.
    both = await matching(f"created_at:>={stamp}", f"id:={sample['id']}")
    assert [row["id"] for row in both] == [sample["id"]]


async def test_filters_refuse_bad_fields_operators_and_non_utc_times(api: httpx.AsyncClient) -> None:
    cases = {
        "shoe_size:=9": "'shoe_size' is not a filterable field",
        "created_at:>2024-01-01T10:00:00+10:00": "'2024-01-01T10:00:00+10:00' is not a UTC datetime",
        "created_at:>2024-01-01T10:00:00": "is not a UTC datetime",
        "created_at:~2024": "unsupported operator",
        "id:=abc": "is not a number",
    }
    for raw, message in cases.items():
        response = await api.get("/patients", params={"q[]": raw})
        assert response.status_code == 422, raw
        body = response.json()
        assert body["message"] == "Validation Failed" and message in body["errors"]["q"], body


# ------------------------------------------------------------------------- appointments


async def test_create_appointment_defaults_end_and_returns_location(api: httpx.AsyncClient) -> None:
    refs = await references(api)
    starts = (datetime.now(UTC) + timedelta(days=400)).replace(hour=15, minute=0, second=0, microsecond=0)
    created = await book(api, starts.strftime("%Y-%m-%dT%H:%M:%SZ"), notes="first visit")
    assert created["ends_at"] == (starts + timedelta(minutes=int(refs["duration"]))).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert created["cancelled_at"] is None and created["notes"] == "first visit"
    assert created["patient"]["links"]["self"].endswith(refs["patient_id"])
    fetched = await api.get(created["links"]["self"])
    assert fetched.json() == created

    # An offset is misread, as Cliniko was reported to do: the wall clock is taken as UTC.
    given = {name: v for name, v in refs.items() if name != "duration"}
    local = (starts + timedelta(days=1)).replace(tzinfo=None).isoformat(timespec="seconds")
    misread = await api.post("/individual_appointments", json=given | {"starts_at": local + "+10:00"})
    assert misread.status_code == 201
    assert misread.json()["starts_at"] == local + "Z"
    response = await api.post("/individual_appointments", json=given | {"starts_at": "tomorrow at 9"})
    assert response.status_code == 422
    assert "UTC" in response.json()["errors"]["starts_at"]


async def test_create_refuses_missing_and_unknown_references(
    cliniko: SandboxServer, api: httpx.AsyncClient, control: ControlClientFactory
) -> None:
    response = await api.post("/individual_appointments", json={})
    assert response.status_code == 422
    assert response.json() == {
        "message": "Validation Failed",
        "errors": {
            "patient_id": "can't be blank",
            "practitioner_id": "can't be blank",
            "appointment_type_id": "can't be blank",
            "business_id": "can't be blank",
            "starts_at": "can't be blank",
        },
    }
    refs = await references(api)
    body = {name: v for name, v in refs.items() if name != "duration"} | {
        "starts_at": "2031-02-03T04:05:00Z",
        "patient_id": "999",
    }
    unknown = await api.post("/individual_appointments", json=body)
    assert unknown.status_code == 422 and unknown.json()["errors"] == {"patient": "must exist"}
    # The 2018 behaviour (issue #215) on demand: a 500 instead of a validation error.
    ctl = await control(cliniko)
    await ctl.put("/settings", json={"unknown_patient_is_server_error": True})
    assert (await api.post("/individual_appointments", json=body)).status_code == 500


async def test_patch_moves_appointment_and_bumps_updated_at(
    cliniko: SandboxServer, api: httpx.AsyncClient
) -> None:
    created = await book(api, "2031-03-03T01:00:00Z")
    cliniko.clock.advance(120)
    moved = await api.patch(created["links"]["self"], json={"starts_at": "2031-03-04T02:00:00Z"})
    assert moved.status_code == 200
    body = moved.json()
    assert body["starts_at"] == "2031-03-04T02:00:00Z"
    assert body["updated_at"] > created["updated_at"]
    # The length of the visit is kept when only the start moves.
    old_length = datetime.fromisoformat(created["ends_at"]) - datetime.fromisoformat(created["starts_at"])
    assert datetime.fromisoformat(body["ends_at"]) - datetime.fromisoformat(body["starts_at"]) == old_length
    # Any edit, notes included, moves updated_at: it cannot tell a reschedule from a note.
    cliniko.clock.advance(60)
    noted = (await api.patch(created["links"]["self"], json={"notes": "bring x-rays"})).json()
    assert noted["updated_at"] > body["updated_at"] and noted["starts_at"] == body["starts_at"]
    bad = await api.patch(created["links"]["self"], json={"ends_at": "2031-03-04T01:00:00Z"})
    assert bad.status_code == 422 and bad.json()["errors"] == {"ends_at": "must be after starts_at"}


async def test_cancel_needs_a_reason_is_irreversible_and_hides_the_row(
    cliniko: SandboxServer, api: httpx.AsyncClient
) -> None:
    created = await book(api, "2031-04-04T01:00:00Z")
    url = created["links"]["self"]
    missing = await api.patch(f"{url}/cancel", json={"cancellation_note": "no reason"})
    assert missing.status_code == 422
    assert missing.json() == {
        "message": "Validation Failed",
        "errors": {"cancellation_reason": "can't be blank"},
    }
    wrong = await api.patch(f"{url}/cancel", json={"cancellation_reason": 99})
    assert wrong.status_code == 422 and "cancellation_reason" in wrong.json()["errors"]

    cancelled = await api.patch(
        f"{url}/cancel", json={"cancellation_reason": 40, "cancellation_note": "travel"}
    )
    assert cancelled.status_code == 204 and cancelled.content == b""
    row = (await api.get(url)).json()
    assert row["cancelled_at"] is not None and row["cancellation_reason"] == 40
    assert row["cancellation_reason_description"] == "Away" and row["cancellation_note"] == "travel"

    cliniko.clock.advance(3600)
    again = await api.patch(f"{url}/cancel", json={"cancellation_reason": 50})
    assert again.status_code == 204
    assert (await api.get(url)).json()["cancelled_at"] == row["cancelled_at"]

    default_ids = {
        r["id"] for r in await read_all(api, "/individual_appointments", "individual_appointments")
    }
    assert created["id"] not in default_ids
    with_cancelled = await read_all(
        api, "/individual_appointments", "individual_appointments", {"q[]": "cancelled_at:*", "per_page": 100}
    )
    assert created["id"] in {r["id"] for r in with_cancelled}
    only_cancelled = await read_all(
        api, "/individual_appointments", "individual_appointments", {"q[]": "cancelled_at:?", "per_page": 100}
    )
    assert created["id"] in {r["id"] for r in only_cancelled}
    assert all(r["cancelled_at"] is not None for r in only_cancelled)


async def test_archive_and_delete_hide_rows_and_archived_at_star_brings_them_back(
    api: httpx.AsyncClient,
) -> None:
    archived = await book(api, "2031-05-05T01:00:00Z")
    deleted = await book(api, "2031-05-05T03:00:00Z")
    assert (await api.post(f"{archived['links']['self']}/archive")).status_code == 204
    assert (await api.delete(deleted["links"]["self"])).status_code == 204

    default_ids = {
        r["id"] for r in await read_all(api, "/individual_appointments", "individual_appointments")
    }
    assert archived["id"] not in default_ids and deleted["id"] not in default_ids
    everything = await read_all(
        api, "/individual_appointments", "individual_appointments", {"q[]": "archived_at:*", "per_page": 100}
    )
    ids = {r["id"] for r in everything}
    assert archived["id"] in ids and deleted["id"] not in ids
    assert (await api.get(archived["links"]["self"])).json()["archived_at"] is not None

    gone = await api.get(deleted["links"]["self"])
    assert gone.status_code == 404
    legacy = await read_all(api, "/individual_appointments/deleted", "individual_appointments")
    assert [r["id"] for r in legacy] == [deleted["id"]] and legacy[0]["deleted_at"] is not None


async def test_updated_at_delta_sees_edits_but_not_hidden_rows(
    cliniko: SandboxServer, api: httpx.AsyncClient
) -> None:
    cliniko.clock.advance(10)
    mark = cliniko.clock.now().replace(microsecond=0)
    since = (mark - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cliniko.clock.advance(5)
    moved = await book(api, "2031-06-06T01:00:00Z")
    cancelled = await book(api, "2031-06-06T03:00:00Z")
    await api.patch(f"{cancelled['links']['self']}/cancel", json={"cancellation_reason": 30})

    plain = await read_all(
        api, "/individual_appointments", "individual_appointments", {"q[]": f"updated_at:>{since}"}
    )
    assert {r["id"] for r in plain} == {moved["id"]}
    # The pitfall: a timestamp delta misses the cancellation unless it asks for hidden rows too.
    full = await read_all(
        api,
        "/individual_appointments",
        "individual_appointments",
        {"q[]": [f"updated_at:>{since}", "cancelled_at:*", "archived_at:*"]},
    )
    assert {r["id"] for r in full} == {moved["id"], cancelled["id"]}


async def test_conflicts_endpoint_reports_overlaps(api: httpx.AsyncClient) -> None:
    first = await book(api, "2031-07-07T01:00:00Z")
    lone = (await api.get(f"{first['links']['self']}/conflicts")).json()
    assert lone == {"conflicts": {"exist": False}}
    await book(api, "2031-07-07T01:00:00Z")
    assert (await api.get(first["conflicts"]["links"]["self"])).json() == {"conflicts": {"exist": True}}


# ------------------------------------------------------------------------- other resources


async def test_patients_create_update_archive_unarchive_delete(api: httpx.AsyncClient) -> None:
    bad = await api.post(
        "/patients", json={"first_name": "Ann", "email": "nope", "date_of_birth": "1990-13-01"}
    )
    assert bad.status_code == 422
    assert bad.json()["errors"] == {
        "last_name": "can't be blank",
        "email": "is invalid",
        "date_of_birth": "is not a date (YYYY-MM-DD)",
    }
    created = await api.post(
        "/patients",
        json={
            "first_name": "Ann",
            "last_name": "Example",
            "email": "ann@example.com",
            "date_of_birth": "1990-02-03",
            "patient_phone_numbers": [{"phone_type": "Mobile", "number": "+15125550100"}],
        },
    )
    assert created.status_code == 201
    patient = created.json()
    assert created.headers["Location"] == patient["links"]["self"]
    assert patient["patient_phone_numbers"] == [{"phone_type": "Mobile", "number": "+15125550100"}]
    url = patient["links"]["self"]
    updated = (await api.patch(url, json={"notes": "prefers mornings"})).json()
    assert updated["notes"] == "prefers mornings" and updated["first_name"] == "Ann"

    assert (await api.post(f"{url}/archive")).status_code == 204
    visible = {r["id"] for r in await read_all(api, "/patients", "patients", {"per_page": 100})}
    assert patient["id"] not in visible
    with_archived = await read_all(api, "/patients", "patients", {"per_page": 100, "q[]": "archived_at:*"})
    assert patient["id"] in {r["id"] for r in with_archived}
    assert (await api.post(f"{url}/unarchive")).status_code == 204
    assert (await api.get(url)).json()["archived_at"] is None

    assert (await api.delete(url)).status_code == 204
    assert (await api.get(url)).status_code == 404
    deleted = (await api.get("/patients/deleted")).json()
    assert deleted["patients"] == [
        {"deleted_at": deleted["patients"][0]["deleted_at"], "links": {"self": url}}
    ]


async def test_practitioners_businesses_and_appointment_types(
    cliniko: SandboxServer, api: httpx.AsyncClient
) -> None:
    businesses = (await api.get("/businesses")).json()
    business = businesses["businesses"][0]
    assert business["time_zone_identifier"] == "America/New_York" and business["time_zone"] == "New York"
    assert (await api.get(business["links"]["self"])).json()["id"] == business["id"]

    practitioners = (await api.get("/practitioners")).json()
    assert practitioners["total_entries"] == 5
    first = practitioners["practitioners"][0]
    assert (
        (await api.get(f"/practitioners/{first['id']}")).json()["display_name"].endswith(first["last_name"])
    )
    at_business = (await api.get(f"/businesses/{business['id']}/practitioners")).json()
    assert at_business["total_entries"] == 5
    assert (await api.get("/practitioners/inactive")).json()["total_entries"] == 0
    assert isinstance(cliniko, ClinikoSandbox)
    cliniko.store.practitioners[first["id"]].active = False
    cliniko.store.changed()
    assert (await api.get("/practitioners/inactive")).json()["practitioners"][0]["id"] == first["id"]
    assert (await api.get("/practitioners")).json()["total_entries"] == 4

    types = (await api.get("/appointment_types")).json()
    assert types["total_entries"] == 8
    kind = types["appointment_types"][0]
    assert {"duration_in_minutes", "category", "color", "max_attendees"} <= set(kind)
    offered_by = (await api.get(f"/appointment_types/{kind['id']}/practitioners")).json()
    assert offered_by["total_entries"] >= 1
    assert (await api.get("/appointment_types/1")).status_code == 404


async def test_available_times_window_rules_and_booked_slots(
    cliniko: SandboxServer, api: httpx.AsyncClient
) -> None:
    refs = await references(api)
    path = (
        f"/businesses/{refs['business_id']}/practitioners/{refs['practitioner_id']}"
        f"/appointment_types/{refs['appointment_type_id']}"
    )
    zone = ZoneInfo("America/New_York")
    # A Monday far enough ahead that the generated diary is empty there.
    monday = date.today() + timedelta(days=200)
    monday -= timedelta(days=monday.weekday())
    window = {"from": monday.isoformat(), "to": (monday + timedelta(days=6)).isoformat(), "per_page": 100}
    body = (await api.get(f"{path}/available_times", params=window)).json()
    duration = int(refs["duration"])
    per_day = (17 - 8) * 60 // duration
    assert body["total_entries"] == 5 * per_day
    starts = [item["appointment_start"] for item in body["available_times"]]
    assert starts == sorted(starts) and all(start.endswith("Z") for start in starts)
    first_local = datetime.fromisoformat(starts[0]).astimezone(zone)
    assert (first_local.date(), first_local.hour, first_local.minute) == (monday, 8, 0)

    await book(api, starts[0])
    after = (await api.get(f"{path}/available_times", params=window)).json()
    assert after["total_entries"] == body["total_entries"] - 1
    assert starts[0] not in {item["appointment_start"] for item in after["available_times"]}

    message = {"message": "Invalid time frame definition. Please check from/to param limitations."}
    too_long = await api.get(
        f"{path}/available_times",
        params={"from": monday.isoformat(), "to": (monday + timedelta(days=8)).isoformat()},
    )
    assert too_long.status_code == 400 and too_long.json() == message
    past = await api.get(
        f"{path}/available_times",
        params={"from": (date.today() - timedelta(days=3)).isoformat(), "to": date.today().isoformat()},
    )
    assert past.status_code == 400 and past.json() == message
    backwards = await api.get(f"{path}/available_times", params={"from": window["to"], "to": window["from"]})
    assert backwards.status_code == 400

    upcoming = (await api.get(f"{path}/next_available_time")).json()
    assert upcoming["appointment_start"].endswith("Z")
    assert datetime.fromisoformat(upcoming["appointment_start"]) >= cliniko.clock.now() - timedelta(minutes=1)


# ------------------------------------------------------------------------- front desk, state


async def test_front_desk_actions_show_up_in_the_api(
    cliniko: SandboxServer, api: httpx.AsyncClient, control: ControlClientFactory
) -> None:
    ctl = await control(cliniko)
    actions = (await ctl.get("/actions")).json()
    assert {"reschedule", "cancel", "archive", "delete", "new_patient", "book"} <= set(actions)

    walk_in = (
        await ctl.post("/actions/new_patient", json={"first_name": "Wanda", "last_name": "Walker"})
    ).json()
    assert (await api.get(f"/patients/{walk_in['id']}")).json()["last_name"] == "Walker"

    booked = (
        await ctl.post(
            "/actions/book", json={"patient_id": walk_in["id"], "starts_at": "2031-08-08T14:00:00Z"}
        )
    ).json()
    cliniko.clock.advance(30)
    moved = await ctl.post(
        "/actions/reschedule", json={"appointment_id": booked["id"], "starts_at": "2031-08-09T15:00:00Z"}
    )
    assert moved.status_code == 200
    seen = (await api.get(f"/individual_appointments/{booked['id']}")).json()
    assert seen["starts_at"] == "2031-08-09T15:00:00Z" and seen["updated_at"] > booked["updated_at"]

    cancel = await ctl.post(
        "/actions/cancel", json={"appointment_id": booked["id"], "cancellation_reason": 20}
    )
    assert cancel.json()["cancellation_reason"] == 20
    other = (await ctl.post("/actions/book", json={"starts_at": "2031-08-10T15:00:00Z"})).json()
    assert (await ctl.post("/actions/archive", json={"appointment_id": other["id"]})).status_code == 200
    assert (await api.get(f"/individual_appointments/{other['id']}")).json()["archived_at"] is not None
    assert (await ctl.post("/actions/delete", json={"appointment_id": other["id"]})).status_code == 200
    assert (await api.get(f"/individual_appointments/{other['id']}")).status_code == 404

    refused = await ctl.post(
        "/actions/reschedule", json={"appointment_id": booked["id"], "starts_at": "tomorrow"}
    )
    assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == "starts_at"
    missing = await ctl.post("/actions/cancel", json={"appointment_id": "1"})
    assert missing.status_code == 404


async def test_state_file_round_trip(sandbox_factory: SandboxFactory, tmp_path: Any) -> None:
    state_file = tmp_path / "cliniko.json"
    server = await sandbox_factory("cliniko", spec={"patients": 5, "appointments": 10}, state_file=state_file)
    async with client_for(server) as api:
        created = await book(api, "2031-09-09T01:00:00Z")
        await api.patch(f"{created['links']['self']}/cancel", json={"cancellation_reason": 10})
    assert isinstance(server, ClinikoSandbox)
    server.save_state()
    restored = ClinikoSandbox(state_file=state_file)
    assert restored.dump_state() == server.dump_state()
    again = restored.store.appointments[created["id"]]
    assert again.cancellation_reason == 10 and again.cancelled_at is not None


@pytest.mark.slow
async def test_full_read_of_the_large_clinic(sandbox_factory: SandboxFactory) -> None:
    server = await sandbox_factory(
        "cliniko",
        spec={"seed": 11, "patients": 10_000, "appointments": 50_000},
        settings={"rate_limit_per_minute": 0},
    )
    async with client_for(server) as api:
        patients = await read_all(api, "/patients", "patients", {"per_page": 100})
        assert len(patients) == 10_000 and len({row["id"] for row in patients}) == 10_000
        # Cancelled and archived appointments are hidden unless a filter names them.
        appointments = await read_all(
            api,
            "/individual_appointments",
            "individual_appointments",
            {"per_page": 100, "q[]": ["cancelled_at:*", "archived_at:*"]},
        )
        assert len(appointments) == 50_000 and len({row["id"] for row in appointments}) == 50_000

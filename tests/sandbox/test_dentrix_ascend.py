"""Dentrix Ascend simulator contract tests over real loopback HTTP."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from clinicsync.sandbox import SandboxServer
from clinicsync.sandbox.dentrix_ascend import (
    APPOINTMENT_FIELDS,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_ORGANIZATION_ID,
    TOKEN_PATH,
    FilterError,
    parse_filter,
    split_filter,
)
from clinicsync.sandbox.runner import ControlClientFactory, SandboxFactory

TODAY = date(2026, 3, 2)
SPEC = {"patients": 40, "appointments": 120, "today": TODAY.isoformat(), "days_before": 7, "days_after": 14}
# A frozen clock makes token expiry, rate windows and lastModified stamps exact; 13:00 in the office
# is after every generated change (the generator stamps up to local noon).
NOW = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)


async def start(factory: SandboxFactory, control: ControlClientFactory, **options: Any) -> SandboxServer:
    server = await factory("dentrix_ascend", spec=options.pop("spec", SPEC), **options)
    admin = await control(server)
    await admin.put("/clock", json={"now": NOW.isoformat(), "frozen": True})
    return server


async def fetch_token(server: SandboxServer, **form: str) -> httpx.Response:
    assert server.root_url is not None
    body = {"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET} | form
    async with httpx.AsyncClient(base_url=server.root_url) as client:
        return await client.post(TOKEN_PATH, params={"grant_type": "client_credentials"}, data=body)


async def api_client(server: SandboxServer) -> httpx.AsyncClient:
    token = (await fetch_token(server)).json()["access_token"]
    assert server.base_url is not None
    return httpx.AsyncClient(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {token}", "Organization-ID": DEFAULT_ORGANIZATION_ID},
        timeout=10,
    )


def assert_envelope_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"data", "warnings", "errors", "meta"}
    assert body["data"] is None
    assert body["errors"][0]["code"] == code, body
    return body


def assert_fault(response: httpx.Response, status: int, errorcode: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["fault"]["detail"]["errorcode"] == errorcode


async def test_token_endpoint_issues_apigee_tokens_and_refuses_bad_clients(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    server = await start(sandbox_factory, control)
    good = await fetch_token(server)
    assert good.status_code == 200
    body = good.json()
    assert body["token_type"] == "BearerToken"
    assert body["expires_in"] == "3600"  # Apigee sends a string
    assert body["status"] == "approved"
    assert good.headers["cache-control"] == "no-store"

    wrong_secret = await fetch_token(server, client_secret="nope")
    assert wrong_secret.status_code == 401
    assert wrong_secret.json()["ErrorCode"] == "invalid_client"
    unknown_client = await fetch_token(server, client_id="someone-else")
    assert unknown_client.json() == {"ErrorCode": "invalid_client", "Error": "ClientId is Invalid"}

    assert server.root_url is not None
    async with httpx.AsyncClient(base_url=server.root_url) as client:
        bad_grant = await client.post(TOKEN_PATH, params={"grant_type": "password"}, data={})
        assert bad_grant.status_code == 400
        assert bad_grant.json()["ErrorCode"] == "invalid_request"
        basic = base64.b64encode(f"{DEFAULT_CLIENT_ID}:{DEFAULT_CLIENT_SECRET}".encode()).decode()
        via_basic = await client.post(
            TOKEN_PATH,
            params={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {basic}"},
        )
        assert via_basic.status_code == 200


async def test_bearer_and_organization_headers_are_both_required(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    server = await start(sandbox_factory, control)
    async with await api_client(server) as client:
        assert (await client.get("/providers")).status_code == 200
        no_token = await client.get("/providers", headers={"Authorization": ""})
        assert_fault(no_token, 401, "oauth.v2.InvalidAccessToken")
        forged = await client.get("/providers", headers={"Authorization": "Bearer forged"})
        assert_fault(forged, 401, "oauth.v2.InvalidAccessToken")
        no_org = await client.get("/providers", headers={"Organization-ID": ""})
        assert_envelope_error(no_org, 400, "MISSING_ORGANIZATION_ID")
        other_org = await client.get("/providers", headers={"Organization-ID": "999"})
        assert_envelope_error(other_org, 403, "FORBIDDEN")

        admin = await control(server)
        await admin.put("/settings", json={"vendor_enabled": False})
        disabled = await client.get("/providers")
        body = assert_envelope_error(disabled, 403, "VENDOR_NOT_ENABLED")
        assert "not enabled" in body["errors"][0]["message"]


async def test_tokens_expire_by_lifetime_and_by_control_call_mid_run(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    server = await start(sandbox_factory, control, settings={"token_lifetime_seconds": 600})
    admin = await control(server)
    async with await api_client(server) as client:
        first_page = await client.get("/patients", params={"pageSize": 10})
        assert first_page.status_code == 200
        await admin.put("/clock", json={"advance_seconds": 601})
        expired = await client.get("/patients", params={"pageSize": 10, "page": 2})
        assert_fault(expired, 401, "keymanagement.service.access_token_expired")

        # A fresh token resumes the read; the revoke control call ends it early.
        fresh = (await fetch_token(server)).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {fresh}"
        assert (await client.get("/patients", params={"pageSize": 10, "page": 2})).status_code == 200
        await admin.post("/tokens/expire")
        revoked = await client.get("/patients", params={"pageSize": 10, "page": 3})
        assert_fault(revoked, 401, "keymanagement.service.access_token_expired")

        # The framework's token_expire_next fault answers the same way once.
        client.headers["Authorization"] = f"Bearer {(await fetch_token(server)).json()['access_token']}"
        await admin.put("/faults", json={"token_expire_next": 1})
        assert_fault(await client.get("/patients"), 401, "keymanagement.service.access_token_expired")
        assert (await client.get("/patients")).status_code == 200


async def test_filter_grammar_on_appointments(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    server = await start(sandbox_factory, control)
    async with await api_client(server) as client:
        everything = (
            await client.get("/appointments", params={"pageSize": 500, "responseFields": "ALL"})
        ).json()
        rows = everything["data"]
        assert everything["meta"]["pagination"]["total"] == len(rows) == 120
        window_start, window_end = "2026-03-03T00:00:00Z", "2026-03-05T00:00:00Z"
        in_window = await client.get(
            "/appointments", params={"filter": f"start>={window_start},start<{window_end}", "pageSize": 500}
        )
        expected = [row["id"] for row in rows if window_start <= row["start"] < window_end]
        assert [row["id"] for row in in_window.json()["data"]] == expected
        assert expected

        some = [rows[0]["id"], rows[5]["id"], rows[9]["id"]]
        by_ids = await client.get("/appointments", params={"filter": f"id->[{','.join(map(str, some))}]"})
        assert sorted(row["id"] for row in by_ids.json()["data"]) == sorted(some)

        operatory = rows[0]["operatory"]["id"]
        same_chair = await client.get(
            "/appointments", params={"filter": f"operatory.id=={operatory}", "pageSize": 500}
        )
        assert all(row["operatory"]["id"] == operatory for row in same_chair.json()["data"])
        assert len(same_chair.json()["data"]) == sum(1 for row in rows if row["operatory"]["id"] == operatory)

        statuses = await client.get("/appointments", params={"filter": "status->[CONFIRMED,UNCONFIRMED]"})
        assert {row["status"] for row in statuses.json()["data"]} <= {"CONFIRMED", "UNCONFIRMED"}

    async with await api_client(server) as client:
        target = (await client.get("/patients", params={"pageSize": 1})).json()["data"][0]
        fragment = target["lastName"][:3].lower()
        by_name = await client.get("/patients", params={"filter": f"lastName~={fragment}", "pageSize": 500})
        names = [row["lastName"] for row in by_name.json()["data"]]
        assert target["lastName"] in names
        assert all(fragment in name.lower() for name in names)

        for bad, message in [
            ("nonsense==1", "unknown filter field"),
            ("start>=yesterday", "not an ISO-8601"),
            ("id->1,2", "needs a list"),
            ("duration~=3", "needs a text field"),
            ("start", "cannot parse"),
        ]:
            refused = await client.get("/appointments", params={"filter": bad})
            body = assert_envelope_error(refused, 400, "INVALID_FILTER")
            assert message in body["errors"][0]["message"], (bad, body)


def test_filter_parser_splits_lists_and_rejects_unbalanced_brackets() -> None:
    assert split_filter("id->[1,2,3],status==CONFIRMED") == ["id->[1,2,3]", "status==CONFIRMED"]
    clauses = parse_filter("id->[1, 2],duration>=30", APPOINTMENT_FIELDS)
    assert [(c.field_name, c.operator, c.value) for c in clauses] == [
        ("id", "->", [1, 2]),
        ("duration", ">=", 30),
    ]
    with pytest.raises(FilterError):
        split_filter("id->[1,2")


async def test_paging_envelope_and_response_fields(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    server = await start(sandbox_factory, control, settings={"max_page_size": 25})
    async with await api_client(server) as client:
        page = (await client.get("/patients", params={"page": 2, "pageSize": 15})).json()
        assert page["meta"]["pagination"] == {"page": 2, "pageSize": 15, "total": 40, "totalPages": 3}
        assert [row["id"] for row in page["data"]] == list(range(1_000_016, 1_000_031))
        # Default fields leave contact details out; ALL brings them; a named list keeps id plus those.
        assert "emailAddress" not in page["data"][0]
        full = (await client.get("/patients", params={"pageSize": 1, "responseFields": "ALL"})).json()
        assert {"emailAddress", "phones", "address", "created"} <= set(full["data"][0])
        named = await client.get("/patients", params={"pageSize": 1, "responseFields": "lastName,shoeSize"})
        assert set(named.json()["data"][0]) == {"id", "lastName"}
        assert named.json()["warnings"][0]["code"] == "UNKNOWN_RESPONSE_FIELD"

        capped = (await client.get("/patients", params={"pageSize": 1000})).json()
        assert capped["meta"]["pagination"]["pageSize"] == 25
        assert len(capped["data"]) == 25
        assert capped["warnings"][0]["code"] == "PAGE_SIZE_CAPPED"
        assert_envelope_error(await client.get("/patients", params={"page": 0}), 400, "INVALID_PAGINATION")
        assert_envelope_error(
            await client.get("/patients", params={"pageSize": "x"}), 400, "INVALID_PAGINATION"
        )

        single = await client.get("/providers/2001")
        assert single.json()["data"]["id"] == 2001
        assert_envelope_error(await client.get("/providers/7"), 404, "NOT_FOUND")
        operatories = (await client.get("/operatories")).json()["data"]
        assert operatories and all(row["location"]["type"] == "LocationV1" for row in operatories)


async def test_rate_limit_per_endpoint_with_retry_after(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    server = await start(
        sandbox_factory,
        control,
        settings={"endpoint_rate_limits": {"appointments": 3}, "rate_limit_window_seconds": 60},
    )
    admin = await control(server)
    async with await api_client(server) as client:
        for _ in range(3):
            assert (await client.get("/appointments")).status_code == 200
        throttled = await client.get("/appointments")
        assert_fault(throttled, 429, "policies.ratelimit.SpikeArrestViolation")
        retry_after = int(throttled.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        # Another endpoint has its own allowance.
        assert (await client.get("/patients")).status_code == 200
        await admin.put("/clock", json={"advance_seconds": retry_after})
        assert (await client.get("/appointments")).status_code == 200

        # A framework-injected burst speaks the same gateway format.
        await admin.put("/faults", json={"rate_limit_next": 1, "retry_after_seconds": 7})
        burst = await client.get("/patients")
        assert_fault(burst, 429, "policies.ratelimit.SpikeArrestViolation")
        assert burst.headers["Retry-After"] == "7"


async def test_monthly_quota_answers_429_until_next_month(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    server = await start(sandbox_factory, control, settings={"monthly_call_quota": 2})
    async with await api_client(server) as client:
        assert (await client.get("/providers")).status_code == 200
        assert (await client.get("/operatories")).status_code == 200
        over = await client.get("/patients")
        assert_fault(over, 429, "policies.ratelimit.QuotaViolation")
        # 2026-03-02 13:00 New York (EST) to 2026-04-01 00:00 New York (EDT): the DST hour counts once.
        assert int(over.headers["Retry-After"]) == int(
            (datetime(2026, 4, 1, 4, 0, tzinfo=UTC) - NOW).total_seconds()
        )


async def test_create_update_cancel_and_delete_appointments(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    server = await start(sandbox_factory, control)
    admin = await control(server)
    async with await api_client(server) as client:
        patient = (await client.get("/patients", params={"pageSize": 1})).json()["data"][0]["id"]
        booking = {
            "start": "2026-03-20T14:00:00Z",
            "duration": 30,
            "title": "Exam",
            "patient": {"id": patient, "type": "PatientV1"},
            "provider": {"id": 2001, "type": "ProviderV1"},
            "operatory": {"id": 3001, "type": "OperatoryV1"},
            "other": "booked online",
        }
        created = await client.post("/appointments", json=booking)
        assert created.status_code == 201
        appointment = created.json()["data"]
        assert appointment["status"] == "UNCONFIRMED"
        assert appointment["bookingType"] == "EXISTING_PATIENT"
        assert appointment["lastModified"] == "2026-03-02T18:00:00Z"
        assert created.json()["warnings"] == []

        # Same chair, overlapping: accepted with a warning by default, 409 when the setting says so.
        clash = await client.post("/appointments", json=booking | {"start": "2026-03-20T14:15:00Z"})
        assert clash.status_code == 201
        assert clash.json()["warnings"][0]["code"] == "OPERATORY_OVERLAP"
        await admin.put("/settings", json={"reject_operatory_overlap": True})
        refused = await client.post("/appointments", json=booking | {"start": "2026-03-20T14:10:00Z"})
        assert_envelope_error(refused, 409, "OPERATORY_CONFLICT")

        invalid = await client.post(
            "/appointments",
            json={"start": "2026-03-20T14:02:00Z", "duration": 0, "patient": {"id": 1}, "status": "MAYBE"},
        )
        body = assert_envelope_error(invalid, 400, "INVALID_VALUE")
        fields = {error["field"] for error in body["errors"]}
        assert {"start", "duration", "patient.id", "provider.id", "operatory.id", "status"} <= fields
        assert_envelope_error(await client.post("/appointments", content=b"{nope"), 400, "INVALID_JSON")

        await admin.put("/clock", json={"advance_seconds": 1800})
        moved = await client.put(
            f"/appointments/{appointment['id']}",
            json={"start": "2026-03-21T15:00:00Z", "status": "CONFIRMED"},
        )
        assert moved.status_code == 200
        assert moved.json()["data"]["start"] == "2026-03-21T15:00:00Z"
        assert moved.json()["data"]["status"] == "CONFIRMED"
        assert moved.json()["data"]["other"] == "booked online"
        assert moved.json()["data"]["lastModified"] == "2026-03-02T18:30:00Z"
        changed = await client.get("/appointments", params={"filter": "lastModified>=2026-03-02T18:30:00Z"})
        assert [row["id"] for row in changed.json()["data"]] == [appointment["id"]]
        assert_envelope_error(
            await client.patch(f"/appointments/{appointment['id']}", json={"patient": {"id": patient + 1}}),
            400,
            "READ_ONLY",
        )

        cancelled = await client.put(f"/appointments/{appointment['id']}", json={"status": "CANCELLED"})
        assert cancelled.json()["data"]["status"] == "CANCELLED"
        assert_envelope_error(
            await client.put(f"/appointments/{appointment['id']}", json={"title": "again"}),
            409,
            "APPOINTMENT_CANCELLED",
        )
        listed = await client.get("/appointments", params={"filter": f"id=={appointment['id']}"})
        assert listed.json()["data"][0]["status"] == "CANCELLED"
        await admin.put("/settings", json={"list_cancelled": False})
        hidden = await client.get("/appointments", params={"filter": f"id=={appointment['id']}"})
        assert hidden.json()["data"] == []

        # A delete leaves no trace in any list, whatever the filter: deltas cannot see it.
        other = clash.json()["data"]["id"]
        assert (await client.delete(f"/appointments/{other}")).status_code == 204
        assert_envelope_error(await client.get(f"/appointments/{other}"), 404, "NOT_FOUND")
        await admin.put("/settings", json={"allow_delete": False})
        assert_envelope_error(
            await client.delete(f"/appointments/{appointment['id']}"), 405, "METHOD_NOT_ALLOWED"
        )


async def test_create_patient_warns_about_possible_duplicates(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    server = await start(sandbox_factory, control)
    async with await api_client(server) as client:
        new = {"firstName": "Ada", "lastName": "Quill", "dateOfBirth": "1990-05-01", "gender": "female"}
        first = await client.post("/patients", json=new)
        assert first.status_code == 201
        assert first.json()["data"]["gender"] == "FEMALE"
        assert first.json()["warnings"] == []
        again = await client.post("/patients", json=new)
        assert again.status_code == 201
        warning = again.json()["warnings"][0]
        assert warning["code"] == "POSSIBLE_DUPLICATE"
        assert str(first.json()["data"]["id"]) in warning["message"]
        body = assert_envelope_error(await client.post("/patients", json={"firstName": ""}), 400, "REQUIRED")
        assert {error["field"] for error in body["errors"]} == {"firstName", "lastName"}


async def test_front_desk_actions_change_what_the_api_returns(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    server = await start(sandbox_factory, control)
    admin = await control(server)
    async with await api_client(server) as client:
        rows = (
            await client.get("/appointments", params={"filter": "status==CONFIRMED", "pageSize": 2})
        ).json()["data"]
        cancelled = await admin.post("/actions/cancel_appointment", json={"id": rows[0]["id"]})
        assert cancelled.json()["status"] == "CANCELLED"
        moved = await admin.post(
            "/actions/move_appointment", json={"id": rows[1]["id"], "start": "2026-03-25T13:00:00Z"}
        )
        assert moved.json()["start"] == "2026-03-25T13:00:00Z"
        await admin.post("/actions/delete_appointment", json={"id": rows[1]["id"]})
        assert (await client.get(f"/appointments/{rows[1]['id']}")).status_code == 404
        walk_in = await admin.post("/actions/add_patient", json={"firstName": "Walk", "lastName": "In"})
        assert (await client.get(f"/patients/{walk_in.json()['id']}")).status_code == 200
        missing = await admin.post("/actions/cancel_appointment", json={"id": 1})
        assert missing.status_code == 404


@pytest.mark.slow
async def test_full_paginated_read_of_the_large_clinic(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    spec = {"seed": 11, "patients": 10_000, "appointments": 50_000, "today": TODAY.isoformat()}
    server = await start(sandbox_factory, control, spec=spec)
    async with await api_client(server) as client:
        for resource, expected in (("patients", 10_000), ("appointments", 50_000)):
            seen: list[int] = []
            page = 1
            while True:
                response = await client.get(f"/{resource}", params={"page": page, "pageSize": 500})
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["meta"]["pagination"]["total"] == expected
                seen.extend(row["id"] for row in body["data"])
                if page >= body["meta"]["pagination"]["totalPages"]:
                    break
                page += 1
            assert len(seen) == len(set(seen)) == expected
        starts = [
            row["start"]
            for row in (await client.get("/appointments", params={"pageSize": 500, "page": 3})).json()["data"]
        ]
        assert starts == sorted(starts)
        assert (datetime.fromisoformat(starts[0].replace("Z", "+00:00")) - NOW) < timedelta(days=400)

"""OpenDental simulator contract tests over real HTTP (pms-api-contracts.md, section 1)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from clinicsync.sandbox import SandboxClock, SandboxServer, run_sandbox
from clinicsync.sandbox.opendental import OpenDentalSandbox
from clinicsync.sandbox.runner import SandboxFactory

AUTH = "ODFHIR sandbox-developer-key/sandbox-customer-key"
READ_ONLY_AUTH = "ODFHIR sandbox-developer-key/sandbox-readonly-key"
SPEC = {
    "seed": 11,
    "patients": 60,
    "appointments": 300,
    "practitioners": 2,
    "hygienists": 1,
    "rooms": 3,
    "today": "2030-06-03",
    "days_before": 10,
    "days_after": 20,
}
DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def frozen_clock() -> SandboxClock:
    # Monday 2030-06-03, 07:00 office time: before opening, so the whole day is still bookable.
    return SandboxClock("America/New_York", start=datetime(2030, 6, 3, 7, 0), frozen=True)


async def start_od(factory: SandboxFactory, **options: Any) -> OpenDentalSandbox:
    options.setdefault("spec", SPEC)
    options.setdefault("clock", frozen_clock())
    server = await factory(OpenDentalSandbox, **options)
    assert isinstance(server, OpenDentalSandbox)
    return server


def api(server: SandboxServer, auth: str = AUTH) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=str(server.base_url), headers={"Authorization": auth}, timeout=10)


@pytest.fixture
async def od(sandbox_factory: SandboxFactory) -> OpenDentalSandbox:
    return await start_od(sandbox_factory)


@pytest.fixture
async def client(od: OpenDentalSandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with api(od) as http:
        yield http


def free_time(od: OpenDentalSandbox, op: int, day: str = "2030-06-04") -> str:
    """A 'yyyy-MM-dd HH:mm:ss' start in ``op`` with an hour free after it."""
    taken = sorted(
        (a.AptDateTime, a.end)
        for a in od.appointments.values()
        if a.Op == op and a.AptDateTime.date().isoformat() == day and a.AptStatus in ("Scheduled", "Complete")
    )
    cursor = datetime.fromisoformat(f"{day} 08:00:00")
    for start, end in taken:
        if (start - cursor).total_seconds() >= 3600:
            break
        cursor = max(cursor, end)
    return cursor.strftime("%Y-%m-%d %H:%M:%S")


async def scheduled_apt(client: httpx.AsyncClient) -> dict[str, Any]:
    rows = (await client.get("/appointments", params={"AptStatus": "Scheduled"})).json()
    return rows[0]


# ------------------------------------------------------------------------------ transport and auth


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer sandbox-customer-key",
        "ODFHIR sandbox-customer-key",
        "ODFHIR wrong-dev/sandbox-customer-key",
        "ODFHIR sandbox-developer-key/unknown-customer",
    ],
)
async def test_authorization_is_odfhir_dev_slash_customer(od: OpenDentalSandbox, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    async with httpx.AsyncClient(base_url=str(od.base_url)) as http:
        response = await http.get("/appointments", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text  # a short explanation string


async def test_read_only_key_reads_but_cannot_write(od: OpenDentalSandbox) -> None:
    async with api(od, READ_ONLY_AUTH) as http:
        assert (await http.get("/patients/Simple")).status_code == 200
        denied = await http.post("/patients", json={"LName": "Doe", "FName": "Jan"})
        assert denied.status_code == 401
        assert "ApiPermission" in denied.text


async def test_disabled_key_and_econnector_down(od: OpenDentalSandbox, client: httpx.AsyncClient) -> None:
    od.settings = od.od.model_copy(update={"disabled_customer_keys": ["sandbox-customer-key"]})
    assert (await client.get("/appointments")).status_code == 401
    od.settings = od.od.model_copy(update={"disabled_customer_keys": [], "econnector_running": False})
    down = await client.get("/appointments")
    assert down.status_code == 400
    assert "eConnector" in down.text


async def test_error_body_can_be_a_json_string(od: OpenDentalSandbox, client: httpx.AsyncClient) -> None:
    od.settings = od.od.model_copy(update={"error_body": "json_string"})
    response = await client.get("/appointments/999999")
    assert response.status_code == 404
    assert response.json() == "Appointment not found"


async def test_content_type_can_be_required(od: OpenDentalSandbox, client: httpx.AsyncClient) -> None:
    od.settings = od.od.model_copy(update={"require_content_type": True})
    assert (await client.get("/appointments")).status_code == 400
    ok = await client.get("/appointments", headers={"Content-Type": "application/json"})
    assert ok.status_code == 200


# ------------------------------------------------------------------------------ appointments: reads


async def test_appointment_rows_follow_the_wire_conventions(client: httpx.AsyncClient) -> None:
    response = await client.get("/appointments")
    assert response.status_code == 200
    rows = response.json()
    assert len(rows) == 100  # default page: rows 0-99
    server_times = {row["serverDateTime"] for row in rows}
    assert server_times == {"2030-06-03 07:00:00"}  # office-local, no offset, on every row
    row = rows[0]
    for key in ("AptNum", "PatNum", "AptStatus", "Pattern", "Op", "ProvNum", "AptDateTime", "DateTStamp"):
        assert key in row
    assert row["confirmed"] in {"Not Called", "Confirmed"}  # lowercase = derived display string
    assert row["IsNewPatient"] in {"true", "false"}
    assert row["IsHygiene"] in {"true", "false"}
    assert row["TimeLocked"] == "false"
    assert DATETIME_RE.match(row["AptDateTime"])
    assert row["DateTimeAskedToArrive"] == "0001-01-01 00:00:00"
    scheduled = [r for r in rows if r["AptStatus"] == "Scheduled"]
    assert scheduled
    assert scheduled[0]["DateTimeArrived"] == "0001-01-01 00:00:00"
    assert {r["AptStatus"] for r in rows} <= {"Scheduled", "Complete", "UnschedList", "Broken"}


async def test_limit_offset_paging_caps_at_100_without_total(client: httpx.AsyncClient) -> None:
    capped = await client.get("/appointments", params={"Limit": 500})
    assert len(capped.json()) == 100
    seen: list[int] = []
    offset = 0
    while True:
        page = (await client.get("/appointments", params={"Offset": offset})).json()
        seen.extend(row["AptNum"] for row in page)
        if len(page) < 100:
            break
        offset += 100
    assert len(seen) == len(set(seen)) == 300
    small = (await client.get("/appointments", params={"Limit": 7, "Offset": 3})).json()
    assert [row["AptNum"] for row in small] == seen[3:10]
    assert "total" not in capped.headers


async def test_appointment_filters(od: OpenDentalSandbox, client: httpx.AsyncClient) -> None:
    target = next(iter(od.appointments.values()))
    by_patient = (await client.get("/appointments", params={"PatNum": target.PatNum})).json()
    assert by_patient and {r["PatNum"] for r in by_patient} == {target.PatNum}
    broken = (await client.get("/appointments", params={"AptStatus": "Scheduled", "Limit": 100})).json()
    assert broken and {r["AptStatus"] for r in broken} == {"Scheduled"}
    by_op = (await client.get("/appointments", params={"Op": 2})).json()
    assert by_op and {r["Op"] for r in by_op} == {2}
    one_day = (await client.get("/appointments", params={"date": "2030-06-04"})).json()
    assert one_day and {r["AptDateTime"][:10] for r in one_day} == {"2030-06-04"}
    span = (
        await client.get("/appointments", params={"dateStart": "2030-06-04", "dateEnd": "2030-06-05"})
    ).json()
    assert {r["AptDateTime"][:10] for r in span} == {"2030-06-04", "2030-06-05"}
    # Parameter names match regardless of case, as on the real server.
    lower = (await client.get("/appointments", params={"patnum": target.PatNum})).json()
    assert lower == by_patient
    assert (await client.get("/appointments", params={"ClinicNum": 0})).status_code == 200


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"DateTStamp": "06/01/2030"}, "DateTStamp format must be yyyy-MM-dd HH:mm:ss"),
        ({"DateTStamp": "2030-06-01T10:00:00"}, "DateTStamp format must be yyyy-MM-dd HH:mm:ss"),
        ({"ClinicNum": 4}, "Clinic not found"),
        ({"AptStatus": "Cancelled"}, "AptStatus must be one of"),
        ({"date": "06/04/2030"}, "date format must be yyyy-MM-dd"),
        ({"dateStart": "2030-06-04"}, "dateStart and dateEnd must be used together"),
        ({"PatNum": "abc"}, "PatNum must be a number"),
    ],
)
async def test_bad_list_parameters_are_400_with_short_text(
    client: httpx.AsyncClient, params: dict[str, Any], message: str
) -> None:
    response = await client.get("/appointments", params=params)
    assert response.status_code == 400
    assert response.text.startswith(message)


async def test_get_one_appointment(client: httpx.AsyncClient) -> None:
    one = await client.get("/appointments/5")
    assert one.status_code == 200
    assert one.json()["AptNum"] == 5
    assert "serverDateTime" in one.json()
    missing = await client.get("/appointments/99999")
    assert missing.status_code == 404
    assert missing.text == "Appointment not found"


async def test_date_tstamp_returns_rows_changed_strictly_after(
    od: OpenDentalSandbox, client: httpx.AsyncClient
) -> None:
    first = (await client.get("/appointments", params={"Limit": 1})).json()[0]
    marker = first["serverDateTime"]
    assert (await client.get("/appointments", params={"DateTStamp": marker})).json() == []
    od.clock.advance(5)
    apt = await scheduled_apt(client)
    assert (await client.put(f"/appointments/{apt['AptNum']}/Note", json={"Note": "x"})).status_code == 200
    delta = (await client.get("/appointments", params={"DateTStamp": marker})).json()
    assert [row["AptNum"] for row in delta] == [apt["AptNum"]]
    assert delta[0]["DateTStamp"] == "2030-06-03 07:00:05"
    # A change in the same second as the marker is not "after" it: clients must step back a second.
    same_second = (await client.get("/appointments", params={"DateTStamp": "2030-06-03 07:00:05"})).json()
    assert same_second == []


# ------------------------------------------------------------------------------ appointments: writes


@pytest.mark.parametrize("missing", ["PatNum", "Op", "AptDateTime"])
async def test_post_appointment_requires_patnum_op_aptdatetime(
    client: httpx.AsyncClient, missing: str
) -> None:
    body = {"PatNum": 1, "Op": 1, "AptDateTime": "2030-06-20 09:00:00"}
    del body[missing]
    response = await client.post("/appointments", json=body)
    assert response.status_code == 400
    assert response.text == f"{missing} is required"


async def test_post_appointment_creates_with_location(
    od: OpenDentalSandbox, client: httpx.AsyncClient
) -> None:
    when = free_time(od, 1)
    response = await client.post(
        "/appointments", json={"PatNum": 3, "Op": 1, "AptDateTime": when, "Pattern": "/XXXXXX/", "Note": "hi"}
    )
    assert response.status_code == 201
    created = response.json()
    assert "serverDateTime" not in created  # absent from POST/PUT responses
    assert created["AptStatus"] == "Scheduled"
    assert created["Pattern"] == "/XXXXXX/"  # 8 characters = 40 minutes
    assert created["AptDateTime"] == when
    assert response.headers["location"] == f"{od.base_url}/appointments/{created['AptNum']}"
    fetched = await client.get(response.headers["location"])
    assert fetched.json()["Note"] == "hi"
    default = await client.post("/appointments", json={"PatNum": 3, "Op": 3, "AptDateTime": free_time(od, 3)})
    assert default.json()["Pattern"] == "/XX/"
    assert od.appointments[default.json()["AptNum"]].minutes == 20


async def test_post_appointment_validation(od: OpenDentalSandbox, client: httpx.AsyncClient) -> None:
    base = {"PatNum": 3, "Op": 1, "AptDateTime": free_time(od, 1)}
    cases = [
        ({"PatNum": 99999}, "PatNum is invalid"),
        ({"Op": 77}, "Op is invalid"),
        ({"AptDateTime": "2030-06-20T09:00:00"}, "AptDateTime format must be yyyy-MM-dd HH:mm:ss"),
        ({"Pattern": "--"}, "Pattern must contain only / and X characters"),
        ({"AptStatus": "Broken"}, "AptStatus must be one of"),
        ({"IsNewPatient": True, "IsHygiene": "yes"}, 'IsHygiene must be "true" or "false"'),
        ({"Priority": "Urgent"}, "Priority must be one of"),
    ]
    for change, message in cases:
        response = await client.post("/appointments", json={**base, **change})
        assert response.status_code == 400, change
        assert response.text.startswith(message), (change, response.text)


async def test_post_appointment_rejects_overlap_in_operatory(
    od: OpenDentalSandbox, client: httpx.AsyncClient
) -> None:
    when = free_time(od, 2)
    first = await client.post(
        "/appointments", json={"PatNum": 4, "Op": 2, "AptDateTime": when, "Pattern": "XXXX"}
    )
    assert first.status_code == 201
    clash = await client.post("/appointments", json={"PatNum": 5, "Op": 2, "AptDateTime": when})
    assert clash.status_code == 400
    assert "overlaps" in clash.text
    od.settings = od.od.model_copy(update={"reject_overlaps": False})
    allowed = await client.post("/appointments", json={"PatNum": 5, "Op": 2, "AptDateTime": when})
    assert allowed.status_code == 201


async def test_put_is_partial_and_note_overwrites(client: httpx.AsyncClient) -> None:
    apt = await scheduled_apt(client)
    response = await client.put(f"/appointments/{apt['AptNum']}", json={"Note": "replaced"})
    assert response.status_code == 200
    after = (await client.get(f"/appointments/{apt['AptNum']}")).json()
    assert after["Note"] == "replaced"
    unchanged = {k: v for k, v in apt.items() if k not in ("Note", "DateTStamp", "serverDateTime")}
    assert {k: after[k] for k in unchanged} == unchanged
    bad = await client.put(f"/appointments/{apt['AptNum']}", json={"AptStatus": "Cancelled"})
    assert bad.status_code == 400
    assert (await client.put("/appointments/99999", json={"Note": "x"})).status_code == 404


async def test_reschedule_a_broken_appointment_with_put(client: httpx.AsyncClient) -> None:
    apt = await scheduled_apt(client)
    await client.put(f"/appointments/{apt['AptNum']}/Break", json={"sendToUnscheduledList": "false"})
    moved = await client.put(
        f"/appointments/{apt['AptNum']}",
        json={
            "AptStatus": "Scheduled",
            "AptDateTime": "2030-06-21 16:00:00",
            "Op": apt["Op"],
            "Pattern": "XX",
        },
    )
    assert moved.status_code == 200
    assert moved.json()["AptStatus"] == "Scheduled"
    assert moved.json()["AptDateTime"] == "2030-06-21 16:00:00"


async def test_break_rules(client: httpx.AsyncClient) -> None:
    apt = await scheduled_apt(client)
    url = f"/appointments/{apt['AptNum']}/Break"
    missing = await client.put(url, json={})
    assert missing.status_code == 400
    assert missing.text == "sendToUnscheduledList is required"
    bad_type = await client.put(url, json={"sendToUnscheduledList": "false", "breakType": "Oops"})
    assert bad_type.status_code == 400
    ok = await client.put(url, json={"sendToUnscheduledList": "false", "breakType": "Missed"})
    assert ok.status_code == 200
    assert ok.content == b""
    after = (await client.get(f"/appointments/{apt['AptNum']}")).json()
    assert after["AptStatus"] == "Broken"
    assert after["AptNum"] == apt["AptNum"]  # broken appointments keep their number
    assert "D9986" in after["ProcDescript"]
    again = await client.put(url, json={"sendToUnscheduledList": "true"})
    assert again.status_code == 400
    assert again.text == "Only Scheduled appointments can be broken"

    other = (await client.get("/appointments", params={"AptStatus": "Scheduled"})).json()[0]
    sent = await client.put(
        f"/appointments/{other['AptNum']}/Break",
        json={"sendToUnscheduledList": "true", "breakType": "Cancelled"},
    )
    assert sent.status_code == 200
    assert (await client.get(f"/appointments/{other['AptNum']}")).json()["AptStatus"] == "UnschedList"
    hist = (await client.get("/histappointments", params={"AptNum": other["AptNum"]})).json()
    assert [h["HistApptAction"] for h in hist] == ["Cancelled"]


async def test_note_appends_and_confirm(client: httpx.AsyncClient) -> None:
    apt = await scheduled_apt(client)
    url = f"/appointments/{apt['AptNum']}"
    await client.put(url, json={"Note": "first"})
    assert (await client.put(f"{url}/Note", json={"Note": "second"})).status_code == 200
    assert (await client.get(url)).json()["Note"] == "first\r\nsecond"
    assert (await client.put(f"{url}/Note", json={})).status_code == 400

    assert (await client.put(f"{url}/Confirm", json={"confirmVal": "Confirmed"})).status_code == 200
    assert (await client.get(url)).json()["confirmed"] == "Confirmed"
    assert (await client.put(f"{url}/Confirm", json={"defNum": 209})).status_code == 200
    assert (await client.get(url)).json()["Confirmed"] == 209
    assert (await client.put(f"{url}/Confirm", json={"confirmVal": "Maybe"})).status_code == 400
    assert (await client.put(f"{url}/Confirm", json={"defNum": 4242})).status_code == 400
    assert (await client.put(f"{url}/Confirm", json={})).status_code == 400


async def test_appointments_cannot_be_deleted_through_the_api(client: httpx.AsyncClient) -> None:
    response = await client.delete("/appointments/3")
    assert response.status_code == 400
    assert (await client.get("/appointments/3")).status_code == 200


async def test_slots_are_open_blocks_in_provider_schedule(
    od: OpenDentalSandbox, client: httpx.AsyncClient
) -> None:
    response = await client.get("/appointments/Slots", params={"date": "2030-06-04", "ProvNum": 1})
    assert response.status_code == 200
    blocks = response.json()
    assert blocks
    ops_of_provider = {o.OperatoryNum for o in od.operatories.values() if o.ProvDentist == 1}
    for block in blocks:
        assert set(block) == {"DateTimeStart", "DateTimeEnd", "ProvNum", "OpNum"}
        assert block["OpNum"] in ops_of_provider
        start, end = (datetime.fromisoformat(block[k]) for k in ("DateTimeStart", "DateTimeEnd"))
        assert datetime(2030, 6, 4, 8) <= start < end <= datetime(2030, 6, 4, 17)
        for apt in od.appointments.values():
            if apt.Op == block["OpNum"] and apt.AptStatus in ("Scheduled", "Complete"):
                assert not (apt.AptDateTime < end and start < apt.end)
    long_only = (
        await client.get(
            "/appointments/Slots", params={"date": "2030-06-04", "ProvNum": 1, "lengthMinutes": 120}
        )
    ).json()
    assert all(
        (datetime.fromisoformat(b["DateTimeEnd"]) - datetime.fromisoformat(b["DateTimeStart"])).seconds
        >= 7200
        for b in long_only
    )
    past = await client.get("/appointments/Slots", params={"date": "2030-05-01"})
    assert past.status_code == 400
    default = (await client.get("/appointments/Slots")).json()
    assert {b["DateTimeStart"][:10] for b in default} <= {f"2030-06-{d:02d}" for d in range(3, 17)}


# ------------------------------------------------------------------------------ history and deletes


async def test_histappointments_and_hard_delete(od: OpenDentalSandbox, control: Any) -> None:
    ctl = await control(od)
    async with api(od) as client:
        marker = (await client.get("/appointments", params={"Limit": 1})).json()[0]["serverDateTime"]
        od.clock.advance(10)
        created = await client.post(
            "/appointments", json={"PatNum": 7, "Op": 1, "AptDateTime": free_time(od, 1)}
        )
        apt_num = created.json()["AptNum"]
        await client.put(f"/appointments/{apt_num}", json={"Note": "changed"})
        victim = (await client.get("/appointments", params={"AptStatus": "Scheduled"})).json()[1]["AptNum"]
        deleted = await ctl.post("/actions/delete_appointment", json={"AptNum": victim})
        assert deleted.json() == {"deleted": victim}

        assert (await client.get(f"/appointments/{victim}")).status_code == 404
        delta = (await client.get("/appointments", params={"DateTStamp": marker})).json()
        assert victim not in {row["AptNum"] for row in delta}  # deletes never appear in deltas
        assert apt_num in {row["AptNum"] for row in delta}

        hist = (await client.get("/histappointments")).json()
        actions = [(h["AptNum"], h["HistApptAction"]) for h in hist]
        assert actions == [(apt_num, "Created"), (apt_num, "Changed"), (victim, "Deleted")]
        row = hist[0]
        for key in (
            "HistApptNum",
            "HistUserNum",
            "HistDateTStamp",
            "HistApptAction",
            "ApptSource",
            "Pattern",
        ):
            assert key in row
        assert row["ApptSource"] == "EConnector"
        assert hist[2]["ApptSource"] == "None"
        only_deleted = (await client.get("/histappointments", params={"HistApptAction": "Deleted"})).json()
        assert [h["AptNum"] for h in only_deleted] == [victim]
        bad = await client.get("/histappointments", params={"HistApptAction": "Exploded"})
        assert bad.status_code == 400


async def test_front_desk_actions(od: OpenDentalSandbox, control: Any) -> None:
    ctl = await control(od)
    assert set((await ctl.get("/actions")).json()) >= {
        "reschedule",
        "cancel",
        "break",
        "delete_appointment",
        "new_patient",
        "edit_patient",
        "new_appointment",
    }
    async with api(od) as client:
        apt = await scheduled_apt(client)
        moved = await ctl.post(
            "/actions/reschedule", json={"AptNum": apt["AptNum"], "AptDateTime": "2030-06-24 16:30:00"}
        )
        assert moved.status_code == 200
        assert (await client.get(f"/appointments/{apt['AptNum']}")).json()[
            "AptDateTime"
        ] == "2030-06-24 16:30:00"
        cancelled = await ctl.post("/actions/cancel", json={"AptNum": apt["AptNum"]})
        assert cancelled.json()["AptStatus"] == "UnschedList"
        again = await ctl.post("/actions/cancel", json={"AptNum": apt["AptNum"]})
        assert again.status_code == 400
        patient = await ctl.post("/actions/new_patient", json={"LName": "Desk", "FName": "Added"})
        assert patient.status_code == 200
        found = (await client.get("/patients", params={"LName": "desk"})).json()
        assert [p["PatNum"] for p in found] == [patient.json()["PatNum"]]
        missing = await ctl.post(
            "/actions/reschedule", json={"AptNum": 999999, "AptDateTime": "2030-06-24 16:30:00"}
        )
        assert missing.status_code == 404


# ------------------------------------------------------------------------------ patients


async def test_patients_simple_has_full_fields_and_date_tstamp(
    od: OpenDentalSandbox, client: httpx.AsyncClient
) -> None:
    rows = (await client.get("/patients/Simple")).json()
    assert len(rows) == 60
    assert rows[0]["serverDateTime"] == "2030-06-03 07:00:00"
    for key in (
        "PatNum",
        "LName",
        "FName",
        "Birthdate",
        "WirelessPhone",
        "Email",
        "PriProv",
        "DateTStamp",
        "Zip",
    ):
        assert key in rows[0]
    marker = rows[0]["serverDateTime"]
    assert (await client.get("/patients/Simple", params={"DateTStamp": marker})).json() == []
    od.clock.advance(3)
    await client.put("/patients/4", json={"City": "Salem"})
    delta = (await client.get("/patients/Simple", params={"DateTStamp": marker})).json()
    assert [(p["PatNum"], p["City"]) for p in delta] == [(4, "Salem")]
    bad = await client.get("/patients/Simple", params={"DateTStamp": "yesterday"})
    assert bad.text == "DateTStamp format must be yyyy-MM-dd HH:mm:ss"


async def test_patient_search_is_partial_case_insensitive_and_reduced(
    od: OpenDentalSandbox, client: httpx.AsyncClient
) -> None:
    someone = od.patients[10]
    found = (await client.get("/patients", params={"LName": someone.LName[:3].upper()})).json()
    assert 10 in {p["PatNum"] for p in found}
    assert all(someone.LName[:3].lower() in p["LName"].lower() for p in found)
    assert "DateTStamp" not in found[0]  # reduced field set, no DateTStamp filter
    assert "Guarantor" not in found[0]
    digits = re.sub(r"\D", "", someone.WirelessPhone)
    by_phone = (await client.get("/patients", params={"Phone": digits[-7:]})).json()
    assert 10 in {p["PatNum"] for p in by_phone}
    assert (await client.get("/patients/10")).json()["PatNum"] == 10
    missing = await client.get("/patients/424242")
    assert missing.status_code == 404
    assert missing.text == "Patient not found"


async def test_post_patient_validation_and_duplicate_check(
    od: OpenDentalSandbox, client: httpx.AsyncClient
) -> None:
    assert (await client.post("/patients", json={"FName": "No"})).text == "LName is required"
    assert (await client.post("/patients", json={"LName": "No"})).text == "FName is required"
    for change, message in [
        ({"Zip": "1234"}, "Zip is invalid"),
        ({"Gender": "Other"}, "Gender must be one of"),
        ({"PatStatus": "Gone"}, "PatStatus must be one of"),
        ({"Birthdate": "1990/01/01"}, "Birthdate format must be yyyy-MM-dd"),
        ({"PreferContactMethod": "Pigeon"}, "PreferContactMethod must be one of"),
        ({"TxtMsgOk": "Maybe"}, "TxtMsgOk must be one of"),
    ]:
        response = await client.post("/patients", json={"LName": "Valid", "FName": "Person", **change})
        assert response.status_code == 400, change
        assert response.text.startswith(message)
    for zip_code in ("12345", "12345-1234", "123456789", "K1A 0B1"):
        body = {"LName": "Zip", "FName": zip_code, "Zip": zip_code}
        assert (await client.post("/patients", json=body)).status_code == 201, zip_code

    body = {
        "LName": "Quill",
        "FName": "Ada",
        "Birthdate": "1985-02-03",
        "WirelessPhone": "(503)555-0101",
        "Email": "ada.quill@example.com",
        "Gender": "Female",
    }
    created = await client.post("/patients", json=body)
    assert created.status_code == 201
    assert created.headers["location"].endswith(f"/patients/{created.json()['PatNum']}")
    assert created.json()["Guarantor"] == created.json()["PatNum"]
    duplicate = await client.post("/patients", json={**body, "LName": "QUILL", "WirelessPhone": ""})
    assert duplicate.status_code == 400
    assert duplicate.text.startswith("Patient already exists")
    different = await client.post("/patients", json={**body, "Birthdate": "1985-02-04"})
    assert different.status_code == 201
    od.settings = od.od.model_copy(update={"duplicate_patient_response": "return_existing"})
    existing = await client.post("/patients", json=body)
    assert existing.status_code == 200
    assert existing.json()["PatNum"] == created.json()["PatNum"]


async def test_put_patient_empty_string_clears_but_names_stay(client: httpx.AsyncClient) -> None:
    before = (await client.get("/patients/5")).json()
    assert before["Email"] or before["WirelessPhone"]
    response = await client.put("/patients/5", json={"Email": "", "WirelessPhone": "", "Birthdate": ""})
    assert response.status_code == 200
    after = (await client.get("/patients/5")).json()
    assert after["Email"] == "" and after["WirelessPhone"] == ""
    assert after["Birthdate"] == "0001-01-01"
    assert after["LName"] == before["LName"] and after["City"] == before["City"]
    blank = await client.put("/patients/5", json={"LName": ""})
    assert blank.status_code == 400
    assert blank.text == "LName cannot be blank"
    assert (await client.delete("/patients/5")).status_code == 400
    assert (await client.get("/patients/5")).status_code == 200


# ------------------------------------------------------------------------------ reference data


async def test_providers_operatories_schedules_types(
    od: OpenDentalSandbox, client: httpx.AsyncClient
) -> None:
    providers = (await client.get("/providers")).json()
    assert [p["ProvNum"] for p in providers] == [1, 2, 3]
    assert providers[2]["IsSecondary"] == "true"  # the hygienist
    assert providers[0]["ProvStatus"] == "Active"
    assert "serverDateTime" in providers[0]
    by_clinic = (await client.get("/providers", params={"ClinicNum": 0})).json()
    assert "serverDateTime" not in by_clinic[0]
    both = await client.get("/providers", params={"ClinicNum": 0, "DateTStamp": "2030-01-01 00:00:00"})
    assert both.status_code == 400
    assert (await client.get("/providers", params={"DateTStamp": "2031-01-01 00:00:00"})).json() == []
    assert (await client.get("/providers/2")).json()["Abbr"] == "DOC2"
    assert (await client.get("/providers/9")).status_code == 404

    operatories = (await client.get("/operatories")).json()
    assert [o["OperatoryNum"] for o in operatories] == [1, 2, 3]
    assert operatories[2]["IsHygiene"] == "true" and operatories[2]["ProvHygienist"] == 3
    assert (await client.get("/operatories/1")).json()["OpName"] == "Operatory 1"
    assert (await client.get("/operatories/99")).status_code == 404

    schedules = (await client.get("/schedules", params={"date": "2030-06-04"})).json()
    assert len(schedules) == 3
    first = schedules[0]
    assert isinstance(first["ScheduleNum"], str) and first["ScheduleNum"].isdigit()  # numbers as strings
    assert first["SchedDate"] == "2030-06-04" and first["StartTime"] == "08:00:00"
    assert first["SchedType"] == "Provider" and first["operatories"]
    weekend = (await client.get("/schedules", params={"date": "2030-06-08"})).json()
    assert weekend == []
    assert (await client.get("/schedules", params={"SchedType": "Blockout"})).json() == []

    types = (await client.get("/appointmenttypes")).json()
    assert types[0]["AppointmentTypeName"] == "Exam"
    assert types[0]["Pattern"] == "/XXXX/"  # 30 minutes
    assert types[0]["IsHidden"] == "false"


# ------------------------------------------------------------------------------ throttling


async def test_throttle_as_queueing_delay(od: OpenDentalSandbox, client: httpx.AsyncClient) -> None:
    od.settings = od.od.model_copy(update={"throttle_mode": "delay", "throttle_interval_seconds": 0.15})
    loop = asyncio.get_running_loop()
    began = loop.time()
    for _ in range(3):
        assert (await client.get("/providers")).status_code == 200
    assert loop.time() - began >= 0.28
    faults = [e.fault for e in od.request_log][-3:]
    assert faults[0] is None and all(f and f.startswith("throttle_delay") for f in faults[1:])


async def test_throttle_as_error_per_customer_key(od: OpenDentalSandbox, client: httpx.AsyncClient) -> None:
    od.settings = od.od.model_copy(
        update={
            "throttle_mode": "error",
            "throttle_interval_seconds": 5,
            "throttle_readonly_interval_seconds": 5,
        }
    )
    assert (await client.get("/providers")).status_code == 200
    limited = await client.get("/providers")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "5"
    # Another customer key has its own budget.
    async with api(od, READ_ONLY_AUTH) as other:
        assert (await other.get("/providers")).status_code == 200
    od.settings = od.od.model_copy(update={"throttle_error_status": 400})
    assert (await client.get("/providers")).status_code == 400


# ------------------------------------------------------------------------------ faults on this provider


async def test_faults_render_in_opendental_format(od: OpenDentalSandbox, control: Any) -> None:
    ctl = await control(od)
    async with api(od) as client:
        await ctl.put("/faults", json={"rate_limit_next": 1})
        limited = await client.get("/appointments")
        assert limited.status_code == 429
        assert limited.headers["content-type"].startswith("text/plain")
        await ctl.put("/faults", json={"token_expire_next": 1})
        assert (await client.get("/appointments")).status_code == 401
        await ctl.put("/faults", json={"page_duplicate_rate": 1.0, "page_overlap": 3})
        page = (await client.get("/appointments", params={"Offset": 100})).json()
        assert page[0]["AptNum"] == 98
        await ctl.post("/faults/reset")
        assert (await client.get("/appointments", params={"Offset": 100})).json()[0]["AptNum"] == 101
        log = (await ctl.get("/requests")).json()
        assert [e["fault"] for e in log] == ["rate_limited", "token_expired", "page_duplicate:3", None]
        assert {e["identity"] for e in log} == {"customer:sandbox-customer-key"}


async def test_state_file_round_trip_keeps_history(tmp_path: Any) -> None:
    path = tmp_path / "od.json"
    first_server = run_sandbox(OpenDentalSandbox, spec=SPEC, clock=frozen_clock(), state_file=path)
    async with first_server as first, api(first) as client:
        apt = await scheduled_apt(client)
        await client.put(f"/appointments/{apt['AptNum']}/Break", json={"sendToUnscheduledList": "false"})
        created = await client.post("/patients", json={"LName": "Kept", "FName": "Row"})
    second_server = run_sandbox(OpenDentalSandbox, spec=SPEC, clock=frozen_clock(), state_file=path)
    async with second_server as second, api(second) as client:
        assert (await client.get(f"/appointments/{apt['AptNum']}")).json()["AptStatus"] == "Broken"
        assert (await client.get(f"/patients/{created.json()['PatNum']}")).json()["LName"] == "Kept"
        hist = (await client.get("/histappointments")).json()
        assert [h["HistApptAction"] for h in hist] == ["Changed"]
        new = await client.post("/patients", json={"LName": "Next", "FName": "Number"})
        assert new.json()["PatNum"] == created.json()["PatNum"] + 1

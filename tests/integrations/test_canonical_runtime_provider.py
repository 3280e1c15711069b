"""Canonical operations are data: a provider defined at runtime, against a server written here."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from integration_servers import serve

from clinicsync.integrations.canonical import SyncOperation as Op
from clinicsync.integrations.canonical import perform, stream
from clinicsync.integrations.executor import IntegrationExecutor

TOKEN = "bw_live_5d1c0ffee7"
ZONE = ZoneInfo("Europe/Berlin")


def bookwell() -> tuple[FastAPI, dict[str, dict[str, Any]]]:
    """A PMS nobody has shipped a definition for: its own names, Berlin wall-clock times, cursor pages."""
    app = FastAPI()
    people: dict[str, dict[str, Any]] = {}
    visits: dict[str, dict[str, Any]] = {}
    serial = itertools.count(101)
    clinicians = [
        {"key": "c1", "given": "Lena", "family": "Brandt"},
        {"key": "c2", "given": "Ole", "family": "Sørensen"},
    ]

    def stamp() -> str:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def denied(request: Request) -> JSONResponse | None:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"problem": "who are you?"}, 401)
        return None

    def page(request: Request, rows: list[dict[str, Any]]) -> JSONResponse:
        start = int(request.query_params.get("after") or 0)
        chunk = rows[start : start + 2]
        more = start + 2 < len(rows)
        return JSONResponse({"items": chunk, "next": start + 2 if more else None})

    @app.get("/api/clinicians")
    async def list_clinicians(request: Request) -> Response:
        return denied(request) or page(request, clinicians)

    @app.post("/api/people")
    async def add_person(request: Request) -> Response:
        if refused := denied(request):
            return refused
        body = await request.json()
        if not body.get("family"):
            return JSONResponse({"problem": "family is required"}, 400)
        key = f"P{next(serial)}"
        people[key] = {"key": key, **body, "changed": stamp()}
        return JSONResponse(people[key], 201)

    @app.get("/api/people")
    async def find_people(request: Request) -> Response:
        if refused := denied(request):
            return refused
        q = request.query_params
        rows = [
            p
            for p in people.values()
            if (not q.get("mail") or p.get("mail", "").lower() == q["mail"].lower())
            and (not q.get("born") or p.get("born") == q["born"])
            and (not q.get("changed_after") or p["changed"] > q["changed_after"])
        ]
        return page(request, rows)

    @app.get("/api/people/{key}")
    async def get_person(request: Request, key: str) -> Response:
        if refused := denied(request):
            return refused
        return (
            JSONResponse(people[key]) if key in people else JSONResponse({"problem": "no such person"}, 404)
        )

    @app.patch("/api/people/{key}")
    async def change_person(request: Request, key: str) -> Response:
        if refused := denied(request):
            return refused
        if key not in people:
            return JSONResponse({"problem": "no such person"}, 404)
        people[key].update(await request.json(), changed=stamp())
        return JSONResponse(people[key])

    @app.post("/api/visits")
    async def add_visit(request: Request) -> Response:
        if refused := denied(request):
            return refused
        body = await request.json()
        if body.get("who") not in people:
            return JSONResponse({"problem": "who: unknown person"}, 400)
        key = f"V{next(serial)}"
        visits[key] = {"key": key, "state": "held", **body, "changed": stamp()}
        return JSONResponse({"visit": visits[key]}, 201)

    @app.get("/api/visits")
    async def list_visits(request: Request) -> Response:
        if refused := denied(request):
            return refused
        q = request.query_params
        rows = [
            v
            for v in visits.values()
            if (not q.get("who") or v["who"] == q["who"])
            and (not q.get("day") or v["when"].startswith(q["day"]))
            and (not q.get("changed_after") or v["changed"] > q["changed_after"])
        ]
        return page(request, rows)

    @app.get("/api/visits/{key}")
    async def get_visit(request: Request, key: str) -> Response:
        if refused := denied(request):
            return refused
        return (
            JSONResponse({"visit": visits[key]}) if key in visits else JSONResponse({"problem": "gone"}, 404)
        )

    @app.put("/api/visits/{key}")
    async def change_visit(request: Request, key: str) -> Response:
        if refused := denied(request):
            return refused
        if key not in visits:
            return JSONResponse({"problem": "gone"}, 404)
        visits[key].update(await request.json(), changed=stamp())
        return JSONResponse({"visit": visits[key]})

    @app.post("/api/visits/{key}/void")
    async def void_visit(request: Request, key: str) -> Response:
        if refused := denied(request):
            return refused
        visits[key].update(state="void", changed=stamp())
        return Response(status_code=204)

    return app, visits


DEFINITION = """
key: bookwell
display_name: Bookwell
base_url: {base_url}/api
auth: {{type: bearer, token_field: token}}
settings: {{timezone: Europe/Berlin, phone_region: DE}}
pagination: {{style: cursor, cursor_param: after, cursor_path: next, per_page_param: null}}
functions:
  clinicians:
    path: /clinicians
    response: {{records: items}}
  add_person:
    method: POST
    path: /people
    params:
      - {{name: given, in: body}}
      - {{name: family, in: body, required: true}}
      - {{name: mail, in: body}}
      - {{name: mobile, in: body, transform: clean_phone, args: {{region: DE, format: national}}}}
      - {{name: born, in: body, transform: format_date, args: {{format: "%d/%m/%Y"}}}}
    response: {{single: true}}
  change_person:
    method: PATCH
    path: /people/{{key}}
    params:
      - {{name: key, in: path, required: true}}
      - {{name: given, in: body}}
      - {{name: family, in: body}}
      - {{name: mail, in: body}}
      - {{name: mobile, in: body, transform: clean_phone, args: {{region: DE, format: national}}}}
    response: {{single: true}}
  person:
    path: /people/{{key}}
    params: [{{name: key, in: path, required: true}}]
    response: {{single: true}}
  people:
    path: /people
    params:
      - {{name: mail, in: query}}
      - {{name: born, in: query, transform: format_date, args: {{format: "%d/%m/%Y"}}}}
      - {{name: changed_after, in: query, transform: format_datetime, args: {{format: iso_z}}}}
    response: {{records: items}}
  add_visit:
    method: POST
    path: /visits
    params:
      - {{name: who, in: body, required: true}}
      - {{name: doc, in: body}}
      - {{name: when, in: body, required: true, transform: format_datetime,
          args: {{format: "%Y-%m-%d %H:%M", timezone: "{{settings.timezone}}"}}}}
      - {{name: minutes, in: body, transform: integer}}
      - {{name: memo, in: body}}
      - {{name: state, in: body}}
    response: {{records: visit, single: true}}
  change_visit:
    method: PUT
    path: /visits/{{key}}
    params:
      - {{name: key, in: path, required: true}}
      - {{name: when, in: body, transform: format_datetime,
          args: {{format: "%Y-%m-%d %H:%M", timezone: "{{settings.timezone}}"}}}}
      - {{name: minutes, in: body, transform: integer}}
      - {{name: memo, in: body}}
      - {{name: state, in: body}}
    response: {{records: visit, single: true}}
  void_visit:
    method: POST
    path: /visits/{{key}}/void
    params: [{{name: key, in: path, required: true}}]
  visit:
    path: /visits/{{key}}
    params: [{{name: key, in: path, required: true}}]
    response: {{records: visit, single: true}}
  visits:
    path: /visits
    params:
      - {{name: who, in: query}}
      - {{name: day, in: query, transform: format_date, args: {{timezone: "{{settings.timezone}}"}}}}
      - {{name: changed_after, in: query, transform: format_datetime, args: {{format: iso_z}}}}
    response: {{records: items}}
sync:
  practitioner.list:
    function: clinicians
    fields: {{id: key, first_name: given, last_name: family}}
  patient.create:
    function: add_person
    params: {{given: first_name, family: last_name, mail: email, mobile: phone,
              born: date_of_birth}}
    fields: &person_in
      id: key
      first_name: given
      last_name: family
      email: mail
      phone: mobile
      date_of_birth: {{from: born, transform: parse_datetime, args: {{format: "%d/%m/%Y"}}}}
      updated_at: changed
  patient.update:
    function: change_person
    params: {{key: id, given: first_name, family: last_name, mail: email, mobile: phone}}
    fields: *person_in
  patient.get: {{function: person, params: {{key: id}}, fields: *person_in}}
  patient.find: {{function: people, params: {{mail: email, born: date_of_birth}}, fields: *person_in}}
  patient.list_changed: {{function: people, params: {{changed_after: updated_since}}, fields: *person_in}}
  appointment.create:
    function: add_visit
    params:
      who: patient_id
      doc: practitioner_id
      when: starts_at
      minutes: duration_minutes
      memo: note
      state: &state_out
        from: status
        transform: value_map
        args: {{map: {{pending: pencilled, confirmed: held, completed: done, no_show: dna,
                      cancelled: void}}}}
    fields: &visit_in
      id: key
      patient_id: who
      practitioner_id: doc
      starts_at: {{from: when, transform: parse_datetime,
                   args: {{format: "%Y-%m-%d %H:%M", timezone: "{{settings.timezone}}"}}}}
      duration_minutes: minutes
      note: memo
      status:
        from: state
        transform: value_map
        args: {{map: {{pencilled: pending, held: confirmed, done: completed, dna: no_show,
                      void: cancelled}}}}
      updated_at: changed
  appointment.update:
    function: change_visit
    params: {{key: id, when: starts_at, minutes: duration_minutes, memo: note, state: *state_out}}
    fields: *visit_in
  appointment.cancel: {{function: void_visit, params: {{key: id}}, read_back: true}}
  appointment.get: {{function: visit, params: {{key: id}}, fields: *visit_in}}
  appointment.find: {{function: visits, params: {{who: patient_id, day: starts_at}}, fields: *visit_in}}
  appointment.list_changed: {{function: visits, params: {{changed_after: updated_since}}, fields: *visit_in}}
"""


async def test_a_provider_posted_at_runtime_serves_every_operation(
    client: httpx.AsyncClient, tenant_factory: Any, sessionmaker: Any, server: Any
) -> None:
    tenant = await tenant_factory(time_zone="Europe/Berlin")
    h = tenant.headers
    app, visits = bookwell()
    async with serve(app) as base_url:
        uploaded = await client.post(
            "/api/admin/integrations/definitions",
            headers={**h, "Content-Type": "application/yaml"},
            content=DEFINITION.format(base_url=base_url),
        )
        assert uploaded.status_code == 201, uploaded.text
        credential = await client.post(
            "/api/admin/api-credentials",
            headers=h,
            json={"provider_key": "bookwell", "secrets": {"token": TOKEN}},
        )
        assert credential.status_code == 201, credential.text
        executor = IntegrationExecutor(sessionmaker, server.settings)
        integration_id = uuid.UUID(uploaded.json()["id"])

        async def pms(operation: Op, **payload: Any) -> list[dict[str, Any]]:
            return (
                await perform(executor, tenant.organization_id, integration_id, operation, payload)
            ).records

        clinicians = await pms(Op.PRACTITIONER_LIST)
        assert [(c["id"], c["display_name"]) for c in clinicians] == [
            ("c1", "Lena Brandt"),
            ("c2", "Ole Sørensen"),
        ]

        since = datetime.now(UTC) - timedelta(seconds=1)
        [person] = await pms(
            Op.PATIENT_CREATE,
            first_name="Jonas",
            last_name="Weber",
            email="jonas.weber@example.de",
            phone="+49 151 23456789",
            date_of_birth=date(1975, 12, 24),
        )
        assert (person["phone"], person["date_of_birth"]) == ("+4915123456789", date(1975, 12, 24))
        assert await pms(Op.PATIENT_GET, id=person["id"]) == [person]
        assert [p["id"] for p in await pms(Op.PATIENT_FIND, email="Jonas.Weber@example.de")] == [person["id"]]
        found = await pms(Op.PATIENT_FIND, phone="015123456789", date_of_birth="1975-12-24")
        assert [p["id"] for p in found] == [person["id"]]
        [changed_person] = await pms(Op.PATIENT_UPDATE, id=person["id"], email="j.weber@example.de")
        assert changed_person["email"] == "j.weber@example.de" and changed_person["last_name"] == "Weber"
        assert [p["id"] for p in await pms(Op.PATIENT_LIST_CHANGED, updated_since=since)] == [person["id"]]
        # Lists also stream, page by page (two clinicians a page here).
        streamed = [
            c["id"]
            async for c in stream(executor, tenant.organization_id, integration_id, Op.PRACTITIONER_LIST, {})
        ]
        assert streamed == ["c1", "c2"]

        # 08:30 UTC on a March morning is 09:30 in Berlin (CET).
        starts = datetime(date.today().year + 1, 3, 1, 8, 30, tzinfo=UTC)
        [visit] = await pms(
            Op.APPOINTMENT_CREATE,
            patient_id=person["id"],
            practitioner_id="c2",
            starts_at=starts,
            ends_at=starts + timedelta(minutes=40),
            status="pending",
            note="Ref BK-RT01",
        )
        assert visits[visit["id"]]["when"] == f"{starts.year}-03-01 09:30"
        assert (visit["starts_at"], visit["ends_at"], visit["status"]) == (
            starts,
            starts + timedelta(minutes=40),
            "pending",
        )
        assert await pms(Op.APPOINTMENT_GET, id=visit["id"]) == [visit]
        assert [v["id"] for v in await pms(Op.APPOINTMENT_FIND, reference="BK-RT01", starts_at=starts)] == [
            visit["id"]
        ]
        by_slot = await pms(
            Op.APPOINTMENT_FIND, patient_id=person["id"], practitioner_id="c2", starts_at=starts
        )
        assert [v["id"] for v in by_slot] == [visit["id"]]

        summer = datetime(starts.year, 7, 1, 7, 0, tzinfo=UTC)  # 09:00 CEST
        [moved] = await pms(
            Op.APPOINTMENT_UPDATE,
            id=visit["id"],
            starts_at=summer,
            ends_at=summer + timedelta(minutes=20),
            status="confirmed",
        )
        assert visits[visit["id"]]["when"] == f"{starts.year}-07-01 09:00"
        assert (moved["starts_at"], moved["ends_at"], moved["status"]) == (
            summer,
            summer + timedelta(minutes=20),
            "confirmed",
        )
        assert [v["id"] for v in await pms(Op.APPOINTMENT_LIST_CHANGED, updated_since=since)] == [visit["id"]]
        [cancelled] = await pms(Op.APPOINTMENT_CANCEL, id=visit["id"])
        assert cancelled["status"] == "cancelled" and visits[visit["id"]]["state"] == "void"
        assert await pms(Op.APPOINTMENT_GET, id="V999") == []

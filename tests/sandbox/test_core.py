"""The sandbox framework over real HTTP, with a small provider defined here."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.datastructures import Headers

from clinicsync.sandbox import (
    ActionHandler,
    GeneratedClinic,
    SandboxClock,
    SandboxError,
    SandboxServer,
    UnknownProviderError,
    get_server_class,
    run_sandbox,
)
from clinicsync.sandbox.runner import ControlClientFactory as ControlFactory
from clinicsync.sandbox.runner import SandboxFactory

CONNECTION_BROKEN = (httpx.ReadError, httpx.RemoteProtocolError)


class PatientsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    greeting: str = "hello"


class PatientListSandbox(SandboxServer):
    """A minimal provider: patients listed with offset paging, created with POST, key in X-Key."""

    name = "patientlist"
    title = "Patient list"
    api_prefix = "/api/v2"
    Settings = PatientsSettings

    def load_clinic(self, clinic: GeneratedClinic) -> None:
        self.patients = [
            {"id": p.id, "name": f"{p.first_name} {p.last_name}", "stamp": self.clock.now().isoformat()}
            for p in clinic.patients
        ]

    def dump_state(self) -> dict[str, Any]:
        return {"patients": self.patients}

    def load_state(self, state: dict[str, Any]) -> None:
        self.patients = state["patients"]

    def state_summary(self) -> dict[str, Any]:
        return {"patients": len(self.patients)}

    def render_error(self, status: int, message: str, *, reason: str | None = None) -> Response:
        return PlainTextResponse(f"E{status}: {message}", status)

    def identify(self, headers: Headers) -> str | None:
        return headers.get("x-key")

    def credentials(self) -> dict[str, str]:
        return {"x-key": "demo"}

    def actions(self) -> dict[str, ActionHandler]:
        async def rename(body: dict[str, Any]) -> dict[str, Any]:
            """Rename a patient as a receptionist would."""
            patient = next((p for p in self.patients if p["id"] == body.get("id")), None)
            if patient is None:
                raise SandboxError(404, "no such patient", reason="id")
            patient["name"] = str(body.get("name", ""))
            return patient

        return {"rename": rename}

    def add_routes(self, router: APIRouter) -> None:
        def check_key(request: Request) -> None:
            if request.headers.get("x-key") != "demo" or self.consume_token_expiry(request):
                raise SandboxError(401, "bad key")

        @router.get("/patients")
        async def list_patients(request: Request, offset: int = 0, limit: int = 10) -> Response:
            check_key(request)
            return JSONResponse(self.paginate(request, self.patients, offset, limit))

        @router.post("/patients")
        async def create_patient(request: Request) -> Response:
            check_key(request)
            body = await request.json()
            patient = {
                "id": len(self.patients) + 1,
                "name": body["name"],
                "stamp": self.clock.now().isoformat(),
            }
            self.patients.append(patient)
            return JSONResponse(patient, 201)

        @router.get("/greeting")
        async def greeting() -> dict[str, str]:
            return {"greeting": getattr(self.settings, "greeting", "")}


SMALL = {"patients": 25, "appointments": 0}
KEY = {"x-key": "demo"}


async def start(factory: SandboxFactory, **options: Any) -> tuple[SandboxServer, httpx.AsyncClient]:
    server = await factory(PatientListSandbox, spec=SMALL, **options)
    assert server.base_url is not None
    return server, httpx.AsyncClient(base_url=server.base_url, headers=KEY, timeout=5)


async def test_routes_and_error_format(sandbox_factory: SandboxFactory) -> None:
    server, client = await start(sandbox_factory)
    async with client:
        assert server.base_url == f"{server.root_url}/api/v2"
        response = await client.get("/patients", params={"limit": 5})
        assert response.status_code == 200
        assert [p["id"] for p in response.json()] == [1, 2, 3, 4, 5]
        unauthorized = await client.get("/patients", headers={"x-key": "wrong"})
        assert unauthorized.status_code == 401
        assert unauthorized.text == "E401: bad key"
        # Unknown routes and bad query parameters also speak the provider's format.
        missing = await client.get("/nothing-here")
        assert missing.status_code == 404
        assert missing.text.startswith("E404")
        bad_query = await client.get("/patients", params={"offset": "x"})
        assert bad_query.status_code == 400
        assert "offset" in bad_query.text


async def test_request_log_records_identity_and_clears(
    sandbox_factory: SandboxFactory, control: ControlFactory
) -> None:
    server, client = await start(sandbox_factory)
    ctl = await control(server)
    async with client:
        await client.get("/patients", params={"offset": 3})
        log = (await ctl.get("/requests")).json()
        assert log[-1]["method"] == "GET"
        assert log[-1]["path"] == "/api/v2/patients"
        assert log[-1]["query"] == "offset=3"
        assert log[-1]["status"] == 200
        assert log[-1]["identity"] == "demo"
        assert log[-1]["fault"] is None
        assert (await ctl.delete("/requests")).json() == {"cleared": 1}
        assert (await ctl.get("/requests")).json() == []


async def test_error_rate_on_and_off_live(sandbox_factory: SandboxFactory, control: ControlFactory) -> None:
    server, client = await start(sandbox_factory)
    ctl = await control(server)
    async with client:
        assert (await client.get("/patients")).status_code == 200
        put = await ctl.put("/faults", json={"error_rate": 1.0, "error_statuses": [503]})
        assert put.status_code == 200
        failed = await client.get("/patients")
        assert failed.status_code == 503
        assert failed.text == "E503: Service Unavailable"
        await ctl.put("/faults", json={"error_rate": 0})
        assert (await client.get("/patients")).status_code == 200
        faults = [entry["fault"] for entry in (await ctl.get("/requests")).json()]
        assert faults == [None, "error:503", None]


async def test_fixed_and_uniform_latency(sandbox_factory: SandboxFactory, control: ControlFactory) -> None:
    server, client = await start(sandbox_factory)
    ctl = await control(server)
    async with client:
        await ctl.put("/faults", json={"latency_ms": 150})
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert (await client.get("/patients")).status_code == 200
        assert loop.time() - began >= 0.14
        await ctl.put("/faults", json={"latency_ms": 20, "latency_max_ms": 60})
        await client.get("/patients")
        await ctl.post("/faults/reset")
        await client.get("/patients")
        faults = [entry["fault"] for entry in (await ctl.get("/requests")).json()]
        assert faults[0] == "latency:150ms"
        low, high = 20, 60
        assert low <= int(faults[1].removeprefix("latency:").removesuffix("ms")) <= high
        assert faults[2] is None


async def test_hang_past_client_timeout(sandbox_factory: SandboxFactory, control: ControlFactory) -> None:
    server, client = await start(sandbox_factory)
    ctl = await control(server)
    async with client:
        await ctl.put("/faults", json={"hang_rate": 1.0, "hang_seconds": 30})
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/patients", timeout=0.3)
        await ctl.put("/faults", json={"hang_rate": 0})
        assert (await client.get("/patients")).status_code == 200
        for _ in range(50):
            log = (await ctl.get("/requests")).json()
            if len(log) == 2:
                break
            await asyncio.sleep(0.05)
        # The hung request is logged once the client has given up, with no status sent.
        assert {(entry["fault"], entry["status"]) for entry in log} == {("hang", None), (None, 200)}


async def test_hang_ends_with_504_after_hang_seconds(
    sandbox_factory: SandboxFactory, control: ControlFactory
) -> None:
    _server, client = await start(sandbox_factory, faults={"hang_rate": 1.0, "hang_seconds": 0.2})
    async with client:
        response = await client.get("/patients")
        assert response.status_code == 504


async def test_connection_reset(sandbox_factory: SandboxFactory, control: ControlFactory) -> None:
    server, client = await start(sandbox_factory)
    ctl = await control(server)
    async with client:
        await ctl.put("/faults", json={"reset_rate": 1.0})
        with pytest.raises(CONNECTION_BROKEN):
            await client.get("/patients")
        with pytest.raises(CONNECTION_BROKEN):
            await client.post("/patients", json={"name": "Never Stored"})
        await ctl.put("/faults", json={"reset_rate": 0.0})
        listing = await client.get("/patients", params={"limit": 100})
        assert listing.status_code == 200
        assert "Never Stored" not in {p["name"] for p in listing.json()}
        log = (await ctl.get("/requests")).json()
        assert [(e["fault"], e["status"]) for e in log] == [("reset", None), ("reset", None), (None, 200)]


async def test_rate_limit_burst_counts_down(sandbox_factory: SandboxFactory, control: ControlFactory) -> None:
    server, client = await start(sandbox_factory)
    ctl = await control(server)
    async with client:
        await ctl.put("/faults", json={"rate_limit_next": 2, "retry_after_seconds": 7})
        first = await client.get("/patients")
        second = await client.get("/patients")
        third = await client.get("/patients")
        assert [first.status_code, second.status_code, third.status_code] == [429, 429, 200]
        assert first.headers["retry-after"] == "7"
        assert (await ctl.get("/faults")).json()["rate_limit_next"] == 0
        faults = [entry["fault"] for entry in (await ctl.get("/requests")).json()]
        assert faults == ["rate_limited", "rate_limited", None]


async def test_drop_after_commit_applies_the_write(
    sandbox_factory: SandboxFactory, control: ControlFactory
) -> None:
    server, client = await start(sandbox_factory)
    ctl = await control(server)
    async with client:
        await ctl.put("/faults", json={"drop_after_commit_rate": 1.0})
        # Reads are not writes: unaffected.
        assert (await client.get("/patients")).status_code == 200
        with pytest.raises(CONNECTION_BROKEN):
            await client.post("/patients", json={"name": "Ghost Write"})
        await ctl.put("/faults", json={"drop_after_commit_rate": 0.0})
        names = {p["name"] for p in (await client.get("/patients", params={"limit": 100})).json()}
        assert "Ghost Write" in names
        log = (await ctl.get("/requests")).json()
        assert log[1]["faults"] == ["drop_after_commit", "dropped_status:201"]
        assert log[1]["status"] is None


async def test_page_duplicate_and_shuffle(sandbox_factory: SandboxFactory, control: ControlFactory) -> None:
    server, client = await start(sandbox_factory)
    ctl = await control(server)
    async with client:
        await ctl.put("/faults", json={"page_duplicate_rate": 1.0, "page_overlap": 2})
        page = (await client.get("/patients", params={"offset": 10, "limit": 5})).json()
        assert [p["id"] for p in page] == [9, 10, 11, 12, 13]
        await ctl.put("/faults", json={"page_duplicate_rate": 0, "page_shuffle_rate": 1.0, "seed": 3})
        shuffled = [p["id"] for p in (await client.get("/patients", params={"limit": 20})).json()]
        assert sorted(shuffled) == list(range(1, 21))
        assert shuffled != list(range(1, 21))
        await ctl.post("/faults/reset")
        plain = [p["id"] for p in (await client.get("/patients", params={"offset": 10, "limit": 5})).json()]
        assert plain == [11, 12, 13, 14, 15]
        faults = [entry["fault"] for entry in (await ctl.get("/requests")).json()]
        assert faults == ["page_duplicate:2", "page_shuffle", None]


async def test_token_expiry_hook(sandbox_factory: SandboxFactory, control: ControlFactory) -> None:
    server, client = await start(sandbox_factory)
    ctl = await control(server)
    async with client:
        await ctl.put("/faults", json={"token_expire_next": 1})
        assert (await client.get("/patients")).status_code == 401
        assert (await client.get("/patients")).status_code == 200
        faults = [entry["fault"] for entry in (await ctl.get("/requests", params={"faulted": True})).json()]
        assert faults == ["token_expired"]
        expired = await ctl.post("/tokens/expire")
        assert expired.json() == {"token_epoch": 1}
        assert server.token_epoch == 1
        assert server.token_ttl(3600) == 3600
        await ctl.put("/faults", json={"token_ttl_seconds": 5})
        assert server.token_ttl(3600) == 5


async def test_match_path_and_methods_narrow_faults(
    sandbox_factory: SandboxFactory, control: ControlFactory
) -> None:
    server, client = await start(sandbox_factory)
    ctl = await control(server)
    async with client:
        await ctl.put(
            "/faults", json={"error_rate": 1, "match_methods": ["post"], "match_path": "/patients$"}
        )
        assert (await client.get("/patients")).status_code == 200
        assert (await client.post("/patients", json={"name": "X"})).status_code >= 500
        assert (await client.get("/greeting")).status_code == 200


async def test_faults_given_at_start(sandbox_factory: SandboxFactory) -> None:
    server, client = await start(sandbox_factory, faults={"error_rate": 1.0, "error_statuses": [502]})
    async with client:
        assert (await client.get("/patients")).status_code == 502
        assert server.request_log[-1].fault == "error:502"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"error_rate": 2}, "error_rate"),
        ({"error_rate": "often"}, "error_rate"),
        ({"error_statuses": [200]}, "error_statuses"),
        ({"latency_ms": 100, "latency_max_ms": 10}, "body"),
        ({"no_such_fault": 1}, "no_such_fault"),
        ({"match_path": "("}, "match_path"),
        ({"match_methods": ["FETCH"]}, "match_methods"),
        ({"rate_limit_next": -1}, "rate_limit_next"),
    ],
)
async def test_bad_fault_settings_are_422_naming_the_field(
    sandbox_factory: SandboxFactory, control: ControlFactory, body: dict[str, Any], field: str
) -> None:
    server, _client = await start(sandbox_factory)
    ctl = await control(server)
    response = await ctl.put("/faults", json=body)
    assert response.status_code == 422
    fields = [error["field"] for error in response.json()["detail"]]
    assert field in fields or (field == "body" and fields == [""]) or field in str(response.json())
    # Nothing was changed by the rejected update.
    assert (await ctl.get("/faults")).json()["error_rate"] == 0


async def test_control_api_rejects_non_json_and_non_objects(
    sandbox_factory: SandboxFactory, control: ControlFactory
) -> None:
    server, _client = await start(sandbox_factory)
    ctl = await control(server)
    not_json = await ctl.put("/faults", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 422
    assert not_json.json()["detail"][0]["field"] == "body"
    a_list = await ctl.put("/faults", json=[1, 2])
    assert a_list.status_code == 422
    assert "JSON object" in a_list.json()["detail"][0]["message"]


async def test_clock_control(sandbox_factory: SandboxFactory, control: ControlFactory) -> None:
    server, _client = await start(sandbox_factory)
    ctl = await control(server)
    put = await ctl.put("/clock", json={"now": "2030-03-10T06:30:00Z", "frozen": True})
    assert put.status_code == 200
    assert put.json()["now"] == "2030-03-10T06:30:00+00:00"
    assert put.json()["local_now"] == "2030-03-10T01:30:00-05:00"  # New York, before the DST jump
    advanced = (await ctl.put("/clock", json={"advance_seconds": 3600})).json()
    assert advanced["now"] == "2030-03-10T07:30:00+00:00"
    assert advanced["local_now"] == "2030-03-10T03:30:00-04:00"  # 02:xx never happened that night
    assert server.clock.now() == datetime(2030, 3, 10, 7, 30, tzinfo=UTC)
    zone = (await ctl.put("/clock", json={"timezone": "Australia/Sydney"})).json()
    assert zone["timezone"] == "Australia/Sydney"
    bad_zone = await ctl.put("/clock", json={"timezone": "Mars/Olympus"})
    assert bad_zone.status_code == 422
    assert bad_zone.json()["detail"][0]["field"] == "timezone"
    bad_now = await ctl.put("/clock", json={"now": "yesterday-ish"})
    assert bad_now.status_code == 422
    assert bad_now.json()["detail"][0]["field"] == "now"
    reset = (await ctl.put("/clock", json={"reset": True})).json()
    assert reset["frozen"] is False
    assert abs(datetime.fromisoformat(reset["now"]) - datetime.now(UTC)) < timedelta(seconds=5)


async def test_seed_state_settings_and_actions(
    sandbox_factory: SandboxFactory, control: ControlFactory
) -> None:
    server, client = await start(sandbox_factory)
    ctl = await control(server)
    async with client:
        assert (await ctl.get("/state")).json()["summary"] == {"patients": 25}
        seeded = await ctl.post("/seed", json={"patients": 40, "seed": 9})
        assert seeded.status_code == 200
        assert seeded.json()["generated"]["patients"] == 40
        assert (await ctl.get("/state")).json()["summary"] == {"patients": 40}
        bad_seed = await ctl.post("/seed", json={"patients": -3})
        assert bad_seed.status_code == 422
        assert bad_seed.json()["detail"][0]["field"] == "patients"

        assert (await ctl.get("/actions")).json() == {"rename": "Rename a patient as a receptionist would."}
        renamed = await ctl.post("/actions/rename", json={"id": 2, "name": "Changed Name"})
        assert renamed.json()["name"] == "Changed Name"
        listing = (await client.get("/patients", params={"limit": 3})).json()
        assert listing[1]["name"] == "Changed Name"
        missing = await ctl.post("/actions/rename", json={"id": 999})
        assert missing.status_code == 404
        unknown = await ctl.post("/actions/teleport", json={})
        assert unknown.status_code == 404
        assert "rename" in unknown.json()["detail"][0]["message"]

        assert (await client.get("/greeting")).json() == {"greeting": "hello"}
        assert (await ctl.put("/settings", json={"greeting": "hi"})).status_code == 200
        assert (await client.get("/greeting")).json() == {"greeting": "hi"}
        bad_setting = await ctl.put("/settings", json={"volume": 11})
        assert bad_setting.status_code == 422
        assert bad_setting.json()["detail"][0]["field"] == "volume"

        info = (await ctl.get("/info")).json()
        assert info["provider"] == "patientlist"
        assert info["base_url"] == server.base_url
        assert info["credentials"] == {"x-key": "demo"}


async def test_state_file_round_trip(tmp_path: Path) -> None:
    state_file = tmp_path / "patients.json"
    async with run_sandbox(PatientListSandbox, spec=SMALL, state_file=state_file) as server:
        client = httpx.AsyncClient(base_url=str(server.base_url), headers=KEY)
        async with client:
            await client.post("/patients", json={"name": "Persisted Person"})
    document = json.loads(state_file.read_text())
    assert document["provider"] == "patientlist"
    async with run_sandbox(PatientListSandbox, spec=SMALL, state_file=state_file) as server:
        client = httpx.AsyncClient(base_url=str(server.base_url), headers=KEY)
        async with client:
            names = {p["name"] for p in (await client.get("/patients", params={"limit": 100})).json()}
    assert "Persisted Person" in names


async def test_two_servers_on_distinct_free_ports(sandbox_factory: SandboxFactory) -> None:
    first = await sandbox_factory(PatientListSandbox, spec=SMALL)
    second = await sandbox_factory(PatientListSandbox, spec=SMALL)
    assert first.root_url != second.root_url
    async with httpx.AsyncClient(headers=KEY) as client:
        for server in (first, second):
            assert (await client.get(f"{server.base_url}/patients")).status_code == 200


def test_registry_rejects_unknown_provider() -> None:
    with pytest.raises(UnknownProviderError, match=r"'nope'.*opendental"):
        get_server_class("nope")


def test_clock_set_advance_freeze() -> None:
    clock = SandboxClock("America/New_York")
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=2)
    clock.set(datetime(2031, 1, 2, 9, 0), frozen=True)  # naive means office-local
    assert clock.now() == datetime(2031, 1, 2, 14, 0, tzinfo=UTC)
    clock.advance(timedelta(hours=1))
    assert clock.local_now().hour == 10
    clock.unfreeze()
    assert clock.now() >= datetime(2031, 1, 2, 15, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="Nowhere/City"):
        SandboxClock("Nowhere/City")

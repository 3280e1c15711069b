"""The `sync:` section of a definition: refused with the file, the path and the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from clinicsync.integrations.canonical import SyncOperation, supported_operations
from clinicsync.integrations.definitions import (
    PROVIDERS_DIR,
    DefinitionError,
    load_definition_file,
    parse_definition_text,
)

BASE = """
key: chairside
display_name: Chairside
base_url: http://127.0.0.1:9/v2
functions:
  get_booking:
    path: /bookings/{ref}
    params: [{name: booking_id, external: ref, in: path, required: true}]
  book:
    method: POST
    path: /bookings
    params:
      - {name: when, in: body, required: true}
      - {name: who, in: body}
"""


def refused(sync: str) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as error:
        parse_definition_text(BASE + sync, "chairside.yaml")
    assert str(error.value).startswith("chairside.yaml: ")
    return error.value.problems


# Clinical notes of past visits exist only where the PMS keeps them (the vet PIMS's consultations).
CLINICAL_NOTES = {SyncOperation.CONSULTATION_LIST, SyncOperation.CONSULTATION_GET}
# A diary of slots with a capacity is the vet PIMS's alone.
SLOT_GRID = {SyncOperation.SCHEDULE_CONFIG}
BOOKING_OPERATIONS = frozenset(SyncOperation) - CLINICAL_NOTES - SLOT_GRID


def test_shipped_pms_definitions_map_every_operation() -> None:
    for name in ("opendental", "cliniko"):
        definition = load_definition_file(PROVIDERS_DIR / f"{name}.yaml")
        assert supported_operations(definition) == BOOKING_OPERATIONS, name


def test_what_the_contracts_cannot_do_is_left_unsupported() -> None:
    ascend = supported_operations(load_definition_file(PROVIDERS_DIR / "dentrix_ascend.yaml"))
    assert BOOKING_OPERATIONS - ascend == {SyncOperation.PATIENT_UPDATE}
    vet = supported_operations(load_definition_file(PROVIDERS_DIR / "vet_pims.yaml"))
    assert vet == {
        SyncOperation.APPOINTMENT_CREATE,
        SyncOperation.APPOINTMENT_CANCEL,
        SyncOperation.APPOINTMENT_GET,
        SyncOperation.APPOINTMENT_FIND,
        SyncOperation.APPOINTMENT_LIST_CHANGED,
        SyncOperation.PATIENT_GET,
        SyncOperation.PRACTITIONER_LIST,
        *CLINICAL_NOTES,
        *SLOT_GRID,
    }


def test_a_calendar_maps_appointments_only() -> None:
    definition = load_definition_file(PROVIDERS_DIR / "google_calendar.yaml")
    assert supported_operations(definition) == {op for op in SyncOperation if op.kind == "appointment"}


def test_each_mistake_is_named_by_its_path() -> None:
    assert refused("sync:\n  appointment.create: {function: nope}\n") == [
        ("sync.appointment.create.function", "'nope' is not one of the functions (book, get_booking)")
    ]
    problems = refused(
        "sync:\n  appointment.create: {function: book, params: {when: starts, whom: patient_id}}\n"
    )
    assert ("sync.appointment.create.params.whom", "book has no parameter 'whom'") in problems
    assert any(
        path == "sync.appointment.create.params.when.from" and "'starts'" in why for path, why in problems
    )
    problems = refused("sync:\n  appointment.create: {function: book, params: {who: patient_id}}\n")
    assert problems == [
        ("sync.appointment.create.params", "book requires 'when' and nothing in the payload feeds it")
    ]
    problems = refused(
        "sync:\n  appointment.get: {function: get_booking, params: {booking_id: id}, fields: {colour: x}}\n"
    )
    assert problems[0][0] == "sync.appointment.get.fields.colour"
    problems = refused("sync:\n  appointment.get: {function: get_booking}\n")
    assert "booking_id" in problems[0][1]
    problems = refused(
        "sync:\n  appointment.create: {function: book, params: {when: starts_at}, read_back: true}\n"
    )
    assert problems == [("sync.appointment.create.read_back", "needs appointment.get in the sync section")]
    problems = refused("sync:\n  appointment.teleport: book\n")
    assert problems[0][0].startswith("sync.appointment.teleport")
    problems = refused(
        "sync:\n  appointment.create: {function: book, params: {when: {from: starts_at, value: 1}}}\n"
    )
    assert problems[0][0] == "sync.appointment.create.params.when"


def test_a_change_token_the_function_answers_must_be_fed_back() -> None:
    listing = """  list_bookings:
    path: /bookings
    params: [{name: changed_since, in: query}, {name: token, in: query}]
    response: {records: items, next_sync_token: nextToken}
"""
    definition = BASE + listing
    with pytest.raises(DefinitionError) as error:
        parse_definition_text(
            definition + "sync:\n  appointment.list_changed: {function: list_bookings, params: "
            "{changed_since: updated_since}}\n",
            "chairside.yaml",
        )
    assert [path for path, _ in error.value.problems] == ["sync.appointment.list_changed.params"]
    assert "sync_token" in error.value.problems[0][1]
    fed = parse_definition_text(
        definition + "sync:\n  appointment.list_changed: {function: list_bookings, params: "
        "{changed_since: updated_since, token: sync_token}}\n",
        "chairside.yaml",
    )
    assert fed.functions["list_bookings"].response.next_sync_token == "nextToken"


def test_cli_validate_reports_the_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from clinicsync.cli import app

    path = tmp_path / "chairside.yaml"
    path.write_text(BASE + "sync:\n  patient.get: {function: missing}\n")
    result = CliRunner().invoke(app, ["providers", "validate", str(path)])
    assert result.exit_code != 0
    assert f"{path}: sync.patient.get.function" in result.output


async def test_admin_api_sets_a_sync_section_and_refuses_a_broken_one(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    h = tenant.headers
    created = await client.post(
        "/api/admin/integrations",
        headers=h,
        json={"provider_key": "chairside", "base_url": "http://127.0.0.1:9"},
    )
    integration_id = created.json()["id"]
    endpoint = await client.post(
        f"/api/admin/integrations/{integration_id}/endpoints",
        headers=h,
        json={
            "function_name": "book",
            "method": "POST",
            "path": "/bookings",
            "params": [{"name": "when", "in": "body"}],
        },
    )
    assert endpoint.status_code == 201, endpoint.text
    broken = await client.patch(
        f"/api/admin/integrations/{integration_id}",
        headers=h,
        json={"sync": {"appointment.create": {"function": "book", "params": {"when": "start_time"}}}},
    )
    assert broken.status_code == 422, broken.text
    assert broken.json()["error"]["details"][0]["field"] == "sync.appointment.create.params.when.from"
    unknown = await client.patch(
        f"/api/admin/integrations/{integration_id}",
        headers=h,
        json={"sync": {"appointment.teleport": "book"}},
    )
    assert unknown.status_code == 422
    assert "sync" in str(unknown.json()["error"]["details"])
    definition = await client.get(f"/api/admin/integrations/{integration_id}/definition", headers=h)
    assert "sync" not in definition.json()

    fixed = await client.patch(
        f"/api/admin/integrations/{integration_id}",
        headers=h,
        json={"sync": {"appointment.create": {"function": "book", "params": {"when": "starts_at"}}}},
    )
    assert fixed.status_code == 200, fixed.text
    definition = await client.get(f"/api/admin/integrations/{integration_id}/definition", headers=h)
    assert definition.json()["sync"]["appointment.create"]["params"]["when"]["from"] == "starts_at"


async def test_a_clinic_overrides_one_operation_of_a_catalogue_provider(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    created = await client.post(
        "/api/admin/integrations",
        headers=tenant.headers,
        json={
            "provider_key": "opendental",
            "base_url": "http://127.0.0.1:9/api/v1",
            # This office cancels by setting the status rather than breaking the appointment.
            "sync": {
                "appointment.cancel": {
                    "function": "update_appointment",
                    "params": {"appointment_id": "id", "status": {"value": "cancelled"}},
                }
            },
        },
    )
    assert created.status_code == 201, created.text
    definition = await client.get(
        f"/api/admin/integrations/{created.json()['id']}/definition", headers=tenant.headers
    )
    sync = definition.json()["sync"]
    assert set(sync) == {op.value for op in BOOKING_OPERATIONS}
    assert sync["appointment.cancel"]["function"] == "update_appointment"
    assert sync["appointment.create"]["function"] == "create_appointment"

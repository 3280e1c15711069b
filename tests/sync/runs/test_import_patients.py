"""Patient import runs: the PMS's patient list, page by page, into local patients linked to their
PMS ids, matched to existing patients by the duplicate rule first. Real HTTP against the
OpenDental sandbox, both databases."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.booking.models import Patient
from clinicsync.sandbox import SandboxServer
from clinicsync.sync.models import ExternalReference, RecordType
from tests.factories import TenantFactory
from tests.sync.conftest import connect_opendental
from tests.sync.runs.conftest import ZONE, Pulling, finished, pull_from

PMS_PATIENTS = 230  # three pages of OpenDental's 100


@pytest.fixture
async def od_patients(
    client: httpx.AsyncClient,
    tenant_factory: TenantFactory,
    sandboxes: Callable[..., Awaitable[SandboxServer]],
) -> Pulling:
    sandbox = await sandboxes(
        "opendental",
        spec={"seed": 7, "patients": PMS_PATIENTS, "appointments": 10, "days_before": 3, "days_after": 3},
        timezone=ZONE,
    )
    tenant = await tenant_factory(time_zone=ZONE)
    integration_id, pms, _provider = await connect_opendental(client, tenant, sandbox)
    await pms.aclose()
    await pull_from(client, tenant, integration_id)
    return Pulling(tenant, sandbox, integration_id)


def _store(clinic: Pulling) -> Any:
    return clinic.sandbox  # the OpenDental sandbox: its patients, and its keys in .od


async def _import(client: httpx.AsyncClient, clinic: Pulling, **params: Any) -> dict[str, Any]:
    started = await client.post(
        f"/api/v1/sync/start/{clinic.organization_id}",
        headers=clinic.headers,
        params={"sync_mode": "patients-only", **params},
    )
    assert started.status_code == 202, started.text
    return await finished(client, clinic, started.json()["sync_id"])


async def _register(client: httpx.AsyncClient, clinic: Pulling, **patient: Any) -> str:
    created = await client.post("/api/v1/patients", headers=clinic.headers, json=patient)
    assert created.status_code == 201, created.text
    patient_id: str = created.json()["id"]
    return patient_id


async def _links(sessionmaker: async_sessionmaker[AsyncSession], integration_id: str) -> dict[str, str]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(ExternalReference.external_id, ExternalReference.record_id).where(
                ExternalReference.record_type == RecordType.PATIENT,
                ExternalReference.integration_id == uuid.UUID(integration_id),
            )
        )
        return {str(external_id): str(record_id) for external_id, record_id in rows}


async def _local_count(sessionmaker: async_sessionmaker[AsyncSession], organization_id: str) -> int:
    async with sessionmaker() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(Patient)
                .where(Patient.organization_id == uuid.UUID(organization_id))
            )
            or 0
        )


async def test_an_import_links_every_pms_patient_once_and_a_second_is_all_unchanged(
    client: httpx.AsyncClient,
    od_patients: Pulling,
    sessionmaker: async_sessionmaker[AsyncSession],
    capfd: pytest.CaptureFixture[str],
) -> None:
    clinic = od_patients
    pms = sorted(_store(clinic).patients.values(), key=lambda p: p.PatNum)
    assert len(pms) == PMS_PATIENTS
    with_birth = [p for p in pms if p.Birthdate is not None]
    by_name, by_email = with_birth[0], next(p for p in with_birth[1:] if p.Email)
    # Registered here before the import: the same person by name and date of birth (other
    # case), by email and date of birth (another spelling of the name), and a namesake born
    # on another day (not the same person).
    same_name = await _register(
        client,
        clinic,
        first_name=by_name.FName.upper(),
        last_name=by_name.LName.lower(),
        date_of_birth=by_name.Birthdate.isoformat(),
    )
    same_email = await _register(
        client,
        clinic,
        first_name="Someone",
        last_name="Else",
        email=by_email.Email,
        date_of_birth=by_email.Birthdate.isoformat(),
    )
    namesake = await _register(
        client,
        clinic,
        first_name=by_name.FName,
        last_name=by_name.LName,
        date_of_birth=by_name.Birthdate.replace(year=by_name.Birthdate.year - 1).isoformat(),
        allow_duplicate=True,
    )

    # A preview says what the import will do, record by record, and writes nothing.
    preview = await _import(client, clinic, dry_run="true")
    assert preview["status"] == "completed", preview
    assert preview["dry_run"] is True
    assert await _links(sessionmaker, clinic.integration_id) == {}
    assert await _local_count(sessionmaker, clinic.organization_id) == 3
    planned = {(row["external_id"], row["action"]) for row in preview["preview"]}

    clinic.sandbox.request_log.clear()
    run = await _import(client, clinic)

    assert run["status"] == "completed", run
    assert run["run_type"] == "import_patients" and run["steps"] == ["patients"]
    assert run["counts"]["patients"] == {
        "found": PMS_PATIENTS,
        "created": PMS_PATIENTS - 2,
        "updated": 2,
        "unchanged": 0,
        "deleted": 0,
        "failed": 0,
    }
    assert run["phases"]["patients"]["status"] == "completed"
    assert run["phases"]["patients"]["pages_done"] == 3
    assert run["phases"]["patients"]["extra"]["patients_linked_existing"] == 2
    listed = [entry for entry in clinic.sandbox.request_log if entry.path.endswith("/patients/Simple")]
    assert run["requests_used"] == len(listed) == 3
    assert preview["counts"]["patients"] == run["counts"]["patients"]
    assert planned == {(str(p.PatNum), "create") for p in pms if p not in (by_name, by_email)} | {
        (str(by_name.PatNum), "update"),
        (str(by_email.PatNum), "update"),
    }

    links = await _links(sessionmaker, clinic.integration_id)
    assert set(links) == {str(p.PatNum) for p in pms}
    assert len(set(links.values())) == PMS_PATIENTS  # one local patient each
    assert links[str(by_name.PatNum)] == same_name
    assert links[str(by_email.PatNum)] == same_email
    assert namesake not in links.values()
    assert await _local_count(sessionmaker, clinic.organization_id) == PMS_PATIENTS - 2 + 3
    # Linked by email, the PMS's name is taken (no earlier sync to set against).
    shown = await client.get(f"/api/v1/patients/{same_email}", headers=clinic.headers)
    assert (shown.json()["first_name"], shown.json()["last_name"]) == (by_email.FName, by_email.LName)

    again = await client.post(
        f"/api/v1/pms/opendental/import-patients/{clinic.organization_id}", headers=clinic.headers
    )
    assert again.status_code == 202, again.text
    second = await finished(client, clinic, again.json()["sync_id"])
    assert second["status"] == "completed", second
    assert second["counts"]["patients"] == {
        "found": PMS_PATIENTS,
        "created": 0,
        "updated": 0,
        "unchanged": PMS_PATIENTS,
        "deleted": 0,
        "failed": 0,
    }
    assert await _links(sessionmaker, clinic.integration_id) == links

    # Nothing that identifies a patient reached a log line.
    out, err = capfd.readouterr()
    logged = out + err
    for patient in pms:
        assert not (patient.Email and patient.Email in logged)
        assert f"{patient.FName} {patient.LName}" not in logged
        assert not (patient.WirelessPhone and patient.WirelessPhone in logged)


async def test_a_patient_changed_in_the_pms_is_updated_by_the_next_import(
    client: httpx.AsyncClient, od_patients: Pulling, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    clinic = od_patients
    first = await _import(client, clinic)
    assert first["counts"]["patients"]["created"] == PMS_PATIENTS, first
    patient = min(_store(clinic).patients.values(), key=lambda p: p.PatNum)
    keys = _store(clinic).od
    writer = next(key for key, access in keys.customer_keys.items() if access == "readwrite")
    async with httpx.AsyncClient(
        base_url=clinic.sandbox.base_url, headers={"Authorization": f"ODFHIR {keys.developer_key}/{writer}"}
    ) as desk:
        changed = await desk.put(f"/patients/{patient.PatNum}", json={"LName": "Renamed"})
        assert changed.status_code == 200, changed.text

    second = await _import(client, clinic)

    assert second["counts"]["patients"]["updated"] == 1
    assert second["counts"]["patients"]["unchanged"] == PMS_PATIENTS - 1
    local_id = (await _links(sessionmaker, clinic.integration_id))[str(patient.PatNum)]
    shown = await client.get(f"/api/v1/patients/{local_id}", headers=clinic.headers)
    assert shown.json()["last_name"] == "Renamed"


async def test_a_provider_without_a_patient_list_skips_the_import_and_says_why(
    client: httpx.AsyncClient, vet: Pulling
) -> None:
    started = await client.post(
        "/api/v1/sync/trigger",
        headers=vet.headers,
        json={"integration_id": vet.integration_id, "sync_type": "import_patients"},
    )
    assert started.status_code == 202, started.text
    run = await finished(client, vet, started.json()["sync_id"])
    assert run["status"] == "completed", run
    assert run["phases"]["patients"]["status"] == "skipped"
    assert "patient.list_changed" in run["phases"]["patients"]["reason"]

"""Read-back: an accepted write is confirmed when the PMS holds what was sent, flagged when it does not."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.app import create_app
from clinicsync.db.engine import session_scope
from clinicsync.integrations.executor import IntegrationExecutor
from clinicsync.sandbox import run_sandbox
from clinicsync.sandbox.faults import FaultSettings
from clinicsync.serving import serving
from clinicsync.sync import delivery, outbox
from clinicsync.sync.delivery import SyncContext
from clinicsync.sync.models import ExternalReference, RecordType
from tests.factories import TenantFactory, booking, future_day, open_clinic
from tests.sync.conftest import DUAL_WRITE, connect_opendental, eventually, sync_settings


async def test_a_pms_change_before_the_read_back_is_flagged_not_overwritten(
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_factory: TenantFactory,
    tmp_path: Any,
) -> None:
    # The read-back waits a few seconds: long enough for the front desk to move the booking first.
    settings = sync_settings(database_url, tmp_path / "var", sync_read_back_delay_seconds=4.0)
    async with (
        run_sandbox("opendental", spec={"patients": 3, "appointments": 0}) as sandbox,
        serving(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=60) as client,
    ):
        tenant = await tenant_factory(time_zone="America/Chicago")
        integration_id, pms, provider = await connect_opendental(client, tenant, sandbox)
        clinic = await open_clinic(
            client, tenant, name=f"{provider['FName']} {provider['LName']}", start="00:00", end="23:59"
        )
        await client.post(
            "/api/admin/integration-settings",
            headers=tenant.headers,
            json={"integration_id": integration_id, **DUAL_WRITE},
        )
        day = future_day()
        created = await client.post(
            "/api/v1/appointments", json=booking(clinic, clinic.local(day, 10)), headers=tenant.headers
        )
        path = f"/api/v1/appointments/{created.json()['id']}"

        async def accepted() -> dict[str, Any] | None:
            refs = (await client.get(path, headers=tenant.headers)).json()["external_refs"]
            return refs[0] if refs and refs[0]["sync_state"] == "accepted" else None

        ref = await eventually(accepted)
        moved = await pms.post(
            sandbox.root_url + "/_sandbox/actions/reschedule",  # type: ignore[operator]
            json={"AptNum": int(ref["external_id"]), "AptDateTime": f"{day.isoformat()} 14:00:00"},
        )
        assert moved.status_code == 200, moved.text

        async def flagged() -> dict[str, Any] | None:
            refs = (await client.get(path, headers=tenant.headers)).json()["external_refs"]
            return refs[0] if refs[0]["mismatch"] else None

        mismatch = (await eventually(flagged))["mismatch"]
        assert set(mismatch) == {"starts_at", "ends_at"}
        assert datetime.fromisoformat(mismatch["starts_at"]["pms"]) == clinic.local(day, 14)
        refs = (await client.get(path, headers=tenant.headers)).json()["external_refs"]
        assert refs[0]["sync_state"] == "accepted"  # not confirmed, and nothing was pushed over it
        local = (await client.get(path, headers=tenant.headers)).json()
        assert datetime.fromisoformat(local["start"]) == clinic.local(day, 10)
        in_pms = (await pms.get(f"/appointments/{ref['external_id']}")).json()
        assert in_pms["AptDateTime"].endswith("14:00:00")
        await pms.aclose()


async def test_a_read_back_the_pms_never_answers_is_flagged_for_a_person_after_its_last_try(
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_factory: TenantFactory,
    tmp_path: Any,
) -> None:
    # The server's own read-back waits an hour: this test makes every try itself.
    settings = sync_settings(database_url, tmp_path / "var", sync_read_back_delay_seconds=3600.0)
    async with (
        run_sandbox("opendental", spec={"patients": 3, "appointments": 0}) as sandbox,
        serving(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=60) as client,
    ):
        tenant = await tenant_factory(time_zone="America/Chicago")
        integration_id, pms, provider = await connect_opendental(client, tenant, sandbox)
        await pms.aclose()
        clinic = await open_clinic(
            client, tenant, name=f"{provider['FName']} {provider['LName']}", start="00:00", end="23:59"
        )
        await client.post(
            "/api/admin/integration-settings",
            headers=tenant.headers,
            json={"integration_id": integration_id, **DUAL_WRITE},
        )
        created = await client.post(
            "/api/v1/appointments",
            json=booking(clinic, clinic.local(future_day(), 10)),
            headers=tenant.headers,
        )
        path = f"/api/v1/appointments/{created.json()['id']}"

        async def accepted() -> dict[str, Any] | None:
            refs = (await client.get(path, headers=tenant.headers)).json()["external_refs"]
            return refs[0] if refs and refs[0]["sync_state"] == "accepted" else None

        await eventually(accepted)
        # From now on the PMS refuses to show the appointment it accepted.
        sandbox.faults = FaultSettings(
            error_rate=1.0, error_statuses=[403], match_path=r"/appointments/\d+$", match_methods=["GET"]
        )
        async with session_scope(sessionmaker) as session:
            ref_id = await session.scalar(
                select(ExternalReference.id).where(
                    ExternalReference.record_type == RecordType.APPOINTMENT,
                    ExternalReference.record_id == uuid.UUID(created.json()["id"]),
                )
            )
        assert ref_id is not None
        worker = SyncContext(sessionmaker, IntegrationExecutor(sessionmaker, settings), settings)

        outcomes = [await delivery.read_back(worker, ref_id) for _ in range(outbox.READ_BACK_ATTEMPTS)]

        assert outcomes == ["retry"] * (outbox.READ_BACK_ATTEMPTS - 1) + ["mismatch"]
        ref = (await client.get(path, headers=tenant.headers)).json()["external_refs"][0]
        assert ref["sync_state"] == "accepted"
        assert ref["mismatch"]["record"]["pms"].startswith(
            f"unreadable after {outbox.READ_BACK_ATTEMPTS} tries"
        )
        assert ref_id not in await outbox.read_backs_due(sessionmaker, older_than=0, limit=500)

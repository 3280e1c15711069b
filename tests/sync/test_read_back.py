"""Read-back: an accepted write is confirmed when the PMS holds what was sent, flagged when it does not."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.app import create_app
from clinicsync.config import Settings
from clinicsync.db.engine import session_scope
from clinicsync.integrations.executor import IntegrationExecutor
from clinicsync.sandbox import SandboxServer, run_sandbox
from clinicsync.sandbox.faults import FaultSettings
from clinicsync.serving import serving
from clinicsync.sync import delivery, outbox
from clinicsync.sync.delivery import SyncContext
from clinicsync.sync.models import ExternalReference, RecordType
from tests.factories import Clinic, Tenant, TenantFactory, booking, future_day, open_clinic
from tests.sync.conftest import DUAL_WRITE, connect_opendental, eventually, sync_settings


@dataclass
class Accepted:
    """A dual-write booking the sandbox OpenDental has accepted, not yet read back."""

    client: httpx.AsyncClient
    sandbox: SandboxServer
    pms: httpx.AsyncClient
    tenant: Tenant
    clinic: Clinic
    appointment_id: str
    ref: dict[str, Any]

    @property
    def path(self) -> str:
        return f"/api/v1/appointments/{self.appointment_id}"

    async def refs(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await self.client.get(self.path, headers=self.tenant.headers)).json()[
            "external_refs"
        ]
        return found


@asynccontextmanager
async def accepted_booking(
    settings: Settings, tenant_factory: TenantFactory, start: Callable[[Clinic], datetime]
) -> AsyncIterator[Accepted]:
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
        created = await client.post(
            "/api/v1/appointments", json=booking(clinic, start(clinic)), headers=tenant.headers
        )
        assert created.status_code == 201, created.text
        booked = Accepted(client, sandbox, pms, tenant, clinic, created.json()["id"], {})

        async def accepted() -> dict[str, Any] | None:
            refs = await booked.refs()
            return refs[0] if refs and refs[0]["sync_state"] == "accepted" else None

        booked.ref = await eventually(accepted)
        try:
            yield booked
        finally:
            await pms.aclose()


async def test_a_pms_change_before_the_read_back_is_flagged_not_overwritten(
    database_url: str, tenant_factory: TenantFactory, tmp_path: Any
) -> None:
    # The read-back waits a few seconds: long enough for the front desk to move the booking first.
    settings = sync_settings(database_url, tmp_path / "var", sync_read_back_delay_seconds=4.0)
    day = future_day()
    async with accepted_booking(settings, tenant_factory, lambda clinic: clinic.local(day, 10)) as booked:
        moved = await booked.pms.post(
            booked.sandbox.root_url + "/_sandbox/actions/reschedule",  # type: ignore[operator]
            json={"AptNum": int(booked.ref["external_id"]), "AptDateTime": f"{day.isoformat()} 14:00:00"},
        )
        assert moved.status_code == 200, moved.text

        async def flagged() -> dict[str, Any] | None:
            refs = await booked.refs()
            return refs[0] if refs[0]["mismatch"] else None

        mismatch = (await eventually(flagged))["mismatch"]
        assert set(mismatch) == {"starts_at", "ends_at"}
        assert datetime.fromisoformat(mismatch["starts_at"]["pms"]) == booked.clinic.local(day, 14)
        assert (await booked.refs())[0]["sync_state"] == "accepted"  # not confirmed, nothing pushed over it
        local = (await booked.client.get(booked.path, headers=booked.tenant.headers)).json()
        assert datetime.fromisoformat(local["start"]) == booked.clinic.local(day, 10)
        in_pms = (await booked.pms.get(f"/appointments/{booked.ref['external_id']}")).json()
        assert in_pms["AptDateTime"].endswith("14:00:00")


async def test_a_read_back_the_pms_never_answers_is_flagged_for_a_person_after_its_last_try(
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_factory: TenantFactory,
    tmp_path: Any,
) -> None:
    # The server's own read-back waits an hour: this test makes every try itself.
    settings = sync_settings(database_url, tmp_path / "var", sync_read_back_delay_seconds=3600.0)
    async with accepted_booking(
        settings, tenant_factory, lambda clinic: clinic.local(future_day(), 10)
    ) as booked:
        # From now on the PMS refuses to show the appointment it accepted.
        booked.sandbox.faults = FaultSettings(
            error_rate=1.0, error_statuses=[403], match_path=r"/appointments/\d+$", match_methods=["GET"]
        )
        async with session_scope(sessionmaker) as session:
            ref_id = await session.scalar(
                select(ExternalReference.id).where(
                    ExternalReference.record_type == RecordType.APPOINTMENT,
                    ExternalReference.record_id == uuid.UUID(booked.appointment_id),
                )
            )
        assert ref_id is not None
        worker = SyncContext(sessionmaker, IntegrationExecutor(sessionmaker, settings), settings)

        outcomes = [await delivery.read_back(worker, ref_id) for _ in range(outbox.READ_BACK_ATTEMPTS)]

        assert outcomes == ["retry"] * (outbox.READ_BACK_ATTEMPTS - 1) + ["mismatch"]
        ref = (await booked.refs())[0]
        assert ref["sync_state"] == "accepted"
        unreadable = f"unreadable after {outbox.READ_BACK_ATTEMPTS} tries"
        assert ref["mismatch"]["record"]["pms"].startswith(unreadable)
        assert ref_id not in await outbox.read_backs_due(sessionmaker, older_than=0, limit=500)

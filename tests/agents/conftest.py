"""A clinic in Sydney open every day 09:00-17:00, with a service user for its agents."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from clinicsync.booking.models import BookingSource
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.principal import Principal
from tests.factories import Tenant, TenantFactory

ZONE = "Australia/Sydney"


@dataclass
class AgentClinic:
    owner: Tenant
    service: Tenant
    practitioners: dict[str, uuid.UUID]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(ZONE)

    def day(self, ahead: int = 7) -> date:
        return datetime.now(self.zone).date() + timedelta(days=ahead)

    def principal(self) -> Principal:
        return Principal(self.service.organization_id, self.service.user_id, Role.SERVICE)

    def service_headers(self, source: BookingSource = BookingSource.AI_VOICE, **extra: str) -> dict[str, str]:
        return {**self.service.headers, "X-Booking-Source": source.value, **extra}


async def make_agent_clinic(
    client: httpx.AsyncClient,
    tenant_factory: TenantFactory,
    names: tuple[str, ...] = ("Dr Mia Lee", "Dr Sam Ng"),
) -> AgentClinic:
    owner = await tenant_factory(time_zone=ZONE)
    service = await tenant_factory(role=Role.SERVICE, organization_id=owner.organization_id)
    practitioners: dict[str, uuid.UUID] = {}
    week = [{"day_of_week": day, "start_time": "09:00", "end_time": "17:00"} for day in range(7)]
    for name in names:
        made = await client.post(
            "/api/v1/practitioners", json={"name": name, "title": "Dentist"}, headers=owner.headers
        )
        assert made.status_code == 201, made.text
        practitioners[name] = uuid.UUID(made.json()["id"])
        hours = await client.put(
            f"/api/v1/practitioners/{made.json()['id']}/availability",
            json={"intervals": week},
            headers=owner.headers,
        )
        assert hours.status_code == 200, hours.text
    return AgentClinic(owner, service, practitioners)


@pytest.fixture
async def agent_clinic(client: httpx.AsyncClient, tenant_factory: TenantFactory) -> AgentClinic:
    return await make_agent_clinic(client, tenant_factory)


async def call(
    client: httpx.AsyncClient,
    clinic: AgentClinic,
    tool: str,
    headers: dict[str, str] | None = None,
    **arguments: Any,
) -> dict[str, Any]:
    """One tool call through the function-calling route, as any chatbot would make it."""
    response = await client.post(
        f"/api/v1/agents/tools/{tool}", json=arguments, headers=headers or clinic.service_headers()
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert "\n" not in answer["text"]
    return answer

"""Numbers in an integration's settings are bounded: out of range is a 422 naming the field.

Unbounded, a huge rate limit overflowed PostgreSQL's integer column (a 500) while SQLite stored it,
and a huge timeout, delay or page count would make a call wait or loop for ever.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.factories import Tenant, TenantFactory

HUGE = 10**15


def _integration(**extra: Any) -> dict[str, Any]:
    return {
        "provider_key": "bounded_pms",
        "display_name": "Bounded PMS",
        "base_url": "https://pms.example.com",
        **extra,
    }


def _fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    return [detail["field"] for detail in response.json()["error"]["details"]]


@pytest.fixture
async def admin(tenant_factory: TenantFactory) -> Tenant:
    return await tenant_factory()


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"rate_limit": {"requests": HUGE, "per_seconds": 60}}, "rate_limit.requests"),
        ({"rate_limit": {"requests": 10, "per_seconds": 1e300}}, "rate_limit.per_seconds"),
        ({"rate_limit": {"requests": 10, "per_seconds": 60, "burst": HUGE}}, "rate_limit.burst"),
        ({"timeout_seconds": 1e9}, "timeout_seconds"),
        ({"retry": {"max_retry_after": 1e12}}, "retry.max_retry_after"),
        ({"retry": {"max_delay": 1e12}}, "retry.max_delay"),
        ({"pagination": {"style": "page", "max_pages": HUGE}}, "pagination.max_pages"),
        ({"pagination": {"style": "page", "start_page": HUGE}}, "pagination.start_page"),
        ({"auth": {"type": "oauth2_client_credentials", "refresh_margin_seconds": 1e12}}, "auth"),
    ],
)
async def test_creating_an_integration_with_a_number_out_of_range_is_refused_naming_it(
    client: httpx.AsyncClient, admin: Tenant, extra: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/admin/integrations", json=_integration(**extra), headers=admin.headers)
    assert any(name.startswith(field) for name in _fields(response)), response.text
    listed = await client.get("/api/admin/integrations", headers=admin.headers)
    assert "bounded_pms" not in [item["provider_key"] for item in listed.json()]


async def test_changing_a_rate_limit_out_of_range_is_refused_and_the_old_one_kept(
    client: httpx.AsyncClient, admin: Tenant
) -> None:
    created = await client.post(
        "/api/admin/integrations",
        json=_integration(rate_limit={"requests": 5, "per_seconds": 1}),
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    url = f"/api/admin/integrations/{created.json()['id']}"
    response = await client.patch(
        url, json={"rate_limit": {"requests": HUGE, "per_seconds": 1}}, headers=admin.headers
    )
    assert _fields(response) == ["rate_limit.requests"]
    assert "100000" in response.json()["error"]["message"]
    kept = await client.get(url, headers=admin.headers)
    assert kept.json()["rate_limit_requests"] == 5


async def test_a_parameter_map_position_out_of_range_is_refused(
    client: httpx.AsyncClient, admin: Tenant
) -> None:
    created = await client.post("/api/admin/integrations", json=_integration(), headers=admin.headers)
    assert created.status_code == 201, created.text
    response = await client.post(
        f"/api/admin/integrations/{created.json()['id']}/parameter-maps",
        json={"internal_name": "first_name", "external_name": "FName", "position": HUGE},
        headers=admin.headers,
    )
    assert _fields(response) == ["position"]


async def test_an_uploaded_definition_with_a_huge_rate_limit_is_refused_naming_the_field(
    client: httpx.AsyncClient, admin: Tenant
) -> None:
    document = (
        "key: uploaded_pms\ndisplay_name: Uploaded\nbase_url: https://pms.example.com\n"
        f"rate_limit: {{requests: {HUGE}, per_seconds: 60}}\n"
    )
    response = await client.post(
        "/api/admin/integrations/definitions",
        content=document,
        headers={**admin.headers, "Content-Type": "application/yaml"},
    )
    assert response.status_code == 422, response.text
    assert "rate_limit.requests" in response.json()["error"]["message"]

"""Integration settings: owners and admins only, partial updates, contradictions refused by field."""

from __future__ import annotations

from typing import Any

import httpx

from clinicsync.tenancy.models import Role
from tests.factories import TenantFactory
from tests.sync.conftest import DUAL_WRITE, Connected, configure


async def test_create_read_partial_update_and_delete(
    client: httpx.AsyncClient, opendental: Connected
) -> None:
    od = opendental
    created = await configure(client, od)
    assert created["sync_enabled"] is False and created["mode"] == "local_only"
    assert created["sync_on_create"] and created["sync_on_update"] and not created["sync_on_delete"]
    assert created["conflict_resolution"] == "external_wins"
    assert "kept and delivered" in created["owed_pushes"]["policy"]
    url = f"/api/admin/integration-settings/{created['id']}"
    changed = await client.put(url, headers=od.headers, json=DUAL_WRITE)
    assert changed.status_code == 200, changed.text
    assert changed.json()["mode"] == "dual_write"
    partial = await client.put(url, headers=od.headers, json={"sync_on_update": False})
    assert partial.json()["sync_on_update"] is False and partial.json()["sync_direction"] == "to_external"
    listed = await client.get("/api/admin/integration-settings", headers=od.headers)
    assert [item["id"] for item in listed.json()] == [created["id"]]
    again = await client.post(
        "/api/admin/integration-settings", headers=od.headers, json={"integration_id": od.integration_id}
    )
    assert again.status_code == 409 and "integration_id" in again.json()["error"]["message"]
    deleted = await client.delete(url, headers=od.headers)
    assert deleted.status_code == 200 and deleted.json()["discarded"] == 0
    assert (await client.get(url, headers=od.headers)).status_code == 404


BAD_SETTINGS: list[tuple[dict[str, Any], str]] = [
    ({"sync_direction": "sideways"}, "sync_direction"),
    ({"sync_enabled": "sometimes"}, "sync_enabled"),
    ({"conflict_resolution": "coin_toss"}, "conflict_resolution"),
    ({"sync_on_creat": True}, "sync_on_creat"),
    (
        {"sync_enabled": True, "sync_direction": "from_external", "always_keep_local_copy": False},
        "always_keep_local_copy",
    ),
    ({"sync_enabled": False, "always_keep_local_copy": False}, "always_keep_local_copy"),
    (DUAL_WRITE | {"always_keep_local_copy": False, "sync_on_create": False}, "sync_on_create"),
    ({"sync_enabled": None}, "sync_enabled"),
]


async def test_bad_settings_are_refused_naming_the_field_and_nothing_changes(
    client: httpx.AsyncClient, opendental: Connected
) -> None:
    od = opendental
    created = await configure(client, od, **DUAL_WRITE)
    url = f"/api/admin/integration-settings/{created['id']}"
    for body, field in BAD_SETTINGS:
        refused = await client.put(url, headers=od.headers, json=body)
        assert 400 <= refused.status_code < 500, (body, refused.text)
        assert field in refused.json()["error"]["message"], (body, refused.json())
        assert (await client.get(url, headers=od.headers)).json() == created
    await client.delete(url, headers=od.headers)
    for body, field in BAD_SETTINGS:
        posted = await client.post(
            "/api/admin/integration-settings",
            headers=od.headers,
            json={"integration_id": od.integration_id, **body},
        )
        assert posted.status_code == 422, (body, posted.text)
        assert field in posted.json()["error"]["message"]
    assert (await client.get("/api/admin/integration-settings", headers=od.headers)).json() == []


async def test_provider_that_cannot_push_or_learn_of_changes_is_refused(
    client: httpx.AsyncClient, opendental: Connected
) -> None:
    od = opendental
    bare = await client.post(
        "/api/admin/integrations",
        headers=od.headers,
        json={"provider_key": "paperpms", "base_url": "http://127.0.0.1:9", "auth": {"type": "none"}},
    )
    assert bare.status_code == 201, bare.text
    integration_id = bare.json()["id"]
    pushing = await client.post(
        "/api/admin/integration-settings",
        headers=od.headers,
        json={"integration_id": integration_id, **DUAL_WRITE},
    )
    assert pushing.status_code == 422 and pushing.json()["error"]["details"][0]["field"] == "sync_on_create"
    bidirectional = await client.post(
        "/api/admin/integration-settings",
        headers=od.headers,
        json={
            "integration_id": integration_id,
            "sync_enabled": True,
            "sync_direction": "bidirectional",
            "sync_on_create": False,
            "sync_on_update": False,
        },
    )
    assert bidirectional.status_code == 422
    assert "learn of changes" in bidirectional.json()["error"]["message"]
    assert bidirectional.json()["error"]["details"][0]["field"] == "sync_direction"


async def test_only_owners_and_admins_manage_settings(
    client: httpx.AsyncClient, opendental: Connected, tenant_factory: TenantFactory
) -> None:
    od = opendental
    for role in (Role.STAFF, Role.PRACTITIONER, Role.SERVICE):
        other = await tenant_factory(role=role, organization_id=od.clinic.tenant.organization_id)
        refused = await client.post(
            "/api/admin/integration-settings",
            headers=other.headers,
            json={"integration_id": od.integration_id},
        )
        assert refused.status_code == 403
        assert (await client.get("/api/admin/sync/status", headers=other.headers)).status_code == 403
    stranger = await tenant_factory()
    foreign = await client.post(
        "/api/admin/integration-settings",
        headers=stranger.headers,
        json={"integration_id": od.integration_id},
    )
    assert foreign.status_code == 422 and "integration_id" in foreign.json()["error"]["message"]

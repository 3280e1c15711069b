"""Another organization's token sees nothing of ours, on every route the app serves."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx

from clinicsync.app import create_app
from tests.conftest import RunningServer
from tests.factories import TenantFactory, booking, future_day, open_clinic

# Bodies that would be valid for the route's own organization, so a refusal can only be about ownership.
VALID_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/api/v1/practitioners/{practitioner_id}"): {"name": "Renamed"},
    ("PUT", "/api/v1/practitioners/{practitioner_id}/availability"): {"intervals": []},
    ("POST", "/api/v1/practitioners/{practitioner_id}/overrides"): {"date": "2030-01-07"},
    ("PATCH", "/api/v1/patients/{patient_id}"): {"first_name": "Renamed"},
    ("PATCH", "/api/v1/appointments/{appointment_id}"): {"notes": "changed"},
    ("POST", "/api/v1/appointments/{appointment_id}/cancel"): {"reason": "x"},
    ("POST", "/api/integrations/{provider}"): {"function": "list_patients", "params": {}},
    ("PATCH", "/api/admin/integrations/{integration_id}"): {"display_name": "Renamed"},
    ("POST", "/api/admin/integrations/{integration_id}/endpoints"): {
        "function_name": "ping",
        "path": "/ping",
    },
    ("PUT", "/api/admin/integrations/{integration_id}/endpoints/{endpoint_id}"): {
        "function_name": "list_patients",
        "path": "/patients",
    },
    ("POST", "/api/admin/integrations/{integration_id}/parameter-maps"): {
        "internal_name": "first_name",
        "external_name": "given",
    },
    ("PATCH", "/api/admin/api-credentials/{credential_id}"): {"label": "renamed"},
    ("POST", "/api/admin/sync/webhooks/{integration_id}/subscribe"): {
        "public_url": "https://sync.example-clinic.org"
    },
}


async def test_every_route_refuses_another_organizations_records(
    server: RunningServer, client: httpx.AsyncClient, tenant_factory: TenantFactory
) -> None:
    ours = await open_clinic(client, await tenant_factory())
    practitioner = (
        await client.post(
            "/api/v1/practitioners",
            json={"name": "Dr. Private", "email": "private@example.com"},
            headers=ours.headers,
        )
    ).json()
    override = (
        await client.post(
            f"/api/v1/practitioners/{ours.practitioner_id}/overrides",
            json={"date": "2030-01-01"},
            headers=ours.headers,
        )
    ).json()
    appointment = (
        await client.post(
            "/api/v1/appointments", json=booking(ours, ours.local(future_day(), 10)), headers=ours.headers
        )
    ).json()
    own_token = (await client.post("/api/v1/tokens", json={"name": "extra"}, headers=ours.headers)).json()
    integration = (
        await client.post(
            "/api/admin/integrations",
            json={
                "provider_key": "ourpms",
                "display_name": "Our PMS",
                "base_url": "http://127.0.0.1:9/v1",
                "auth": {"type": "api_key", "in": "header", "name": "X-Key", "key_field": "key"},
            },
            headers=ours.headers,
        )
    ).json()
    endpoint = (
        await client.post(
            f"/api/admin/integrations/{integration['id']}/endpoints",
            json={"function_name": "list_patients", "path": "/patients"},
            headers=ours.headers,
        )
    ).json()
    parameter_map = (
        await client.post(
            f"/api/admin/integrations/{integration['id']}/parameter-maps",
            json={"endpoint_id": endpoint["id"], "internal_name": "last_name", "external_name": "surname"},
            headers=ours.headers,
        )
    ).json()
    credential = (
        await client.post(
            "/api/admin/api-credentials",
            json={"provider_key": "ourpms", "label": "front desk", "secrets": {"key": "sk-ours-very-secret"}},
            headers=ours.headers,
        )
    ).json()
    ids = {
        "practitioner_id": str(ours.practitioner_id),
        "override_id": override["id"],
        "patient_id": str(ours.patient_id),
        "appointment_id": appointment["id"],
        "user_id": practitioner["user_id"],
        "token_id": own_token["id"],
        "reference": appointment["booking_reference"],
        "integration_id": integration["id"],
        "endpoint_id": endpoint["id"],
        "map_id": parameter_map["id"],
        "credential_id": credential["id"],
        "provider": "ourpms",
    }
    secrets = {
        *ids.values(),
        str(ours.tenant.organization_id),
        "Grace",
        "Hopper",
        "g@example.com",
        "private@",
    }

    theirs = await tenant_factory()
    # The OpenAPI document lists every route the app serves, so new routes are walked automatically.
    paths = create_app(server.settings).openapi()["paths"]
    walked = 0
    for path, operations in paths.items():
        if not path.startswith("/api/") or path == "/api/v1/events":
            # The event stream never ends; tests/realtime pins that it carries no other organization's rows.
            continue
        for method in sorted(operation.upper() for operation in operations):
            params = re.findall(r"{(\w+)}", path)
            url = path
            for name in params:
                url = url.replace("{" + name + "}", ids.get(name, str(uuid.uuid4())))
            body = VALID_BODIES.get((method, path), {})
            if (method, path) == ("POST", "/api/v1/appointments"):
                body = booking(ours, ours.local(future_day(), 14))
            response = await client.request(
                method, url, json=body if method in ("POST", "PUT", "PATCH") else None, headers=theirs.headers
            )
            walked += 1
            # An error may echo the id the caller sent; anything else of ours in the response is a leak.
            sent = url + repr(body)
            leaked = [secret for secret in secrets if secret in response.text and secret not in sent]
            assert not leaked, f"{method} {path} leaked {leaked}: {response.text}"
            if any(name in ids for name in params):
                assert response.status_code == 404, f"{method} {path}: {response.status_code} {response.text}"
            else:
                assert response.status_code < 500, f"{method} {path}: {response.text}"
    assert walked >= 25

    # Our records came through the walk untouched.
    shown = await client.get(f"/api/v1/appointments/{appointment['id']}", headers=ours.headers)
    assert shown.json()["status"] == "pending"
    assert shown.json()["version"] == 1
    assert (await client.get(f"/api/v1/patients/{ours.patient_id}", headers=ours.headers)).json()[
        "first_name"
    ] == "Grace"
    ours_integration = await client.get(f"/api/admin/integrations/{integration['id']}", headers=ours.headers)
    assert ours_integration.json()["display_name"] == "Our PMS"
    ours_credential = await client.get(f"/api/admin/api-credentials/{credential['id']}", headers=ours.headers)
    assert ours_credential.json()["label"] == "front desk"
    week = await client.get(
        f"/api/v1/practitioners/{ours.practitioner_id}/availability", headers=ours.headers
    )
    assert len(week.json()["intervals"]) == 7
    assert (
        await client.get("/api/v1/me", headers={"Authorization": f"Bearer {own_token['token']}"})
    ).status_code == 200


async def test_a_token_cannot_claim_another_organization(
    client: httpx.AsyncClient, tenant_factory: TenantFactory
) -> None:
    ours, theirs = await tenant_factory(), await tenant_factory()
    response = await client.get(
        "/api/v1/practitioners", headers={**theirs.headers, "X-Organization-ID": str(ours.organization_id)}
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    matching = await client.get(
        "/api/v1/practitioners", headers={**theirs.headers, "X-Organization-ID": str(theirs.organization_id)}
    )
    assert matching.status_code == 200


async def test_requests_without_a_valid_token_are_refused(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/practitioners")).status_code == 401
    wrong = await client.get("/api/v1/practitioners", headers={"Authorization": "Bearer cs_nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "unauthorized"

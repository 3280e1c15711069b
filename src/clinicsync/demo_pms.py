"""The demo clinic's PMS: an OpenDental sandbox on this machine, connected through the admin API
as an administrator would connect a real one, syncing both ways, with a first Full Sync started.

Runs once the demo server answers; a later `make demo` points the same integration at the
sandbox's new address (the sandbox keeps its records in var/ between runs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from clinicsync.sandbox import SandboxServer

SYNC_SETTINGS = {
    "sync_enabled": True,
    "sync_direction": "bidirectional",
    "conflict_resolution": "manual",
}


@dataclass(frozen=True)
class DemoPms:
    integration_id: str
    pms_url: str
    run_started: bool


def _wait_until_up(http: httpx.Client, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if http.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the demo server did not answer /health")
        time.sleep(0.2)


def _checked(response: httpx.Response, *allowed: int) -> Any:
    if response.status_code not in allowed:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.text}")
    return response.json() if response.content else None


def connect(base_url: str, token: str, sandbox: SandboxServer, time_zone: str) -> DemoPms:
    od: Any = sandbox.od  # type: ignore[attr-defined]
    writer = next(key for key, access in od.customer_keys.items() if access == "readwrite")
    if sandbox.base_url is None:
        raise RuntimeError("the sandbox is not listening")
    with (
        httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        httpx.Client(
            base_url=sandbox.base_url,
            headers={"Authorization": f"ODFHIR {od.developer_key}/{writer}"},
            timeout=10,
        ) as pms,
    ):
        _wait_until_up(http)
        operatory = pms.get("/operatories").json()[0]["OperatoryNum"]
        providers = pms.get("/providers").json()
        shape = {
            "base_url": sandbox.base_url,
            "settings": {"operatory_id": operatory, "timezone": time_zone},
        }
        existing = [
            row
            for row in _checked(http.get("/api/admin/integrations"), 200)
            if row["provider_key"] == "opendental"
        ]
        if existing:
            integration_id = existing[0]["id"]
            _checked(http.patch(f"/api/admin/integrations/{integration_id}", json=shape), 200)
        else:
            created = _checked(
                http.post(
                    "/api/admin/integrations",
                    json={"provider_key": "opendental", "display_name": "OpenDental (sandbox)", **shape},
                ),
                201,
            )
            integration_id = created["id"]
            _checked(
                http.post(
                    "/api/admin/api-credentials",
                    json={
                        "provider_key": "opendental",
                        "integration_id": integration_id,
                        "label": "demo sandbox",
                        "secrets": {"developer_key": od.developer_key, "customer_key": writer},
                    },
                ),
                201,
            )
            # Each demo practitioner is one of the sandbox's providers.
            people = _checked(http.get("/api/v1/practitioners"), 200)
            for person, provider in zip(people, providers, strict=False):
                _checked(
                    http.post(
                        "/api/admin/sync/links",
                        json={
                            "integration_id": integration_id,
                            "record_type": "practitioner",
                            "record_id": person["id"],
                            "external_id": str(provider["ProvNum"]),
                        },
                    ),
                    201,
                    409,
                )
            _checked(
                http.post(
                    "/api/admin/integration-settings",
                    json={"integration_id": integration_id, **SYNC_SETTINGS},
                ),
                201,
                409,
            )
        started = http.post("/api/v1/sync/trigger", json={"integration_id": integration_id})
        _checked(started, 202, 409)
        return DemoPms(integration_id, sandbox.base_url, started.status_code == 202)

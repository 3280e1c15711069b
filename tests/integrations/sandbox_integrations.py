"""Connect a clinic to a running sandbox through the admin API, as an admin would."""

from __future__ import annotations

from typing import Any

import httpx

from clinicsync.sandbox import SandboxServer

FAST_RETRY = {"attempts": 3, "base_delay": 0.05, "max_delay": 0.2, "max_retry_after": 2}


async def connect_opendental(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    server: SandboxServer,
    *,
    location_label: str = "",
    rate_limit: dict[str, Any] | None = None,
    timeout_seconds: float = 5,
) -> str:
    """An OpenDental integration pointed at `server`, with its own credential; returns its id."""
    body: dict[str, Any] = {
        "provider_key": "opendental",
        "base_url": server.base_url,
        "location_label": location_label,
        "retry": FAST_RETRY,
        "timeout_seconds": timeout_seconds,
        "settings": {"timezone": "America/Chicago"},
    }
    if rate_limit is not None:
        body["rate_limit"] = rate_limit
    created = await client.post("/api/admin/integrations", headers=headers, json=body)
    assert created.status_code == 201, created.text
    integration_id: str = created.json()["id"]
    writer = next(key for key, access in server.od.customer_keys.items() if access == "readwrite")
    credential = await client.post(
        "/api/admin/api-credentials",
        headers=headers,
        json={
            "provider_key": "opendental",
            "integration_id": integration_id,
            "label": location_label or "main",
            "secrets": {"developer_key": server.od.developer_key, "customer_key": writer},
        },
    )
    assert credential.status_code == 201, credential.text
    return integration_id

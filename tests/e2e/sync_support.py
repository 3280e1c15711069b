"""A clinic connected to an OpenDental sandbox, for the browser tests of the sync pages.

The sandbox is the real simulated PMS on loopback, served from a thread of its own (Playwright's
sync API owns the test's event loop); the clinic's server talks to it over HTTP as to a PMS.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from clinicsync.sandbox import SandboxServer
from clinicsync.sandbox.threaded import sandbox_in_thread

FAST_HTTP = {
    "rate_limit": {"requests": 2000, "per_seconds": 1},
    "retry": {"attempts": 2, "base_delay": 0.05, "max_delay": 0.2, "max_retry_after": 2},
    "timeout_seconds": 5,
}
# Delivery as the sync tests run it: quick retries and read-backs, a worker inside the server.
SYNC_ENVIRONMENT = {
    "CLINICSYNC_SYNC_RETRY_BASE_SECONDS": "0.2",
    "CLINICSYNC_SYNC_RETRY_MAX_SECONDS": "1.0",
    "CLINICSYNC_SYNC_SWEEP_INTERVAL_SECONDS": "1.0",
    "CLINICSYNC_SYNC_READ_BACK_DELAY_SECONDS": "0",
    "CLINICSYNC_SYNC_EMBEDDED_WORKER": "true",
}


@dataclass
class ConnectedClinic:
    integration_id: str
    sandbox: SandboxServer
    pms: httpx.Client  # the PMS's own API, as its staff's software would use it
    providers: list[dict[str, Any]]

    def front_desk(self, action: str, **body: Any) -> Any:
        """Something the clinic's staff do in the PMS itself (the sandbox's control API)."""
        with httpx.Client(base_url=f"{self.sandbox.root_url}/_sandbox", timeout=10) as control:
            response = control.post(f"/actions/{action}", json=body)
            assert response.status_code == 200, response.text
            return response.json() if response.content else {}

    def advance_clock(self, seconds: float) -> None:
        with httpx.Client(base_url=f"{self.sandbox.root_url}/_sandbox", timeout=10) as control:
            assert control.put("/clock", json={"advance_seconds": seconds}).status_code == 200


def connect_opendental(http: httpx.Client, sandbox: SandboxServer, time_zone: str) -> ConnectedClinic:
    od: Any = sandbox.od  # type: ignore[attr-defined]
    writer = next(key for key, access in od.customer_keys.items() if access == "readwrite")
    pms = httpx.Client(
        base_url=sandbox.base_url,
        headers={"Authorization": f"ODFHIR {od.developer_key}/{writer}", "Content-Type": "application/json"},
        timeout=10,
    )
    operatories = pms.get("/operatories").json()
    created = http.post(
        "/api/admin/integrations",
        json={
            "provider_key": "opendental",
            "base_url": sandbox.base_url,
            "settings": {"operatory_id": operatories[0]["OperatoryNum"], "timezone": time_zone},
            **FAST_HTTP,
        },
    )
    assert created.status_code == 201, created.text
    integration_id = created.json()["id"]
    credential = http.post(
        "/api/admin/api-credentials",
        json={
            "provider_key": "opendental",
            "integration_id": integration_id,
            "secrets": {"developer_key": od.developer_key, "customer_key": writer},
        },
    )
    assert credential.status_code == 201, credential.text
    return ConnectedClinic(integration_id, sandbox, pms, pms.get("/providers").json())


def link(
    http: httpx.Client, connected: ConnectedClinic, record_type: str, record_id: Any, external: Any
) -> None:
    response = http.post(
        "/api/admin/sync/links",
        json={
            "integration_id": connected.integration_id,
            "record_type": record_type,
            "record_id": str(record_id),
            "external_id": str(external),
        },
    )
    assert response.status_code == 201, response.text


def eventually(check: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last result: {result!r}")
        time.sleep(interval)


def book(http: httpx.Client, practitioner_id: Any, start: datetime, last_name: str) -> dict[str, Any]:
    patient = http.post("/api/v1/patients", json={"first_name": "Grace", "last_name": last_name})
    assert patient.status_code == 201, patient.text
    booked = http.post(
        "/api/v1/appointments",
        json={
            "patient_id": patient.json()["id"],
            "practitioner_id": str(practitioner_id),
            "start": start.isoformat(),
        },
    )
    assert booked.status_code == 201, booked.text
    body: dict[str, Any] = booked.json()
    return body


def sync_state(http: httpx.Client, appointment_id: str) -> dict[str, Any] | None:
    refs = http.get(f"/api/v1/appointments/{appointment_id}").json()["external_refs"]
    return refs[0] if refs else None


__all__ = ["sandbox_in_thread"]

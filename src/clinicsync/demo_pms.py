"""The demo clinic's PMS: an OpenDental sandbox on this machine, connected through the admin API as
an administrator would connect a real one (integration, encrypted credential, a link from each
practitioner to a PMS provider, sync settings, the PMS's API Events posting to the demo's webhook),
syncing both ways, with a first Full Sync started.

Runs once the demo server listens, in the same event loop as the server and the sandbox, so every
call here is awaited: a blocking call would stop both from answering. A later `make demo` points
the same integration at the sandbox's new address and enters the credential again there (secrets
are bound to the address they were entered for); the sandbox keeps its records in var/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from clinicsync.sandbox import SandboxServer
from clinicsync.sandbox.generator import ClinicSpec, GeneratedClinic
from clinicsync.sandbox.opendental import OpenDentalSandbox, Operatory

# A small practice: a Full Sync of its four weeks takes a few seconds.
PMS_SPEC = {"patients": 60, "appointments": 240, "days_before": 30, "days_after": 30}
SYNC_SETTINGS = {
    "sync_enabled": True,
    "sync_direction": "bidirectional",
    "sync_on_delete": True,
    # A change made on both sides waits in the conflicts queue for a person to decide.
    "conflict_resolution": "manual",
}
# A real OpenDental allows a read-write developer one request a second; the sandbox on this
# machine takes more, so the first Full Sync finishes while a newcomer watches.
HTTP_LIMITS = {
    "rate_limit": {"requests": 50, "per_seconds": 1},
    "retry": {"attempts": 3, "base_delay": 0.2, "max_delay": 2, "max_retry_after": 5},
    "timeout_seconds": 10,
}


ONLINE_CHAIR = "Online bookings"


class DemoOpenDental(OpenDentalSandbox):
    """The practice's OpenDental with one more chair, kept for bookings made online: the demo
    books every appointment into one operatory (the integration's operatory_id), and the
    generated chairs are full of the practice's own appointments, which an online booking would
    overlap (the PMS refuses those)."""

    def load_clinic(self, clinic: GeneratedClinic) -> None:
        super().load_clinic(clinic)
        number = max(self.operatories, default=0) + 1
        self.operatories[number] = Operatory(
            OperatoryNum=number,
            OpName=ONLINE_CHAIR,
            Abbrev="WEB",
            ItemOrder=len(self.operatories),
            IsHidden=False,
            ProvDentist=0,
            ProvHygienist=0,
            IsHygiene=False,
            ClinicNum=0,
            SetProspective=False,
            IsWebSched=True,
            OperatoryType=0,
            DateTStamp=self._stamp(),
        )


@dataclass(frozen=True)
class DemoPms:
    integration_id: str
    pms_url: str
    control_url: str
    sync_id: str | None  # the Full Sync started at boot (None: one was already running)


def pms_spec(time_zone: str) -> ClinicSpec:
    return ClinicSpec.model_validate({**PMS_SPEC, "timezone": time_zone})


def _checked(response: httpx.Response, *allowed: int) -> Any:
    if response.status_code not in allowed:
        raise RuntimeError(
            f"connecting the demo PMS: {response.request.method} {response.request.url.path} "
            f"answered {response.status_code}: {response.text}"
        )
    return response.json() if response.content else None


async def connect(http: httpx.AsyncClient, sandbox: SandboxServer, time_zone: str) -> DemoPms:
    """``http`` is a client of the demo server with the demo administrator's token."""
    if sandbox.base_url is None or sandbox.root_url is None:
        raise RuntimeError("the sandbox is not listening")
    od: Any = sandbox.od  # type: ignore[attr-defined]
    writer = next(key for key, access in od.customer_keys.items() if access == "readwrite")
    secrets = {"developer_key": od.developer_key, "customer_key": writer}
    async with httpx.AsyncClient(
        base_url=sandbox.base_url,
        headers={"Authorization": f"ODFHIR {od.developer_key}/{writer}"},
        timeout=10,
    ) as pms:
        chairs = _checked(await pms.get("/operatories"), 200)
        online = [chair for chair in chairs if chair["OpName"] == ONLINE_CHAIR]
        operatory = (online or chairs)[0]["OperatoryNum"]
        providers = _checked(await pms.get("/providers"), 200)
        # The last run's API Events subscriptions point at its address; subscribed afresh below.
        for subscription in _checked(await pms.get("/subscriptions"), 200):
            _checked(await pms.delete(f"/subscriptions/{subscription['SubscriptionNum']}"), 200, 204, 404)
    shape = {
        "base_url": sandbox.base_url,
        "settings": {"operatory_id": operatory, "timezone": time_zone},
        **HTTP_LIMITS,
    }
    existing = [
        row
        for row in _checked(await http.get("/api/admin/integrations"), 200)
        if row["provider_key"] == "opendental" and not row["is_catalogue"]
    ]
    if existing:
        integration_id = existing[0]["id"]
        _checked(await http.patch(f"/api/admin/integrations/{integration_id}", json=shape), 200)
    else:
        created = await http.post(
            "/api/admin/integrations",
            json={"provider_key": "opendental", "display_name": "OpenDental (sandbox)", **shape},
        )
        integration_id = _checked(created, 201)["id"]
    credentials = [
        row
        for row in _checked(await http.get("/api/admin/api-credentials"), 200)
        if str(row.get("integration_id")) == integration_id
    ]
    if credentials:
        # Entered again: secrets are bound to the address they were entered for.
        answer = await http.patch(
            f"/api/admin/api-credentials/{credentials[0]['id']}", json={"secrets": secrets}
        )
        _checked(answer, 200)
    else:
        answer = await http.post(
            "/api/admin/api-credentials",
            json={
                "provider_key": "opendental",
                "integration_id": integration_id,
                "label": "demo sandbox",
                "secrets": secrets,
            },
        )
        _checked(answer, 201)
    # Each demo practitioner is one of the sandbox's providers (a hygienist to its hygienist).
    people = _checked(await http.get("/api/v1/practitioners"), 200)
    dentists = [p for p in providers if not _is_hygienist(p)]
    hygienists = [p for p in providers if _is_hygienist(p)]
    for person in people:
        pool = hygienists if "hygien" in (person.get("title") or "").lower() and hygienists else dentists
        if not pool:
            continue
        provider = pool.pop(0)
        linked = await http.post(
            "/api/admin/sync/links",
            json={
                "integration_id": integration_id,
                "record_type": "practitioner",
                "record_id": person["id"],
                "external_id": str(provider["ProvNum"]),
            },
        )
        _checked(linked, 201, 409)
    made = await http.post(
        "/api/admin/integration-settings", json={"integration_id": integration_id, **SYNC_SETTINGS}
    )
    _checked(made, 201, 409)
    # What the PMS's front desk changes comes back: its API Events post to the demo's webhook.
    public_url = str(http.base_url).rstrip("/")
    subscribed = await http.post(
        f"/api/admin/sync/webhooks/{integration_id}/subscribe", json={"public_url": public_url}
    )
    _checked(subscribed, 201)
    started = await http.post("/api/v1/sync/trigger", json={"integration_id": integration_id})
    body = _checked(started, 202, 409)
    return DemoPms(
        integration_id=integration_id,
        pms_url=sandbox.base_url,
        control_url=f"{sandbox.root_url}/_sandbox",
        sync_id=body.get("sync_id") if started.status_code == 202 and body else None,
    )


def _is_hygienist(provider: dict[str, Any]) -> bool:
    return str(provider.get("IsSecondary", "false")).lower() == "true"

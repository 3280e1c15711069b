"""HMAC-SHA256 signed webhooks over HTTP, from a PMS that signs what it sends.

Bookwell, the PMS defined at runtime through the admin API (its server is written in the tests),
here also keeps a webhook subscription: on every change of a visit it POSTs a notice signed with
the secret clinicsync issued, ``X-Bookwell-Signature: sha256=hex(HMAC-SHA256(secret,
"{timestamp}.{body}"))`` with the Unix time in ``X-Bookwell-Timestamp`` and a delivery id. The
notice names nothing private: clinicsync lists the visits changed since its cursor.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tests.conftest import RunningServer
from tests.factories import Clinic, TenantFactory, future_day, open_clinic
from tests.sync.conftest import FAST_HTTP, eventually

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integrations"))
from integration_servers import serve
from test_canonical_runtime_provider import DEFINITION, TOKEN, bookwell

SIGNED_DEFINITION = (
    DEFINITION
    + """webhooks:
  verify: {{scheme: hmac_sha256, header: X-Bookwell-Signature, prefix: "sha256=",
           timestamp_header: X-Bookwell-Timestamp, tolerance_seconds: 300}}
  replay_key: [X-Bookwell-Delivery]
  changes: {{kind: notify, operation: appointment.list_changed}}
"""
)


@dataclass
class Hooks:
    """Bookwell's side of the subscription, and every delivery it made (to replay one)."""

    url: str | None = None
    secret: str | None = None
    sent: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


def signature(secret: str, stamp: int, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()


def signing_bookwell() -> tuple[FastAPI, Hooks]:
    app, visits = bookwell()
    hooks = Hooks()

    @app.put("/api/hooks")
    async def subscribe(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"problem": "who are you?"}, 401)
        body = await request.json()
        hooks.url, hooks.secret = body["url"], body["secret"]
        return JSONResponse({"url": hooks.url})

    @app.post("/desk/visits/{key}/move")
    async def front_desk_move(request: Request, key: str) -> Response:
        """The practice's own staff move a visit; Bookwell tells its subscriber, signed."""
        visits[key].update(await request.json())
        visits[key]["changed"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if hooks.url and hooks.secret:
            body = json.dumps({"type": "visit.changed", "at": int(time.time())}).encode()
            stamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "X-Bookwell-Delivery": f"dlv-{next(hooks.serial)}",
                "X-Bookwell-Timestamp": str(stamp),
                "X-Bookwell-Signature": signature(hooks.secret, stamp, body),
            }
            async with httpx.AsyncClient(timeout=10) as sender:
                answer = await sender.post(hooks.url, content=body, headers=headers)
            hooks.sent.append((headers, body, answer.status_code))
        return JSONResponse(visits[key])

    return app, hooks


@asynccontextmanager
async def signed_clinic(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, server: RunningServer
) -> AsyncIterator[tuple[Clinic, str, str, Hooks]]:
    tenant = await tenant_factory(time_zone="Europe/Berlin")
    clinic = await open_clinic(client, tenant, start="00:00", end="23:59")
    app, hooks = signing_bookwell()
    async with serve(app) as base_url:
        uploaded = await client.post(
            "/api/admin/integrations/definitions",
            headers={**clinic.headers, "Content-Type": "application/yaml"},
            content=SIGNED_DEFINITION.format(base_url=base_url),
        )
        assert uploaded.status_code == 201, uploaded.text
        integration_id = str(uploaded.json()["id"])
        patched = await client.patch(
            f"/api/admin/integrations/{integration_id}", headers=clinic.headers, json=FAST_HTTP
        )
        assert patched.status_code == 200, patched.text
        for path, body in (
            (
                "/api/admin/api-credentials",
                {"provider_key": "bookwell", "integration_id": integration_id, "secrets": {"token": TOKEN}},
            ),
            (
                "/api/admin/sync/links",
                {
                    "integration_id": integration_id,
                    "record_type": "practitioner",
                    "record_id": str(clinic.practitioner_id),
                    "external_id": "c2",
                },
            ),
            (
                "/api/admin/integration-settings",
                {
                    "integration_id": integration_id,
                    "sync_enabled": True,
                    "sync_direction": "bidirectional",
                    "conflict_resolution": "external_wins",
                },
            ),
        ):
            response = await client.post(path, headers=clinic.headers, json=body)
            assert response.status_code == 201, response.text
        yield clinic, integration_id, base_url, hooks


async def _pushed(client: httpx.AsyncClient, clinic: Clinic, start: datetime) -> tuple[str, str]:
    """A local booking, delivered to Bookwell and read back: its id and the visit's key."""
    created = await client.post(
        "/api/v1/appointments",
        headers=clinic.headers,
        json={
            "patient_id": str(clinic.patient_id),
            "practitioner_id": str(clinic.practitioner_id),
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=30)).isoformat(),
        },
    )
    assert created.status_code == 201, created.text
    path = f"/api/v1/appointments/{created.json()['id']}"

    async def confirmed() -> str | None:
        refs = (await client.get(path, headers=clinic.headers)).json()["external_refs"]
        return str(refs[0]["external_id"]) if refs and refs[0]["sync_state"] == "confirmed" else None

    return created.json()["id"], await eventually(confirmed)


async def _counts(client: httpx.AsyncClient, clinic: Clinic, integration_id: str) -> tuple[int, int]:
    shown = (await client.get(f"/api/admin/sync/webhooks/{integration_id}", headers=clinic.headers)).json()
    return shown["received"] + shown["applied"], shown["failed"]


async def test_a_signed_notice_moves_the_booking_and_forged_old_or_replayed_ones_do_not(
    client: httpx.AsyncClient, server: RunningServer, tenant_factory: TenantFactory
) -> None:
    async with signed_clinic(client, tenant_factory, server) as (clinic, integration_id, base_url, hooks):
        day = future_day()
        appointment_id, visit = await _pushed(client, clinic, clinic.local(day, 9))
        issued = await client.post(
            f"/api/admin/sync/webhooks/{integration_id}/secret", headers=clinic.headers
        )
        assert issued.status_code == 201, issued.text
        assert issued.json()["scheme"] == "hmac_sha256"
        url = f"{server.base_url}/api/webhooks/bookwell/{integration_id}"
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as bookwell_api:
            subscribed = await bookwell_api.put(
                "/api/hooks",
                json={"url": url, "secret": issued.json()["secret"]},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert subscribed.status_code == 200, subscribed.text
            moved = await bookwell_api.post(f"/desk/visits/{visit}/move", json={"when": f"{day} 13:15"})
            assert moved.status_code == 200, moved.text
        [(headers, body, status)] = hooks.sent
        assert status == 202

        async def moved_here() -> bool:
            found = (
                await client.get(f"/api/v1/appointments/{appointment_id}", headers=clinic.headers)
            ).json()
            return bool(datetime.fromisoformat(found["start"]) == clinic.local(day, 13, 15))

        await eventually(moved_here)
        assert await _counts(client, clinic, integration_id) == (1, 0)

        async with httpx.AsyncClient(timeout=10) as stranger:
            # The same delivery again, exactly as Bookwell sent it: acknowledged, not stored twice.
            replayed = await stranger.post(url, content=body, headers=headers)
            assert replayed.status_code == 200 and replayed.json()["status"] == "duplicate"

            fresh = int(time.time())
            forged = {**headers, "X-Bookwell-Delivery": "dlv-forged", "X-Bookwell-Timestamp": str(fresh)}
            forged["X-Bookwell-Signature"] = signature("not-the-issued-secret", fresh, body)
            refused = await stranger.post(url, content=body, headers=forged)
            assert refused.status_code == 401, refused.text
            assert "X-Bookwell-Signature" in refused.json()["error"]["message"]

            tampered = await stranger.post(
                url, content=body + b" ", headers={**headers, "X-Bookwell-Delivery": "dlv-t"}
            )
            assert tampered.status_code == 401

            stale = int(time.time()) - 3600
            old = {**headers, "X-Bookwell-Delivery": "dlv-old", "X-Bookwell-Timestamp": str(stale)}
            old["X-Bookwell-Signature"] = signature(issued.json()["secret"], stale, body)
            too_old = await stranger.post(url, content=body, headers=old)
            assert too_old.status_code == 401, too_old.text
            assert "X-Bookwell-Timestamp" in too_old.json()["error"]["message"]

            unsigned = {k: v for k, v in headers.items() if k != "X-Bookwell-Signature"}
            missing = await stranger.post(
                url, content=body, headers={**unsigned, "X-Bookwell-Delivery": "dlv-m"}
            )
            assert missing.status_code == 401
        # Nothing refused was stored; the one real delivery was applied once.
        assert await _counts(client, clinic, integration_id) == (1, 0)

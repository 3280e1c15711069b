"""Connecting Google Calendar as a clinic does: consent with PKCE, the grant stored encrypted,
reconnect when it is revoked, and one refresh shared by every process."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
from sqlalchemy import select
from tests.conftest import RunningServer

from clinicsync.db.engine import create_engine, create_sessionmaker, session_scope
from clinicsync.integrations.credentials import cipher_for
from clinicsync.integrations.models import ApiCredential
from clinicsync.sandbox import SandboxServer, run_sandbox
from clinicsync.sandbox.google_calendar import DEFAULT_CALENDAR_ID, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

PROCESS = Path(__file__).with_name("executor_process.py")


async def add_google(client: httpx.AsyncClient, headers: dict[str, str], sandbox: SandboxServer) -> str:
    """A Google Calendar integration whose Google is the sandbox, with the clinic's OAuth client stored."""
    root = sandbox.root_url
    created = await client.post(
        "/api/admin/integrations",
        headers=headers,
        json={
            "provider_key": "google_calendar",
            "base_url": sandbox.base_url,
            "settings": {"calendar_id": DEFAULT_CALENDAR_ID},
            "auth": {
                "type": "oauth2_refresh_token",
                "token_url": f"{root}/token",
                "authorization_url": f"{root}/o/oauth2/v2/auth",
                "scope": "https://www.googleapis.com/auth/calendar.events",
                "authorization_params": {"access_type": "offline", "prompt": "consent"},
            },
            "retry": {"attempts": 3, "base_delay": 0.05, "max_delay": 0.2},
            "rate_limit": {"requests": 100, "per_seconds": 1},
        },
    )
    assert created.status_code == 201, created.text
    integration_id: str = created.json()["id"]
    credential = await client.post(
        "/api/admin/api-credentials",
        headers=headers,
        json={
            "provider_key": "google_calendar",
            "integration_id": integration_id,
            "secrets": {"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET},
        },
    )
    assert credential.status_code == 201, credential.text
    return integration_id


async def consent(client: httpx.AsyncClient, headers: dict[str, str], integration_id: str) -> httpx.Response:
    """Press Connect, let the browser follow Google's consent back to our callback; the callback's answer."""
    connect = await client.get(f"/api/admin/integrations/{integration_id}/connect", headers=headers)
    assert connect.status_code == 303, connect.text
    consent_url = connect.headers["location"]
    query = parse_qs(urlparse(consent_url).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["access_type"] == ["offline"] and query["state"][0]
    async with httpx.AsyncClient() as browser:  # the person's browser: no clinicsync token
        approved = await browser.get(consent_url)
        assert approved.status_code == 302, approved.text
        return await browser.get(approved.headers["location"])


async def list_events(
    client: httpx.AsyncClient, headers: dict[str, str], integration_id: str
) -> httpx.Response:
    return await client.post(
        f"/api/integrations/{integration_id}",
        headers=headers,
        json={"function": "list_events", "params": {}, "max_records": 5},
    )


async def stored_credential(server: RunningServer, integration_id: str) -> ApiCredential:
    engine = create_engine(server.settings.database_url)
    try:
        async with session_scope(create_sessionmaker(engine), write=False) as session:
            row = (
                await session.scalars(
                    select(ApiCredential).where(ApiCredential.integration_id == uuid.UUID(integration_id))
                )
            ).one()
    finally:
        await engine.dispose()
    return row


async def test_connect_through_consent_stores_the_grant_encrypted_and_calls_work(
    server: RunningServer, client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    async with run_sandbox("google_calendar") as sandbox:
        integration_id = await add_google(client, tenant.headers, sandbox)
        before = await client.get(f"/api/integrations/{integration_id}", headers=tenant.headers)
        assert before.json()["connection"] == "not_connected"

        done = await consent(client, tenant.headers, integration_id)
        assert done.status_code == 200, done.text
        assert done.json()["connected"] is True and done.json()["integration_id"] == integration_id
        assert sandbox.oauth.code_exchanges == 1

        events = await list_events(client, tenant.headers, integration_id)
        assert events.status_code == 200, events.text
        assert events.json()["count"] == 5
        status = await client.get(f"/api/integrations/{integration_id}", headers=tenant.headers)
        assert status.json()["connection"] == "connected"

        refresh_token = sandbox.oauth.current_refresh_tokens()[0]
        row = await stored_credential(server, integration_id)
        assert refresh_token not in row.secret_ciphertext  # encrypted at rest
        assert cipher_for(server.settings).decrypt(row.secret_ciphertext)["refresh_token"] == refresh_token
        shown = await client.get(f"/api/admin/api-credentials/{row.id}", headers=tenant.headers)
        assert refresh_token not in shown.text and shown.json()["grant_status"] == "connected"

        # A callback replayed (or forged) with the same state is refused: the state answers once.
        async with httpx.AsyncClient() as browser:
            replay = await browser.get(str(done.url))
        assert replay.status_code == 400 and "already used" in replay.json()["error"]["message"]


async def test_a_refused_consent_and_a_revoked_grant_ask_to_reconnect(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    async with run_sandbox("google_calendar") as sandbox:
        integration_id = await add_google(client, tenant.headers, sandbox)
        sandbox.settings = sandbox.settings.model_copy(update={"oauth_consent": "deny"})
        denied = await consent(client, tenant.headers, integration_id)
        assert denied.status_code == 400 and "access_denied" in denied.json()["error"]["message"]

        sandbox.settings = sandbox.settings.model_copy(update={"oauth_consent": "approve"})
        assert (await consent(client, tenant.headers, integration_id)).status_code == 200
        assert (await list_events(client, tenant.headers, integration_id)).status_code == 200

        # The person removes the app in their Google account; the access token dies with it.
        async with httpx.AsyncClient(base_url=f"{sandbox.root_url}/_sandbox") as control:
            assert (await control.post("/actions/revoke_access", json={})).json()["revoked"] == 1
        refused = await list_events(client, tenant.headers, integration_id)
        assert refused.status_code == 502, refused.text
        error = refused.json()["error"]
        assert error["code"] == "auth_failed" and "reconnect" in error["message"]
        assert error["details"]["reconnect"] is True
        status = await client.get(f"/api/integrations/{integration_id}", headers=tenant.headers)
        assert status.json()["connection"] == "reconnect_required"
        # Calls fail at once from now on, without asking Google again...
        refreshes = sandbox.oauth.refresh_requests
        assert (await list_events(client, tenant.headers, integration_id)).status_code == 502
        assert sandbox.oauth.refresh_requests == refreshes
        # ...until someone connects again.
        assert (await consent(client, tenant.headers, integration_id)).status_code == 200
        assert (await list_events(client, tenant.headers, integration_id)).status_code == 200
        status = await client.get(f"/api/integrations/{integration_id}", headers=tenant.headers)
        assert status.json()["connection"] == "connected"


async def run_process(url: str, tenant: Any, integration_id: str, count: int) -> list[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PROCESS),
        url,
        str(tenant.organization_id),
        integration_id,
        "list_events",
        str(count),
        "LIVE",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    # Log lines share stdout with the results; results are the JSON lines.
    return [line for line in out.decode().splitlines() if line.startswith("{")]


async def test_two_processes_refreshing_at_once_use_one_refresh_and_keep_the_rotated_token(
    server: RunningServer, client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    async with run_sandbox("google_calendar", spec={"patients": 10, "appointments": 10}) as sandbox:
        integration_id = await add_google(client, tenant.headers, sandbox)
        assert (await consent(client, tenant.headers, integration_id)).status_code == 200
        # Google rotates refresh tokens from now on, strictly: the old one stops working at once.
        sandbox.settings = sandbox.settings.model_copy(update={"oauth_rotate_refresh_tokens": True})
        first_refresh_token = sandbox.oauth.current_refresh_tokens()[0]
        # Every access token issued so far is dead: both processes meet a 401 and must refresh.
        async with httpx.AsyncClient(base_url=f"{sandbox.root_url}/_sandbox") as control:
            await control.post("/tokens/expire")
        url = server.settings.database_url
        first, second = await asyncio.gather(
            run_process(url, tenant, integration_id, 4), run_process(url, tenant, integration_id, 4)
        )
        assert len(first + second) == 8
        assert all('"ok": true' in line for line in first + second), first + second
        assert sandbox.oauth.refresh_requests == 1
        rotated = sandbox.oauth.current_refresh_tokens()
        assert rotated and rotated[0] != first_refresh_token
        row = await stored_credential(server, integration_id)
        assert cipher_for(server.settings).decrypt(row.secret_ciphertext)["refresh_token"] == rotated[0]
        assert row.refresh_count == 1
        # The stored token is the live one: the next refresh works.
        async with httpx.AsyncClient(base_url=f"{sandbox.root_url}/_sandbox") as control:
            await control.post("/tokens/expire")
        assert (await list_events(client, tenant.headers, integration_id)).status_code == 200
        assert sandbox.oauth.refresh_requests == 2


async def test_a_google_restarted_from_its_state_file_keeps_the_clinics_grant(
    server: RunningServer, client: httpx.AsyncClient, tenant_factory: Any, tmp_path: Path
) -> None:
    """The sandbox saves its OAuth grants: after a restart from the file the connection still works,
    and the refresh token clinicsync holds is still the one Google honours."""
    tenant = await tenant_factory()
    state_file = tmp_path / "google.json"
    async with run_sandbox("google_calendar", state_file=state_file) as first:
        port = int(urlparse(first.root_url or "").port or 0)
        integration_id = await add_google(client, tenant.headers, first)
        assert (await consent(client, tenant.headers, integration_id)).status_code == 200
        assert (await list_events(client, tenant.headers, integration_id)).status_code == 200
        refresh_token = first.oauth.current_refresh_tokens()[0]
    async with run_sandbox("google_calendar", state_file=state_file, port=port) as second:
        assert second.oauth.current_refresh_tokens() == [refresh_token]
        # The access token clinicsync holds is still good, and a refresh with the stored token works.
        assert (await list_events(client, tenant.headers, integration_id)).status_code == 200
        async with httpx.AsyncClient(base_url=second.root_url or "") as google:
            refreshed = await google.post(
                "/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": refresh_token,
                    "client_id": DEFAULT_CLIENT_ID,
                    "client_secret": DEFAULT_CLIENT_SECRET,
                },
            )
            assert refreshed.status_code == 200, refreshed.text
            assert (await google.post("/revoke", params={"token": refresh_token})).status_code == 200
    async with run_sandbox("google_calendar", state_file=state_file, port=port) as third:
        # A revoked grant stays revoked: clinicsync is asked to reconnect, not silently let in.
        assert third.oauth.current_refresh_tokens() == []
        assert third.oauth.summary()["revoked_grants"] == 1
        refused = await list_events(client, tenant.headers, integration_id)
        assert refused.status_code == 502, refused.text
        assert refused.json()["error"]["details"]["reconnect"] is True
        status = await client.get(f"/api/integrations/{integration_id}", headers=tenant.headers)
        assert status.json()["connection"] == "reconnect_required"

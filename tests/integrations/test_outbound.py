"""Credentials go only to the host they were entered for; internal addresses are not called."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from integration_servers import serve
from tests.conftest import RunningServer
from tests.factories import TenantFactory

from clinicsync.app import create_app
from clinicsync.config import Settings
from clinicsync.integrations.outbound import AddressRefused, OutboundPolicy
from clinicsync.serving import serving

SECRET = "pk_live_only_for_the_real_pms"


def pms() -> tuple[FastAPI, list[dict[str, Any]]]:
    """A PMS (or an attacker's server) that records every request it receives."""
    app = FastAPI()
    seen: list[dict[str, Any]] = []

    @app.get("/ping")
    async def ping(request: Request) -> JSONResponse:
        seen.append(dict(request.headers))
        return JSONResponse({"ok": True})

    return app, seen


async def _integration(client: httpx.AsyncClient, headers: dict[str, str], base_url: str) -> tuple[str, str]:
    created = await client.post(
        "/api/admin/integrations",
        headers=headers,
        json={
            "provider_key": "smallpms",
            "display_name": "Small PMS",
            "base_url": base_url,
            "auth": {"type": "api_key", "in": "header", "name": "X-Key", "key_field": "key"},
            "test_function": None,
        },
    )
    assert created.status_code == 201, created.text
    integration_id = created.json()["id"]
    ping = await client.post(
        f"/api/admin/integrations/{integration_id}/endpoints",
        headers=headers,
        json={"function_name": "ping", "path": "/ping", "response": {"single": True}},
    )
    assert ping.status_code == 201, ping.text
    patched = await client.patch(
        f"/api/admin/integrations/{integration_id}", headers=headers, json={"test_function": "ping"}
    )
    assert patched.status_code == 200, patched.text
    credential = await client.post(
        "/api/admin/api-credentials",
        headers=headers,
        json={"provider_key": "smallpms", "integration_id": integration_id, "secrets": {"key": SECRET}},
    )
    assert credential.status_code == 201, credential.text
    return integration_id, credential.json()["id"]


async def test_pointing_an_integration_elsewhere_never_sends_the_stored_secret_there(
    client: httpx.AsyncClient, tenant_factory: TenantFactory
) -> None:
    admin = (await tenant_factory()).headers
    real_app, real_seen = pms()
    other_app, other_seen = pms()
    async with serve(real_app) as real, serve(other_app) as other:
        integration_id, credential_id = await _integration(client, admin, real)
        tested = await client.post(f"/api/admin/api-credentials/{credential_id}/test", headers=admin)
        assert tested.status_code == 200 and tested.json()["success"], tested.text
        assert real_seen[-1]["x-key"] == SECRET

        moved = await client.patch(
            f"/api/admin/integrations/{integration_id}", headers=admin, json={"base_url": other}
        )
        assert moved.status_code == 200
        refused = await client.post(f"/api/admin/api-credentials/{credential_id}/test", headers=admin)
        called = await client.post("/api/integrations/smallpms", headers=admin, json={"function": "ping"})
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "credential_host_mismatch"
        assert called.status_code == 409
        assert other_seen == []

        # Typing the secret in again is what binds it to the new host.
        again = await client.patch(
            f"/api/admin/api-credentials/{credential_id}", headers=admin, json={"secrets": {"key": "new-key"}}
        )
        assert again.status_code == 200
        retested = await client.post(f"/api/admin/api-credentials/{credential_id}/test", headers=admin)
        assert retested.status_code == 200 and retested.json()["success"], retested.text
        assert [headers["x-key"] for headers in other_seen] == ["new-key"]


@pytest.fixture
async def strict_client(
    database_url: str, sessionmaker: Any, tmp_path: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A server with no outbound allow-list, as in production by default."""
    settings = Settings(
        database_url=database_url,
        migrate_on_start=False,
        environment="test",
        var_dir=tmp_path / "var",
        secret_key="test-secret-key-for-encryption-only",
        outbound_allowlist=[],
    )
    async with serving(create_app(settings)) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        yield http


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:9/v1",
        "http://localhost:9",
        "http://169.254.169.254/latest",
        "http://10.1.2.3",
        "http://[::1]:9",
    ],
)
async def test_a_loopback_link_local_or_private_base_url_is_refused_outside_the_allow_list(
    strict_client: httpx.AsyncClient, tenant_factory: TenantFactory, base_url: str
) -> None:
    admin = (await tenant_factory()).headers
    created = await strict_client.post(
        "/api/admin/integrations",
        headers=admin,
        json={"provider_key": "smallpms", "display_name": "Small PMS", "base_url": base_url},
    )
    assert created.status_code == 422
    assert created.json()["error"]["code"] == "address_refused"
    assert created.json()["error"]["message"].startswith("base_url:")


async def test_a_name_that_resolves_to_loopback_is_refused_when_called() -> None:
    with pytest.raises(AddressRefused):
        await OutboundPolicy().check_request(httpx.Request("GET", "http://localhost:9/ping"))
    allowed = OutboundPolicy.from_entries(["127.0.0.0/8", "::1/128"])
    await allowed.check_request(httpx.Request("GET", "http://localhost:9/ping"))


def test_the_test_servers_run_with_loopback_allowed(server: RunningServer) -> None:
    assert "127.0.0.0/8" in server.settings.outbound_allowlist


# ---- the address checked is the address connected to -------------------------------------------

REBIND_NAME = "pms.rebind.test"


@asynccontextmanager
async def _serve_at(app: Any, host: str, port: int = 0) -> AsyncIterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        await task


def _resolver(monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> list[str]:
    """A DNS under an attacker's control: REBIND_NAME answers each address of ``answers`` in turn
    (the last one from then on); every other name resolves as usual. Returns the answers given."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    given: list[str] = []

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name != REBIND_NAME:
            return await real(host, port, *args, **kwargs)
        address = answers[min(len(given), len(answers) - 1)]
        given.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 0)))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return given


def _strict_settings(database_url: str, tmp_path: Any, allowlist: list[str]) -> Settings:
    return Settings(
        database_url=database_url,
        migrate_on_start=False,
        environment="test",
        var_dir=tmp_path / "var",
        secret_key="test-secret-key-for-encryption-only",
        outbound_allowlist=allowlist,
    )


async def test_a_name_resolving_to_loopback_is_refused_when_called_and_nothing_reaches_it(
    database_url: str,
    sessionmaker: Any,
    tenant_factory: TenantFactory,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, seen = pms()
    async with (
        _serve_at(app, "127.0.0.1") as port,
        serving(create_app(_strict_settings(database_url, tmp_path, []))) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=60) as client,
    ):
        _resolver(monkeypatch, ["127.0.0.1"])
        admin = (await tenant_factory()).headers
        # A name passes when saved (what it resolves to can change); it is checked when called.
        _, credential_id = await _integration(client, admin, f"http://{REBIND_NAME}:{port}")
        tested = await client.post(f"/api/admin/api-credentials/{credential_id}/test", headers=admin)
        called = await client.post("/api/integrations/smallpms", headers=admin, json={"function": "ping"})
    assert not (tested.status_code == 200 and tested.json()["success"]), tested.text
    assert "127.0.0.1" in tested.text and "refused" in tested.text
    assert called.status_code == 422, called.text
    assert called.json()["error"]["code"] == "address_refused"
    assert seen == []


async def test_a_name_that_rebinds_to_loopback_after_the_check_still_reaches_only_the_checked_address(
    database_url: str,
    sessionmaker: Any,
    tenant_factory: TenantFactory,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The PMS is allowed at 127.0.0.2; 127.0.0.1 stands for an internal service. The name first
    # answers the PMS's address, then the internal one: a check that resolved apart from the
    # connection would pass and then connect inside.
    pms_app, pms_seen = pms()
    internal_app, internal_seen = pms()
    strict = create_app(_strict_settings(database_url, tmp_path, ["127.0.0.2/32"]))
    async with (
        _serve_at(pms_app, "127.0.0.2") as port,
        _serve_at(internal_app, "127.0.0.1", port),
        serving(strict) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=60) as client,
    ):
        admin = (await tenant_factory()).headers
        _, credential_id = await _integration(client, admin, f"http://{REBIND_NAME}:{port}")
        answers = _resolver(monkeypatch, ["127.0.0.2", "127.0.0.1"])
        tested = await client.post(f"/api/admin/api-credentials/{credential_id}/test", headers=admin)
    assert tested.status_code == 200 and tested.json()["success"], tested.text
    assert answers == ["127.0.0.2"]  # one lookup per connection: the one that was checked
    assert [headers["x-key"] for headers in pms_seen] == [SECRET]
    assert pms_seen[0]["host"] == f"{REBIND_NAME}:{port}"  # the Host header keeps the name
    assert internal_seen == []

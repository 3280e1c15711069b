"""Login, roles and tokens."""

from __future__ import annotations

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.tenancy.models import ApiToken, Role
from tests.factories import TenantFactory


async def test_password_login_returns_a_token_that_works_and_is_stored_hashed(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    owner = await tenant_factory()
    created = await client.post(
        "/api/v1/users",
        json={"email": "Desk@Example.com", "role": "staff", "password": "correct horse battery"},
        headers=owner.headers,
    )
    assert created.status_code == 201
    bad = await client.post(
        "/api/v1/auth/login", json={"email": "desk@example.com", "password": "wrong password"}
    )
    assert bad.status_code == 401
    login = await client.post(
        "/api/v1/auth/login", json={"email": "desk@example.com", "password": "correct horse battery"}
    )
    assert login.status_code == 200
    token = login.json()["token"]
    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["role"] == "staff"
    async with sessionmaker() as session:
        stored = list(await session.scalars(select(ApiToken.token_hash)))
    assert token not in stored
    assert all(len(value) == 64 for value in stored)


async def test_staff_cannot_manage_practitioners_or_users(
    client: httpx.AsyncClient, tenant_factory: TenantFactory
) -> None:
    owner = await tenant_factory()
    staff = await tenant_factory(role=Role.STAFF, organization_id=owner.organization_id)
    refused = await client.post("/api/v1/practitioners", json={"name": "Dr. X"}, headers=staff.headers)
    assert refused.status_code == 403
    assert (await client.get("/api/v1/users", headers=staff.headers)).status_code == 403
    assert (await client.get("/api/v1/practitioners", headers=staff.headers)).status_code == 200


async def test_a_revoked_token_stops_working(
    client: httpx.AsyncClient, tenant_factory: TenantFactory
) -> None:
    owner = await tenant_factory()
    issued = (await client.post("/api/v1/tokens", json={"name": "voice agent"}, headers=owner.headers)).json()
    headers = {"Authorization": f"Bearer {issued['token']}"}
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    assert (await client.delete(f"/api/v1/tokens/{issued['id']}", headers=owner.headers)).status_code == 204
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 401

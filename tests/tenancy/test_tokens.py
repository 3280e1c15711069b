"""Tokens: every one expires, only owners and admins issue them for others, never above their role."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.db.engine import session_scope
from clinicsync.tenancy.models import ApiToken, Role
from tests.factories import TenantFactory


def _lifetime(issued: dict[str, str]) -> timedelta:
    return datetime.fromisoformat(issued["expires_at"]) - datetime.now(UTC)


async def test_every_token_expires_by_default_and_within_its_kinds_limit(
    client: httpx.AsyncClient, tenant_factory: TenantFactory
) -> None:
    owner = await tenant_factory()
    service = await tenant_factory(role=Role.SERVICE, organization_id=owner.organization_id)
    await client.post(
        "/api/v1/users",
        json={"email": "desk@example.com", "role": "staff", "password": "correct horse battery"},
        headers=owner.headers,
    )

    login = await client.post(
        "/api/v1/auth/login", json={"email": "desk@example.com", "password": "correct horse battery"}
    )
    assert timedelta(hours=11) < _lifetime(login.json()) <= timedelta(hours=12)
    personal = await client.post("/api/v1/tokens", json={"name": "laptop"}, headers=owner.headers)
    assert timedelta(days=29) < _lifetime(personal.json()) <= timedelta(days=30)
    too_long = await client.post("/api/v1/tokens", json={"expires_in_days": 365}, headers=owner.headers)
    assert too_long.status_code == 422
    assert too_long.json()["error"]["details"][0]["field"] == "expires_in_days"
    agent = await client.post(
        "/api/v1/tokens", json={"name": "voice", "user_id": str(service.user_id)}, headers=owner.headers
    )
    assert agent.status_code == 201
    assert timedelta(days=364) < _lifetime(agent.json()) <= timedelta(days=365)
    longer = await client.post(
        "/api/v1/tokens",
        json={"user_id": str(service.user_id), "expires_in_days": 700},
        headers=owner.headers,
    )
    assert longer.status_code == 201


async def test_a_service_account_cannot_mint_tokens_and_nobody_mints_for_others_but_owners_and_admins(
    client: httpx.AsyncClient, tenant_factory: TenantFactory
) -> None:
    owner = await tenant_factory()
    service = await tenant_factory(role=Role.SERVICE, organization_id=owner.organization_id)
    staff = await tenant_factory(role=Role.STAFF, organization_id=owner.organization_id)

    minted = await client.post("/api/v1/tokens", json={}, headers=service.headers)
    assert minted.status_code == 403
    for_agent = await client.post(
        "/api/v1/tokens", json={"user_id": str(service.user_id)}, headers=staff.headers
    )
    assert for_agent.status_code == 403
    own = await client.post("/api/v1/tokens", json={"name": "desk pc"}, headers=staff.headers)
    assert own.status_code == 201


async def test_an_admin_never_acts_above_their_role(
    client: httpx.AsyncClient, tenant_factory: TenantFactory
) -> None:
    owner = await tenant_factory()
    admin = await tenant_factory(role=Role.ADMIN, organization_id=owner.organization_id)

    for_owner = await client.post(
        "/api/v1/tokens", json={"user_id": str(owner.user_id)}, headers=admin.headers
    )
    assert for_owner.status_code == 403
    new_owner = await client.post(
        "/api/v1/users", json={"email": "boss@example.com", "role": "owner"}, headers=admin.headers
    )
    assert new_owner.status_code == 403
    removed = await client.delete(f"/api/v1/users/{owner.user_id}", headers=admin.headers)
    assert removed.status_code == 403
    assert (await client.get("/api/v1/me", headers=owner.headers)).status_code == 200

    new_admin = await client.post(
        "/api/v1/users", json={"email": "second@example.com", "role": "admin"}, headers=admin.headers
    )
    assert new_admin.status_code == 201
    by_owner = await client.post(
        "/api/v1/users", json={"email": "partner@example.com", "role": "owner"}, headers=owner.headers
    )
    assert by_owner.status_code == 201
    self_removal = await client.delete(f"/api/v1/users/{owner.user_id}", headers=owner.headers)
    assert self_removal.status_code == 422


async def test_each_user_lists_and_revokes_their_own_tokens_and_admins_those_below_owner(
    client: httpx.AsyncClient, tenant_factory: TenantFactory
) -> None:
    owner = await tenant_factory()
    admin = await tenant_factory(role=Role.ADMIN, organization_id=owner.organization_id)
    staff = await tenant_factory(role=Role.STAFF, organization_id=owner.organization_id)

    staff_sees = await client.get("/api/v1/tokens", headers=staff.headers)
    assert {token["user_id"] for token in staff_sees.json()} == {str(staff.user_id)}
    admin_sees = {
        token["user_id"] for token in (await client.get("/api/v1/tokens", headers=admin.headers)).json()
    }
    assert admin_sees == {str(admin.user_id), str(staff.user_id)}
    owner_sees = {
        token["user_id"] for token in (await client.get("/api/v1/tokens", headers=owner.headers)).json()
    }
    assert owner_sees == {str(owner.user_id), str(admin.user_id), str(staff.user_id)}

    owner_token = next(t for t in (await client.get("/api/v1/tokens", headers=owner.headers)).json())
    assert (
        await client.delete(f"/api/v1/tokens/{owner_token['id']}", headers=admin.headers)
    ).status_code == 404
    assert (
        await client.delete(f"/api/v1/tokens/{owner_token['id']}", headers=staff.headers)
    ).status_code == 404
    staff_token = staff_sees.json()[0]
    assert (
        await client.delete(f"/api/v1/tokens/{staff_token['id']}", headers=admin.headers)
    ).status_code == 204
    assert (await client.get("/api/v1/me", headers=staff.headers)).status_code == 401
    assert (await client.get("/api/v1/me", headers=owner.headers)).status_code == 200


async def test_an_expired_token_is_refused(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    owner = await tenant_factory()
    async with session_scope(sessionmaker) as session:
        await session.execute(update(ApiToken).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    refused = await client.get("/api/v1/me", headers=owner.headers)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "token expired"

"""Login can't be hammered: failures per account and per address lead to 429 with Retry-After."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.app import create_app
from clinicsync.config import Settings
from clinicsync.db.engine import session_scope
from clinicsync.serving import serving
from clinicsync.tenancy.throttle import LoginFailure, LoginThrottle
from tests.factories import TenantFactory

PASSWORD = "correct horse battery"


async def _staff_login(client: httpx.AsyncClient, tenant_factory: TenantFactory) -> None:
    owner = await tenant_factory()
    created = await client.post(
        "/api/v1/users",
        json={"email": "desk@example.com", "role": "staff", "password": PASSWORD},
        headers=owner.headers,
    )
    assert created.status_code == 201


async def test_thirty_wrong_passwords_meet_429_with_retry_after_before_the_thirtieth(
    client: httpx.AsyncClient, tenant_factory: TenantFactory
) -> None:
    await _staff_login(client, tenant_factory)
    statuses = []
    throttled: httpx.Response | None = None
    for attempt in range(30):
        response = await client.post(
            "/api/v1/auth/login", json={"email": "desk@example.com", "password": f"guess number {attempt}"}
        )
        statuses.append(response.status_code)
        if response.status_code == 429 and throttled is None:
            throttled = response
    assert statuses[:10] == [401] * 10
    assert 429 in statuses[:29]
    assert throttled is not None
    assert 0 < int(throttled.headers["Retry-After"]) <= 900
    assert throttled.json()["error"]["code"] == "too_many_requests"
    # While throttled, even the right password is not checked.
    right = await client.post("/api/v1/auth/login", json={"email": "desk@example.com", "password": PASSWORD})
    assert right.status_code == 429


async def test_a_successful_login_clears_the_accounts_failures(
    client: httpx.AsyncClient, tenant_factory: TenantFactory
) -> None:
    await _staff_login(client, tenant_factory)
    for _ in range(2):
        for attempt in range(9):
            wrong = await client.post(
                "/api/v1/auth/login", json={"email": "desk@example.com", "password": f"nope {attempt}"}
            )
            assert wrong.status_code == 401
        right = await client.post(
            "/api/v1/auth/login", json={"email": "desk@example.com", "password": PASSWORD}
        )
        assert right.status_code == 200


@pytest.mark.slow
async def test_sixteen_concurrent_logins_all_answer_and_health_answers_meanwhile(
    client: httpx.AsyncClient, tenant_factory: TenantFactory
) -> None:
    # The timing (health p50 during the burst) is measured by bench/login_load.py; here the
    # burst must complete correctly while health checks run beside it.
    await _staff_login(client, tenant_factory)
    logins = [
        asyncio.create_task(
            client.post(
                "/api/v1/auth/login",
                json={"email": "desk@example.com", "password": PASSWORD},
                # They queue for the hasher: on a loaded machine the last one waits a while.
                timeout=300,
            )
        )
        for _ in range(16)
    ]
    health = [await client.get("/health") for _ in range(5)]
    answered = await asyncio.gather(*logins)
    assert [response.status_code for response in health] == [200] * 5
    assert [response.status_code for response in answered] == [200] * 16


async def test_one_address_trying_many_accounts_is_throttled_and_the_window_passes(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    now = [1000.0]
    throttle = LoginThrottle(account_limit=10, address_limit=5, window_seconds=60, clock=lambda: now[0])

    async def wait(account: str, address: str) -> int | None:
        async with session_scope(sessionmaker, write=False) as session:
            return await throttle.retry_after(session, account, address)

    for number in range(5):
        assert await wait(f"/user{number}@example.com", "203.0.113.9") is None
        await throttle.failed(sessionmaker, f"/user{number}@example.com", "203.0.113.9")
        now[0] += 1
    assert await wait("/someone.else@example.com", "203.0.113.9") == 55
    assert await wait("/someone.else@example.com", "198.51.100.7") is None
    now[0] += 55
    assert await wait("/someone.else@example.com", "203.0.113.9") is None


async def test_the_failure_table_holds_no_email_or_address(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await LoginThrottle().failed(sessionmaker, "/desk@example.com", "203.0.113.9")
    async with session_scope(sessionmaker) as session:
        keys = list((await session.execute(select(LoginFailure.key))).scalars())
    assert len(keys) == 2
    assert not any("example.com" in key or "203.0.113" in key for key in keys)


async def test_two_server_processes_over_one_database_share_the_count(
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_factory: TenantFactory,
    tmp_path: Path,
) -> None:
    # Two app instances, each with its own throttle object, as `serve --workers 2` runs them:
    # five failures on each reach the account's limit of ten between them.
    def settings(name: str) -> Settings:
        return Settings(
            database_url=database_url,
            migrate_on_start=False,
            environment="test",
            var_dir=tmp_path / name,
            secret_key="test-secret-key-for-encryption-only",
        )

    async with (
        serving(create_app(settings("one"))) as first,
        serving(create_app(settings("two"))) as second,
        httpx.AsyncClient(timeout=60) as http,
    ):
        async with httpx.AsyncClient(base_url=first, timeout=60) as owner_client:
            await _staff_login(owner_client, tenant_factory)
        statuses = []
        for attempt in range(10):
            base_url = first if attempt % 2 == 0 else second
            response = await http.post(
                f"{base_url}/api/v1/auth/login",
                json={"email": "desk@example.com", "password": f"guess number {attempt}"},
            )
            statuses.append(response.status_code)
        assert statuses == [401] * 10
        for base_url in (first, second):
            refused = await http.post(
                f"{base_url}/api/v1/auth/login", json={"email": "desk@example.com", "password": PASSWORD}
            )
            assert refused.status_code == 429, refused.text
            assert 0 < int(refused.headers["Retry-After"]) <= 900

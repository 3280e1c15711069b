"""Login can't be hammered: failures per account and per address lead to 429 with Retry-After."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from clinicsync.tenancy.throttle import LoginThrottle
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


def test_one_address_trying_many_accounts_is_throttled_and_the_window_passes() -> None:
    now = [1000.0]
    throttle = LoginThrottle(account_limit=10, address_limit=5, window_seconds=60, clock=lambda: now[0])
    for number in range(5):
        assert throttle.retry_after(f"/user{number}@example.com", "203.0.113.9") is None
        throttle.failed(f"/user{number}@example.com", "203.0.113.9")
        now[0] += 1
    assert throttle.retry_after("/someone.else@example.com", "203.0.113.9") == 55
    assert throttle.retry_after("/someone.else@example.com", "198.51.100.7") is None
    now[0] += 55
    assert throttle.retry_after("/someone.else@example.com", "203.0.113.9") is None

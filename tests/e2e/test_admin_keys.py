"""The API keys page: Test shows success and latency for a good credential, the error for a bad one.

The provider here is clinicsync's own API on loopback, defined through the admin API like any
other: its test function reads /me with the credential as a bearer token, so a real HTTP server
accepts the good token and refuses the bad one.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import SeededClinic, api

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_pressing_test_on_a_good_and_a_bad_credential(signed_in: Any, clinic_server: SeededClinic) -> None:
    with api(clinic_server) as http:
        integration = http.post(
            "/api/admin/integrations",
            json={
                "provider_key": "clinicapi",
                "display_name": "Our own API",
                "base_url": f"{clinic_server.base_url}/api/v1",
                "auth": {"type": "bearer", "token_field": "token"},
            },
        )
        assert integration.status_code == 201, integration.text
        integration_id = integration.json()["id"]
        ping = http.post(
            f"/api/admin/integrations/{integration_id}/endpoints",
            json={"function_name": "whoami", "path": "/me", "response": {"single": True}},
        )
        assert ping.status_code == 201, ping.text
        patched = http.patch(f"/api/admin/integrations/{integration_id}", json={"test_function": "whoami"})
        assert patched.status_code == 200, patched.text
        for label, token in (("good key", clinic_server.owner_token), ("bad key", "cs_not-a-real-token")):
            made = http.post(
                "/api/admin/api-credentials",
                json={
                    "provider_key": "clinicapi",
                    "integration_id": integration_id,
                    "label": label,
                    "secrets": {"token": token},
                },
            )
            assert made.status_code == 201, made.text

    page = signed_in(clinic_server.owner_email).new_page()
    page.goto("/admin/keys")
    page.get_by_role("button", name="Test good key").click()
    expect(page.locator("#test-result")).to_contain_text("Success in")
    expect(page.locator("#test-result")).to_contain_text(" ms")

    page.get_by_role("button", name="Test bad key").click()
    expect(page.locator("#test-result")).to_contain_text("Failed after")
    assert clinic_server.owner_token not in page.content()

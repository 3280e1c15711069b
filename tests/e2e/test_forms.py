"""Forms: errors next to their fields with what was typed kept; no CSRF token, no write."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import SeededClinic, free_day

pytestmark = [pytest.mark.browser]


def test_bad_input_shows_each_error_next_to_its_field_and_keeps_what_was_typed(
    signed_in: Any, clinic_server: SeededClinic
) -> None:
    page = signed_in(clinic_server.staff_email).new_page()
    page.goto(
        f"/book?practitioner_id={clinic_server.practitioner_id}&date={free_day(clinic_server).isoformat()}"
    )
    page.get_by_label("First name").fill("Ada")
    page.get_by_label("Phone").fill("not a number")
    page.get_by_role("button", name="Book").click()

    expect(page.locator("#last_name-error")).to_have_text("this field is required")
    expect(page.locator("#phone-error")).to_have_text("not a phone number")
    expect(page.locator("#start-error")).to_have_text("choose one of the free times")
    expect(page.get_by_label("First name")).to_have_value("Ada")
    expect(page.get_by_label("Phone")).to_have_value("not a number")
    expect(page.get_by_label("Phone")).to_have_attribute("aria-invalid", "true")


def test_weekly_hours_with_the_end_before_the_start_are_refused_beside_that_day(
    signed_in: Any, clinic_server: SeededClinic
) -> None:
    page = signed_in(clinic_server.practitioner_email).new_page()
    page.goto("/portal")
    page.get_by_label("Tuesday from").fill("15:00")
    page.get_by_label("Tuesday to").fill("09:00")
    page.get_by_role("button", name="Save weekly hours").click()
    expect(page.locator("#end_1-error")).to_have_text("must be after start_time")
    expect(page.get_by_label("Tuesday from")).to_have_value("15:00")


def test_a_session_without_its_csrf_token_is_refused(signed_in: Any, clinic_server: SeededClinic) -> None:
    context = signed_in(clinic_server.owner_email)
    response = context.request.post(
        "/admin/practitioners", form={"name": "Dr. Forged"}, headers={"Accept": "text/html"}
    )
    assert response.status == 403
    assert "security token" in response.text()
    page = context.new_page()
    page.goto("/admin/practitioners")
    expect(page.get_by_text("Dr. Forged")).to_have_count(0)


def test_a_page_without_a_session_offers_the_sign_in_form(browser: Any, clinic_server: SeededClinic) -> None:
    context = browser.new_context(base_url=clinic_server.base_url)
    page = context.new_page()
    response = page.goto("/portal")
    assert response is not None and response.status == 401
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    context.close()

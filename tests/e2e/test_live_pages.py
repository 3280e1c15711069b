"""Pages update live: a booking reaches the practitioner's portal, an hours change the booking page."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import SeededClinic, free_day

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_booking_appears_on_the_practitioners_portal_within_two_seconds_without_reload(
    signed_in: Any, clinic_server: SeededClinic
) -> None:
    portal = signed_in(clinic_server.practitioner_email).new_page()
    portal.goto("/portal")
    expect(portal.locator("html")).to_have_attribute("data-live", "connected")
    portal.evaluate("window.loadedOnce = true")

    desk = signed_in(clinic_server.staff_email).new_page()
    day = free_day(clinic_server)
    desk.goto(f"/book?practitioner_id={clinic_server.practitioner_id}&date={day.isoformat()}")
    desk.locator("#slots label.slot").first.click()
    desk.get_by_label("First name").fill("Grace")
    desk.get_by_label("Last name").fill("Hopper")
    desk.get_by_role("button", name="Book").click()
    reference = desk.locator("#reference").inner_text()
    assert reference.startswith("CS-")

    expect(portal.locator("#appointments")).to_contain_text(reference, timeout=2000)
    expect(portal.locator("#appointments")).to_contain_text("Grace Hopper")
    assert portal.evaluate("window.loadedOnce") is True  # the same page, not a reload


def test_closing_a_day_empties_the_booking_pages_free_times_live(
    signed_in: Any, clinic_server: SeededClinic
) -> None:
    day = free_day(clinic_server, offset=4)
    desk = signed_in(clinic_server.staff_email).new_page()
    desk.goto(f"/book?practitioner_id={clinic_server.other_practitioner_id}&date={day.isoformat()}")
    expect(desk.locator("html")).to_have_attribute("data-live", "connected")
    expect(desk.locator("#slots label.slot").first).to_be_visible()
    desk.evaluate("window.loadedOnce = true")

    admin = signed_in(clinic_server.owner_email).new_page()
    admin.goto(f"/portal?practitioner_id={clinic_server.other_practitioner_id}")
    admin.get_by_label("Date", exact=True).fill(day.isoformat())
    admin.get_by_label("Change").select_option("closed")
    admin.get_by_label("Reason (optional)").fill("Conference")
    admin.get_by_role("button", name="Add date change").click()
    expect(admin.get_by_role("status")).to_have_text("Date change added.")

    expect(desk.locator("#slots")).to_contain_text("No free times on this day.", timeout=5000)
    assert desk.evaluate("window.loadedOnce") is True


def test_a_slot_taken_meanwhile_answers_with_a_clear_message_and_the_nearest_free_times(
    signed_in: Any, clinic_server: SeededClinic
) -> None:
    day = free_day(clinic_server, offset=5)
    first, second = (
        signed_in(clinic_server.staff_email).new_page(),
        signed_in(clinic_server.owner_email).new_page(),
    )
    for page in (first, second):
        page.goto(f"/book?practitioner_id={clinic_server.practitioner_id}&date={day.isoformat()}")
        # Without live updates, as if the page had been open from before the other booking.
        page.evaluate("document.querySelector('#slots').removeAttribute('data-live-url')")
        page.locator("#slots label.slot").nth(2).click()
        page.get_by_label("First name").fill("Alan")
        page.get_by_label("Last name").fill("Turing")
    first.get_by_role("button", name="Book").click()
    expect(first.locator("#reference")).to_be_visible()
    second.get_by_role("button", name="Book").click()
    expect(second.locator("#taken")).to_contain_text("That time has just been taken")
    expect(second.locator("#taken li")).to_have_count(3)
    expect(second.get_by_label("First name")).to_have_value("Alan")

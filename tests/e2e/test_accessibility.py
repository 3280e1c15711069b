"""Every page passes an axe-core scan with no serious or critical violation, and is photographed
at desktop and phone width into docs/screenshots/ (linked from the README)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import SCREENSHOTS, SeededClinic, api, free_day, serious_violations

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDTHS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


def _pages(clinic: SeededClinic) -> list[tuple[str, str, str]]:
    """(name, who, path) for every page."""
    day = free_day(clinic).isoformat()
    return [
        ("login", "", "/login"),
        ("book", "staff", f"/book?practitioner_id={clinic.practitioner_id}&date={day}"),
        ("portal", "practitioner", "/portal"),
        ("week", "practitioner", f"/diary?week={day}"),
        ("admin-practitioners", "owner", "/admin/practitioners"),
        ("admin-practitioner", "owner", f"/admin/practitioners/{clinic.other_practitioner_id}"),
        ("admin-users", "owner", "/admin/users"),
        ("admin-keys", "owner", "/admin/keys"),
    ]


def test_every_page_has_no_serious_accessibility_violation_at_desktop_and_phone_width(
    signed_in: Any, browser: Any, clinic_server: SeededClinic, axe_script: str, backend: str
) -> None:
    with api(clinic_server) as http:
        # Something in the diary, so the pictures show appointments.
        slots = http.get(
            "/api/v1/slots",
            params={
                "from": free_day(clinic_server).isoformat(),
                "to": free_day(clinic_server).isoformat(),
                "practitioner_id": str(clinic_server.practitioner_id),
            },
        ).json()["slots"]
        patient = http.post("/api/v1/patients", json={"first_name": "Mary", "last_name": "Shelley"}).json()
        for slot in slots[4:12:3]:
            booked = http.post(
                "/api/v1/appointments",
                json={
                    "patient_id": patient["id"],
                    "practitioner_id": str(clinic_server.practitioner_id),
                    "start": slot["start"],
                },
            )
            assert booked.status_code == 201, booked.text
    emails = {
        "staff": clinic_server.staff_email,
        "practitioner": clinic_server.practitioner_email,
        "owner": clinic_server.owner_email,
    }
    contexts: dict[tuple[str, str], Any] = {}
    problems: dict[str, list[str]] = {}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, who, path in _pages(clinic_server):
        for width, viewport in WIDTHS.items():
            key = (who, width)
            if key not in contexts:
                contexts[key] = (
                    signed_in(emails[who], viewport=viewport)
                    if who
                    else browser.new_context(base_url=clinic_server.base_url, viewport=viewport)
                )
            page = contexts[key].new_page()
            page.goto(path)
            found = serious_violations(page, axe_script)
            if found:
                problems[f"{name} at {width} width"] = found
            if backend == "sqlite":  # one set of pictures is enough
                page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
            page.close()
    if ("", "desktop") in contexts:
        contexts[("", "desktop")].close()
        contexts[("", "phone")].close()
    assert problems == {}

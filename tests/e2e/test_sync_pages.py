"""The admin sync pages against a clinic connected to an OpenDental sandbox: change the settings
(a contradiction is refused beside its field), retry a refused push, resolve a conflict from its
side-by-side diff; the practitioner's portal shows each appointment's PMS state."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import run_async
from tests.e2e.conftest import (
    SCREENSHOTS,
    ZONE,
    SeededClinic,
    _seed,
    api,
    serious_violations,
    server_process,
)
from tests.e2e.sync_support import (
    SYNC_ENVIRONMENT,
    ConnectedClinic,
    book,
    connect_opendental,
    eventually,
    link,
    sandbox_in_thread,
    sync_state,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Bidirectional with a person deciding conflicts; local edits stay local until one is decided,
# so a record can change on both sides.
SETTINGS = {
    "sync_enabled": True,
    "sync_direction": "bidirectional",
    "sync_on_update": False,
    "conflict_resolution": "manual",
}


@pytest.fixture(scope="module")
def clinic_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededClinic]:
    seeded = run_async(_seed(database_url))
    with server_process(database_url, tmp_path_factory.mktemp("e2e-sync"), **SYNC_ENVIRONMENT) as base_url:
        yield SeededClinic(base_url=base_url, **seeded)


@pytest.fixture(scope="module")
def connected(clinic_server: SeededClinic) -> Iterator[ConnectedClinic]:
    """The clinic's OpenDental: Dr. Ada Byron is linked to its first provider; Dr. Lin Chen is not."""
    spec = {"patients": 3, "appointments": 0}
    with sandbox_in_thread("opendental", spec=spec, timezone=ZONE) as sandbox, api(clinic_server) as http:
        clinic = connect_opendental(http, sandbox, ZONE)
        link(http, clinic, "practitioner", clinic_server.practitioner_id, clinic.providers[0]["ProvNum"])
        made = http.post(
            "/api/admin/integration-settings", json={"integration_id": clinic.integration_id, **SETTINGS}
        )
        assert made.status_code == 201, made.text
        try:
            yield clinic
        finally:
            clinic.pms.close()


def _at(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=ZoneInfo(ZONE))


def test_settings_are_saved_and_a_contradiction_is_refused_beside_its_field(
    signed_in: Any, clinic_server: SeededClinic, connected: ConnectedClinic
) -> None:
    page = signed_in(clinic_server.owner_email).new_page()
    page.goto("/admin/sync")
    expect(page.get_by_label("Direction")).to_have_value("bidirectional")

    page.get_by_label("Send cancellations").check()
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status").filter(has_text="Settings saved")).to_be_visible()
    expect(page.get_by_label("Send cancellations")).to_be_checked()
    with api(clinic_server) as http:
        [config] = http.get("/api/admin/integration-settings").json()
    assert config["sync_on_delete"] is True and config["conflict_resolution"] == "manual"

    # No local copy is only possible when the PMS receives every write: refused, and said where.
    page.get_by_label("Keep a local copy of every booking").uncheck()
    page.get_by_role("button", name="Save settings").click()
    error = page.locator(f"#always_keep_local_copy-{connected.integration_id}-error")
    expect(error).to_contain_text("sync_direction to_external")
    expect(page.get_by_label("Keep a local copy of every booking")).not_to_be_checked()
    expect(page.get_by_label("Send cancellations")).to_be_checked()
    with api(clinic_server) as http:
        [config] = http.get("/api/admin/integration-settings").json()
    assert config["always_keep_local_copy"] is True


def test_a_refused_push_is_retried_from_the_outbox_page(
    signed_in: Any, clinic_server: SeededClinic, connected: ConnectedClinic
) -> None:
    with api(clinic_server) as http:
        # Dr. Lin Chen has no counterpart in OpenDental yet: the PMS cannot take the booking.
        appointment = book(
            http, clinic_server.other_practitioner_id, _at(date.today() + timedelta(days=4), 9), "Hopper"
        )
        failed = eventually(lambda: (sync_state(http, appointment["id"]) or {}).get("sync_state") == "failed")
        assert failed

    page = signed_in(clinic_server.owner_email).new_page()
    page.goto("/admin/sync/outbox")
    row = page.locator("tr[data-status=failed]").filter(has_text=appointment["id"])
    expect(row).to_contain_text("counterpart")

    # A discard needs its reason: refused next to the field.
    row.get_by_role("button", name="Discard").click()
    expect(page.locator("p.error").filter(has_text="say why")).to_be_visible()

    with api(clinic_server) as http:
        link(
            http,
            connected,
            "practitioner",
            clinic_server.other_practitioner_id,
            connected.providers[1]["ProvNum"],
        )
    page.locator("tr[data-status=failed]").filter(has_text=appointment["id"]).get_by_role(
        "button", name="Retry"
    ).click()
    expect(page.get_by_role("status").filter(has_text="Push queued again")).to_be_visible()
    with api(clinic_server) as http:
        state = eventually(
            lambda: (sync_state(http, appointment["id"]) or {}).get("sync_state") in ("accepted", "confirmed")
        )
        assert state
    # The page follows the delivery live: the failed row is gone without a reload.
    expect(page.locator("tr[data-status=failed]").filter(has_text=appointment["id"])).to_have_count(0)


def _conflict(
    clinic: SeededClinic, connected: ConnectedClinic, day: date, last_name: str
) -> tuple[dict[str, Any], dict[str, Any], datetime, datetime]:
    """An appointment moved here and, a few seconds later, at the PMS's front desk: a conflict
    waits for a person. Returns the appointment, the conflict, our start and the PMS's start."""
    with api(clinic) as http:
        appointment = book(http, clinic.practitioner_id, _at(day, 10), last_name)
        confirmed = eventually(
            lambda: (
                (sync_state(http, appointment["id"]) or {}).get("sync_state") == "confirmed"
                and sync_state(http, appointment["id"])
            )
        )
        apt_num = int(confirmed["external_id"])
        webhook = f"{clinic.base_url}/api/webhooks/opendental/{connected.integration_id}"
        subscribed = connected.pms.post(
            "/subscriptions",
            json={"EndPointUrl": webhook, "WatchTable": "Appointment", "PollingSeconds": 3600},
        )
        assert subscribed.status_code == 201, subscribed.text
        connected.front_desk("deliver_events")
        ours, theirs = _at(day, 11), _at(day, 14)
        moved = http.patch(
            f"/api/v1/appointments/{appointment['id']}",
            json={"start": ours.isoformat(), "end": (ours + timedelta(minutes=30)).isoformat()},
        )
        assert moved.status_code == 200, moved.text
        connected.advance_clock(5)  # the front desk moves it a few seconds after us
        connected.front_desk("reschedule", AptNum=apt_num, AptDateTime=theirs.strftime("%Y-%m-%d %H:%M:%S"))
        connected.front_desk("deliver_events")

        def open_conflict() -> list[dict[str, Any]]:
            items = http.get("/api/admin/sync/conflicts").json()["items"]
            return [c for c in items if c["record_id"] == appointment["id"]]

        [conflict] = eventually(open_conflict)
    return appointment, conflict, ours, theirs


def test_a_conflict_is_resolved_from_its_side_by_side_diff(
    signed_in: Any, clinic_server: SeededClinic, connected: ConnectedClinic
) -> None:
    appointment, conflict, ours, theirs = _conflict(
        clinic_server, connected, date.today() + timedelta(days=5), "Lovelace"
    )

    page = signed_in(clinic_server.owner_email).new_page()
    page.goto("/admin/sync/conflicts")
    card = page.locator(f"#conflict-{conflict['id']}")
    starts = card.locator("tr").filter(has_text="starts at")
    expect(starts.locator("td.ours")).to_have_text(ours.strftime("%a %d %b %Y %H:%M"))
    expect(starts.locator("td.theirs")).to_have_text(theirs.strftime("%a %d %b %Y %H:%M"))

    card.get_by_role("button", name="Keep the PMS's").click()
    expect(page.get_by_role("status").filter(has_text="Conflict resolved")).to_be_visible()
    expect(page.locator(f"#conflict-{conflict['id']}")).to_have_count(0)
    with api(clinic_server) as http:
        resolved = http.get(f"/api/admin/sync/conflicts/{conflict['id']}").json()
        assert resolved["status"] == "resolved" and resolved["resolution"] == "keep_external"
        start = datetime.fromisoformat(http.get(f"/api/v1/appointments/{appointment['id']}").json()["start"])
        assert start == theirs

    # The practitioner sees where each of their appointments stands in the PMS.
    portal = signed_in(clinic_server.practitioner_email).new_page()
    portal.goto("/portal")
    entry = portal.locator(f"li[data-reference='{appointment['booking_reference']}']")
    expect(entry.locator(".sync-state")).to_contain_text("opendental:")


def test_sync_pages_need_an_admin(signed_in: Any, clinic_server: SeededClinic) -> None:
    page = signed_in(clinic_server.staff_email).new_page()
    response = page.goto("/admin/sync/conflicts")
    assert response is not None and response.status == 403
    with httpx.Client(base_url=clinic_server.base_url) as anonymous:
        assert anonymous.get("/admin/sync", headers={"Accept": "text/html"}).status_code == 401


def test_a_full_sync_started_from_the_dashboard_is_watched_to_100_percent(
    signed_in: Any, clinic_server: SeededClinic, connected: ConnectedClinic
) -> None:
    page = signed_in(clinic_server.owner_email).new_page()
    page.goto("/admin/sync/runs")
    page.get_by_role("button", name="Full Sync (past 14 days + next 14 days)").click()
    expect(page.get_by_role("status").filter(has_text="Sync started")).to_be_visible()
    run_id = page.url.split("started=")[1]
    # No reload from here on: the active card and the history follow the run's change events.
    row = page.locator(f"tr[data-run='{run_id}']")
    expect(row.locator(".badge.run-completed")).to_be_visible(timeout=60_000)
    with api(clinic_server) as http:
        progress = http.get(f"/api/v1/sync/progress/{run_id}").json()
    assert progress["status"] == "completed" and progress["progress_percentage"] == 100.0

    detail = signed_in(clinic_server.owner_email).new_page()
    detail.goto(f"/admin/sync/runs/{run_id}")
    expect(detail.locator("#run-status")).to_have_text("completed")
    expect(detail.locator("progress")).to_have_attribute("value", "100.0")


def test_a_preview_from_the_advanced_section_reports_without_writing(
    signed_in: Any, clinic_server: SeededClinic, connected: ConnectedClinic
) -> None:
    page = signed_in(clinic_server.owner_email).new_page()
    page.goto("/admin/sync/runs")
    page.get_by_text("Advanced: one operation, or a preview").click()
    page.get_by_label("Days back").fill("400")
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#backward_days-error")).to_contain_text("366")
    expect(page.get_by_label("Days back")).to_have_value("400")

    page.get_by_label("Days back").fill("3")
    page.get_by_label("Operation").select_option("inbound")
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#run-status")).to_have_text("completed", timeout=60_000)
    expect(page.get_by_role("heading", name="What the run would do")).to_be_visible()


WIDTHS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


def test_the_sync_pages_pass_axe_and_are_photographed(
    signed_in: Any,
    clinic_server: SeededClinic,
    connected: ConnectedClinic,
    axe_script: str,
    backend: str,
) -> None:
    # Something in every list: an open conflict and a push the PMS refused.
    _conflict(clinic_server, connected, date.today() + timedelta(days=6), "Franklin")
    with api(clinic_server) as http:
        stranger = http.post("/api/v1/practitioners", json={"name": "Dr. Nobody Known"}).json()["id"]
        week = [{"day_of_week": d, "start_time": "08:00", "end_time": "18:00"} for d in range(7)]
        http.put(f"/api/v1/practitioners/{stranger}/availability", json={"intervals": week})
        refused = book(http, stranger, _at(date.today() + timedelta(days=6), 9), "Curie")
        eventually(lambda: (sync_state(http, refused["id"]) or {}).get("sync_state") == "failed")
    pages = [
        ("admin-sync", clinic_server.owner_email, "/admin/sync"),
        ("admin-sync-conflicts", clinic_server.owner_email, "/admin/sync/conflicts"),
        ("admin-sync-outbox", clinic_server.owner_email, "/admin/sync/outbox"),
        ("admin-sync-dashboard", clinic_server.owner_email, "/admin/sync/runs"),
        ("portal-sync", clinic_server.practitioner_email, "/portal"),
    ]
    problems: dict[str, list[str]] = {}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width, viewport in WIDTHS.items():
        contexts: dict[str, Any] = {}
        for name, email, path in pages:
            if email not in contexts:
                contexts[email] = signed_in(email, viewport=viewport)
            page = contexts[email].new_page()
            page.goto(path)
            found = serious_violations(page, axe_script)
            if found:
                problems[f"{name} at {width} width"] = found
            if backend == "sqlite":  # one set of pictures is enough
                page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
            page.close()
    assert problems == {}

"""The sync dashboard's organization selector, for a person whose email has accounts in several
clinics: it lists exactly the organizations where that email has an account that may see the
dashboard, and switching signs into the chosen one's account with that account's own password."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect
from sqlalchemy import select

from clinicsync.db.base import utcnow
from clinicsync.db.engine import create_engine, create_sessionmaker, session_scope
from clinicsync.deps import SESSION_COOKIE
from clinicsync.integrations.models import ExternalIntegration
from clinicsync.sync.runs.models import RunStatus, RunType, SyncRun
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Organization, Role
from clinicsync.tenancy.schemas import OrganizationCreate, UserCreate
from tests.conftest import run_async
from tests.e2e.conftest import PASSWORD, ZONE, SeededClinic, serious_violations

pytestmark = [pytest.mark.browser, pytest.mark.slow]

OTHER_PASSWORD = "the-other-clinics-password"
DASHBOARD = "/admin/sync/runs"


@dataclass
class Clinics:
    """The seeded clinic ("home") and the same owner's email elsewhere."""

    home_name: str
    other_name: str  # an admin account with its own password, and a finished run
    other_slug: str
    other_run_id: uuid.UUID
    other_run_records: int
    staff_only_id: uuid.UUID  # the email is staff there: the dashboard is not theirs to see
    solo_email: str  # an admin of the home clinic alone (staff elsewhere)


async def _seed_elsewhere(database_url: str, clinic: SeededClinic) -> Clinics:
    engine = create_engine(database_url)
    suffix = uuid.uuid4().hex[:6]
    solo_email = f"solo-{suffix}@example.com"
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            home = await session.scalar(select(Organization).where(Organization.slug == clinic.slug))
            assert home is not None
            await tenancy_service.create_user(
                session, home.id, UserCreate(email=solo_email, role=Role.ADMIN, password=PASSWORD)
            )

            async def organization(name: str) -> Organization:
                return await tenancy_service.create_organization(
                    session, OrganizationCreate(name=f"{name} {suffix}", time_zone=ZONE)
                )

            other = await organization("Anchor Physio")
            await tenancy_service.create_user(
                session,
                other.id,
                UserCreate(email=clinic.owner_email, role=Role.ADMIN, password=OTHER_PASSWORD),
            )
            pms = ExternalIntegration(organization_id=other.id, provider_key="opendental", display_name="PMS")
            session.add(pms)
            await session.flush()
            finished = utcnow()
            run = SyncRun(
                organization_id=other.id,
                integration_id=pms.id,
                run_type=RunType.FULL,
                status=RunStatus.COMPLETED,
                records_processed=73,
                started_at=finished - timedelta(seconds=12),
                completed_at=finished,
            )
            session.add(run)

            staff_only = await organization("Cedar Dental")
            for email in (clinic.owner_email, solo_email):
                await tenancy_service.create_user(
                    session, staff_only.id, UserCreate(email=email, role=Role.STAFF, password=PASSWORD)
                )

            departed = await organization("Dune Clinic")
            gone = await tenancy_service.create_user(
                session, departed.id, UserCreate(email=clinic.owner_email, role=Role.ADMIN, password=PASSWORD)
            )
            await tenancy_service.deactivate_user(session, gone)

            stranger = await organization("Elm Clinic")
            await tenancy_service.create_user(
                session,
                stranger.id,
                UserCreate(email=f"someone-else-{suffix}@example.com", role=Role.OWNER, password=PASSWORD),
            )
            await session.flush()
            return Clinics(
                home_name=home.name,
                other_name=other.name,
                other_slug=other.slug,
                other_run_id=run.id,
                other_run_records=run.records_processed,
                staff_only_id=staff_only.id,
                solo_email=solo_email,
            )
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def clinics(clinic_server: SeededClinic, database_url: str) -> Clinics:
    return run_async(_seed_elsewhere(database_url, clinic_server))


@pytest.fixture
def sign_in_at(clinic_server: SeededClinic, browser: Any) -> Iterator[Any]:
    """Browser contexts signed in through the sign-in form, naming the clinic (the email may
    belong to several)."""
    contexts: list[BrowserContext] = []

    def make(email: str, **options: Any) -> BrowserContext:
        context = browser.new_context(base_url=clinic_server.base_url, **options)
        contexts.append(context)
        page = context.new_page()
        page.goto("/login")
        page.locator("#email").fill(email)
        page.locator("#password").fill(PASSWORD)
        page.locator("#organization").fill(clinic_server.slug)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/login" not in url)
        page.close()
        return context

    yield make
    for context in contexts:
        context.close()


def _session_cookie(context: BrowserContext) -> str:
    return next(cookie["value"] for cookie in context.cookies() if cookie["name"] == SESSION_COOKIE)


def _selector(page: Page) -> Locator:
    return page.get_by_role("combobox", name="Organization")


def _options(page: Page) -> list[str]:
    return [text.strip() for text in _selector(page).locator("option").all_inner_texts()]


def test_the_selector_lists_exactly_the_persons_organizations_that_may_see_the_dashboard(
    sign_in_at: Any, clinic_server: SeededClinic, clinics: Clinics, axe_script: str
) -> None:
    page = sign_in_at(clinic_server.owner_email).new_page()
    page.goto(DASHBOARD)
    # Not the clinic where the email is staff, nor the one whose account was deactivated, nor
    # one where only somebody else has an account.
    assert _options(page) == sorted([clinics.home_name, clinics.other_name])
    selected = _selector(page).locator("option:checked")
    expect(selected).to_have_text(clinics.home_name)
    expect(page.get_by_label("Password of your account there")).to_be_visible()
    assert serious_violations(page, axe_script) == []


def test_a_person_with_one_organization_that_may_see_the_dashboard_sees_no_selector(
    sign_in_at: Any, clinic_server: SeededClinic, clinics: Clinics
) -> None:
    page = sign_in_at(clinics.solo_email).new_page()
    page.goto(DASHBOARD)
    expect(page.get_by_role("heading", name="Sync dashboard")).to_be_visible()
    expect(page.get_by_role("heading", name="Full Sync")).to_be_visible()
    assert page.locator("#switch-organization").count() == 0
    assert page.get_by_label("Password of your account there").count() == 0


def test_a_wrong_password_keeps_the_session_and_says_why_beside_the_field(
    sign_in_at: Any, clinic_server: SeededClinic, clinics: Clinics, axe_script: str
) -> None:
    context = sign_in_at(clinic_server.owner_email)
    cookie = _session_cookie(context)
    page = context.new_page()
    page.goto(DASHBOARD)
    _selector(page).select_option(label=clinics.other_name)
    # The home clinic's password is not the other account's.
    page.get_by_label("Password of your account there").fill(PASSWORD)
    page.get_by_role("button", name="Switch organization").click()
    error = page.locator("#switch-password-error")
    expect(error).to_have_text(f"the password is wrong for your account at {clinics.other_name}")
    expect(page.get_by_label("Password of your account there")).to_have_attribute("aria-invalid", "true")
    assert serious_violations(page, axe_script) == []

    assert _session_cookie(context) == cookie
    page.goto(DASHBOARD)
    expect(_selector(page).locator("option:checked")).to_have_text(clinics.home_name)
    assert page.locator(f"tr[data-run='{clinics.other_run_id}']").count() == 0


def test_switching_with_the_right_password_shows_the_other_organizations_runs(
    sign_in_at: Any, clinic_server: SeededClinic, clinics: Clinics
) -> None:
    context = sign_in_at(clinic_server.owner_email)
    before = _session_cookie(context)
    page = context.new_page()
    page.goto(DASHBOARD)
    assert page.locator(f"tr[data-run='{clinics.other_run_id}']").count() == 0
    _selector(page).select_option(label=clinics.other_name)
    page.get_by_label("Password of your account there").fill(OTHER_PASSWORD)
    page.get_by_role("button", name="Switch organization").click()
    page.wait_for_url(f"**{DASHBOARD}")
    row = page.locator(f"tr[data-run='{clinics.other_run_id}']")
    expect(row).to_be_visible()
    expect(row).to_contain_text(str(clinics.other_run_records))
    expect(_selector(page).locator("option:checked")).to_have_text(clinics.other_name)

    # The new account's session replaced the old one, which no longer opens anything.
    after = _session_cookie(context)
    assert after != before
    with httpx.Client(
        base_url=clinic_server.base_url, headers={"Accept": "text/html"}, cookies={SESSION_COOKIE: before}
    ) as http:
        assert http.get(DASHBOARD).status_code == 401
        signed_in_as = {"Authorization": f"Bearer {after}"}
        me = http.get("/api/v1/me", headers=signed_in_as).json()
        organization = http.get("/api/v1/organization", headers=signed_in_as).json()
    assert (me["email"], me["role"]) == (clinic_server.owner_email, "admin")
    assert organization["name"] == clinics.other_name


def _csrf(http: httpx.Client) -> str:
    page = http.get(DASHBOARD)
    assert page.status_code == 200, page.text
    marker = '<meta name="csrf-token" content="'
    start = page.text.index(marker) + len(marker)
    return page.text[start : page.text.index('"', start)]


def _other_id(http: httpx.Client, name: str) -> str:
    text = http.get(DASHBOARD).text
    end = text.index(f">{name}</option>")
    start = text.rindex('value="', 0, end) + len('value="')
    return text[start : text.index('"', start)]


def test_a_switch_without_csrf_token_to_an_organization_not_offered_or_by_guessing_is_refused(
    sign_in_at: Any, clinic_server: SeededClinic, clinics: Clinics
) -> None:
    cookie = _session_cookie(sign_in_at(clinic_server.owner_email))
    with httpx.Client(
        base_url=clinic_server.base_url, cookies={SESSION_COOKIE: cookie}, headers={"Accept": "text/html"}
    ) as http:
        other_id = _other_id(http, clinics.other_name)
        forged = http.post(
            f"{DASHBOARD}/organization", data={"organization_id": other_id, "password": OTHER_PASSWORD}
        )
        assert forged.status_code == 403
        assert SESSION_COOKIE not in forged.headers.get("set-cookie", "")

        # The email is staff there: not offered, and no word about what is there.
        token = _csrf(http)
        refused = http.post(
            f"{DASHBOARD}/organization",
            data={"csrf_token": token, "organization_id": str(clinics.staff_only_id), "password": PASSWORD},
        )
        assert refused.status_code == 422
        assert "choose one of the organizations listed" in refused.text
        assert "Cedar Dental" not in refused.text
        assert SESSION_COOKIE not in refused.headers.get("set-cookie", "")

        # The session is untouched: still the home clinic's dashboard.
        still = http.get(DASHBOARD)
        assert still.status_code == 200 and str(clinics.other_run_id) not in still.text

        # Guessing is held back by the sign-in's own throttle, which counts this account's failures.
        statuses = []
        for attempt in range(12):
            guess = http.post(
                f"{DASHBOARD}/organization",
                data={"csrf_token": token, "organization_id": other_id, "password": f"guess-{attempt}"},
            )
            statuses.append(guess.status_code)
            if guess.status_code == 429:
                assert "too many failed logins" in guess.text
                break
        assert statuses[-1] == 429 and set(statuses[:-1]) == {401}
        assert http.get(DASHBOARD).status_code == 200

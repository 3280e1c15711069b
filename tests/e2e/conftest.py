"""Browser tests: Debian's Chromium driven by Playwright, against a real server process.

One browser for the whole session; one server process and one seeded clinic per module, on each
database backend. Without /usr/bin/chromium (or axe-core under tests/e2e/node_modules) these tests
skip locally and fail under CI=true; `make test` installs both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time as time_module
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, time, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from clinicsync.booking import service as booking_service
from clinicsync.booking.schemas import AvailabilityInterval, PractitionerCreate, WeeklyAvailability
from clinicsync.db.engine import create_engine, create_sessionmaker, session_scope
from clinicsync.serving import free_port
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.principal import Principal
from clinicsync.tenancy.schemas import OrganizationCreate, UserCreate
from tests.conftest import run_async

CHROMIUM = Path("/usr/bin/chromium")
E2E_DIR = Path(__file__).parent
AXE = E2E_DIR / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = E2E_DIR.parents[1] / "docs" / "screenshots"
PASSWORD = "browser-test-password"
ZONE = "America/New_York"


def _missing(what: str) -> None:
    message = f"{what} is missing; `make test` installs it"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        _missing(str(CHROMIUM))
    with sync_playwright() as handle:
        yield handle


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-background-networking"]
    )
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def axe_script() -> str:
    if not AXE.exists():
        _missing(str(AXE))
    return AXE.read_text()


@dataclass
class SeededClinic:
    base_url: str
    slug: str
    owner_email: str
    staff_email: str
    practitioner_email: str
    practitioner_id: uuid.UUID
    other_practitioner_id: uuid.UUID
    owner_token: str

    @property
    def owner_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.owner_token}"}


async def _seed(database_url: str) -> dict[str, Any]:
    engine = create_engine(database_url)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            organization = await tenancy_service.create_organization(
                session, OrganizationCreate(name=f"Browser Dental {uuid.uuid4().hex[:6]}", time_zone=ZONE)
            )
            suffix = uuid.uuid4().hex[:6]
            emails = {
                role: f"{role.value}-{suffix}@example.com"
                for role in (Role.OWNER, Role.STAFF, Role.PRACTITIONER)
            }
            owner = await tenancy_service.create_user(
                session,
                organization.id,
                UserCreate(email=emails[Role.OWNER], role=Role.OWNER, password=PASSWORD),
            )
            await tenancy_service.create_user(
                session,
                organization.id,
                UserCreate(email=emails[Role.STAFF], role=Role.STAFF, password=PASSWORD),
            )
            principal = Principal(organization.id, owner.id, Role.OWNER)
            practitioners = []
            for name, email in (("Dr. Ada Byron", emails[Role.PRACTITIONER]), ("Dr. Lin Chen", None)):
                created = await booking_service.create_practitioner(
                    session,
                    principal,
                    PractitionerCreate(name=name, email=email, password=PASSWORD if email else None),
                )
                week = [
                    AvailabilityInterval(day_of_week=day, start_time=time(8), end_time=time(18))
                    for day in range(7)
                ]
                await booking_service.replace_weekly(
                    session, principal, created.id, WeeklyAvailability(intervals=week)
                )
                practitioners.append(created.id)
            token = (await tenancy_service.issue_token(session, owner, name="browser tests")).token
            return {
                "slug": organization.slug,
                "owner_email": emails[Role.OWNER],
                "staff_email": emails[Role.STAFF],
                "practitioner_email": emails[Role.PRACTITIONER],
                "practitioner_id": practitioners[0],
                "other_practitioner_id": practitioners[1],
                "owner_token": token,
            }
    finally:
        await engine.dispose()


@contextmanager
def server_process(database_url: str, var_dir: Path, **environment: str) -> Iterator[str]:
    """``clinicsync serve`` in a process of its own on a free port; yields its base URL."""
    env = {
        **os.environ,
        "CLINICSYNC_DATABASE_URL": database_url,
        "CLINICSYNC_MIGRATE_ON_START": "false",
        "CLINICSYNC_SECRET_KEY": "test-secret-key-for-encryption-only",
        "CLINICSYNC_VAR_DIR": str(var_dir),
        "CLINICSYNC_ENVIRONMENT": "test",
        "CLINICSYNC_LOG_LEVEL": "WARNING",
        **environment,
    }
    port = free_port()
    command = [sys.executable, "-m", "clinicsync.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base_url) as http:
            while True:
                assert process.poll() is None, "the server process exited while starting"
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time_module.sleep(0.1)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def clinic_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededClinic]:
    seeded = run_async(_seed(database_url))
    with server_process(database_url, tmp_path_factory.mktemp("e2e-var")) as base_url:
        yield SeededClinic(base_url=base_url, **seeded)


def sign_in(context: BrowserContext, clinic: SeededClinic, email: str) -> None:
    """Signs in through the sign-in form, as a person would."""
    page = context.new_page()
    page.goto(f"{clinic.base_url}/login")
    page.locator("#email").fill(email)
    page.locator("#password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url)
    page.close()


@pytest.fixture
def signed_in(clinic_server: SeededClinic, browser: Browser) -> Iterator[Any]:
    """A factory of browser contexts signed in as the given email (closed after the test)."""
    contexts: list[BrowserContext] = []

    def make(email: str, **options: Any) -> BrowserContext:
        context = browser.new_context(base_url=clinic_server.base_url, **options)
        sign_in(context, clinic_server, email)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


def free_day(clinic: SeededClinic, offset: int = 3) -> date:
    return date.today() + timedelta(days=offset)


def api(clinic: SeededClinic) -> httpx.Client:
    return httpx.Client(base_url=clinic.base_url, headers=clinic.owner_headers, timeout=30)


def serious_violations(page: Page, axe: str) -> list[str]:
    """axe-core's serious and critical violations on the page, one line each."""
    page.add_script_tag(content=axe)
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[node['target'] for node in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]

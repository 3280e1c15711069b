"""The demo clinic `make demo` starts with: practitioners, weekly hours, patients, a few bookings,
a login for each role, and what a newcomer needs to try it: real ids and a free slot."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.booking import search
from clinicsync.booking import service as booking_service
from clinicsync.booking.models import Appointment, AppointmentStatus, BookingSource
from clinicsync.booking.schemas import (
    AvailabilityInterval,
    PatientCreate,
    PractitionerCreate,
    WeeklyAvailability,
)
from clinicsync.db import migrate
from clinicsync.db.engine import create_engine, create_sessionmaker, session_scope
from clinicsync.sync.runs import service as runs_service
from clinicsync.tenancy import security
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Organization, Role, User
from clinicsync.tenancy.principal import Principal
from clinicsync.tenancy.schemas import OrganizationCreate, UserCreate

DEMO_SLUG = "demo-clinic"
DEMO_ADMIN_EMAIL = "admin@demo-clinic.example"
# Every role can sign in to the pages with this password (printed by `clinicsync demo`).
DEMO_PASSWORD = "demo-password-1"
# One login per role; the practitioners' logins are their own emails (DEMO_PRACTITIONERS).
DEMO_STAFF_EMAIL = "reception@demo-clinic.example"
DEMO_LOGINS = (
    (Role.OWNER, DEMO_ADMIN_EMAIL, "Front Desk"),
    (Role.ADMIN, "manager@demo-clinic.example", "Practice Manager"),
    (Role.STAFF, "reception@demo-clinic.example", "Reception"),
)
DEMO_SERVICE_EMAIL = "chatbot@demo-clinic.example"
DEMO_PRACTITIONERS = (
    ("Dr. Amelia Hart", "amelia.hart@demo-clinic.example", "General dentist"),
    ("Dr. Rohan Iyer", "rohan.iyer@demo-clinic.example", "Orthodontist"),
    ("Sam Okafor", "sam.okafor@demo-clinic.example", "Hygienist"),
)


DEMO_PATIENTS = (
    ("Olivia", "Bennett", "+12025550143"),
    ("Noah", "Castillo", "+12025550187"),
    ("Mia", "Fischer", "+12025550112"),
    ("Lucas", "Nakamura", "+12025550164"),
)


@dataclass(frozen=True)
class DemoClinic:
    organization_id: str
    organization_name: str
    time_zone: str
    admin_token: str
    service_token: str
    logins: list[tuple[str, str]]  # (role, email); every password is DEMO_PASSWORD
    practitioner_id: str
    practitioner_name: str
    patient_id: str
    patient_name: str
    slot_start: str  # the first free slot from tomorrow on, in the clinic's zone with its offset
    slot_date: str

    def environment(self, base_url: str) -> dict[str, str]:
        """What var/demo.env holds, for the README's commands: `. var/demo.env`."""
        return {
            "CLINICSYNC_URL": base_url,
            "TOKEN": self.admin_token,
            "SERVICE_TOKEN": self.service_token,
            "PRACTITIONER_ID": self.practitioner_id,
            "PATIENT_ID": self.patient_id,
            "SLOT_START": self.slot_start,
            "SLOT_DATE": self.slot_date,
            "IDEMPOTENCY_KEY": f"demo-{secrets.token_hex(6)}",
        }


async def seed_demo(database_url: str) -> DemoClinic:
    """Creates the demo clinic once; later runs reuse it and issue fresh tokens."""
    engine = create_engine(database_url)
    try:
        await migrate.upgrade(engine)
        async with session_scope(create_sessionmaker(engine)) as session:
            organization = await session.scalar(select(Organization).where(Organization.slug == DEMO_SLUG))
            if organization is None:
                organization = await tenancy_service.create_organization(
                    session,
                    OrganizationCreate(
                        name="Harbour Street Dental", time_zone="America/New_York", slug=DEMO_SLUG
                    ),
                )
                # One hash for the shared demo password: argon2 is slow by design.
                password_hash = security.hash_password(DEMO_PASSWORD)
                for role, email, name in DEMO_LOGINS:
                    user = await tenancy_service.create_user(
                        session, organization.id, UserCreate(email=email, full_name=name, role=role)
                    )
                    user.password_hash = password_hash
                await tenancy_service.create_user(
                    session,
                    organization.id,
                    UserCreate(email=DEMO_SERVICE_EMAIL, full_name="Website chatbot", role=Role.SERVICE),
                )
                owner = await _user(session, organization, DEMO_ADMIN_EMAIL)
                await _seed_clinic(session, Principal(organization.id, owner.id, Role.OWNER), password_hash)
            owner = await _user(session, organization, DEMO_ADMIN_EMAIL)
            # The demo is the one process working for its clinic: a run still marked running was
            # cut off by the last Ctrl-C. Failed as stale, the boot's Full Sync resumes from its
            # checkpoint instead of being refused as a second run.
            await runs_service.fail_stale(session, timedelta(0), organization.id)
            service = await _user(session, organization, DEMO_SERVICE_EMAIL)
            principal = Principal(organization.id, owner.id, Role.OWNER)
            practitioner = (await booking_service.list_practitioners(session, principal, limit=1))[0]
            patients, _ = await booking_service.list_patients(session, principal, search=None, limit=1)
            slot = await _first_free_slot(session, principal, organization, practitioner.id)
            issued = await tenancy_service.issue_token(session, owner, name="demo", expires_in_days=30)
            bot = await tenancy_service.issue_token(session, service, name="demo chatbot", expires_in_days=30)
            logins = [(role.value, email) for role, email, _ in DEMO_LOGINS]
            logins += [(Role.PRACTITIONER.value, email) for _, email, _ in DEMO_PRACTITIONERS]
            return DemoClinic(
                organization_id=str(organization.id),
                organization_name=organization.name,
                time_zone=organization.time_zone,
                admin_token=issued.token,
                service_token=bot.token,
                logins=logins,
                practitioner_id=str(practitioner.id),
                practitioner_name=practitioner.name,
                patient_id=str(patients[0].id),
                patient_name=f"{patients[0].first_name} {patients[0].last_name}",
                slot_start=slot.isoformat(),
                slot_date=slot.date().isoformat(),
            )
    finally:
        await engine.dispose()


async def _user(session: AsyncSession, organization: Organization, email: str) -> User:
    user = await session.scalar(
        select(User).where(User.organization_id == organization.id, User.email == email)
    )
    if user is None:
        raise RuntimeError(f"the demo clinic exists but its user {email} is gone; delete var/ and rerun")
    return user


async def _first_free_slot(
    session: AsyncSession, principal: Principal, organization: Organization, practitioner_id: uuid.UUID
) -> datetime:
    """The first slot search offers from tomorrow on (the clinic's tomorrow), never a stale date."""
    tomorrow = booking_service.clinic_today(organization) + timedelta(days=1)
    page = await search.search_slots(
        session,
        principal,
        first_day=tomorrow,
        last_day=tomorrow + timedelta(days=13),
        practitioner_id=practitioner_id,
        limit=1,
    )
    if not page.slots:
        raise RuntimeError("the demo practitioner has no free slot in the next two weeks")
    return page.slots[0].local_start


async def _seed_clinic(session: AsyncSession, principal: Principal, password_hash: str) -> None:
    zone = ZoneInfo("America/New_York")
    weekdays = [
        AvailabilityInterval(day_of_week=day, start_time=time(9), end_time=time(17)) for day in range(5)
    ]
    practitioners = []
    for name, email, title in DEMO_PRACTITIONERS:
        practitioner = await booking_service.create_practitioner(
            session,
            principal,
            PractitionerCreate(name=name, email=email, title=title),
        )
        login = await session.get(User, practitioner.user_id)
        assert login is not None
        login.password_hash = password_hash
        await booking_service.replace_weekly(
            session, principal, practitioner.id, WeeklyAvailability(intervals=weekdays)
        )
        practitioners.append(practitioner)
    patients = [
        await booking_service.create_patient(
            session, principal, PatientCreate(first_name=first, last_name=last, phone=phone)
        )
        for first, last, phone in DEMO_PATIENTS
    ]
    # A few bookings on the next weekdays so the diary isn't empty.
    day = datetime.now(zone).date() + timedelta(days=1)
    booked = 0
    while booked < len(patients):
        if day.weekday() < 5:
            practitioner = practitioners[booked % len(practitioners)]
            start = datetime.combine(day, time(10 + booked), tzinfo=zone).astimezone(UTC)
            session.add(
                Appointment(
                    organization_id=principal.organization_id,
                    patient_id=patients[booked].id,
                    practitioner_id=practitioner.id,
                    starts_at=start,
                    ends_at=start + timedelta(minutes=30),
                    status=AppointmentStatus.CONFIRMED,
                    booking_source=BookingSource.ADMIN,
                    booking_reference=f"CS-DEMO{booked:04d}",
                    practitioner_name=practitioner.name,
                    practitioner_email=practitioner.email,
                )
            )
            booked += 1
        day += timedelta(days=1)
    await session.flush()

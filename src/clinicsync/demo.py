"""The demo clinic `make demo` starts with: practitioners, weekly hours, patients and a few bookings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

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
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Organization, Role, User
from clinicsync.tenancy.principal import Principal
from clinicsync.tenancy.schemas import OrganizationCreate, UserCreate

DEMO_SLUG = "demo-clinic"
DEMO_ADMIN_EMAIL = "admin@demo-clinic.example"
DEMO_PRACTITIONERS = (
    ("Dr. Amelia Hart", "amelia.hart@demo-clinic.example", "General dentist"),
    ("Dr. Rohan Iyer", "rohan.iyer@demo-clinic.example", "Orthodontist"),
    ("Sam Okafor", "sam.okafor@demo-clinic.example", "Hygienist"),
)
# Every role can sign in to the pages with this password (printed by `clinicsync demo`).
DEMO_PASSWORD = "demo-password-1"
DEMO_STAFF_EMAIL = "desk@demo-clinic.example"


DEMO_PATIENTS = (
    ("Olivia", "Bennett", "+12025550143"),
    ("Noah", "Castillo", "+12025550187"),
    ("Mia", "Fischer", "+12025550112"),
    ("Lucas", "Nakamura", "+12025550164"),
)


@dataclass(frozen=True)
class DemoClinic:
    organization_name: str
    time_zone: str
    admin_token: str
    # role -> (email, password) for the pages' sign-in form
    logins: tuple[tuple[str, str], ...] = ()


async def seed_demo(database_url: str) -> DemoClinic:
    """Creates the demo clinic once; later runs reuse it and only issue a fresh admin token."""
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
                admin = await tenancy_service.create_user(
                    session,
                    organization.id,
                    UserCreate(
                        email=DEMO_ADMIN_EMAIL,
                        full_name="Front Desk",
                        role=Role.OWNER,
                        password=DEMO_PASSWORD,
                    ),
                )
                await tenancy_service.create_user(
                    session,
                    organization.id,
                    UserCreate(
                        email=DEMO_STAFF_EMAIL, full_name="Reception", role=Role.STAFF, password=DEMO_PASSWORD
                    ),
                )
                await _seed_clinic(session, Principal(organization.id, admin.id, Role.OWNER))
            owner = await session.scalar(
                select(User).where(User.organization_id == organization.id, User.email == DEMO_ADMIN_EMAIL)
            )
            if owner is None:
                raise RuntimeError(
                    f"the demo clinic exists but its owner {DEMO_ADMIN_EMAIL} is gone; reset var/"
                )
            issued = await tenancy_service.issue_token(session, owner, name="demo", expires_in_days=30)
            logins = (
                ("owner (admin pages)", DEMO_ADMIN_EMAIL),
                ("staff (front desk)", DEMO_STAFF_EMAIL),
                ("practitioner", DEMO_PRACTITIONERS[0][1]),
            )
            return DemoClinic(organization.name, organization.time_zone, issued.token, logins)
    finally:
        await engine.dispose()


async def _seed_clinic(session: AsyncSession, principal: Principal) -> None:
    zone = ZoneInfo("America/New_York")
    weekdays = [
        AvailabilityInterval(day_of_week=day, start_time=time(9), end_time=time(17)) for day in range(5)
    ]
    practitioners = []
    for name, email, title in DEMO_PRACTITIONERS:
        practitioner = await booking_service.create_practitioner(
            session,
            principal,
            PractitionerCreate(name=name, email=email, title=title, password=DEMO_PASSWORD),
        )
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

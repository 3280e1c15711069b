"""Appointment types: what is booked (a check-up, a filling), its length and buffers, who offers
it and whether chatbots and voice agents may book it. Slot search and booking both read them."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.booking.models import AppointmentType, Practitioner
from clinicsync.booking.schemas import AppointmentTypeCreate, AppointmentTypeUpdate
from clinicsync.errors import NotFound, ValidationFailed, partial_update
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.principal import Principal


def books_online(principal: Principal) -> bool:
    """Service accounts are the clinic's chatbot and voice agent: they book "online"."""
    return principal.role == Role.SERVICE


async def list_types(
    session: AsyncSession, principal: Principal, *, limit: int, offset: int = 0
) -> list[AppointmentType]:
    query = select(AppointmentType).where(AppointmentType.organization_id == principal.organization_id)
    if books_online(principal):
        query = query.where(AppointmentType.bookable_online.is_(True), AppointmentType.is_active.is_(True))
    query = query.order_by(AppointmentType.name, AppointmentType.id).limit(limit).offset(offset)
    return list(await session.scalars(query))


async def get_type(session: AsyncSession, principal: Principal, type_id: uuid.UUID) -> AppointmentType:
    found = await session.scalar(
        select(AppointmentType).where(
            AppointmentType.id == type_id, AppointmentType.organization_id == principal.organization_id
        )
    )
    if found is None:
        raise NotFound(f"appointment type {type_id} not found")
    return found


async def _practitioners(
    session: AsyncSession, principal: Principal, ids: list[uuid.UUID]
) -> list[Practitioner]:
    wanted = set(ids)
    found = list(
        await session.scalars(
            select(Practitioner).where(
                Practitioner.organization_id == principal.organization_id,
                Practitioner.id.in_(wanted),
                Practitioner.deleted_at.is_(None),
            )
        )
    )
    missing = wanted - {practitioner.id for practitioner in found}
    if missing:
        raise ValidationFailed("practitioner_ids", f"practitioner {sorted(map(str, missing))[0]} not found")
    return found


async def create_type(
    session: AsyncSession, principal: Principal, data: AppointmentTypeCreate
) -> AppointmentType:
    appointment_type = AppointmentType(
        organization_id=principal.organization_id,
        **data.model_dump(exclude={"practitioner_ids"}),
        all_practitioners=data.practitioner_ids is None,
        practitioners=await _practitioners(session, principal, data.practitioner_ids or []),
    )
    session.add(appointment_type)
    await session.flush()
    return appointment_type


async def update_type(
    session: AsyncSession, principal: Principal, type_id: uuid.UUID, data: AppointmentTypeUpdate
) -> AppointmentType:
    appointment_type = await get_type(session, principal, type_id)
    changes = partial_update(data, required=set(type(data).model_fields) - {"practitioner_ids"})
    if "practitioner_ids" in changes:
        ids = changes.pop("practitioner_ids")
        appointment_type.all_practitioners = ids is None
        appointment_type.practitioners = await _practitioners(session, principal, ids or [])
    for field, value in changes.items():
        setattr(appointment_type, field, value)
    await session.flush()
    return appointment_type


def check_offered(
    appointment_type: AppointmentType, principal: Principal, practitioner_id: uuid.UUID | None
) -> None:
    """Refuses a type that is retired, not online for a chatbot, or not offered by the practitioner."""
    if not appointment_type.is_active:
        raise ValidationFailed("appointment_type_id", f"{appointment_type.name} is no longer offered")
    if books_online(principal) and not appointment_type.bookable_online:
        raise ValidationFailed(
            "appointment_type_id", f"{appointment_type.name} cannot be booked online; ask the front desk"
        )
    if (
        practitioner_id is not None
        and not appointment_type.all_practitioners
        and practitioner_id not in appointment_type.practitioner_ids
    ):
        raise ValidationFailed("practitioner_id", f"this practitioner does not offer {appointment_type.name}")


async def bookable_type(
    session: AsyncSession, principal: Principal, type_id: uuid.UUID, practitioner_id: uuid.UUID | None
) -> AppointmentType:
    try:
        appointment_type = await get_type(session, principal, type_id)
    except NotFound:
        raise ValidationFailed("appointment_type_id", f"appointment type {type_id} not found") from None
    check_offered(appointment_type, principal, practitioner_id)
    return appointment_type

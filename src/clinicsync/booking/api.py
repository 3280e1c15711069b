"""Booking routes: thin wrappers that parse, call the service and shape the response."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse

from clinicsync.booking import appointment_types, appointments, search, service
from clinicsync.booking.models import AppointmentStatus, BookingSource
from clinicsync.booking.schemas import (
    AppointmentCancel,
    AppointmentCreate,
    AppointmentTypeCreate,
    AppointmentTypeRead,
    AppointmentTypeUpdate,
    AppointmentUpdate,
    AvailabilityInterval,
    CalendarDate,
    CalendarDateTime,
    OverrideCreate,
    OverrideRead,
    PatientCreate,
    PatientLookup,
    PatientProof,
    PatientRead,
    PatientUpdate,
    PractitionerCreate,
    PractitionerRead,
    PractitionerRemoved,
    PractitionerUpdate,
    SlotSearchResult,
    WeeklyAvailability,
    WeeklyAvailabilityRead,
)
from clinicsync.deps import Requires, SessionDep, writes_after_reads
from clinicsync.errors import NotFound, ValidationFailed
from clinicsync.sync import external_only, views
from clinicsync.sync.schemas import AppointmentPageWithSync, AppointmentWithSync, PatientWithSync
from clinicsync.sync.views import SyncManagerDep
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal

router = APIRouter(prefix="/api/v1", tags=["booking"])
# Offsets past this are refused rather than handed to the database (which overflows at 2**63).
MAX_OFFSET = 1_000_000


PractitionerReader = Annotated[Principal, Requires(Capability.PRACTITIONERS_READ)]
PractitionerManager = Annotated[Principal, Requires(Capability.PRACTITIONERS_MANAGE)]
AvailabilityReader = Annotated[Principal, Requires(Capability.AVAILABILITY_READ)]
AvailabilityManager = Annotated[Principal, Requires(Capability.AVAILABILITY_MANAGE)]
SlotSearcher = Annotated[Principal, Requires(Capability.SLOTS_SEARCH)]
TypeReader = Annotated[Principal, Requires(Capability.APPOINTMENT_TYPES_READ)]
TypeManager = Annotated[Principal, Requires(Capability.APPOINTMENT_TYPES_MANAGE)]
PatientLister = Annotated[Principal, Requires(Capability.PATIENTS_LIST)]
PatientFinder = Annotated[Principal, Requires(Capability.PATIENTS_FIND)]
AppointmentFinder = Annotated[Principal, Requires(Capability.APPOINTMENTS_FIND)]
PatientReader = Annotated[Principal, Requires(Capability.PATIENTS_READ)]
PatientRegistrar = Annotated[Principal, Requires(Capability.PATIENTS_REGISTER)]
PatientEditor = Annotated[Principal, Requires(Capability.PATIENTS_UPDATE)]
AppointmentLister = Annotated[Principal, Requires(Capability.APPOINTMENTS_LIST)]
AppointmentReader = Annotated[Principal, Requires(Capability.APPOINTMENTS_READ)]
Booker = Annotated[Principal, Requires(Capability.APPOINTMENTS_BOOK)]
AppointmentEditor = Annotated[Principal, Requires(Capability.APPOINTMENTS_CHANGE)]


# Routes whose services read first and call begin_writes before changing anything.
WRITES_AFTER_READS = [Depends(writes_after_reads)]

Limit = Annotated[int, Query(ge=1, le=500, description="At most 500 per page")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def _next_page(request: Request, response: Response, **params: str | int) -> None:
    """Tells a list's caller where its next page is: a Link header (rel=next) and X-Next-Cursor
    or X-Next-Offset, so lists that answer a JSON array can page too."""
    url = request.url.include_query_params(**params)
    response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    for name, value in params.items():
        response.headers[f"X-Next-{name.capitalize()}"] = str(value)


def _etag(version: int) -> str:
    return f'"{version}"'


def _parse_if_match(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    try:
        return int(if_match.strip().removeprefix("W/").strip('"'))
    except ValueError:
        raise ValidationFailed("If-Match", 'must be the appointment version as an ETag, e.g. "3"') from None


# --- practitioners ---------------------------------------------------------------------------------


@router.get("/practitioners", response_model=list[PractitionerRead])
async def list_practitioners(
    principal: PractitionerReader,
    session: SessionDep,
    request: Request,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=200, description="At most 200 per page")] = 100,
    offset: Offset = 0,
) -> object:
    found = await service.list_practitioners(session, principal, limit=limit + 1, offset=offset)
    if len(found) > limit:
        _next_page(request, response, offset=offset + limit)
    return found[:limit]


@router.post("/practitioners", response_model=PractitionerRead, status_code=status.HTTP_201_CREATED)
async def create_practitioner(
    body: PractitionerCreate, principal: PractitionerManager, session: SessionDep
) -> object:
    return await service.create_practitioner(session, principal, body)


@router.get("/practitioners/{practitioner_id}", response_model=PractitionerRead)
async def read_practitioner(
    practitioner_id: uuid.UUID, principal: PractitionerReader, session: SessionDep
) -> object:
    return await service.get_practitioner(session, principal, practitioner_id)


@router.patch("/practitioners/{practitioner_id}", response_model=PractitionerRead)
async def update_practitioner(
    practitioner_id: uuid.UUID, body: PractitionerUpdate, principal: PractitionerManager, session: SessionDep
) -> object:
    return await service.update_practitioner(session, principal, practitioner_id, body)


@router.delete("/practitioners/{practitioner_id}", response_model=PractitionerRemoved)
async def remove_practitioner(
    practitioner_id: uuid.UUID, principal: PractitionerManager, session: SessionDep
) -> object:
    return await service.remove_practitioner(session, principal, practitioner_id)


@router.get("/practitioners/{practitioner_id}/availability", response_model=WeeklyAvailabilityRead)
async def read_availability(
    practitioner_id: uuid.UUID, principal: AvailabilityReader, session: SessionDep
) -> object:
    rules = await service.get_weekly(session, principal, practitioner_id)
    return WeeklyAvailabilityRead(
        practitioner_id=practitioner_id,
        intervals=[AvailabilityInterval.model_validate(rule, from_attributes=True) for rule in rules],
    )


@router.put("/practitioners/{practitioner_id}/availability", response_model=WeeklyAvailabilityRead)
async def replace_availability(
    practitioner_id: uuid.UUID, body: WeeklyAvailability, principal: AvailabilityManager, session: SessionDep
) -> object:
    rules = await service.replace_weekly(session, principal, practitioner_id, body)
    return WeeklyAvailabilityRead(
        practitioner_id=practitioner_id,
        intervals=[AvailabilityInterval.model_validate(rule, from_attributes=True) for rule in rules],
    )


@router.get("/practitioners/{practitioner_id}/overrides", response_model=list[OverrideRead])
async def list_overrides(
    practitioner_id: uuid.UUID,
    principal: AvailabilityReader,
    session: SessionDep,
    request: Request,
    response: Response,
    limit: Limit = 100,
    offset: Offset = 0,
) -> object:
    found = await service.list_overrides(session, principal, practitioner_id, limit=limit + 1, offset=offset)
    if len(found) > limit:
        _next_page(request, response, offset=offset + limit)
    return found[:limit]


@router.post(
    "/practitioners/{practitioner_id}/overrides",
    response_model=OverrideRead,
    status_code=status.HTTP_201_CREATED,
)
async def add_override(
    practitioner_id: uuid.UUID, body: OverrideCreate, principal: AvailabilityManager, session: SessionDep
) -> object:
    return await service.add_override(session, principal, practitioner_id, body)


@router.delete(
    "/practitioners/{practitioner_id}/overrides/{override_id}", status_code=status.HTTP_204_NO_CONTENT
)
async def delete_override(
    practitioner_id: uuid.UUID, override_id: uuid.UUID, principal: AvailabilityManager, session: SessionDep
) -> None:
    await service.delete_override(session, principal, practitioner_id, override_id)


# --- slots -------------------------------------------------------------------------------------------


@router.get("/slots", response_model=SlotSearchResult)
async def search_slots(
    principal: SlotSearcher,
    session: SessionDep,
    sync: SyncManagerDep,
    from_: Annotated[CalendarDate, Query(alias="from", description="First local date (clinic's zone)")],
    to: Annotated[CalendarDate, Query(description="Last local date, inclusive; at most 92 days after from")],
    practitioner_id: uuid.UUID | None = None,
    appointment_type_id: Annotated[
        uuid.UUID | None, Query(description="Its length, buffers and practitioners apply")
    ] = None,
    duration_minutes: Annotated[int | None, Query(ge=5, le=720)] = None,
    interval_minutes: Annotated[
        int | None, Query(ge=5, le=720, description="Another grid than the clinic's: admins, with override")
    ] = None,
    override: Annotated[
        bool,
        Query(description="Owners and admins: also show times inside notice, past the horizon or off grid"),
    ] = False,
    limit: Annotated[int, Query(ge=1, le=search.MAX_SLOT_PAGE)] = search.DEFAULT_SLOT_PAGE,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    page = await sync.search_slots(
        session,
        principal,
        first_day=from_,
        last_day=to,
        practitioner_id=practitioner_id,
        appointment_type_id=appointment_type_id,
        duration_minutes=duration_minutes,
        interval_minutes=interval_minutes,
        override=override,
        limit=limit,
        cursor=cursor,
        rendered=True,
    )
    # Rendered in the search process, or else in the search thread: a full page is thousands of objects.
    body = page.rendered if page.rendered is not None else await search.in_search_thread(search.render, page)
    return Response(body, media_type="application/json")


# --- appointment types ----------------------------------------------------------------------------


@router.get("/appointment-types", response_model=list[AppointmentTypeRead])
async def list_appointment_types(
    principal: TypeReader,
    session: SessionDep,
    request: Request,
    response: Response,
    limit: Limit = 100,
    offset: Offset = 0,
) -> object:
    found = await appointment_types.list_types(session, principal, limit=limit + 1, offset=offset)
    if len(found) > limit:
        _next_page(request, response, offset=offset + limit)
    return found[:limit]


@router.post("/appointment-types", response_model=AppointmentTypeRead, status_code=status.HTTP_201_CREATED)
async def create_appointment_type(
    body: AppointmentTypeCreate, principal: TypeManager, session: SessionDep
) -> object:
    return await appointment_types.create_type(session, principal, body)


@router.get("/appointment-types/{type_id}", response_model=AppointmentTypeRead)
async def read_appointment_type(type_id: uuid.UUID, principal: TypeReader, session: SessionDep) -> object:
    return await appointment_types.get_type(session, principal, type_id)


@router.patch("/appointment-types/{type_id}", response_model=AppointmentTypeRead)
async def update_appointment_type(
    type_id: uuid.UUID, body: AppointmentTypeUpdate, principal: TypeManager, session: SessionDep
) -> object:
    return await appointment_types.update_type(session, principal, type_id, body)


# --- patients -------------------------------------------------------------------------------------


@router.get("/patients", response_model=list[PatientWithSync])
async def list_patients(
    principal: PatientLister,
    session: SessionDep,
    request: Request,
    response: Response,
    search: Annotated[str | None, Query(max_length=100)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    cursor: Annotated[str | None, Query(max_length=500, description="From X-Next-Cursor")] = None,
) -> object:
    if cursor is not None and offset:
        raise ValidationFailed("offset", "page with cursor or with offset, not both")
    patients, next_cursor = await service.list_patients(
        session, principal, search=search, limit=limit, offset=offset, cursor=cursor
    )
    if next_cursor is not None:
        _next_page(request, response, cursor=next_cursor)
    return await views.patients_with_refs(session, principal, patients)


@router.post("/patients/lookup", response_model=list[PatientRead])
async def find_patients(body: PatientLookup, principal: PatientFinder, session: SessionDep) -> object:
    """Exact matches on phone or name together with the date of birth (at most a few).

    A POST, so the details that identify the patient travel in the body, never in a URL."""
    return await service.find_patients(session, principal, body)


@router.post(
    "/patients",
    response_model=PatientWithSync,
    status_code=status.HTTP_201_CREATED,
    dependencies=WRITES_AFTER_READS,
)
async def create_patient(
    body: PatientCreate, principal: PatientRegistrar, session: SessionDep, sync: SyncManagerDep
) -> object:
    patient = await sync.create_patient(session, principal, body)
    return await views.patient_with_refs(session, principal, patient)


@router.get("/patients/{patient_id}", response_model=PatientWithSync)
async def read_patient(patient_id: uuid.UUID, principal: PatientReader, session: SessionDep) -> object:
    patient = await service.get_patient(session, principal, patient_id)
    return await views.patient_with_refs(session, principal, patient)


@router.patch("/patients/{patient_id}", response_model=PatientWithSync, dependencies=WRITES_AFTER_READS)
async def update_patient(
    patient_id: uuid.UUID,
    body: PatientUpdate,
    principal: PatientEditor,
    session: SessionDep,
    sync: SyncManagerDep,
) -> object:
    patient = await sync.update_patient(session, principal, patient_id, body)
    return await views.patient_with_refs(session, principal, patient)


# --- appointments -----------------------------------------------------------------------------------


@router.get("/appointments", response_model=AppointmentPageWithSync)
async def list_appointments(
    principal: AppointmentLister,
    session: SessionDep,
    practitioner_id: uuid.UUID | None = None,
    patient_id: uuid.UUID | None = None,
    status_: Annotated[list[AppointmentStatus] | None, Query(alias="status")] = None,
    booking_source: BookingSource | None = None,
    from_: Annotated[CalendarDateTime | None, Query(alias="from")] = None,
    to: CalendarDateTime | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the last page")] = None,
) -> AppointmentPageWithSync:
    for name, value in (("from", from_), ("to", to)):
        if value is not None and value.tzinfo is None:
            raise ValidationFailed(name, "needs a UTC offset, e.g. 2027-03-10T00:00:00Z")
    items, total, next_cursor = await appointments.list_appointments(
        session,
        principal,
        practitioner_id=practitioner_id,
        patient_id=patient_id,
        statuses=status_,
        booking_source=booking_source,
        starts_from=from_,
        starts_before=to,
        limit=limit,
        offset=offset,
        cursor=cursor,
    )
    return AppointmentPageWithSync(
        items=await views.appointments_with_refs(session, principal, items),
        total=total,
        limit=limit,
        offset=offset,
        next_cursor=next_cursor,
    )


@router.post(
    "/appointments",
    response_model=AppointmentWithSync,
    status_code=status.HTTP_201_CREATED,
    dependencies=WRITES_AFTER_READS,
)
async def create_appointment(
    body: AppointmentCreate,
    principal: Booker,
    session: SessionDep,
    sync: SyncManagerDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    result = await sync.create_appointment(session, principal, body, idempotency_key=idempotency_key)
    shown = await views.new_appointment_with_refs(session, principal, result)
    headers = {
        "ETag": _etag(result.appointment.version),
        "Location": f"/api/v1/appointments/{result.appointment.id}",
    }
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(shown.model_dump(mode="json"), status_code=201, headers=headers)


@router.post("/appointments/lookup", response_model=AppointmentWithSync)
async def find_appointment(
    body: PatientProof, principal: AppointmentFinder, session: SessionDep, response: Response
) -> object:
    """The appointment a patient proves is theirs: booking reference plus phone or date of birth."""
    appointment = await appointments.find_by_proof(session, principal, body)
    response.headers["ETag"] = _etag(appointment.version)
    return await views.appointment_with_refs(session, principal, appointment)


@router.get("/appointments/by-reference/{reference}", response_model=AppointmentWithSync)
async def read_by_reference(
    reference: str, principal: AppointmentReader, session: SessionDep, response: Response
) -> object:
    appointment = await appointments.get_by_reference(session, principal, reference)
    response.headers["ETag"] = _etag(appointment.version)
    return await views.appointment_with_refs(session, principal, appointment)


@router.get("/appointments/{appointment_id}", response_model=AppointmentWithSync)
async def read_appointment(
    appointment_id: uuid.UUID, principal: AppointmentReader, session: SessionDep, response: Response
) -> object:
    try:
        appointment = await appointments.get_appointment(session, principal, appointment_id)
    except NotFound:
        # An external-only clinic's appointment lives in the PMS; we keep its reference.
        held = await external_only.get_view(session, principal, appointment_id)
        if held is None or not await appointments.may_act_on(
            session, principal, held, Capability.APPOINTMENTS_READ
        ):
            raise
        appointment = held
    response.headers["ETag"] = _etag(appointment.version)
    return await views.appointment_with_refs(session, principal, appointment)


@router.patch(
    "/appointments/{appointment_id}", response_model=AppointmentWithSync, dependencies=WRITES_AFTER_READS
)
async def update_appointment(
    appointment_id: uuid.UUID,
    body: AppointmentUpdate,
    principal: AppointmentEditor,
    session: SessionDep,
    response: Response,
    sync: SyncManagerDep,
    if_match: Annotated[str | None, Header()] = None,
) -> object:
    appointment = await sync.update_appointment(
        session, principal, appointment_id, body, if_match=_parse_if_match(if_match)
    )
    response.headers["ETag"] = _etag(appointment.version)
    return await views.appointment_with_refs(session, principal, appointment)


@router.post(
    "/appointments/{appointment_id}/cancel",
    response_model=AppointmentWithSync,
    dependencies=WRITES_AFTER_READS,
)
async def cancel_appointment(
    appointment_id: uuid.UUID,
    body: AppointmentCancel,
    principal: AppointmentEditor,
    session: SessionDep,
    response: Response,
    sync: SyncManagerDep,
    if_match: Annotated[str | None, Header()] = None,
) -> object:
    appointment = await sync.cancel_appointment(
        session, principal, appointment_id, body, if_match=_parse_if_match(if_match)
    )
    response.headers["ETag"] = _etag(appointment.version)
    return await views.appointment_with_refs(session, principal, appointment)

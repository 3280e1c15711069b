"""Sign-in, the booking page, the practitioner portal and the week view."""

from __future__ import annotations

import contextlib
import hmac
import uuid
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from clinicsync.booking import service as booking_service
from clinicsync.booking.models import BookingSource
from clinicsync.booking.schemas import (
    AppointmentCreate,
    AvailabilityInterval,
    OverrideCreate,
    PatientCreate,
    WeeklyAvailability,
)
from clinicsync.deps import PUBLIC, SESSION_COOKIE, SessionDep, get_sessionmaker, writes_in_own_transactions
from clinicsync.errors import ClinicSyncError, Conflict, Unauthorized
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal
from clinicsync.web import service
from clinicsync.web.render import LOGIN_CSRF_COOKIE, login_page, render
from clinicsync.web.session import Page, PageViewer, csrf_token_for, set_session_cookie

router = APIRouter(include_in_schema=False)

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _text(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _parse_uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def _parse_date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _safe_next(value: str) -> str:
    # Only paths on this site: an open redirect would let a link send people elsewhere after login.
    return value if value.startswith("/") and not value.startswith("//") else "/"


# --- sign in ------------------------------------------------------------------------------------------


@router.get("/", dependencies=[PUBLIC])
async def home(request: Request) -> Response:
    if SESSION_COOKIE in request.cookies:
        return RedirectResponse("/start", status_code=303)
    return RedirectResponse("/login", status_code=303)


@router.get("/start")
async def start(principal: PageViewer) -> Response:
    """Each role's first page."""
    target = {Role.PRACTITIONER: "/portal", Role.SERVICE: "/book", Role.STAFF: "/book"}.get(
        principal.role, "/portal"
    )
    return RedirectResponse(target, status_code=303)


@router.get("/login", dependencies=[PUBLIC])
async def login_form(request: Request, next: str = "/start") -> HTMLResponse:
    return login_page(request, next_path=_safe_next(next))


@router.post("/login", dependencies=[PUBLIC, Depends(writes_in_own_transactions)])
async def login(request: Request, session: SessionDep) -> Response:
    form = await request.form()
    values = {"email": _text(form, "email"), "organization": _text(form, "organization")}
    next_path = _safe_next(_text(form, "next") or "/start")
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, _text(form, "login_csrf")):
        errors = {"form": "the sign-in form had expired; please sign in again"}
        return login_page(request, next_path=next_path, values=values, errors=errors, status_code=403)
    errors = {}
    if not values["email"]:
        errors["email"] = "enter your email"
    if not _text(form, "password"):
        errors["password"] = "enter your password"
    if errors:
        return login_page(request, next_path=next_path, values=values, errors=errors, status_code=422)
    try:
        issued = await tenancy_service.login(
            session,
            values["email"],
            _text(form, "password"),
            values["organization"] or None,
            throttle=request.app.state.login_throttle,
            address=request.client.host if request.client else "unknown",
            sessionmaker=get_sessionmaker(request),
        )
    except Unauthorized:
        errors = {"password": "email or password is wrong"}
        return login_page(request, next_path=next_path, values=values, errors=errors, status_code=401)
    except ClinicSyncError as error:
        field, reason = service.domain_error_field(error)
        return login_page(
            request, next_path=next_path, values=values, errors={field: reason}, status_code=422
        )
    response = RedirectResponse(next_path, status_code=303)
    set_session_cookie(request, response, issued.token)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request, principal: PageViewer, session: SessionDep) -> Response:
    if principal.token_id is not None:
        await tenancy_service.revoke_token(session, principal, principal.token_id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


# --- booking ------------------------------------------------------------------------------------------

SlotViewer = Annotated[Principal, Page(Capability.SLOTS_SEARCH)]
Booker = Annotated[Principal, Page(Capability.APPOINTMENTS_BOOK)]


async def _booking_context(
    session: SessionDep, principal: Principal, practitioner_id: uuid.UUID | None, day: date | None
) -> dict[str, Any]:
    zone = await service.clinic_zone(session, principal)
    people = await service.practitioners(session, principal)
    if practitioner_id is None and people:
        practitioner_id = people[0].id
    day = day or service.today_in(zone)
    slots = await service.free_slots(session, principal, practitioner_id, day) if practitioner_id else []
    return {
        "zone": zone,
        "practitioners": people,
        "practitioner_id": practitioner_id,
        "day": day,
        "slots": slots,
        "today": service.today_in(zone),
    }


@router.get("/book")
async def booking_page(
    request: Request,
    principal: SlotViewer,
    session: SessionDep,
    practitioner_id: str | None = None,
    day: Annotated[str | None, Query(alias="date")] = None,
) -> HTMLResponse:
    context = await _booking_context(session, principal, _parse_uuid(practitioner_id), _parse_date(day))
    return render(request, "book.html", {**context, "values": {}, "errors": {}}, principal=principal)


@router.get("/book/slots")
async def booking_slots(
    request: Request,
    principal: SlotViewer,
    session: SessionDep,
    practitioner_id: str | None = None,
    day: Annotated[str | None, Query(alias="date")] = None,
    selected: str = "",
) -> HTMLResponse:
    """The free times alone, for the page to swap in when a change event arrives."""
    context = await _booking_context(session, principal, _parse_uuid(practitioner_id), _parse_date(day))
    return render(
        request, "_slots.html", {**context, "values": {"start": selected}, "errors": {}}, principal=principal
    )


@router.post("/book")
async def book(request: Request, principal: Booker, session: SessionDep) -> HTMLResponse:
    form = await request.form()
    values = {
        name: _text(form, name)
        for name in ("practitioner_id", "date", "start", "first_name", "last_name", "phone", "email")
    }
    practitioner_id = _parse_uuid(values["practitioner_id"])
    day = _parse_date(values["date"])
    errors: dict[str, str] = {}
    if practitioner_id is None:
        errors["practitioner_id"] = "choose a practitioner"
    try:
        patient_data = PatientCreate(
            first_name=values["first_name"],
            last_name=values["last_name"],
            phone=values["phone"] or None,
            email=values["email"] or None,
        )
    except ValidationError as error:
        errors.update(service.field_errors(error))
    start: datetime | None = None
    with contextlib.suppress(ValueError):
        start = datetime.fromisoformat(values["start"]) if values["start"] else None
    if start is None or start.tzinfo is None:
        errors["start"] = "choose one of the free times"
    alternatives: list[Any] = []
    if not errors:
        assert practitioner_id is not None and start is not None
        try:
            # Through the SyncManager, so a connected PMS is kept in step with page bookings too.
            sync = request.app.state.sync_manager
            patient = await sync.create_patient(session, principal, patient_data)
            result = await sync.create_appointment(
                session,
                principal,
                AppointmentCreate(
                    patient_id=patient.id,
                    practitioner_id=practitioner_id,
                    start=start,
                    booking_source=BookingSource.MANUAL,
                ),
            )
        except Conflict as error:
            await session.rollback()
            zone = await service.clinic_zone(session, principal)
            if error.code == "slot_taken":
                errors["start"] = (
                    "that time has just been taken; choose another, such as the nearest free times below"
                )
                alternatives = await service.nearest_alternatives(
                    session, principal, practitioner_id, start, zone
                )
            else:
                errors["form"] = error.message
        except ClinicSyncError as error:
            await session.rollback()
            field, reason = service.domain_error_field(error)
            errors[field if field in values else "form"] = reason
        else:
            zone = await service.clinic_zone(session, principal)
            return render(
                request,
                "booked.html",
                {"appointment": result.appointment, "zone": zone, "patient": patient},
                principal=principal,
                status_code=201,
            )
    context = await _booking_context(session, principal, practitioner_id, day)
    return render(
        request,
        "book.html",
        {**context, "values": values, "errors": errors, "alternatives": alternatives},
        principal=principal,
        status_code=409 if alternatives else 422,
    )


# --- practitioner portal ----------------------------------------------------------------------------

DiaryViewer = Annotated[Principal, Page(Capability.APPOINTMENTS_LIST)]
ScheduleEditor = Annotated[Principal, Page(Capability.AVAILABILITY_MANAGE)]
UPCOMING_DAYS = 14


async def _chosen_practitioner(
    session: SessionDep, principal: Principal, requested: str | None
) -> uuid.UUID | None:
    own = await service.own_practitioner_id(session, principal)
    if principal.role == Role.PRACTITIONER:
        return own
    chosen = _parse_uuid(requested)
    if chosen is None:
        people = await service.practitioners(session, principal)
        chosen = people[0].id if people else None
    return chosen


async def _appointments_context(
    session: SessionDep, principal: Principal, practitioner_id: uuid.UUID | None
) -> dict[str, Any]:
    zone = await service.clinic_zone(session, principal)
    today = service.today_in(zone)
    if practitioner_id is None:
        return {"zone": zone, "today_entries": [], "upcoming": [], "today": today}
    entries = await service.diary(session, principal, practitioner_id, today, UPCOMING_DAYS + 1, zone)
    return {
        "zone": zone,
        "today": today,
        "today_entries": [e for e in entries if e.local_start.date() == today],
        "upcoming": [e for e in entries if e.local_start.date() > today],
    }


async def _schedule_context(
    session: SessionDep, principal: Principal, practitioner_id: uuid.UUID | None
) -> dict[str, Any]:
    if practitioner_id is None:
        return {"week": [], "overrides": []}
    rules = await booking_service.get_weekly(session, principal, practitioner_id)
    week = []
    for index, name in enumerate(DAYS):
        rule = next((r for r in rules if r.day_of_week == index and r.is_available), None)
        week.append(
            {
                "index": index,
                "name": name,
                "open": rule is not None,
                "start": rule.start_time.strftime("%H:%M") if rule else "09:00",
                "end": rule.end_time.strftime("%H:%M") if rule else "17:00",
            }
        )
    overrides = await booking_service.list_overrides(session, principal, practitioner_id)
    return {"week": week, "overrides": sorted(overrides, key=lambda o: o.date)}


async def _portal(
    request: Request,
    principal: Principal,
    session: SessionDep,
    practitioner_id: uuid.UUID | None,
    *,
    extra: dict[str, Any] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    people = [] if principal.role == Role.PRACTITIONER else await service.practitioners(session, principal)
    context = {
        "practitioners": people,
        "practitioner_id": practitioner_id,
        "days": DAYS,
        "week_errors": {},
        "override_values": {},
        "override_errors": {},
        "saved": request.query_params.get("saved"),
        **await _appointments_context(session, principal, practitioner_id),
        **await _schedule_context(session, principal, practitioner_id),
        **(extra or {}),
    }
    return render(request, "portal.html", context, principal=principal, status_code=status_code)


@router.get("/portal")
async def portal(
    request: Request, principal: DiaryViewer, session: SessionDep, practitioner_id: str | None = None
) -> HTMLResponse:
    chosen = await _chosen_practitioner(session, principal, practitioner_id)
    return await _portal(request, principal, session, chosen)


@router.get("/portal/appointments")
async def portal_appointments(
    request: Request, principal: DiaryViewer, session: SessionDep, practitioner_id: str | None = None
) -> HTMLResponse:
    chosen = await _chosen_practitioner(session, principal, practitioner_id)
    context = await _appointments_context(session, principal, chosen)
    return render(request, "_appointments.html", context, principal=principal)


def _portal_url(practitioner_id: uuid.UUID, saved: str) -> str:
    return f"/portal?practitioner_id={practitioner_id}&saved={saved}"


@router.post("/portal/{practitioner_id}/hours")
async def save_hours(
    request: Request, practitioner_id: uuid.UUID, principal: ScheduleEditor, session: SessionDep
) -> Response:
    form = await request.form()
    intervals = []
    errors: dict[str, str] = {}
    typed: list[dict[str, Any]] = []
    for index, name in enumerate(DAYS):
        is_open = _text(form, f"open_{index}") == "on"
        start, end = _text(form, f"start_{index}"), _text(form, f"end_{index}")
        typed.append({"index": index, "name": name, "open": is_open, "start": start, "end": end})
        if not is_open:
            continue
        try:
            intervals.append(AvailabilityInterval(day_of_week=index, start_time=start, end_time=end))
        except ValidationError as error:
            for field, reason in service.field_errors(error).items():
                errors[f"{'start' if field == 'start_time' else 'end'}_{index}"] = reason
    if not errors:
        try:
            await booking_service.replace_weekly(
                session, principal, practitioner_id, WeeklyAvailability(intervals=intervals)
            )
        except ClinicSyncError as error:
            await session.rollback()
            errors["form"] = error.message
        else:
            return RedirectResponse(_portal_url(practitioner_id, "hours"), status_code=303)
    return await _portal(
        request,
        principal,
        session,
        practitioner_id,
        extra={"week": typed, "week_errors": errors},
        status_code=422,
    )


@router.post("/portal/{practitioner_id}/overrides")
async def add_override(
    request: Request, practitioner_id: uuid.UUID, principal: ScheduleEditor, session: SessionDep
) -> Response:
    form = await request.form()
    values = {name: _text(form, name) for name in ("date", "kind", "start_time", "end_time", "reason")}
    errors: dict[str, str] = {}
    kind = values["kind"] or "closed"
    timed = kind in ("closed_hours", "extra")
    try:
        data = OverrideCreate(
            date=values["date"],
            start_time=(values["start_time"] or None) if timed else None,
            end_time=(values["end_time"] or None) if timed else None,
            is_available=kind == "extra",
            reason=values["reason"],
        )
    except ValidationError as error:
        errors = service.field_errors(error)
        if "is_available" in errors:
            errors["start_time"] = errors.pop("is_available")
    if not errors:
        try:
            await booking_service.add_override(session, principal, practitioner_id, data)
        except ClinicSyncError as error:
            await session.rollback()
            field, reason = service.domain_error_field(error)
            errors[field if field in values else "form"] = reason
        else:
            return RedirectResponse(_portal_url(practitioner_id, "override"), status_code=303)
    return await _portal(
        request,
        principal,
        session,
        practitioner_id,
        extra={"override_values": values, "override_errors": errors},
        status_code=422,
    )


@router.post("/portal/{practitioner_id}/overrides/{override_id}/delete")
async def delete_override(
    practitioner_id: uuid.UUID, override_id: uuid.UUID, principal: ScheduleEditor, session: SessionDep
) -> Response:
    await booking_service.delete_override(session, principal, practitioner_id, override_id)
    return RedirectResponse(_portal_url(practitioner_id, "override-removed"), status_code=303)


# --- week view ------------------------------------------------------------------------------------------

FIRST_HOUR, LAST_HOUR = 7, 20


@router.get("/diary")
async def week_view(
    request: Request,
    principal: DiaryViewer,
    session: SessionDep,
    practitioner_id: str | None = None,
    week: str | None = None,
) -> HTMLResponse:
    chosen = await _chosen_practitioner(session, principal, practitioner_id)
    zone = await service.clinic_zone(session, principal)
    anchor = _parse_date(week) or service.today_in(zone)
    monday = anchor - timedelta(days=anchor.weekday())
    entries = await service.diary(session, principal, chosen, monday, 7, zone) if chosen else []
    blocks = []
    for entry in entries:
        start_minutes = entry.local_start.hour * 60 + entry.local_start.minute
        end_minutes = entry.local_end.hour * 60 + entry.local_end.minute
        if entry.local_end.date() != entry.local_start.date():
            end_minutes = LAST_HOUR * 60
        first_row = max(0, (start_minutes - FIRST_HOUR * 60) // 15)
        last_row = max(
            first_row + 1, min((LAST_HOUR - FIRST_HOUR) * 4, -(-(end_minutes - FIRST_HOUR * 60) // 15))
        )
        blocks.append(
            {
                "entry": entry,
                "column": entry.local_start.weekday() + 2,
                "row": first_row + 2,
                "span": last_row - first_row,
            }
        )
    people = [] if principal.role == Role.PRACTITIONER else await service.practitioners(session, principal)
    return render(
        request,
        "diary.html",
        {
            "practitioners": people,
            "practitioner_id": chosen,
            "monday": monday,
            "days": [monday + timedelta(days=offset) for offset in range(7)],
            "hours": list(range(FIRST_HOUR, LAST_HOUR)),
            "blocks": blocks,
            "zone": zone,
            "previous_week": monday - timedelta(days=7),
            "next_week": monday + timedelta(days=7),
            "first_hour": FIRST_HOUR,
            "time": time,
        },
        principal=principal,
    )


__all__ = ["csrf_token_for", "router"]

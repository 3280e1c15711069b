"""Admin pages: practitioners, users and roles, PMS API keys with a Test button."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from clinicsync.booking import appointments
from clinicsync.booking import service as booking_service
from clinicsync.booking.models import ACTIVE_STATUSES
from clinicsync.booking.schemas import PractitionerCreate, PractitionerUpdate
from clinicsync.db.base import utcnow
from clinicsync.deps import SessionDep, writes_in_own_transactions
from clinicsync.errors import ClinicSyncError, Forbidden
from clinicsync.integrations import service as integrations_service
from clinicsync.integrations.credentials import cipher_for
from clinicsync.integrations.executor import IntegrationExecutor
from clinicsync.integrations.schemas import CredentialCreate
from clinicsync.tenancy import permissions
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal
from clinicsync.tenancy.schemas import UserCreate
from clinicsync.web import service
from clinicsync.web.render import render
from clinicsync.web.session import Page

router = APIRouter(prefix="/admin", include_in_schema=False)

PractitionerAdmin = Annotated[Principal, Page(Capability.PRACTITIONERS_MANAGE)]
UserAdmin = Annotated[Principal, Page(Capability.USERS_MANAGE)]
KeyAdmin = Annotated[Principal, Page(Capability.CREDENTIALS_MANAGE)]

PRACTITIONER_FIELDS = ("name", "email", "title", "specialty", "phone")


def _form_values(form: Any, names: tuple[str, ...]) -> dict[str, str]:
    return {
        name: (form.get(name) or "").strip() if isinstance(form.get(name), str | None) else ""
        for name in names
    }


# --- practitioners ------------------------------------------------------------------------------------


async def _practitioners_page(
    request: Request,
    principal: Principal,
    session: SessionDep,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    people = await booking_service.list_practitioners(session, principal)
    return render(
        request,
        "admin_practitioners.html",
        {
            "people": people,
            "values": values or {},
            "errors": errors or {},
            "done": request.query_params.get("done"),
        },
        principal=principal,
        status_code=status_code,
    )


@router.get("/practitioners")
async def practitioners(request: Request, principal: PractitionerAdmin, session: SessionDep) -> HTMLResponse:
    return await _practitioners_page(request, principal, session)


def _optional(values: dict[str, str]) -> dict[str, Any]:
    return {name: (value or None) if name in ("email", "phone") else value for name, value in values.items()}


@router.post("/practitioners")
async def add_practitioner(request: Request, principal: PractitionerAdmin, session: SessionDep) -> Response:
    values = _form_values(await request.form(), PRACTITIONER_FIELDS)
    try:
        data = PractitionerCreate(**_optional(values))
        await booking_service.create_practitioner(session, principal, data)
    except ValidationError as error:
        return await _practitioners_page(
            request, principal, session, values=values, errors=service.field_errors(error), status_code=422
        )
    except ClinicSyncError as error:
        await session.rollback()
        field, reason = service.domain_error_field(error)
        errors = {field if field in values else "form": reason}
        return await _practitioners_page(
            request, principal, session, values=values, errors=errors, status_code=422
        )
    return RedirectResponse("/admin/practitioners?done=added", status_code=303)


async def _future_appointments(session: SessionDep, principal: Principal, practitioner_id: uuid.UUID) -> int:
    _items, total, _next = await appointments.list_appointments(
        session,
        principal,
        practitioner_id=practitioner_id,
        statuses=list(ACTIVE_STATUSES),
        starts_from=utcnow(),
        limit=1,
    )
    return total or 0


async def _edit_page(
    request: Request,
    principal: Principal,
    session: SessionDep,
    practitioner_id: uuid.UUID,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    person = await booking_service.get_practitioner(session, principal, practitioner_id)
    current = {name: getattr(person, name) or "" for name in PRACTITIONER_FIELDS}
    return render(
        request,
        "admin_practitioner.html",
        {
            "person": person,
            "values": values or current,
            "errors": errors or {},
            "future": await _future_appointments(session, principal, practitioner_id),
        },
        principal=principal,
        status_code=status_code,
    )


@router.get("/practitioners/{practitioner_id}")
async def edit_practitioner(
    request: Request, practitioner_id: uuid.UUID, principal: PractitionerAdmin, session: SessionDep
) -> HTMLResponse:
    return await _edit_page(request, principal, session, practitioner_id)


@router.post("/practitioners/{practitioner_id}")
async def save_practitioner(
    request: Request, practitioner_id: uuid.UUID, principal: PractitionerAdmin, session: SessionDep
) -> Response:
    values = _form_values(await request.form(), PRACTITIONER_FIELDS)
    try:
        data = PractitionerUpdate(**_optional(values))
        await booking_service.update_practitioner(session, principal, practitioner_id, data)
    except ValidationError as error:
        errors = service.field_errors(error)
        return await _edit_page(
            request, principal, session, practitioner_id, values=values, errors=errors, status_code=422
        )
    except ClinicSyncError as error:
        await session.rollback()
        field, reason = service.domain_error_field(error)
        errors = {field if field in values else "form": reason}
        return await _edit_page(
            request, principal, session, practitioner_id, values=values, errors=errors, status_code=422
        )
    return RedirectResponse("/admin/practitioners?done=saved", status_code=303)


@router.post("/practitioners/{practitioner_id}/delete")
async def delete_practitioner(
    request: Request, practitioner_id: uuid.UUID, principal: PractitionerAdmin, session: SessionDep
) -> Response:
    form = await request.form()
    if form.get("confirm") != "yes":
        return await _edit_page(
            request,
            principal,
            session,
            practitioner_id,
            errors={"confirm": "tick the box to confirm"},
            status_code=422,
        )
    removed = await booking_service.remove_practitioner(session, principal, practitioner_id)
    return RedirectResponse(
        f"/admin/practitioners?done=removed&cancelled={removed.cancelled_appointments}", status_code=303
    )


# --- users and roles ----------------------------------------------------------------------------------

USER_FIELDS = ("email", "full_name", "role", "password")


async def _users_page(
    request: Request,
    principal: Principal,
    session: SessionDep,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    users = await tenancy_service.list_users(session, principal)
    roles = [role for role in Role if permissions.outranks_or_equals(principal.role, role)]
    return render(
        request,
        "admin_users.html",
        {
            "users": users,
            "roles": roles,
            "descriptions": ROLE_DESCRIPTIONS,
            "values": values or {"role": Role.STAFF.value},
            "errors": errors or {},
            "done": request.query_params.get("done"),
        },
        principal=principal,
        status_code=status_code,
    )


ROLE_DESCRIPTIONS = {
    Role.OWNER: "everything, including other owners",
    Role.ADMIN: "practitioners, users, settings, PMS connections",
    Role.STAFF: "front desk: books and changes any appointment",
    Role.PRACTITIONER: "their own diary and hours",
    Role.SERVICE: "a chatbot or voice agent: books, sees what it booked",
}


@router.get("/users")
async def users(request: Request, principal: UserAdmin, session: SessionDep) -> HTMLResponse:
    return await _users_page(request, principal, session)


@router.post("/users")
async def add_user(request: Request, principal: UserAdmin, session: SessionDep) -> Response:
    values = _form_values(await request.form(), USER_FIELDS)
    try:
        data = UserCreate(
            email=values["email"],
            full_name=values["full_name"],
            role=values["role"],
            password=values["password"] or None,
        )
        if not permissions.outranks_or_equals(principal.role, data.role):
            raise Forbidden(f"role: your role may not create a user with the role {data.role.value}")
        await tenancy_service.create_user(session, principal.organization_id, data)
    except ValidationError as error:
        values.pop("password")
        return await _users_page(
            request, principal, session, values=values, errors=service.field_errors(error), status_code=422
        )
    except ClinicSyncError as error:
        await session.rollback()
        values.pop("password")
        field, reason = service.domain_error_field(error)
        errors = {field if field in USER_FIELDS else "form": reason}
        return await _users_page(request, principal, session, values=values, errors=errors, status_code=422)
    return RedirectResponse("/admin/users?done=added", status_code=303)


@router.post("/users/{user_id}/deactivate")
async def deactivate_user(user_id: uuid.UUID, principal: UserAdmin, session: SessionDep) -> Response:
    user = await tenancy_service.get_user(session, principal, user_id)
    if user.id == principal.user_id:
        raise Forbidden("you cannot deactivate your own login here")
    if not permissions.outranks_or_equals(principal.role, user.role):
        raise Forbidden(f"your role may not deactivate a user with the role {user.role.value}")
    await tenancy_service.deactivate_user(session, user)
    return RedirectResponse("/admin/users?done=deactivated", status_code=303)


# --- API keys -------------------------------------------------------------------------------------------

KEY_FIELDS = ("provider_key", "label", "secret_name", "secret_value")


async def _keys_page(
    request: Request,
    principal: Principal,
    session: SessionDep,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    tested: dict[str, Any] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    credentials = await integrations_service.list_credentials(session, principal.organization_id)
    providers = sorted(
        {
            row.provider_key
            for row in await integrations_service.list_integrations(session, principal.organization_id)
        }
    )
    return render(
        request,
        "admin_keys.html",
        {
            "credentials": credentials,
            "providers": providers,
            "values": values or {"secret_name": "api_key"},
            "errors": errors or {},
            "tested": tested,
            "done": request.query_params.get("done"),
        },
        principal=principal,
        status_code=status_code,
    )


@router.get("/keys")
async def keys(request: Request, principal: KeyAdmin, session: SessionDep) -> HTMLResponse:
    return await _keys_page(request, principal, session)


@router.post("/keys")
async def add_key(request: Request, principal: KeyAdmin, session: SessionDep) -> Response:
    values = _form_values(await request.form(), KEY_FIELDS)
    shown = {**values, "secret_value": ""}
    errors: dict[str, str] = {}
    if not values["secret_value"]:
        errors["secret_value"] = "enter the secret"
    if not values["secret_name"]:
        errors["secret_name"] = "name the secret, e.g. api_key"
    if not errors:
        try:
            data = CredentialCreate(
                provider_key=values["provider_key"],
                label=values["label"],
                secrets={values["secret_name"]: values["secret_value"]},
            )
            await integrations_service.create_credential(
                session, principal.organization_id, data, cipher_for(request.app.state.settings)
            )
        except ValidationError as error:
            errors = service.field_errors(error)
        except ClinicSyncError as error:
            await session.rollback()
            field, reason = service.domain_error_field(error)
            errors = {field if field in values else "form": reason}
    if errors:
        return await _keys_page(request, principal, session, values=shown, errors=errors, status_code=422)
    return RedirectResponse("/admin/keys?done=added", status_code=303)


@router.post("/keys/{credential_id}/test", dependencies=[Depends(writes_in_own_transactions)])
async def test_key(
    request: Request, credential_id: uuid.UUID, principal: KeyAdmin, session: SessionDep
) -> HTMLResponse:
    executor = IntegrationExecutor(request.app.state.sessionmaker, request.app.state.settings)
    outcome = await executor.test_credential(principal.organization_id, credential_id)
    tested = {
        "id": credential_id,
        "success": outcome.success,
        "latency_ms": outcome.latency_ms,
        "error": outcome.error,
        "code": outcome.code,
    }
    return await _keys_page(request, principal, session, tested=tested)

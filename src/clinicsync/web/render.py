"""Rendering pages: the template environment and HTML answers to errors a browser meets."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates

from clinicsync.errors import ClinicSyncError
from clinicsync.tenancy.models import ADMIN_ROLES, Role
from clinicsync.tenancy.principal import Principal

LOGIN_CSRF_COOKIE = "clinicsync_login_csrf"

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")


def _local_time(value: Any, zone: ZoneInfo | None = None, fmt: str = "%H:%M") -> str:
    return str(value.astimezone(zone).strftime(fmt) if zone else value.strftime(fmt))


TEMPLATES.env.filters["local"] = _local_time


def navigation(principal: Principal | None) -> list[tuple[str, str]]:
    if principal is None:
        return []
    links: list[tuple[str, str]] = []
    if principal.role in (*ADMIN_ROLES, Role.STAFF, Role.SERVICE):
        links.append(("/book", "Book"))
    if principal.role in (*ADMIN_ROLES, Role.STAFF, Role.PRACTITIONER):
        links += [("/portal", "Portal"), ("/diary", "Week")]
    if principal.role in ADMIN_ROLES:
        links += [
            ("/admin/practitioners", "Practitioners"),
            ("/admin/users", "Users"),
            ("/admin/keys", "API keys"),
            ("/admin/sync", "Sync"),
        ]
    return links


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    principal: Principal | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    values = {
        "csrf_token": getattr(request.state, "csrf_token", ""),
        "principal": principal,
        "nav": navigation(principal),
        "path": request.url.path,
        **context,
    }
    return TEMPLATES.TemplateResponse(request, template, values, status_code=status_code)


def login_page(
    request: Request,
    *,
    next_path: str = "/",
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The sign-in form, with a fresh login CSRF token in the form and in a cookie (double submit:
    there is no session yet to derive one from)."""
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        {"next": next_path, "values": values or {}, "errors": errors or {}, "login_csrf": token},
        status_code=status_code,
    )
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login")
    return response


def wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api") and "text/html" in request.headers.get("accept", "")


def install_page_errors(app: FastAPI) -> None:
    """Browsers asking for a page get a page back for 401 (the sign-in form) and other domain
    errors; API clients keep the JSON error shape."""

    @app.exception_handler(ClinicSyncError)
    async def _domain_error(request: Request, exc: ClinicSyncError) -> Response:
        if not wants_html(request):
            return JSONResponse(status_code=exc.status_code, content=exc.to_body(), headers=exc.headers)
        if exc.status_code == 401:
            return login_page(request, next_path=request.url.path, status_code=401)
        return render(request, "error.html", {"error": exc}, status_code=exc.status_code)

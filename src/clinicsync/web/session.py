"""Who is looking at a page: the session cookie, its CSRF token, and the page permission check.

Signing in issues an ordinary login token (tenancy) and keeps it in an HttpOnly, SameSite=Lax
cookie; API callers keep sending it as a bearer token instead. Every form carries a CSRF token
derived from the session (HMAC of a constant under the session's own secret), so there is nothing
to store, and a forged cross-site post can't know it. Requests that carry a bearer token are not
exposed to CSRF (no browser adds that header by itself) and skip the check.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any

from fastapi import Depends, Request, Response

from clinicsync.deps import SESSION_COOKIE, Authorize, SessionDep
from clinicsync.errors import ClinicSyncError, Unauthorized
from clinicsync.realtime.hooks import set_actor
from clinicsync.tenancy import permissions
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class CsrfRefused(ClinicSyncError):
    status_code = 403
    code = "csrf_failed"


def csrf_token_for(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"clinicsync-csrf", hashlib.sha256).hexdigest()


async def submitted_csrf(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def check_csrf(request: Request, expected: str) -> None:
    given = await submitted_csrf(request)
    if not given or not hmac.compare_digest(given, expected):
        raise CsrfRefused(
            "the form's security token is missing or out of date; reload the page and try again"
        )


class PageAuthorize(Authorize):
    """``Requires(capability)`` for pages: the session cookie (or a bearer token), the permission
    table, and on unsafe methods the CSRF token of a cookie session."""

    async def __call__(self, request: Request, session: SessionDep) -> Principal:  # type: ignore[override]
        authorization = request.headers.get("authorization")
        cookie = request.cookies.get(SESSION_COOKIE)
        if authorization:
            scheme, _, raw = authorization.partition(" ")
            if scheme.lower() != "bearer" or not raw.strip():
                raise Unauthorized("Authorization must be: Bearer <token>")
            token, via_cookie = raw.strip(), False
        elif cookie:
            token, via_cookie = cookie, True
        else:
            raise Unauthorized("sign in to see this page")
        principal, _stale = await tenancy_service.authenticate(session, token)
        set_actor(session, principal.user_id)
        permissions.check(principal, self.capability)
        if via_cookie and request.method in UNSAFE_METHODS:
            await check_csrf(request, csrf_token_for(token))
        request.state.csrf_token = csrf_token_for(token) if via_cookie else ""
        return principal


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    """Keeps a login token in the session cookie (signing in, or into another organization's account)."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=request.app.state.settings.login_token_hours * 3600,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def via_cookie(request: Request) -> bool:
    """Whether the request's caller is the session cookie (not a bearer token)."""
    return not request.headers.get("authorization") and SESSION_COOKIE in request.cookies


def Page(capability: Capability) -> Any:
    """``principal: Annotated[Principal, Page(Capability.X)]`` on a page route."""
    return Depends(PageAuthorize(capability))


PageViewer = Annotated[Principal, Page(Capability.ACCOUNT_READ)]

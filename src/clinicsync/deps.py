"""FastAPI dependencies shared by every domain's routes: the session and the caller."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.db.engine import session_scope
from clinicsync.errors import Forbidden, Unauthorized
from clinicsync.realtime.hooks import set_actor
from clinicsync.tenancy import permissions
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return sessionmaker


# The marker dependencies below are async on purpose: FastAPI runs a plain ``def`` dependency in a
# worker thread, a thread hop per request for a one-line assignment.
async def writes_in_own_transactions(request: Request) -> None:
    """Route dependency: the route writes only in short transactions of its own (the integration
    executor does, around provider calls), so its request transaction just reads. On SQLite a
    writing request transaction would hold the write lock those inner transactions wait for."""
    request.state.read_only_session = True


async def writes_after_reads(request: Request) -> None:
    """Route dependency: the route's service reads first and calls ``db.engine.begin_writes``
    before its first change, so on SQLite the write lock is held for the writes only and readers
    and other writers are not queued behind the request's reads."""
    request.state.deferred_writes = True


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed when the route returns without error."""
    write = request.method not in READ_METHODS and not getattr(request.state, "read_only_session", False)
    deferred = getattr(request.state, "deferred_writes", False)
    async with session_scope(get_sessionmaker(request), write=write, deferred_writes=deferred) as session:
        yield session


# scope="function": the transaction commits before the response is sent, so a 201 always means
# committed, and a commit failure still reaches the caller as an error response.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def _bearer_principal(session: AsyncSession, authorization: str | None) -> tuple[Principal, bool]:
    if not authorization:
        raise Unauthorized("missing Authorization header (expected: Bearer <token>)")
    scheme, _, raw_token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not raw_token.strip():
        raise Unauthorized("Authorization must be: Bearer <token>")
    principal, stale = await tenancy_service.authenticate(session, raw_token.strip())
    set_actor(session, principal.user_id)
    return principal, stale


SESSION_COOKIE = "clinicsync_session"


async def authenticate_request(request: Request, session: AsyncSession) -> Principal:
    """The caller of a page or of a long-lived read (the event stream): a bearer token, or the
    pages' session cookie (which holds a login token; EventSource can't send headers)."""
    authorization = request.headers.get("authorization")
    cookie = request.cookies.get(SESSION_COOKIE)
    if authorization is None and cookie:
        authorization = f"Bearer {cookie}"
    principal, _stale = await _bearer_principal(session, authorization)
    return principal


# Documents the bearer scheme in OpenAPI (the Authorize button); the header is read below so that
# a missing or malformed one gets our own error shape and message.
bearer = HTTPBearer(auto_error=False, description="An API token: Authorization: Bearer cs_...")


async def get_principal(
    request: Request,
    session: SessionDep,
    background: BackgroundTasks,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_organization_id: Annotated[str | None, Header()] = None,
) -> Principal:
    # The request's own session: one pooled connection per request, so a burst of requests
    # can never hold every connection while each waits for a second one.
    principal, stale = await _bearer_principal(session, authorization)
    if x_organization_id is not None:
        try:
            claimed = uuid.UUID(x_organization_id)
        except ValueError:
            raise Forbidden("X-Organization-ID: not a valid organization id") from None
        if claimed != principal.organization_id:
            raise Forbidden("X-Organization-ID: the token does not belong to this organization")
    # Names the caller in the audit trail of whatever this request changes (sync/audit.py).
    session.info["clinicsync.actor"] = f"user:{principal.user_id}"
    if stale and principal.token_id is not None:
        background.add_task(_touch_token, get_sessionmaker(request), principal.token_id)
    return principal


async def _touch_token(sessionmaker: async_sessionmaker[AsyncSession], token_id: uuid.UUID) -> None:
    """Records token use after the response, outside the request's (possibly read-only) transaction."""
    async with session_scope(sessionmaker) as session:
        await tenancy_service.touch_token(session, token_id)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
"""The authenticated caller, with no permission checked: routes take ``Requires(...)`` instead."""


class Authorize:
    """The dependency behind ``Requires``: authenticates, then checks the role x capability table.

    The permission matrix test finds a route's rule by looking for this class among the route's
    dependencies, so every route's rule is visible without calling it.
    """

    def __init__(self, capability: Capability) -> None:
        self.capability = capability

    async def __call__(self, principal: PrincipalDep) -> Principal:
        permissions.check(principal, self.capability)
        return principal

    def __repr__(self) -> str:
        return f"Requires({self.capability.value})"


def Requires(capability: Capability) -> Any:
    """``principal: Annotated[Principal, Requires(Capability.X)]``: the caller, allowed to do X."""
    return Depends(Authorize(capability))


async def _public() -> None:
    """Marks a route that needs no login (health, login, the API reference)."""


PUBLIC = Depends(_public)
"""``dependencies=[PUBLIC]`` on a route that anyone may call."""


async def _platform() -> None:
    """Marks a route a voice platform calls, authenticated by the platform's channel token or
    request signature (agents/service.py) rather than by a user's token."""


PLATFORM = Depends(_platform)
"""``dependencies=[PLATFORM]`` on a webhook that a voice platform signs; user tokens get 401 there."""

# Owner/admin-only routes that have no capability of their own yet.
AdminDep = Annotated[Principal, Requires(Capability.ADMINISTER)]

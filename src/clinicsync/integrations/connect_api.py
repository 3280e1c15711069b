"""HTTP routes for connecting an integration through the provider's consent page (OAuth2 + PKCE)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import RedirectResponse

from clinicsync.config import Settings
from clinicsync.db.engine import session_scope
from clinicsync.deps import PUBLIC, Requires, get_sessionmaker, writes_in_own_transactions
from clinicsync.edge.openapi import errors
from clinicsync.integrations import oauth
from clinicsync.integrations.credentials import cipher_for
from clinicsync.integrations.outbound import OutboundPolicy
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal

router = APIRouter(tags=["integrations admin"])

# Connecting stores a grant in the integration's credential.
CredentialManager = Annotated[Principal, Requires(Capability.CREDENTIALS_MANAGE)]

CALLBACK_ROUTE = "oauth_callback"


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _consent_url(integration_id: uuid.UUID, principal: Principal, request: Request) -> str:
    # Its own write transaction: Connect is a GET (a link to follow), and a GET's request
    # transaction only reads.
    async with session_scope(get_sessionmaker(request)) as session:
        return await oauth.start_connect(
            session,
            principal.organization_id,
            integration_id,
            redirect_uri=str(request.url_for(CALLBACK_ROUTE)),
            requested_by=principal.user_id,
            cipher=cipher_for(_settings(request)),
        )


@router.get(
    "/api/admin/integrations/{integration_id}/connect",
    status_code=status.HTTP_303_SEE_OTHER,
    dependencies=[Depends(writes_in_own_transactions)],
)
async def connect(
    integration_id: uuid.UUID, principal: CredentialManager, request: Request
) -> RedirectResponse:
    """Connect: send the admin's browser to the provider's consent page."""
    url = await _consent_url(integration_id, principal, request)
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)


@router.post(
    "/api/admin/integrations/{integration_id}/connect", dependencies=[Depends(writes_in_own_transactions)]
)
async def connect_url(
    integration_id: uuid.UUID, principal: CredentialManager, request: Request
) -> dict[str, str]:
    """The consent page's URL, for a page that opens it itself."""
    return {"authorization_url": await _consent_url(integration_id, principal, request)}


@router.get(
    "/api/oauth/callback",
    name=CALLBACK_ROUTE,
    dependencies=[PUBLIC, Depends(writes_in_own_transactions)],
    responses=errors(400),
)
async def callback(
    request: Request,
    state: str | None = None,
    code: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """Where the provider sends the person back. No bearer token: the one-time state is the proof."""
    settings = _settings(request)
    connected = await oauth.finish_connect(
        get_sessionmaker(request),
        cipher_for(settings),
        state=state,
        code=code,
        error=error,
        outbound=OutboundPolicy.from_entries(settings.outbound_allowlist),
    )
    return {
        "connected": True,
        "integration_id": str(connected.integration_id),
        "credential_id": str(connected.credential_id),
    }

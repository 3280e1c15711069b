"""Connecting an integration as a clinic does: the OAuth2 authorization-code grant with PKCE.

1. An admin presses Connect: :func:`start_connect` stores a consent in progress (the SHA-256
   of a random `state`, and the PKCE verifier encrypted) and returns the provider's consent
   URL carrying the state and the verifier's S256 challenge.
2. The person approves at the provider, which sends the browser back to our callback with a
   `code` and the `state`. :func:`finish_connect` spends the state (once, before it expires),
   trades the code and the verifier for tokens, and stores the refresh token encrypted in the
   integration's credential, with the access token it came with; the credential is then
   `connected`, and calls use it at once.

The OAuth client (`client_id`, `client_secret`) is the clinic's or the operator's app, stored
first as the integration's credential; only the grant comes from the consent.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.errors import ClinicSyncError, NotFound, ValidationFailed
from clinicsync.integrations import service
from clinicsync.integrations.auth import AuthStrategy, token_request
from clinicsync.integrations.credentials import SecretCipher, hints
from clinicsync.integrations.definitions import ProviderDefinition
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.models import ApiCredential, OAuthAuthorization
from clinicsync.integrations.outbound import OutboundPolicy
from clinicsync.integrations.runtime import render
from clinicsync.integrations.tokens import CONNECTED
from clinicsync.logging import get_logger

log = get_logger(__name__)

CONSENT_LIFETIME = timedelta(minutes=10)


class ConsentRefused(ClinicSyncError):
    """The callback cannot complete a connection (bad or spent state, refused consent)."""

    status_code = 400
    code = "oauth_consent_failed"


@dataclass
class Connected:
    organization_id: uuid.UUID
    integration_id: uuid.UUID
    credential_id: uuid.UUID


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: base64url(SHA-256(verifier)) without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _connectable(definition: ProviderDefinition) -> None:
    auth = definition.auth
    if auth.type != "oauth2_refresh_token" or not auth.authorization_url:
        raise ValidationFailed(
            "auth.authorization_url",
            f"{definition.key!r} is not connected through a consent page"
            " (it needs auth type oauth2_refresh_token with an authorization_url)",
        )


async def _client_credential(
    session: AsyncSession, organization_id: uuid.UUID, integration_id: uuid.UUID, provider_key: str
) -> ApiCredential:
    row = await service.get_integration(session, organization_id, integration_id, writable=True)
    credential = await service.credential_for(session, organization_id, row)
    if credential is None:
        raise ValidationFailed(
            "credential",
            f"store the OAuth client first: a {provider_key!r} credential with client_id and"
            " client_secret for this integration",
        )
    return credential


async def start_connect(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    *,
    redirect_uri: str,
    requested_by: uuid.UUID | None,
    cipher: SecretCipher,
) -> str:
    """Record a consent in progress and return the provider's consent URL to send the person to."""
    row = await service.get_integration(session, organization_id, integration_id, writable=True)
    definition = await service.build_definition(session, row)
    _connectable(definition)
    credential = await _client_credential(session, organization_id, integration_id, row.provider_key)
    client_id = cipher.decrypt(credential.secret_ciphertext).get(definition.auth.client_id_field)
    if not client_id:
        raise ValidationFailed(
            "credential.secrets",
            f"the credential has no {definition.auth.client_id_field!r} of the OAuth client",
        )
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)  # 86 characters, inside RFC 7636's 43-128
    session.add(
        OAuthAuthorization(
            id=uuid.uuid4(),
            organization_id=organization_id,
            integration_id=row.id,
            credential_id=credential.id,
            state_hash=_digest(state),
            verifier_ciphertext=cipher.encrypt({"verifier": verifier}),
            redirect_uri=redirect_uri,
            requested_by=requested_by,
            expires_at=utcnow() + CONSENT_LIFETIME,
        )
    )
    await session.flush()
    auth = definition.auth
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
        **({"scope": auth.scope} if auth.scope else {}),
        **auth.authorization_params,
    }
    consent = render(auth.authorization_url or "", definition.settings)
    log.info("oauth consent started", integration_id=str(row.id))
    return f"{consent}{'&' if '?' in consent else '?'}{urlencode(query)}"


async def finish_connect(
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: SecretCipher,
    *,
    state: str | None,
    code: str | None,
    error: str | None,
    outbound: OutboundPolicy | None = None,
) -> Connected:
    """Spend the state, trade the code for tokens and store the grant; refusals name the reason."""
    if not state:
        raise ConsentRefused("the callback carries no state; start again with Connect")
    async with session_scope(sessionmaker) as session:
        pending = (
            await session.scalars(
                select(OAuthAuthorization)
                .where(OAuthAuthorization.state_hash == _digest(state))
                .with_for_update()
            )
        ).first()
        if pending is None or pending.used_at is not None:
            raise ConsentRefused("this consent link is unknown or was already used; start again with Connect")
        # Spent now, whatever follows (committed even when refused): a state answers once.
        pending.used_at = utcnow()
        refusal = None
        if pending.expires_at < pending.used_at:
            refusal = "the consent took too long and expired; start again with Connect"
        elif error:
            refusal = f"the provider did not grant access ({error[:100]})"
        elif not code:
            refusal = "the callback carries no authorization code"
    if refusal is not None or not code:
        raise ConsentRefused(refusal or "the callback carries no authorization code")
    async with session_scope(sessionmaker) as session:
        pending = await session.get(OAuthAuthorization, pending.id)
        assert pending is not None
        credential = await session.get(ApiCredential, pending.credential_id)
        integration = await service.get_integration(session, pending.organization_id, pending.integration_id)
        if credential is None:
            raise NotFound("the integration's credential was removed while consent was given")
        definition = await service.build_definition(session, integration)
        client_secrets = cipher.decrypt(credential.secret_ciphertext)
        verifier = cipher.decrypt(pending.verifier_ciphertext)["verifier"]
        redirect_uri = pending.redirect_uri
        connected = Connected(pending.organization_id, pending.integration_id, credential.id)
        base_url = render(integration.base_url or definition.base_url, definition.settings)
    # The state is spent and committed before the provider is asked, so a replayed callback
    # cannot trade the same code twice.
    token_url = AuthStrategy(definition.auth, client_secrets, base_url).absolute(
        definition.auth.token_url or ""
    )
    # The token endpoint is held to the same outbound policy as every provider call.
    transport = outbound.transport() if outbound is not None else None
    async with httpx.AsyncClient(timeout=definition.timeout_seconds, transport=transport) as client:
        try:
            granted = await token_request(
                client,
                definition.auth,
                client_secrets,
                token_url,
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "code_verifier": verifier,
                },
            )
        except IntegrationError as exc:
            raise ConsentRefused(f"the provider would not complete the connection: {exc.message}") from None
    if not granted.refresh_token:
        raise ConsentRefused(
            "the provider granted no refresh token (offline access was not given); start again with Connect"
        )
    async with session_scope(sessionmaker) as session:
        row = await session.get(ApiCredential, connected.credential_id, with_for_update=True)
        if row is None:
            raise NotFound("the integration's credential was removed while consent was given")
        stored = cipher.decrypt(row.secret_ciphertext)
        stored[definition.auth.refresh_token_field] = granted.refresh_token
        now = utcnow()
        row.secret_ciphertext = cipher.encrypt(stored)
        row.secret_hints = hints(stored)
        # A new grant: runtimes built on the old secrets are replaced at their next call.
        row.secret_version += 1
        row.access_token_ciphertext = cipher.encrypt({"access_token": granted.access_token})
        row.access_token_expires_at = now + timedelta(seconds=granted.expires_in)
        row.refresh_lease_until = None
        row.grant_status = CONNECTED
        row.grant_error = None
        row.last_test_ok = None
    log.info("oauth connected", integration_id=str(connected.integration_id))
    return connected

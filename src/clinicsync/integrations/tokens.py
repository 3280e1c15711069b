"""One access token per OAuth grant, shared by every process, refreshed by one at a time.

A refresh token may rotate: the provider answers a refresh with a new refresh token and the
old one stops working. Two processes that refreshed at once would each spend the same
refresh token, and the loser would read the grant as revoked; a process that refreshed and
lost the answer before storing it would lose the grant. So the credential row holds the
current access token (encrypted) and a lease: a process whose token is stale takes the lease
in a short transaction, asks the token endpoint without holding a database lock, and stores
the new access token and the rotated refresh token together, in one transaction, before it
uses either. Everyone else waits for the lease and then takes the token it stored.

An ``invalid_grant`` answer means the person's consent is gone (revoked in their account,
or expired): the credential is marked ``reconnect_required`` and calls fail at once with a
message saying to reconnect, until someone connects again.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.integrations.auth import TokenGrant
from clinicsync.integrations.credentials import SecretCipher, hints
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.models import ApiCredential
from clinicsync.logging import get_logger

log = get_logger(__name__)

CONNECTED = "connected"
RECONNECT_REQUIRED = "reconnect_required"
# An access token this close to expiry is not handed out: it could expire on the way.
EXPIRY_MARGIN = timedelta(seconds=30)


def reconnect_error(credential_id: uuid.UUID, reason: str | None) -> IntegrationError:
    return IntegrationError(
        "auth_failed",
        "the provider no longer accepts this connection"
        + (f" ({reason})" if reason else "")
        + "; an admin must reconnect it (Connect on the integration)",
        details={"reconnect": True, "credential_id": str(credential_id)},
    )


class CredentialTokens:
    """The shared access token of one credential (implements auth.SharedTokens)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        credential_id: uuid.UUID,
        cipher: SecretCipher,
        refresh_token_field: str,
        lease_seconds: float,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.credential_id = credential_id
        self.cipher = cipher
        self.refresh_token_field = refresh_token_field
        self.lease = timedelta(seconds=lease_seconds)

    async def _row(self, session: AsyncSession) -> ApiCredential:
        query = select(ApiCredential).where(ApiCredential.id == self.credential_id).with_for_update()
        row = (await session.scalars(query.execution_options(populate_existing=True))).first()
        if row is None:
            raise IntegrationError("auth_failed", "the credential was removed", request_not_sent=True)
        return row

    def _usable(self, row: ApiCredential, stale: str | None, now: datetime) -> tuple[str, float] | None:
        if row.access_token_ciphertext is None or row.access_token_expires_at is None:
            return None
        if row.access_token_expires_at <= now + EXPIRY_MARGIN:
            return None
        token = self.cipher.decrypt(row.access_token_ciphertext).get("access_token")
        if not token or token == stale:
            return None
        return token, row.access_token_expires_at.timestamp()

    async def obtain(
        self, stale: str | None, grant: Callable[[str], Awaitable[TokenGrant]]
    ) -> tuple[str, float]:
        """A usable access token (never `stale`), refreshing it if no other process is."""
        deadline = time.monotonic() + 3 * self.lease.total_seconds()
        while True:
            async with session_scope(self.sessionmaker) as session:
                row = await self._row(session)
                if row.grant_status == RECONNECT_REQUIRED:
                    raise reconnect_error(row.id, row.grant_error)
                now = utcnow()
                usable = self._usable(row, stale, now)
                if usable is not None:
                    return usable
                if row.refresh_lease_until is None or row.refresh_lease_until <= now:
                    row.refresh_lease_until = now + self.lease
                    refresh_token = self.cipher.decrypt(row.secret_ciphertext).get(self.refresh_token_field)
                    break
            if time.monotonic() > deadline:
                raise IntegrationError(
                    "timeout",
                    "another process has been renewing the access token too long",
                    request_not_sent=True,
                )
            await asyncio.sleep(random.uniform(0.05, 0.15))
        if not refresh_token:
            await self._release()
            raise reconnect_error(self.credential_id, "no refresh token is stored; connect first")
        try:
            granted = await grant(refresh_token)
        except IntegrationError as exc:
            revoked = isinstance(exc.details, dict) and exc.details.get("oauth_error") == "invalid_grant"
            await self._release(revoked=exc.provider_message or exc.message if revoked else None)
            if revoked:
                raise reconnect_error(self.credential_id, exc.provider_message) from None
            raise
        except BaseException:
            await self._release()
            raise
        return await self._store(granted)

    async def _release(self, revoked: str | None = None) -> None:
        async with session_scope(self.sessionmaker) as session:
            row = await self._row(session)
            row.refresh_lease_until = None
            if revoked is not None:
                row.grant_status = RECONNECT_REQUIRED
                row.grant_error = revoked[:500]
                row.access_token_ciphertext = None
                row.access_token_expires_at = None
                log.warning("oauth grant revoked; reconnect required", credential_id=str(row.id))

    async def _store(self, granted: TokenGrant) -> tuple[str, float]:
        # The rotated refresh token and the access token it bought are stored in one step,
        # before either is used: a crash after this loses nothing.
        async with session_scope(self.sessionmaker) as session:
            row = await self._row(session)
            now = utcnow()
            expires_at = now + timedelta(seconds=granted.expires_in)
            if granted.refresh_token:
                secrets = self.cipher.decrypt(row.secret_ciphertext)
                secrets[self.refresh_token_field] = granted.refresh_token
                row.secret_ciphertext = self.cipher.encrypt(secrets)
                row.secret_hints = hints(secrets)
            row.access_token_ciphertext = self.cipher.encrypt({"access_token": granted.access_token})
            row.access_token_expires_at = expires_at
            row.refresh_lease_until = None
            row.refreshed_at = now
            row.refresh_count += 1
            row.grant_status = CONNECTED
            row.grant_error = None
        log.info("oauth access token refreshed", credential_id=str(self.credential_id))
        return granted.access_token, expires_at.timestamp()

"""IntegrationExecutor: run a provider function for an organization, configured from the database.

The executor reads the organization's integration (and its catalogue provider), builds or
reuses the cached definition (keyed by both rows' revisions, so an admin change is seen
at the next call, in every process), decrypts the credential, and hands the call to
:class:`~clinicsync.integrations.runtime.ProviderCaller`. Database work happens in short
transactions of its own: no transaction is held open while a provider is being called.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.config import Settings
from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.errors import Conflict, NotFound, ValidationFailed
from clinicsync.integrations import service
from clinicsync.integrations.credentials import SecretCipher, cipher_for
from clinicsync.integrations.definitions import ProviderDefinition
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.models import ApiCredential, ExternalIntegration
from clinicsync.integrations.outbound import CredentialHostMismatch, OutboundPolicy, origin
from clinicsync.integrations.ratebudget import DatabaseBudget, Priority, shared_budget
from clinicsync.integrations.runtime import (
    CallResult,
    ProviderCaller,
    ResolvedIntegration,
    peek_runtime,
    render,
)
from clinicsync.integrations.tokens import CredentialTokens
from clinicsync.logging import get_logger
from clinicsync.tenancy.models import Organization

log = get_logger(__name__)

# What a call addresses: an integration's id (always unambiguous), or a provider key, which
# names an integration only while the organization has one of that provider.
Target = uuid.UUID | str

_definitions: dict[uuid.UUID, tuple[tuple[int, int | None], ProviderDefinition]] = {}


@dataclass
class Resolution:
    integration: ExternalIntegration
    credential: ApiCredential | None
    resolved: ResolvedIntegration


@dataclass
class RecordStream:
    """A function's records, fetched a page at a time as they are consumed."""

    resolution: Resolution
    result: CallResult  # pages and status code so far; its records list stays empty
    pages: AsyncGenerator[list[dict[str, Any]], None]


@dataclass
class CredentialTest:
    success: bool
    latency_ms: int
    function: str
    error: str | None = None
    code: str | None = None


class IntegrationExecutor:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        caller: ProviderCaller | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.caller = caller or ProviderCaller()

    @property
    def cipher(self) -> SecretCipher:
        return cipher_for(self.settings)

    # ---- resolution -----------------------------------------------------------------

    async def _definition(self, session: AsyncSession, row: ExternalIntegration) -> ProviderDefinition:
        catalogue_revision: int | None = None
        if row.catalogue_id is not None:
            catalogue = await session.get(ExternalIntegration, row.catalogue_id)
            catalogue_revision = catalogue.revision if catalogue else None
        version = (row.revision, catalogue_revision)
        cached = _definitions.get(row.id)
        if cached is not None and cached[0] == version:
            return cached[1]
        definition = await service.build_definition(session, row)
        _definitions[row.id] = (version, definition)
        return definition

    async def find_integration(
        self,
        session: AsyncSession,
        organization_id: uuid.UUID,
        target: Target,
        location: str | None = None,
    ) -> ExternalIntegration:
        """The organization's integration named by id, or by provider key (and location)."""
        integration_id = as_integration_id(target)
        if integration_id is not None:
            row = await session.get(ExternalIntegration, integration_id)
            if row is None or row.organization_id != organization_id:
                raise NotFound(f"integration {integration_id} not found")
            if location is not None and row.location_label != location:
                raise ValidationFailed(
                    "location", f"integration {integration_id} is at {row.location_label!r}, not {location!r}"
                )
            return row
        provider_key = str(target)
        query = select(ExternalIntegration).where(
            ExternalIntegration.organization_id == organization_id,
            ExternalIntegration.provider_key == provider_key,
        )
        if location is not None:
            query = query.where(ExternalIntegration.location_label == location)
        rows = list((await session.scalars(query.order_by(ExternalIntegration.location_label))).all())
        if not rows:
            where = f" at location {location!r}" if location is not None else ""
            raise NotFound(f"no {provider_key!r} integration is configured for this organization{where}")
        if len(rows) > 1:
            labels = ", ".join(repr(row.location_label) for row in rows)
            raise ValidationFailed(
                "location",
                f"{provider_key!r} is configured at several locations ({labels}); say which,"
                " or address the integration by its id",
            )
        return rows[0]

    async def _resolve_row(
        self,
        session: AsyncSession,
        organization_id: uuid.UUID,
        row: ExternalIntegration,
        credential: ApiCredential | None,
        definition: ProviderDefinition,
    ) -> ResolvedIntegration:
        secrets = self.cipher.decrypt(credential.secret_ciphertext) if credential is not None else {}
        settings = dict(definition.settings)
        if settings.get("timezone") is None:
            organization = await session.get(Organization, organization_id)
            settings["timezone"] = organization.time_zone if organization else "UTC"
        credential_id = credential.id if credential is not None else None
        definition_version = _definitions.get(row.id, ((row.revision, None), definition))[0]
        secret_version = credential.secret_version if credential else 0
        revision = f"{definition_version}:{credential_id}:{secret_version}"
        if credential is not None and credential.bound_host is not None:
            target = origin(render(definition.base_url, settings))
            if target != credential.bound_host:
                # Never send a stored secret anywhere but where it was entered for.
                raise CredentialHostMismatch(
                    f"the integration now points at {target}, but its credential's secrets were entered "
                    f"for {credential.bound_host}; enter the secrets again to use them there",
                    details={"credential_id": str(credential.id), "base_url_origin": target},
                )
        return ResolvedIntegration(
            key=str(row.id),
            revision=revision,
            definition=definition,
            settings=settings,
            secrets=secrets,
            on_secret_update=self._secret_updater(credential_id) if credential_id else None,
            outbound=OutboundPolicy.from_entries(self.settings.outbound_allowlist),
            budget=(
                shared_budget(self.sessionmaker, row.id, definition.rate_limit)
                if definition.rate_limit is not None and row.organization_id is not None
                else None
            ),
            shared_tokens=(
                CredentialTokens(
                    self.sessionmaker,
                    credential.id,
                    self.cipher,
                    definition.auth.refresh_token_field,
                    lease_seconds=definition.timeout_seconds + 5,
                )
                if credential is not None and definition.auth.type == "oauth2_refresh_token"
                else None
            ),
        )

    async def resolve(
        self, organization_id: uuid.UUID, target: Target, location: str | None = None
    ) -> Resolution:
        async with session_scope(self.sessionmaker, write=False) as session:
            row = await self.find_integration(session, organization_id, target, location)
            if not row.enabled:
                raise Conflict(
                    f"the {row.provider_key!r} integration is disabled", code="integration_disabled"
                )
            definition = await self._definition(session, row)
            credential = await service.credential_for(session, organization_id, row)
            resolved = await self._resolve_row(session, organization_id, row, credential, definition)
        return Resolution(row, credential, resolved)

    async def resolve_id(self, organization_id: uuid.UUID, integration_id: uuid.UUID) -> Resolution:
        """Like :meth:`resolve`, for callers that hold an integration's id (one of several locations)."""
        return await self.resolve(organization_id, integration_id)

    def _secret_updater(self, credential_id: uuid.UUID) -> Any:
        async def store(changed: dict[str, str]) -> None:
            # A rotated refresh token must be saved before the old one stops working.
            async with session_scope(self.sessionmaker) as session:
                row = await session.get(ApiCredential, credential_id)
                if row is None:
                    return
                secrets = self.cipher.decrypt(row.secret_ciphertext) | changed
                row.secret_ciphertext = self.cipher.encrypt(secrets)
            log.info("credential secret rotated by provider", credential_id=str(credential_id))

        return store

    async def _touch(self, credential: ApiCredential | None) -> None:
        if credential is None:
            return
        async with session_scope(self.sessionmaker) as session:
            await session.execute(
                update(ApiCredential).where(ApiCredential.id == credential.id).values(last_used_at=utcnow())
            )

    # ---- calls ----------------------------------------------------------------------

    async def execute(
        self,
        organization_id: uuid.UUID,
        target: Target,
        function: str,
        params: dict[str, Any] | None = None,
        *,
        location: str | None = None,
        max_records: int | None = None,
        priority: Priority = Priority.LIVE,
    ) -> tuple[Resolution, CallResult]:
        """Run `function` of the integration `target` (its id, or a provider key).

        `priority` orders callers that share the integration's rate budget: LIVE (a booking
        a person is waiting on) goes before BACKGROUND (a sync run's reads).
        """
        resolution = await self.resolve(organization_id, target, location)
        try:
            result = await self.caller.execute(
                resolution.resolved, function, params, max_records=max_records, priority=priority
            )
        finally:
            await self._touch(resolution.credential)
        return resolution, result

    async def iterate(
        self,
        organization_id: uuid.UUID,
        target: Target,
        function: str,
        params: dict[str, Any] | None = None,
        *,
        location: str | None = None,
        max_records: int | None = None,
        priority: Priority = Priority.BACKGROUND,
    ) -> AsyncIterator[dict[str, Any]]:
        resolution = await self.resolve(organization_id, target, location)
        async with contextlib.aclosing(
            self._pages(resolution, function, params, max_records, priority, None)
        ) as pages:
            async for page in pages:
                for record in page:
                    yield record

    async def stream(
        self,
        organization_id: uuid.UUID,
        target: Target,
        function: str,
        params: dict[str, Any] | None = None,
        *,
        location: str | None = None,
        max_records: int | None = None,
        priority: Priority = Priority.LIVE,
    ) -> RecordStream:
        """The records a page at a time, for a caller that passes each page on as it comes (the
        HTTP route streams them): resolution errors are raised here, and `result.pages` counts
        the pages fetched so far."""
        resolution = await self.resolve(organization_id, target, location)
        result = CallResult(function=function, records=[], pages=0, status_code=None)
        pages = self._pages(resolution, function, params, max_records, priority, result)
        return RecordStream(resolution, result, pages)

    async def _pages(
        self,
        resolution: Resolution,
        function: str,
        params: dict[str, Any] | None,
        max_records: int | None,
        priority: Priority,
        result: CallResult | None,
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        produced = 0
        try:
            async with contextlib.aclosing(
                self.caller.pages(resolution.resolved, function, params, priority=priority, result=result)
            ) as pages:
                async for page in pages:
                    if max_records is not None and produced + len(page) >= max_records:
                        yield page[: max_records - produced]
                        return
                    produced += len(page)
                    yield page
        finally:
            await self._touch(resolution.credential)

    async def status(
        self, organization_id: uuid.UUID, target: Target, location: str | None = None
    ) -> dict[str, Any]:
        async with session_scope(self.sessionmaker, write=False) as session:
            row = await self.find_integration(session, organization_id, target, location)
            credential = await service.credential_for(session, organization_id, row)
            try:
                definition: ProviderDefinition | None = await self._definition(session, row)
            except Exception:
                definition = None
        runtime = peek_runtime(str(row.id))
        stats = (
            runtime.status()
            if runtime is not None
            else {
                "last_call_at": None,
                "last_error": None,
                "recent_calls": 0,
                "recent_error_rate": 0.0,
                "rate_limit": (
                    {
                        "limit": definition.rate_limit.requests,
                        "per_seconds": definition.rate_limit.per_seconds,
                        "remaining": definition.rate_limit.requests,
                    }
                    if definition is not None and definition.rate_limit is not None
                    else None
                ),
            }
        )
        needs_credential = definition is not None and definition.auth.type != "none"
        connectable = definition is not None and definition.auth.authorization_url is not None
        connection = (
            (credential.grant_status if credential is not None else None) or "not_connected"
            if connectable
            else None
        )
        budget_status = stats["rate_limit"]
        if definition is not None and definition.rate_limit is not None and isinstance(budget_status, dict):
            budget = shared_budget(self.sessionmaker, row.id, definition.rate_limit)
            if isinstance(budget, DatabaseBudget):
                # Every process draws on the same budget, so what is left is what the database says.
                budget_status["remaining"] = int(await budget.remaining())
        return {
            "provider": row.provider_key,
            "integration_id": row.id,
            "display_name": row.display_name,
            "location_label": row.location_label,
            "configured": definition is not None
            and bool(definition.functions)
            and (credential is not None or not needs_credential),
            "enabled": row.enabled,
            "functions": sorted(definition.functions) if definition else [],
            "credential_present": credential is not None,
            "credential_valid": credential.last_test_ok if credential else None,
            "credential_last_test_at": credential.last_test_at if credential else None,
            "last_call_at": stats["last_call_at"] or (credential.last_used_at if credential else None),
            "last_error": stats["last_error"],
            "connection": connection,
            "recent_calls": stats["recent_calls"],
            "recent_error_rate": stats["recent_error_rate"],
            "rate_limit": stats["rate_limit"],
        }

    # ---- credential test ------------------------------------------------------------

    async def test_credential(self, organization_id: uuid.UUID, credential_id: uuid.UUID) -> CredentialTest:
        """Call the provider's declared test function with this credential and record the outcome."""
        async with session_scope(self.sessionmaker, write=False) as session:
            credential = await service.get_credential(session, organization_id, credential_id)
            row: ExternalIntegration | None = None
            if credential.integration_id is not None:
                row = await session.get(ExternalIntegration, credential.integration_id)
            if row is None:
                candidates = (
                    await session.scalars(
                        select(ExternalIntegration)
                        .where(
                            ExternalIntegration.organization_id == organization_id,
                            ExternalIntegration.provider_key == credential.provider_key,
                        )
                        .order_by(ExternalIntegration.location_label)
                    )
                ).first()
                row = candidates or await service.catalogue_provider(session, credential.provider_key)
            if row is None:
                raise ValidationFailed(
                    "provider_key",
                    f"no provider {credential.provider_key!r} is defined, so nothing can be tested",
                )
            definition = await self._definition(session, row)
            if not definition.test_function:
                raise ValidationFailed(
                    "provider_key",
                    f"{credential.provider_key!r} declares no test_function to check a credential with",
                )
            resolved = await self._resolve_row(session, organization_id, row, credential, definition)
        # A separate runtime, so a test with new secrets never disturbs live traffic.
        resolved.key = f"credential-test:{credential.id}"
        function = definition.test_function
        started = time.perf_counter()
        outcome = CredentialTest(success=True, latency_ms=0, function=function)
        try:
            await self.caller.execute(resolved, function, {}, max_records=1)
        except IntegrationError as exc:
            outcome.success, outcome.error, outcome.code = False, exc.message, exc.code
        except ValidationFailed as exc:
            outcome.success, outcome.error, outcome.code = False, exc.message, exc.code
        outcome.latency_ms = round((time.perf_counter() - started) * 1000)
        async with session_scope(self.sessionmaker) as session:
            stored = await session.get(ApiCredential, credential_id)
            if stored is not None:
                now = utcnow()
                stored.last_test_at = now
                stored.last_test_ok = outcome.success
                stored.last_test_latency_ms = outcome.latency_ms
                stored.last_test_error = outcome.error
                if outcome.success:
                    stored.last_used_at = now
        return outcome


def as_integration_id(target: Target) -> uuid.UUID | None:
    """An integration id, if `target` is one (a provider key has no hyphens, so never is)."""
    if isinstance(target, uuid.UUID):
        return target
    if len(target) != 36 or target.count("-") != 4:
        return None
    try:
        return uuid.UUID(target)
    except ValueError:
        return None

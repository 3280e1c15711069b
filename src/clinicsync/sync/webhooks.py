"""Webhooks: verified as the provider proves them, stored before acknowledged, applied by a job.

The provider's definition says how (integrations/webhook_spec.py). :func:`receive` verifies a
delivery, refuses a replay by its dedupe key (a unique index, so two copies arriving together
still store one) and commits the event before the route answers; :func:`apply_event`, the job,
reads what changed from the PMS through canonical operations and applies it with the inbound
path. The job is idempotent: it claims the event by its status in the transaction that applies
it, and the inbound path ignores what the snapshot already holds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.errors import ClinicSyncError, NotFound, Unauthorized, ValidationFailed
from clinicsync.integrations import canonical
from clinicsync.integrations import service as integration_service
from clinicsync.integrations.canonical import SyncOperation
from clinicsync.integrations.credentials import SecretCipher
from clinicsync.integrations.definitions import DefinitionError
from clinicsync.integrations.models import ExternalIntegration
from clinicsync.integrations.webhook_spec import WebhookSpec
from clinicsync.logging import get_logger
from clinicsync.sync import inbound
from clinicsync.sync.delivery import SyncContext
from clinicsync.sync.inbound_models import ChangeSource, WebhookEndpoint, WebhookEvent, WebhookEventStatus
from clinicsync.sync.models import RecordType
from clinicsync.tenancy.principal import Principal

log = get_logger(__name__)
MAX_ATTEMPTS = 8
# A notify-only feed's first delivery lists changes from a little before it arrived.
FIRST_LOOKBACK = timedelta(minutes=10)


class WebhookRefused(Unauthorized):
    code = "webhook_unverified"


@dataclass
class Received:
    status: str  # accepted, duplicate, ignored
    event_id: uuid.UUID | None = None


# ---- verification -----------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The HMAC-SHA256 a signing provider sends: over ``{timestamp}.{body}``, hex encoded."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def _header(headers: dict[str, str], name: str) -> str | None:
    return headers.get(name.lower())


def _strip(value: str, prefix: str) -> str:
    return value[len(prefix) :] if prefix and value.startswith(prefix) else value


def verify(
    spec: WebhookSpec, headers: dict[str, str], body: bytes, secret: str | None, *, now: float | None = None
) -> None:
    """Raises WebhookRefused naming the check that failed; never says what the secret is."""
    rule = spec.verify
    provided = _header(headers, rule.header)
    if secret is None:
        raise WebhookRefused("this integration has no webhook secret yet; issue one first")
    if provided is None:
        raise WebhookRefused(f"{rule.header}: missing", details={"header": rule.header})
    provided = _strip(provided.strip(), rule.prefix)
    current = time.time() if now is None else now
    if rule.scheme == "hmac_sha256":
        stamp_header = rule.timestamp_header or "X-Timestamp"
        raw_stamp = _header(headers, stamp_header)
        try:
            stamp = int(raw_stamp or "")
        except ValueError:
            raise WebhookRefused(
                f"{stamp_header}: missing or not a Unix time", details={"header": stamp_header}
            ) from None
        if abs(current - stamp) > rule.tolerance_seconds:
            raise WebhookRefused(
                f"{stamp_header}: outside the {rule.tolerance_seconds} s window (an old or replayed one)",
                details={"header": stamp_header},
            )
        expected = sign(secret, stamp, body)
    else:
        expected = secret
    if not hmac.compare_digest(provided.encode(), expected.encode()):
        raise WebhookRefused(f"{rule.header}: does not match", details={"header": rule.header})
    if rule.scheme == "channel_token" and rule.expires_header:
        raw = _header(headers, rule.expires_header)
        if raw:
            try:
                expires = parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                raise WebhookRefused(f"{rule.expires_header}: not a date") from None
            if expires.timestamp() < current:
                raise WebhookRefused(
                    f"{rule.expires_header}: the channel expired (an old or replayed delivery)",
                    details={"header": rule.expires_header},
                )


def dedupe_key(spec: WebhookSpec, headers: dict[str, str], body: bytes) -> str:
    if not spec.replay_key:
        return "sha256:" + hashlib.sha256(body).hexdigest()
    parts = []
    for name in spec.replay_key:
        value = _header(headers, name)
        if not value:
            raise ValidationFailed(f"header.{name}", "is required to tell one delivery from another")
        parts.append(value.strip())
    return ":".join(parts)[:200]


# ---- receiving ----------------------------------------------------------------------------------


async def _endpoint(session: AsyncSession, integration: ExternalIntegration) -> WebhookEndpoint | None:
    found: WebhookEndpoint | None = await session.scalar(
        select(WebhookEndpoint).where(WebhookEndpoint.integration_id == integration.id)
    )
    return found


async def _secret(
    session: AsyncSession, cipher: SecretCipher, integration: ExternalIntegration, spec: WebhookSpec
) -> str | None:
    if spec.verify.scheme == "shared_key":
        assert integration.organization_id is not None
        credential = await integration_service.credential_for(
            session, integration.organization_id, integration
        )
        if credential is None:
            return None
        return cipher.decrypt(credential.secret_ciphertext).get(spec.verify.secret or "")
    endpoint = await _endpoint(session, integration)
    if endpoint is None or endpoint.secret_ciphertext is None:
        return None
    return cipher.decrypt(endpoint.secret_ciphertext).get("secret")


async def spec_of(session: AsyncSession, integration: ExternalIntegration) -> WebhookSpec | None:
    try:
        definition = await integration_service.build_definition(session, integration)
    except DefinitionError:
        return None
    return definition.webhooks


async def _tenant_integration(
    session: AsyncSession, provider: str, integration_id: uuid.UUID
) -> ExternalIntegration:
    row = await session.get(ExternalIntegration, integration_id)
    # One answer for "no such integration" and "another provider's": the URL reveals nothing.
    if row is None or row.organization_id is None or row.provider_key != provider:
        raise NotFound(f"no {provider} integration {integration_id} takes webhooks here")
    return row


def _routing_headers(spec: WebhookSpec, headers: dict[str, str]) -> dict[str, str]:
    """The headers the job reads; the proof itself (key, token, signature) is never stored."""
    names = {*spec.replay_key}
    if spec.changes.type_header:
        names.add(spec.changes.type_header)
    if spec.ignore is not None:
        names.add(spec.ignore.header)
    return {name: value for name in names if (value := _header(headers, name)) is not None}


async def receive(
    ctx: SyncContext, provider: str, integration_id: uuid.UUID, headers: dict[str, str], body: bytes
) -> Received:
    headers = {name.lower(): value for name, value in headers.items()}
    async with session_scope(ctx.sessionmaker, write=False) as session:
        integration = await _tenant_integration(session, provider, integration_id)
        spec = await spec_of(session, integration)
        if spec is None:
            raise NotFound(f"{provider} sends no webhooks clinicsync understands")
        secret = await _secret(session, ctx.executor.cipher, integration, spec)
        organization_id = integration.organization_id
    verify(spec, headers, body, secret)
    if spec.ignore is not None and _header(headers, spec.ignore.header) in spec.ignore.values:
        return Received("ignored")
    payload: Any = None
    if spec.changes.kind == "rows":
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            raise ValidationFailed("body", "must be a JSON array of changed rows") from None
        if not isinstance(payload, list):
            raise ValidationFailed("body", "must be a JSON array of changed rows")
    key = dedupe_key(spec, headers, body)
    assert organization_id is not None
    event = WebhookEvent(
        id=uuid.uuid4(),
        organization_id=organization_id,
        integration_id=integration_id,
        dedupe_key=key,
        headers=_routing_headers(spec, headers),
        body=payload,
        status=WebhookEventStatus.RECEIVED,
        attempts=0,
    )
    try:
        async with session_scope(ctx.sessionmaker) as session:
            session.add(event)
    except IntegrityError:
        log.info("webhook_replay_ignored", integration_id=str(integration_id))
        return Received("duplicate")
    return Received("accepted", event.id)


# ---- applying (the job) ---------------------------------------------------------------------------


def _kind(operation: SyncOperation) -> RecordType:
    return RecordType.APPOINTMENT if operation.value.startswith("appointment.") else RecordType.PATIENT


async def _fetch(
    ctx: SyncContext, event: WebhookEvent, spec: WebhookSpec, cursor: datetime | None
) -> dict[RecordType, list[dict[str, Any]]]:
    """What changed, as canonical records, read from the PMS (no database transaction held)."""
    org, integration_id = event.organization_id, event.integration_id
    found: dict[RecordType, list[dict[str, Any]]] = {}
    changes = spec.changes
    if changes.kind == "notify":
        operation = changes.operation or SyncOperation.APPOINTMENT_LIST_CHANGED
        since = cursor or (event.received_at - FIRST_LOOKBACK)
        result = await canonical.perform(
            ctx.executor, org, integration_id, operation, {"updated_since": since}
        )
        found[_kind(operation)] = result.records
        return found
    table = event.headers.get(changes.type_header or "", "")
    rule = changes.tables.get(table)
    if rule is None:
        return found
    ids = {
        str(row.get(rule.id_field))
        for row in event.body or []
        if isinstance(row, dict) and row.get(rule.id_field)
    }
    records: list[dict[str, Any]] = []
    for external_id in sorted(ids):
        # The current record, not the row in the delivery: a late or repeated row cannot roll back.
        result = await canonical.perform(
            ctx.executor, org, integration_id, rule.operation, {"id": external_id}
        )
        records.extend(result.records)
    found[_kind(rule.operation)] = records
    return found


async def apply_event(ctx: SyncContext, event_id: uuid.UUID) -> tuple[str, datetime | None]:
    """One attempt at one stored event; returns its status and when to try again, if ever."""
    async with session_scope(ctx.sessionmaker, write=False) as session:
        event = await session.get(WebhookEvent, event_id)
        if event is None or event.status != WebhookEventStatus.RECEIVED:
            return "skipped", None
        integration = await session.get(ExternalIntegration, event.integration_id)
        config = await inbound.config_of(session, event.integration_id)
        spec = await spec_of(session, integration) if integration is not None else None
        endpoint = await _endpoint(session, integration) if integration is not None else None
        cursor = endpoint.cursor if endpoint is not None else None
        session.expunge(event)
    if spec is None or not inbound.takes_inbound(config):
        await _finish(ctx, event_id, WebhookEventStatus.IGNORED, {"reason": "inbound sync is off"})
        return "ignored", None
    assert config is not None
    try:
        found = await _fetch(ctx, event, spec, cursor)
    except (ClinicSyncError, Exception) as exc:
        return await _failed(ctx, event_id, exc)
    actor = f"webhook:{event_id}"
    async with session_scope(ctx.sessionmaker) as session:
        claimed = await session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id, WebhookEvent.status == WebhookEventStatus.RECEIVED)
            .values(
                status=WebhookEventStatus.APPLIED, applied_at=utcnow(), attempts=WebhookEvent.attempts + 1
            )
        )
        if getattr(claimed, "rowcount", 0) != 1:
            return "skipped", None  # another worker applied it first
        config = await inbound.config_of(session, event.integration_id)
        assert config is not None
        outcome: dict[str, Any] = {}
        newest: datetime | None = None
        for record_type, records in found.items():
            result = await inbound.apply_changes(
                session, config, record_type, records, source=ChangeSource.WEBHOOK, actor=actor
            )
            outcome[record_type.value] = result.as_dict()
            stamps = [r["updated_at"] for r in records if isinstance(r.get("updated_at"), datetime)]
            if stamps:
                newest = max([newest, *stamps]) if newest else max(stamps)
        stored = await session.get(WebhookEvent, event_id)
        assert stored is not None
        stored.outcome = outcome
        if spec.changes.kind == "notify" and newest is not None:
            await _advance_cursor(session, event.organization_id, event.integration_id, newest)
    log.info("webhook_applied", event_id=str(event_id), outcome=outcome)
    return "applied", None


async def _advance_cursor(
    session: AsyncSession, organization_id: uuid.UUID, integration_id: uuid.UUID, newest: datetime
) -> None:
    endpoint = await session.scalar(
        select(WebhookEndpoint).where(WebhookEndpoint.integration_id == integration_id)
    )
    if endpoint is None:
        endpoint = WebhookEndpoint(
            id=uuid.uuid4(), organization_id=organization_id, integration_id=integration_id
        )
        session.add(endpoint)
    current = endpoint.cursor
    if current is not None and current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    # Re-reading the newest second again is harmless (the inbound path ignores what it holds).
    if current is None or newest > current:
        endpoint.cursor = newest


async def _finish(
    ctx: SyncContext, event_id: uuid.UUID, status: WebhookEventStatus, outcome: dict[str, Any]
) -> None:
    async with session_scope(ctx.sessionmaker) as session:
        await session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id, WebhookEvent.status == WebhookEventStatus.RECEIVED)
            .values(status=status, outcome=outcome, applied_at=utcnow())
        )


async def _failed(ctx: SyncContext, event_id: uuid.UUID, exc: Exception) -> tuple[str, datetime | None]:
    message = getattr(exc, "message", None) or type(exc).__name__
    async with session_scope(ctx.sessionmaker) as session:
        event = await session.get(WebhookEvent, event_id)
        if event is None or event.status != WebhookEventStatus.RECEIVED:
            return "skipped", None
        event.attempts += 1
        event.last_error = str(message)[:2000]
        if event.attempts >= MAX_ATTEMPTS:
            event.status = WebhookEventStatus.FAILED
            log.warning("webhook_failed", event_id=str(event_id), error_type=type(exc).__name__)
            return "failed", None
        delay = min(
            ctx.settings.sync_retry_max_seconds, ctx.settings.sync_retry_base_seconds * 2**event.attempts
        )
    log.warning("webhook_retry", event_id=str(event_id), error_type=type(exc).__name__)
    return "retry", utcnow() + timedelta(seconds=delay)


async def due_events(ctx: SyncContext, *, older_than: float, limit: int = 500) -> list[uuid.UUID]:
    """Stored events no job has applied (a lost job or a restart): the sweep defers them again."""
    async with session_scope(ctx.sessionmaker, write=False) as session:
        rows = await session.scalars(
            select(WebhookEvent.id)
            .where(
                WebhookEvent.status == WebhookEventStatus.RECEIVED,
                WebhookEvent.received_at < utcnow() - timedelta(seconds=older_than),
            )
            .order_by(WebhookEvent.received_at)
            .limit(limit)
        )
        return list(rows.all())


# ---- admin: the endpoint and its secret -------------------------------------------------------------


async def _owned_integration(
    session: AsyncSession, principal: Principal, integration_id: uuid.UUID
) -> ExternalIntegration:
    row = await session.get(ExternalIntegration, integration_id)
    if row is None or row.organization_id != principal.organization_id:
        raise NotFound(f"integration {integration_id} not found")
    return row


async def describe(
    session: AsyncSession, principal: Principal, integration_id: uuid.UUID, *, secret: str | None = None
) -> dict[str, Any]:
    row = await _owned_integration(session, principal, integration_id)
    spec = await spec_of(session, row)
    if spec is None:
        raise ValidationFailed(
            "integration_id", f"{row.provider_key} sends no webhooks clinicsync understands"
        )
    endpoint = await _endpoint(session, row)
    counts = dict(
        (
            await session.execute(
                select(WebhookEvent.status, func.count())
                .where(WebhookEvent.integration_id == integration_id)
                .group_by(WebhookEvent.status)
            )
        ).all()
    )
    has_secret = spec.verify.scheme == "shared_key" or (
        endpoint is not None and endpoint.secret_ciphertext is not None
    )
    return {
        "integration_id": integration_id,
        "url": f"/api/webhooks/{row.provider_key}/{integration_id}",
        "scheme": spec.verify.scheme,
        "has_secret": has_secret,
        "secret": secret,
        "received": int(counts.get(WebhookEventStatus.RECEIVED, 0)),
        "applied": int(counts.get(WebhookEventStatus.APPLIED, 0)),
        "failed": int(counts.get(WebhookEventStatus.FAILED, 0)),
    }


async def issue_secret(
    session: AsyncSession, cipher: SecretCipher, principal: Principal, integration_id: uuid.UUID
) -> dict[str, Any]:
    """A new secret for the provider to sign with or echo; shown once, stored encrypted."""
    row = await _owned_integration(session, principal, integration_id)
    spec = await spec_of(session, row)
    if spec is None:
        raise ValidationFailed(
            "integration_id", f"{row.provider_key} sends no webhooks clinicsync understands"
        )
    if spec.verify.scheme == "shared_key":
        raise ValidationFailed(
            "integration_id",
            f"{row.provider_key} proves its deliveries with the integration's credential "
            f"({spec.verify.secret}); there is no separate secret to issue",
        )
    secret = secrets.token_urlsafe(32)
    await _store_secret(session, cipher, row, secret)
    return await describe(session, principal, integration_id, secret=secret)


async def _store_secret(
    session: AsyncSession, cipher: SecretCipher, row: ExternalIntegration, secret: str
) -> None:
    endpoint = await _endpoint(session, row)
    if endpoint is None:
        assert row.organization_id is not None
        endpoint = WebhookEndpoint(
            id=uuid.uuid4(), organization_id=row.organization_id, integration_id=row.id
        )
        session.add(endpoint)
    endpoint.secret_ciphertext = cipher.encrypt({"secret": secret})
    await session.flush()


# ---- admin: opening the provider's side -----------------------------------------------------------


def _filled(value: str | int | bool, values: dict[str, str]) -> str | int | bool:
    if not isinstance(value, str):
        return value
    for name, filled in values.items():
        value = value.replace("{" + name + "}", filled)
    return value


async def subscribe(
    session: AsyncSession, ctx: SyncContext, principal: Principal, integration_id: uuid.UUID, public_url: str
) -> dict[str, Any]:
    """Opens the provider's deliveries to this integration's webhook URL, as its definition says.

    A provider that echoes a channel token gets a new one (the earlier channel's token stops being
    accepted). The request's own transaction only reads, so on SQLite no write lock is held while
    the provider is called.
    """
    row = await _owned_integration(session, principal, integration_id)
    spec = await spec_of(session, row)
    if spec is None:
        raise ValidationFailed(
            "integration_id", f"{row.provider_key} sends no webhooks clinicsync understands"
        )
    if not spec.subscribe:
        raise ValidationFailed(
            "integration_id",
            f"{row.provider_key} has no subscribe calls in its definition; open its deliveries in the PMS",
        )
    url = f"{public_url.rstrip('/')}/api/webhooks/{row.provider_key}/{integration_id}"
    values = {"url": url, "channel_id": f"clinicsync-{secrets.token_hex(12)}"}
    if spec.verify.scheme != "shared_key":
        # Stored (and committed) before the call: the provider's first message on a new channel
        # can arrive before the call returns. A refused call leaves it; subscribing again replaces it.
        values["token"] = secrets.token_urlsafe(32)
        async with session_scope(ctx.sessionmaker) as writing:
            stored = await writing.get(ExternalIntegration, row.id)
            assert stored is not None
            await _store_secret(writing, ctx.executor.cipher, stored, values["token"])
    opened: list[dict[str, Any]] = []
    for call in spec.subscribe:
        params = {name: _filled(value, values) for name, value in call.params.items()}
        try:
            _resolution, result = await ctx.executor.execute(
                principal.organization_id, integration_id, call.function, params
            )
        except ClinicSyncError:
            log.warning(
                "webhook_subscribe_failed", integration_id=str(integration_id), function=call.function
            )
            raise
        record = result.records[0] if result.records else {}
        # What the provider answered, less anything secret it echoes (a customer key, a token).
        shown = {
            k: v for k, v in record.items() if not any(w in k.lower() for w in ("token", "key", "secret"))
        }
        opened.append({"function": call.function, "answer": shown})
    log.info("webhook_subscribed", integration_id=str(integration_id), calls=len(opened))
    return {"url": url, "scheme": spec.verify.scheme, "opened": opened}

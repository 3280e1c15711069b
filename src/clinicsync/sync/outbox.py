"""The outbox: pushes owed to a PMS, written with the change, claimed by one worker at a time.

An item is the durable record of what is owed; the job engine only wakes workers up. Items of
one chain (a patient and their appointments, per integration) are delivered one at a time in
the order they were written. Before any call that could create something in the PMS the item
is marked ``maybe_sent`` in a committed transaction, so whoever delivers it next (after a
timeout, a lost response or a dead process) looks the record up before sending again.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import Table, and_, bindparam, exists, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.errors import NotFound, ValidationFailed
from clinicsync.sync import refs
from clinicsync.sync.models import (
    UNFINISHED_STATUSES,
    ExternalReference,
    IntegrationSyncConfig,
    OutboxItem,
    OutboxOperation,
    OutboxStatus,
    RecordType,
    SyncState,
)
from clinicsync.tenancy.principal import Principal

SESSION_KEY = "clinicsync.outbox.written"
FailureKind = Literal["not_sent", "refused", "unknown"]


# Read-backs that fail this many times flag their reference for a person instead.
READ_BACK_ATTEMPTS = 20


@dataclass(frozen=True)
class Claim:
    """An item claimed for one delivery attempt by one worker."""

    id: uuid.UUID
    organization_id: uuid.UUID
    integration_id: uuid.UUID
    record_type: RecordType
    record_id: uuid.UUID
    chain_key: uuid.UUID
    operation: OutboxOperation
    payload: dict[str, Any]
    attempt: int
    looked_up_first: bool  # an earlier attempt may have reached the PMS
    token: str


async def enqueue(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    record_type: RecordType,
    record_id: uuid.UUID,
    chain_key: uuid.UUID,
    operation: OutboxOperation,
    payload: dict[str, Any],
    new_record: bool = False,
) -> OutboxItem:
    """Writes an owed push in the caller's transaction and marks the record pending.

    ``new_record``: the record was inserted by this transaction, so it has no reference yet.
    """
    item = OutboxItem(
        id=uuid.uuid4(),
        organization_id=organization_id,
        integration_id=integration_id,
        record_type=record_type,
        record_id=record_id,
        chain_key=chain_key,
        operation=operation,
        payload=payload,
        status=OutboxStatus.PENDING,
        attempts=0,
        maybe_sent=False,
        next_attempt_at=utcnow(),
    )
    if _dialect(session) == "sqlite":
        # SQLite write transactions are serialized (BEGIN IMMEDIATE), so max + 1 cannot race;
        # computed inside the INSERT, it costs no round trip of its own.
        item.seq = _NEXT_SQLITE_SEQ
    session.add(item)
    await refs.mark_pending(
        session, organization_id, integration_id, record_type, record_id, new_record=new_record
    )
    await session.flush()
    session.info.setdefault(SESSION_KEY, []).append(item.id)
    return item


_NEXT_SQLITE_SEQ = select(func.coalesce(func.max(OutboxItem.seq), 0) + 1).scalar_subquery()


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _chain_blocked(item_seq: Any, integration_id: Any, chain_key: Any, item_id: Any, record_id: Any) -> Any:
    """Whether an item must wait: one of its chain is in flight, or an earlier one is still owed.

    A failed (refused) item holds back later pushes of the same record, and a failed patient holds
    back their appointments; another appointment of the same patient goes ahead.
    """
    earlier = aliased(OutboxItem)
    return exists().where(
        earlier.integration_id == integration_id,
        earlier.chain_key == chain_key,
        earlier.id != item_id,
        (earlier.status == OutboxStatus.IN_FLIGHT)
        | and_(earlier.seq < item_seq, earlier.status == OutboxStatus.PENDING)
        | and_(
            earlier.seq < item_seq,
            earlier.status == OutboxStatus.FAILED,
            (earlier.record_id == record_id) | (earlier.record_type == RecordType.PATIENT),
        ),
    )


# Built once: rebuilt and keyed for every claim, it was most of what a claim spent in Python.
_ITEM_BLOCKED = select(
    _chain_blocked(
        bindparam("seq"),
        bindparam("integration_id"),
        bindparam("chain_key"),
        bindparam("item_id"),
        bindparam("record_id"),
    )
)
_CHAIN_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:chain, 0))")


async def claim(
    sessionmaker: async_sessionmaker[AsyncSession], item_id: uuid.UUID, *, worker: str, lease_seconds: float
) -> Claim | None:
    """Takes the item for one attempt if it is due, pending and first in its chain; else None."""
    async with session_scope(sessionmaker) as session:
        item = await session.get(OutboxItem, item_id)
        if item is None or item.status != OutboxStatus.PENDING:
            return None
        if _dialect(session) == "postgresql":
            # One claimer per chain at a time: the chain check below then sees every committed claim.
            await session.execute(_CHAIN_LOCK, {"chain": f"{item.integration_id}:{item.chain_key}"})
            await session.refresh(item, with_for_update=True)
        now = utcnow()
        if item.status != OutboxStatus.PENDING or item.next_attempt_at > now:
            return None
        blocked = await session.scalar(
            _ITEM_BLOCKED,
            {
                "seq": item.seq,
                "integration_id": item.integration_id,
                "chain_key": item.chain_key,
                "item_id": item.id,
                "record_id": item.record_id,
            },
        )
        if blocked:
            return None
        token = f"{worker}:{uuid.uuid4().hex[:8]}"
        looked_up_first = item.maybe_sent
        attempt = item.attempts + 1
        # The worker's own bookkeeping, written past the ORM so that it makes no change event: the
        # attempt's outcome announces the item. Without one the claim needs no organization lock
        # (realtime.hooks), so the organization's bookings never queue behind a worker's claims.
        table = cast(Table, OutboxItem.__table__)
        connection = await session.connection()
        await connection.execute(
            table.update()
            .where(table.c.id == item.id)
            .values(
                status=OutboxStatus.IN_FLIGHT,
                attempts=attempt,
                lease_until=now + timedelta(seconds=lease_seconds),
                claimed_by=token,
                # Intent persisted before the call: if we never hear back, the next attempt looks first.
                maybe_sent=True,
            )
        )
        return Claim(
            id=item.id,
            organization_id=item.organization_id,
            integration_id=item.integration_id,
            record_type=item.record_type,
            record_id=item.record_id,
            chain_key=item.chain_key,
            operation=item.operation,
            payload=dict(item.payload),
            attempt=attempt,
            looked_up_first=looked_up_first,
            token=token,
        )


async def _config(session: AsyncSession, integration_id: uuid.UUID) -> IntegrationSyncConfig | None:
    config: IntegrationSyncConfig | None = await session.scalar(
        select(IntegrationSyncConfig).where(IntegrationSyncConfig.integration_id == integration_id)
    )
    return config


@dataclass(frozen=True)
class Delivered:
    """What follows a delivered item: references to read back, and the next item of its chain."""

    read_backs: list[uuid.UUID]
    following: uuid.UUID | None


async def next_in_chain(session: AsyncSession, claim: Claim) -> uuid.UUID | None:
    following: uuid.UUID | None = await session.scalar(
        select(OutboxItem.id)
        .where(
            OutboxItem.integration_id == claim.integration_id,
            OutboxItem.chain_key == claim.chain_key,
            OutboxItem.id != claim.id,
            OutboxItem.seq > select(OutboxItem.seq).where(OutboxItem.id == claim.id).scalar_subquery(),
            OutboxItem.status.in_(UNFINISHED_STATUSES),
        )
        .order_by(OutboxItem.seq)
        .limit(1)
    )
    return following


async def succeed(
    sessionmaker: async_sessionmaker[AsyncSession],
    claim: Claim,
    *,
    external_id: str | None,
    snapshot: dict[str, Any] | None,
) -> Delivered:
    """Records the PMS's answer: item done, reference accepted.

    Says in the same transaction what follows: the record's reference to read back (unless a
    later push of it is still owed), the patient matched or created on the way to an
    appointment, and the next item of the chain, now free to go.
    """
    async with session_scope(sessionmaker) as session:
        now = utcnow()
        await session.execute(
            update(OutboxItem)
            .where(OutboxItem.id == claim.id)
            .values(
                status=OutboxStatus.DONE,
                delivered_at=now,
                updated_at=now,
                lease_until=None,
                maybe_sent=False,
                external_id=external_id,
                last_error=None,
                last_error_code=None,
            )
        )
        ref = await refs.get_ref(session, claim.integration_id, claim.record_type, claim.record_id)
        if ref is None:
            ref = await refs.mark_pending(
                session, claim.organization_id, claim.integration_id, claim.record_type, claim.record_id
            )
        if external_id is not None:
            ref.external_id = external_id
        still_owed = await session.scalar(
            select(func.count())
            .select_from(OutboxItem)
            .where(
                OutboxItem.integration_id == claim.integration_id,
                OutboxItem.record_type == claim.record_type,
                OutboxItem.record_id == claim.record_id,
                OutboxItem.id != claim.id,
                OutboxItem.status.in_(UNFINISHED_STATUSES),
            )
        )
        if snapshot is not None:
            ref.snapshot = refs.json_safe(snapshot)
        ref.last_synced_at = now
        ref.last_error = None
        ref.mismatch = None
        ref.read_back_attempts = 0
        if ref.external_id is None:
            ref.sync_state = SyncState.LOCAL_ONLY  # the provider keeps no such record
        else:
            ref.sync_state = SyncState.PENDING if still_owed else SyncState.ACCEPTED
        config = await _config(session, claim.integration_id)
        if config is not None:
            config.last_sync_at, config.last_sync_status, config.last_sync_error = now, "ok", None
        await session.flush()
        read_backs = [ref.id] if ref.external_id and not still_owed else []
        if claim.record_type == RecordType.APPOINTMENT:
            patients = await session.scalars(
                select(ExternalReference.id).where(
                    ExternalReference.integration_id == claim.integration_id,
                    ExternalReference.record_type == RecordType.PATIENT,
                    ExternalReference.record_id == claim.chain_key,
                    ExternalReference.sync_state == SyncState.ACCEPTED,
                )
            )
            read_backs.extend(patients)
        return Delivered(read_backs, await next_in_chain(session, claim))


def backoff(attempt: int, *, base: float, cap: float, retry_after: float | None) -> float:
    """Exponential backoff with jitter; a provider's Retry-After is a floor, never shortened."""
    delay = min(cap, base * (2 ** max(attempt - 1, 0)))
    delay = delay * random.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


async def fail(
    sessionmaker: async_sessionmaker[AsyncSession],
    claim: Claim,
    *,
    kind: FailureKind,
    message: str,
    code: str | None,
    delay_seconds: float,
) -> datetime | None:
    """Records a failed attempt; returns when to try again, or None when it waits for a person."""
    async with session_scope(sessionmaker) as session:
        now = utcnow()
        item = await session.get(OutboxItem, claim.id)
        if item is None or item.claimed_by != claim.token:
            return None  # our lease ran out and the item was recovered: its new owner decides
        item.last_error, item.last_error_code = message, code
        item.lease_until, item.updated_at = None, now
        # Unknown keeps maybe_sent; a refusal or a call never sent changes nothing in the PMS.
        item.maybe_sent = True if kind == "unknown" else claim.looked_up_first
        retry_at: datetime | None = None
        if kind == "refused":
            item.status = OutboxStatus.FAILED
        else:
            item.status = OutboxStatus.PENDING
            retry_at = now + timedelta(seconds=delay_seconds)
            item.next_attempt_at = retry_at
        ref = await refs.get_ref(session, claim.integration_id, claim.record_type, claim.record_id)
        if ref is not None:
            ref.last_error = message
            if kind == "refused":
                ref.sync_state = SyncState.FAILED
        config = await _config(session, claim.integration_id)
        if config is not None:
            config.last_sync_at, config.last_sync_status, config.last_sync_error = now, "error", message
        return retry_at


async def postpone(
    sessionmaker: async_sessionmaker[AsyncSession], claim: Claim, *, seconds: float, reason: str
) -> datetime:
    """Gives the item back without counting the attempt (something it needs is not ready yet)."""
    async with session_scope(sessionmaker) as session:
        retry_at = utcnow() + timedelta(seconds=seconds)
        await session.execute(
            update(OutboxItem)
            .where(OutboxItem.id == claim.id, OutboxItem.claimed_by == claim.token)
            .values(
                status=OutboxStatus.PENDING,
                attempts=OutboxItem.attempts - 1,
                maybe_sent=claim.looked_up_first,
                lease_until=None,
                next_attempt_at=retry_at,
                last_error=reason,
            )
        )
        return retry_at


async def recover_stale(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Items whose worker died mid-call go back to pending; maybe_sent makes the next attempt look first."""
    async with session_scope(sessionmaker) as session:
        result = await session.execute(
            update(OutboxItem)
            .where(OutboxItem.status == OutboxStatus.IN_FLIGHT, OutboxItem.lease_until < utcnow())
            .values(
                status=OutboxStatus.PENDING,
                lease_until=None,
                maybe_sent=True,
                next_attempt_at=utcnow(),
                last_error="the delivering process stopped mid-call; the PMS is checked before any resend",
                last_error_code="outcome_unknown",
            )
            .execution_options(synchronize_session=False)
        )
        return getattr(result, "rowcount", 0) or 0


async def due(sessionmaker: async_sessionmaker[AsyncSession], *, limit: int) -> list[uuid.UUID]:
    """Pending items whose time has come and that are first in their chain."""
    async with session_scope(sessionmaker, write=False) as session:
        query = (
            select(OutboxItem.id)
            .where(
                OutboxItem.status == OutboxStatus.PENDING,
                OutboxItem.next_attempt_at <= utcnow(),
                ~_chain_blocked(
                    OutboxItem.seq,
                    OutboxItem.integration_id,
                    OutboxItem.chain_key,
                    OutboxItem.id,
                    OutboxItem.record_id,
                ),
            )
            .order_by(OutboxItem.seq)
            .limit(limit)
        )
        return list(await session.scalars(query))


async def read_backs_due(
    sessionmaker: async_sessionmaker[AsyncSession], *, older_than: float, limit: int
) -> list[uuid.UUID]:
    """Accepted references not yet confirmed (a read-back job lost or failed)."""
    async with session_scope(sessionmaker, write=False) as session:
        query = (
            select(ExternalReference.id)
            .where(
                ExternalReference.sync_state == SyncState.ACCEPTED,
                ExternalReference.mismatch.is_(None),
                ExternalReference.last_synced_at < utcnow() - timedelta(seconds=older_than),
                ExternalReference.read_back_attempts < READ_BACK_ATTEMPTS,
            )
            .limit(limit)
        )
        return list(await session.scalars(query))


# ---- the admin's view ------------------------------------------------------------------


async def list_items(
    session: AsyncSession,
    principal: Principal,
    *,
    statuses: list[OutboxStatus] | None,
    integration_id: uuid.UUID | None,
    limit: int,
    offset: int,
) -> tuple[list[OutboxItem], int]:
    query = select(OutboxItem).where(OutboxItem.organization_id == principal.organization_id)
    if statuses:
        query = query.where(OutboxItem.status.in_(statuses))
    if integration_id is not None:
        query = query.where(OutboxItem.integration_id == integration_id)
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = await session.scalars(query.order_by(OutboxItem.seq).limit(limit).offset(offset))
    return list(items), total


async def get_item(session: AsyncSession, principal: Principal, item_id: uuid.UUID) -> OutboxItem:
    item = await session.get(OutboxItem, item_id)
    if item is None or item.organization_id != principal.organization_id:
        raise NotFound(f"outbox item {item_id} not found")
    return item


def _requeue(item: OutboxItem) -> None:
    item.status = OutboxStatus.PENDING
    item.next_attempt_at = utcnow()
    item.updated_at = utcnow()


async def retry(session: AsyncSession, principal: Principal, item_id: uuid.UUID) -> OutboxItem:
    item = await get_item(session, principal, item_id)
    if item.status not in (OutboxStatus.FAILED, OutboxStatus.PENDING):
        raise ValidationFailed("status", f"a {item.status.value} item cannot be retried")
    _requeue(item)
    await session.flush()
    session.info.setdefault(SESSION_KEY, []).append(item.id)
    return item


async def retry_all(
    session: AsyncSession, principal: Principal, integration_id: uuid.UUID | None
) -> list[uuid.UUID]:
    query = select(OutboxItem).where(
        OutboxItem.organization_id == principal.organization_id,
        OutboxItem.status.in_((OutboxStatus.FAILED, OutboxStatus.PENDING)),
    )
    if integration_id is not None:
        query = query.where(OutboxItem.integration_id == integration_id)
    items = list(await session.scalars(query))
    for item in items:
        _requeue(item)
    await session.flush()
    session.info.setdefault(SESSION_KEY, []).extend(item.id for item in items)
    return [item.id for item in items]


async def discard(session: AsyncSession, principal: Principal, item_id: uuid.UUID, reason: str) -> OutboxItem:
    item = await get_item(session, principal, item_id)
    if item.status not in (OutboxStatus.FAILED, OutboxStatus.PENDING):
        raise ValidationFailed("status", f"a {item.status.value} item cannot be discarded")
    await discard_item(session, item, reason)
    return item


async def discard_owed(session: AsyncSession, integration_id: uuid.UUID, reason: str) -> int:
    """Discards every owed push to one integration that is not in flight (a person asked, with a reason)."""
    items = list(
        await session.scalars(
            select(OutboxItem).where(
                OutboxItem.integration_id == integration_id,
                OutboxItem.status.in_((OutboxStatus.PENDING, OutboxStatus.FAILED)),
            )
        )
    )
    for item in items:
        await discard_item(session, item, reason)
    return len(items)


async def discard_item(session: AsyncSession, item: OutboxItem, reason: str) -> None:
    item.status = OutboxStatus.DISCARDED
    item.discard_reason = reason
    item.updated_at = utcnow()
    ref = await refs.get_ref(session, item.integration_id, item.record_type, item.record_id)
    if ref is not None and ref.sync_state in (SyncState.PENDING, SyncState.FAILED):
        ref.sync_state = SyncState.FAILED if ref.external_id is None else ref.sync_state
        ref.last_error = f"discarded: {reason}"
    await session.flush()

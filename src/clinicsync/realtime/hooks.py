"""The session hook that writes change events in the same transaction as the change.

One set of listeners on every SQLAlchemy ``Session``:

* ``before_flush`` (PostgreSQL) takes a transaction-scoped advisory lock per organization touched,
  so an organization's event ids commit in increasing order: a reader that has seen id N can
  never later find a committed N-1 it skipped. SQLite needs nothing: writers are serialized by
  ``BEGIN IMMEDIATE``.
* ``after_flush`` writes one ``change_events`` row per inserted, modified or deleted tracked
  object, and on PostgreSQL queues ``pg_notify`` with the newest id in the same statement, which
  PostgreSQL delivers only if the transaction commits.
* ``do_orm_execute`` covers ORM bulk ``update()`` / ``delete()`` statements, which bypass the
  flush (removing a practitioner cancels their appointments that way).
* ``after_commit`` wakes this process's hubs; a rollback discards the rows and the notification.

Writes that bypass the ORM call ``record()`` in their transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Insert, Select, String, Table, bindparam, cast, event, func, insert, select, text, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from clinicsync.db.base import utcnow
from clinicsync.realtime import tracked as _tracked  # noqa: F401  (registers the tracked models)
from clinicsync.realtime.models import ChangeEvent
from clinicsync.realtime.registry import Tracked, tracked_for

CHANNEL = "clinicsync_events"
ACTOR_KEY = "realtime.actor_user_id"
_LOCKED_KEY = "realtime.locked_organizations"
_COALESCED_KEY = "realtime.coalesced"
_WROTE_KEY = "realtime.wrote"
_LOCK_NAMESPACE = 0x6373  # "cs": keeps our advisory locks apart from anyone else's
# Built once, not parsed for its parameters again on every write.
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:namespace, :key)")

_table: Table = ChangeEvent.__table__  # type: ignore[assignment]
_commit_listeners: set[Callable[[], None]] = set()


@dataclass(frozen=True)
class Change:
    tracked: Tracked
    source: Any
    operation: str


def set_actor(session: AsyncSession | Session, user_id: uuid.UUID | None) -> None:
    """Names the user making this session's changes (recorded on events; owner of what it creates)."""
    session.info[ACTOR_KEY] = user_id


def add_commit_listener(listener: Callable[[], None]) -> None:
    _commit_listeners.add(listener)


def remove_commit_listener(listener: Callable[[], None]) -> None:
    _commit_listeners.discard(listener)


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _lock_key(organization_id: uuid.UUID) -> int:
    return int.from_bytes(organization_id.bytes[:4], "big", signed=True)


def _lock_organizations(session: Session, organizations: Iterable[uuid.UUID | None]) -> None:
    if not _is_postgres(session):
        return
    locked: set[uuid.UUID] = session.info.setdefault(_LOCKED_KEY, set())
    # Sorted, so two transactions touching the same organizations lock them in the same order.
    for organization_id in sorted({org for org in organizations if org is not None} - locked):
        session.connection().execute(
            _ADVISORY_LOCK, {"namespace": _LOCK_NAMESPACE, "key": _lock_key(organization_id)}
        )
        locked.add(organization_id)


async def hold_organization(session: AsyncSession, organization_id: uuid.UUID) -> None:
    """Takes the organization's change-event lock now rather than at the next flush.

    A transaction that locks a tracked row (SELECT ... FOR UPDATE) and then writes tracked changes
    calls this first: every other writer takes this lock before its row locks (in ``before_flush``),
    so taking the row first would invert the order and deadlock against them."""
    await session.run_sync(lambda sync_session: _lock_organizations(sync_session, [organization_id]))


def _owners(session: Session, entity: str, entity_ids: set[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """Who created each of these records, as the earliest event naming an owner says."""
    if not entity_ids:
        return {}
    rows = session.connection().execute(
        select(_table.c.entity_id, _table.c.owner_user_id)
        .where(
            _table.c.entity == entity,
            _table.c.entity_id.in_(entity_ids),
            _table.c.owner_user_id.is_not(None),
        )
        .order_by(_table.c.id.desc())
    )
    # Descending, so the earliest owner wins when written last into the dict.
    return {entity_id: owner for entity_id, owner in rows}


def _notified(inserting: Insert) -> Select[Any]:
    """The inserted events' ids, with a ``pg_notify`` of the newest in the same statement."""
    inserted = inserting.returning(_table.c.id).cte("inserted")
    newest = cast(func.max(inserted.c.id), String)
    notified = select(func.pg_notify(CHANNEL, newest).label("sent")).select_from(inserted).cte("notified")
    return select(inserted.c.id).select_from(inserted.join(notified, true())).order_by(inserted.c.id)


# Built once: a statement built per write costs more to build and key for SQLAlchemy's compiled
# cache than the rest of the event's work (a statement object keeps its cache key). Every column
# is bound but the id, which the database assigns.
_ONE_EVENT_NOTIFIED = _notified(
    insert(_table).values({c.name: bindparam(c.name, type_=c.type) for c in _table.c if not c.primary_key})
)
_EVENTS_RETURNING = insert(_table).returning(_table.c.id)


def write_changes(session: Session, changes: list[Change]) -> list[int]:
    if not changes:
        return []
    _lock_organizations(session, (change.source.organization_id for change in changes))
    actor = session.info.get(ACTOR_KEY)
    coalesced: set[tuple[str, uuid.UUID]] = session.info.setdefault(_COALESCED_KEY, set())
    owners: dict[tuple[str, uuid.UUID], uuid.UUID] = {}
    pending: dict[str, set[uuid.UUID]] = {}
    for change in changes:
        if change.tracked.owned and change.operation != "created":
            pending.setdefault(change.tracked.entity, set()).add(change.source.id)
    for entity, entity_ids in pending.items():
        found = _owners(session, entity, entity_ids)
        owners.update({(entity, key): value for key, value in found.items()})
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for change in changes:
        tracked, source = change.tracked, change.source
        entity_id = getattr(source, tracked.entity_id)
        operation = change.operation
        if tracked.coalesced:
            if (tracked.entity, entity_id) in coalesced:
                continue
            coalesced.add((tracked.entity, entity_id))
            operation = "updated"
        owner = None
        if tracked.owned:
            owner = actor if operation == "created" else owners.get((tracked.entity, entity_id))
        rows.append(
            {
                "organization_id": source.organization_id,
                "entity": tracked.entity,
                "entity_id": entity_id,
                "operation": operation,
                "practitioner_id": tracked.practitioner_of(source),
                "owner_user_id": owner,
                "actor_user_id": actor,
                "payload": tracked.payload(source),
                "created_at": now,
            }
        )
    if not rows:
        return []
    connection = session.connection()
    ids: list[int]
    if _is_postgres(session):
        # The rows and their notification in one round trip. Only the newest id travels: payloads
        # are capped at 8000 bytes and listeners read the rows anyway. One row (most writes) runs
        # the statement built once; more rows need one built for their count.
        if len(rows) == 1:
            ids = list(connection.execute(_ONE_EVENT_NOTIFIED, rows[0]).scalars())
        else:
            ids = list(connection.execute(_notified(insert(_table).values(rows))).scalars())
    else:
        ids = list(connection.execute(_EVENTS_RETURNING, rows).scalars())
    session.info[_WROTE_KEY] = True
    return ids


async def record(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    entity: str,
    entity_id: uuid.UUID,
    operation: str,
    payload: dict[str, Any] | None = None,
    practitioner_id: uuid.UUID | None = None,
    owner_user_id: uuid.UUID | None = None,
) -> int:
    """Records a change made without the ORM (raw SQL, another library) in the session's transaction."""

    def write(sync_session: Session) -> int:
        tracked = Tracked(
            model=object,
            entity=entity,
            fields=tuple(payload or {}),
            practitioner="practitioner_id" if practitioner_id else None,
        )
        source = SimpleNamespace(
            id=entity_id, organization_id=organization_id, practitioner_id=practitioner_id, **(payload or {})
        )
        ids = write_changes(sync_session, [Change(tracked, source, operation)])
        if owner_user_id is not None:
            sync_session.connection().execute(
                _table.update().where(_table.c.id == ids[0]).values(owner_user_id=owner_user_id)
            )
        return ids[0]

    return await session.run_sync(write)


def _tracked_changes(session: Session) -> list[Change]:
    changes: list[Change] = []
    for objects, operation in (
        (session.new, "created"),
        (session.dirty, "updated"),
        (session.deleted, "deleted"),
    ):
        for obj in objects:
            tracked = tracked_for(type(obj))
            if tracked is None:
                continue
            if operation == "updated" and not session.is_modified(obj, include_collections=False):
                continue
            changes.append(Change(tracked, obj, operation))
    return changes


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context: UOWTransaction, _instances: object) -> None:
    objects = [*session.new, *session.dirty, *session.deleted]
    _lock_organizations(
        session, (getattr(obj, "organization_id", None) for obj in objects if tracked_for(type(obj)))
    )


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: UOWTransaction) -> None:
    write_changes(session, _tracked_changes(session))


@event.listens_for(Session, "do_orm_execute")
def _bulk_statement(state: ORMExecuteState) -> Any:
    if not (state.is_update or state.is_delete) or state.bind_mapper is None:
        return None
    tracked = tracked_for(state.bind_mapper.class_)
    if tracked is None:
        return None
    session = state.session
    table = state.bind_mapper.local_table
    where = getattr(state.statement, "whereclause", None)
    query = select(table) if where is None else select(table).where(where)
    before = [SimpleNamespace(**row) for row in session.connection().execute(query).mappings()]
    _lock_organizations(session, (row.organization_id for row in before))
    result = state.invoke_statement()
    if state.is_update and before:
        ids = [row.id for row in before]
        after = session.connection().execute(select(table).where(table.c.id.in_(ids))).mappings()
        changes = [Change(tracked, SimpleNamespace(**row), "updated") for row in after]
    else:
        changes = [Change(tracked, row, "deleted") for row in before]
    write_changes(session, changes)
    return result


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_WROTE_KEY, False):
        for listener in list(_commit_listeners):
            listener()


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_WROTE_KEY, None)
        session.info.pop(_LOCKED_KEY, None)
        session.info.pop(_COALESCED_KEY, None)

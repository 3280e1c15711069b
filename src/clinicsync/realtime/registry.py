"""Which models produce change events, and what their events say.

Registering a model is one line in ``tracked.py``::

    track(Appointment, "appointment", fields=("status", "starts_at"), practitioner="practitioner_id")

* ``fields`` are copied into the event's payload. Name only ids, times, statuses and display
  names: events are shown to everyone in the organization who may see the entity, so no contact
  details, dates of birth or notes.
* ``practitioner`` names the attribute holding the practitioner whose diary the row touches (or
  is a function of the row that finds it); practitioners receive only events carrying their own id.
* ``owned=True``: the user who created the row keeps receiving its events (service accounts see
  only what they booked or registered).
* ``entity_id`` other than ``"id"`` folds every row sharing that value into one ``updated`` event
  per transaction (a weekly-hours save replaces many rows but is one change of one practitioner).
* ``display`` derives a ``display_name`` for the payload.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any


@dataclass(frozen=True)
class Tracked:
    model: type[Any]
    entity: str
    fields: tuple[str, ...] = ()
    practitioner: str | Callable[[Any], uuid.UUID | None] | None = None
    owned: bool = False
    entity_id: str = "id"
    display: Callable[[Any], str] | None = None

    @property
    def coalesced(self) -> bool:
        return self.entity_id != "id"

    def payload(self, source: Any) -> dict[str, Any]:
        payload = {name: jsonable(getattr(source, name, None)) for name in self.fields}
        if self.display is not None:
            payload["display_name"] = self.display(source)
        return payload

    def practitioner_of(self, source: Any) -> uuid.UUID | None:
        if callable(self.practitioner):
            return self.practitioner(source)
        value = getattr(source, self.practitioner, None) if self.practitioner else None
        return value if isinstance(value, uuid.UUID) else None


_REGISTRY: dict[type[Any], Tracked] = {}


def track(
    model: type[Any],
    entity: str,
    *,
    fields: tuple[str, ...] = (),
    practitioner: str | Callable[[Any], uuid.UUID | None] | None = None,
    owned: bool = False,
    entity_id: str = "id",
    display: Callable[[Any], str] | None = None,
) -> Tracked:
    tracked = Tracked(model, entity, fields, practitioner, owned, entity_id, display)
    _REGISTRY[model] = tracked
    return tracked


def tracked_for(model: type[Any]) -> Tracked | None:
    for klass in model.__mro__:
        found = _REGISTRY.get(klass)
        if found is not None:
            return found
    return None


def tracked_entities() -> dict[str, Tracked]:
    return {tracked.entity: tracked for tracked in _REGISTRY.values()}


def jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return value

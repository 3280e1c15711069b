"""Simulator records <-> JSON-safe state, driven by each record dataclass's type hints.

Every simulator keeps its records as dataclasses and persists a table as a list of plain dicts, one key per
field under the field's own name. Values are encoded from the field's declared type:

===========================  ====================================================================
declared type                in the state
===========================  ====================================================================
``datetime``                 text from the codec's datetime encoder (``isoformat`` unless a
                             simulator needs its wire format: naive stays naive, aware keeps its
                             offset, exactly as the simulator holds it)
``date``                     ISO date text
nested dataclass             a dict, encoded the same way
``list`` / ``tuple``         a list of encoded items (tuples come back as tuples)
``dict``                     a dict of encoded values; ``int`` keys as text (JSON keys are text)
``X | None``                 ``None`` or ``X`` encoded
anything else                as is
===========================  ====================================================================

Decoding reverses that from the same hints, so no simulator lists which of its keys hold dates. Unknown
keys in a stored row are ignored and missing ones take the field's default, so state files written before a
field was added or dropped still load. Encoders and decoders are built once per record type: a sandbox state
can hold hundreds of thousands of rows.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields, is_dataclass
from datetime import date, datetime
from functools import partial
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

RecordT = TypeVar("RecordT")
# ``None`` stands for "keep the value as it is", so plain fields cost nothing per row.
Converter = Callable[[Any], Any] | None


class StateCodec:
    """Encodes records to JSON-safe dicts and back; one instance per datetime format, shared by its users."""

    def __init__(
        self,
        *,
        encode_datetime: Callable[[datetime], str | None] = datetime.isoformat,
        decode_datetime: Callable[[str], datetime | None] = datetime.fromisoformat,
    ) -> None:
        self._encode_datetime = encode_datetime
        self._decode_datetime = decode_datetime
        self._encoders: dict[type[Any], list[tuple[str, Converter]]] = {}
        self._decoders: dict[type[Any], dict[str, Converter]] = {}

    # ------------------------------------------------------------------ records

    def encode(self, record: Any) -> dict[str, Any]:
        """One record as a dict of JSON-safe values, keyed by field name in field order."""
        plan = self._encoders.get(type(record))
        if plan is None:
            plan = self._encoders[type(record)] = self._field_plan(type(record), self._encoder)
        encoded: dict[str, Any] = {}
        for name, encode in plan:
            value = getattr(record, name)
            encoded[name] = value if encode is None or value is None else encode(value)
        return encoded

    def decode(self, record_type: type[RecordT], data: Mapping[str, Any]) -> RecordT:
        """The record ``encode`` produced ``data`` from."""
        plan = self._decoders.get(record_type)
        if plan is None:
            plan = self._decoders[record_type] = dict(self._field_plan(record_type, self._decoder))
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name in plan:
                decode = plan[name]
                values[name] = value if decode is None or value is None else decode(value)
        return record_type(**values)

    # ------------------------------------------------------------------ tables

    def dump_rows(self, records: Iterable[Any]) -> list[dict[str, Any]]:
        return [self.encode(record) for record in records]

    def load_rows(self, record_type: type[RecordT], rows: Iterable[Mapping[str, Any]]) -> list[RecordT]:
        return [self.decode(record_type, row) for row in rows]

    def dump_tables(
        self, owner: object, tables: Mapping[str, type[Any]], *, state_keys: Mapping[str, str] | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Each table ``owner.<attribute>`` (a dict of records) as its rows, in table order.

        ``tables`` maps attribute name -> record type; the rows go under the same name unless ``state_keys``
        renames it (a state file keeps the name its simulator first wrote it under).
        """
        renamed = state_keys or {}
        return {renamed.get(name, name): self.dump_rows(getattr(owner, name).values()) for name in tables}

    def load_tables(
        self,
        owner: object,
        tables: Mapping[str, type[Any]],
        state: Mapping[str, Any],
        *,
        state_keys: Mapping[str, str] | None = None,
    ) -> None:
        """Replace each table ``owner.<attribute>`` with the rows ``dump_tables`` wrote (none when absent)."""
        renamed = state_keys or {}
        for name, record_type in tables.items():
            setattr(owner, name, self.load_table(record_type, state.get(renamed.get(name, name), [])))

    def load_table(self, record_type: type[RecordT], rows: Iterable[Mapping[str, Any]]) -> dict[Any, RecordT]:
        """Decoded rows keyed by their first field: every simulator declares a record's primary key first."""
        key = fields(record_type)[0].name  # type: ignore[arg-type]
        table: dict[Any, RecordT] = {}
        for row in rows:
            record = self.decode(record_type, row)
            table[getattr(record, key)] = record
        return table

    # ------------------------------------------------------------------ building converters

    def _field_plan(
        self, record_type: type[Any], build: Callable[[Any], Converter]
    ) -> list[tuple[str, Converter]]:
        if not is_dataclass(record_type):
            raise TypeError(f"{record_type!r} is not a dataclass")
        hints = get_type_hints(record_type)
        # The per-row loop already passes None through, so an optional field needs no wrapper.
        return [(item.name, build(_without_none(hints[item.name]))) for item in fields(record_type)]

    def _encoder(self, hint: Any) -> Converter:
        if hint is datetime:
            return self._encode_datetime
        if hint is date:
            return date.isoformat
        if isinstance(hint, type) and is_dataclass(hint):
            return self.encode
        origin, args = get_origin(hint), get_args(hint)
        if origin is Union or origin is types.UnionType:
            return _none_safe(self._encoder(_without_none(hint)))
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            positions = [self._encoder(arg) for arg in args]
            return _sequence(positions, list) if any(positions) else list
        if origin is list or origin is tuple:
            item = self._encoder(args[0]) if args else None
            if item is None:
                # Tuples become lists so the state is the same whether or not it went through JSON.
                return list if origin is tuple else None
            return partial(_each, item, list)
        if origin is dict and args:
            key = str if args[0] is int else None
            return _mapping(key, self._encoder(args[1]))
        return None

    def _decoder(self, hint: Any) -> Converter:
        if hint is datetime:
            return self._decode_datetime
        if hint is date:
            return date.fromisoformat
        if isinstance(hint, type) and is_dataclass(hint):
            return partial(self.decode, hint)
        origin, args = get_origin(hint), get_args(hint)
        if origin is Union or origin is types.UnionType:
            return _none_safe(self._decoder(_without_none(hint)))
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return partial(_each, self._decoder(args[0]) or _same, tuple)
            return _sequence([self._decoder(arg) for arg in args], tuple)
        if origin is list and args:
            item = self._decoder(args[0])
            return None if item is None else partial(_each, item, list)
        if origin is dict and args:
            key = int if args[0] is int else None
            return _mapping(key, self._decoder(args[1]))
        return None


def _without_none(hint: Any) -> Any:
    """``X | None`` -> ``X``; other unions stay as they are (and are then kept as is)."""
    if get_origin(hint) is Union or get_origin(hint) is types.UnionType:
        members = [arg for arg in get_args(hint) if arg is not type(None)]
        return members[0] if len(members) == 1 else Any
    return hint


def _same(value: Any) -> Any:
    return value


def _none_safe(convert: Converter) -> Converter:
    if convert is None:
        return None
    inner = convert
    return lambda value: None if value is None else inner(value)


def _each(convert: Callable[[Any], Any], build: Callable[[Iterable[Any]], Any], values: Iterable[Any]) -> Any:
    return build(convert(value) for value in values)


def _sequence(items: list[Converter], build: Callable[[Iterable[Any]], Any]) -> Callable[[Any], Any]:
    """A fixed-length tuple such as ``tuple[str, str]``: each position converted by its own type."""
    converters = [item or _same for item in items]
    return lambda values: build(convert(value) for convert, value in zip(converters, values, strict=True))


def _mapping(key: Converter, value: Converter) -> Converter:
    if key is None and value is None:
        return None
    convert_key, convert_value = key or _same, value or _same
    return lambda mapping: {convert_key(k): convert_value(v) for k, v in mapping.items()}

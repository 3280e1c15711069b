"""Canonical sync operations: one vocabulary for every provider, translated by its definition.

The SyncManager asks for an operation (`appointment.create`, `patient.find`, ...) with a
canonical payload and gets canonical records back, whatever the provider. The provider's
definition says, in its `sync:` section, which function serves the operation and how the
fields map (see :mod:`clinicsync.integrations.sync_spec`); this module runs that function
through the executor and holds the rules that are the same for every provider:

* payloads are checked and made JSON-safe (aware instants as UTC, dates as ISO dates), and a
  length in minutes is derived from `starts_at`/`ends_at` for providers that keep one;
* records are reduced to the canonical keys with canonical types: ids as strings, instants
  as aware UTC datetimes, phones in E.164, dates of birth as dates, statuses from one set;
* finds are matched here, after the provider's own filters: a provider whose search is coarse
  (or absent) over-fetches and the match stays exact;
* a get of a record the provider no longer has answers no record rather than an error.

Nothing here knows a provider by name.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from clinicsync.errors import ClinicSyncError, ValidationFailed
from clinicsync.integrations.definitions import ProviderDefinition
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.executor import IntegrationExecutor
from clinicsync.integrations.ratebudget import Priority
from clinicsync.integrations.runtime import ProviderCaller, ResolvedIntegration, render
from clinicsync.integrations.sync_spec import (
    APPOINTMENT_STATUSES,
    MAPPABLE_KEYS,
    PAYLOAD_KEYS,
    RECORD_KEYS,
    SyncFieldSpec,
    SyncOperation,
    SyncOperationSpec,
    SyncParamSpec,
)
from clinicsync.integrations.transforms import TransformError, apply_steps, get_path

__all__ = [
    "OperationResult",
    "SyncOperation",
    "UnsupportedOperation",
    "pages_resolved",
    "perform",
    "perform_resolved",
    "stream",
    "supported_operations",
]

_INSTANTS = ("starts_at", "ends_at", "updated_at", "updated_since", "starts_from", "starts_to")
_IDS = ("id", "patient_id", "practitioner_id", "appointment_id")
_FALSY = (None, False, "", "false", "False", 0)


class UnsupportedOperation(ClinicSyncError):
    status_code = 422
    code = "unsupported_operation"


@dataclass
class OperationResult:
    records: list[dict[str, Any]]
    requests: int  # HTTP requests it took (pages of each call, read-backs included)
    # The provider's own clock at its answer, when its records carry it (`server_time` mapped).
    server_time: datetime | None = None
    # The provider's token for asking only what changes from here, when its function declares
    # one (`response.next_sync_token`): Google's nextSyncToken.
    sync_token: str | None = None


def supported_operations(definition: ProviderDefinition) -> frozenset[SyncOperation]:
    return frozenset(definition.sync)


async def perform(
    executor: IntegrationExecutor,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    operation: SyncOperation,
    payload: Mapping[str, Any],
) -> OperationResult:
    """Run one canonical operation against an organization's integration."""
    resolution = await executor.resolve_id(organization_id, integration_id)
    return await perform_resolved(executor.caller, resolution.resolved, operation, payload)


async def stream(
    executor: IntegrationExecutor,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    operation: SyncOperation,
    payload: Mapping[str, Any],
) -> AsyncIterator[dict[str, Any]]:
    """Records of a list operation one by one, fetching pages only as they are consumed."""
    if operation not in _LIST_OPERATIONS:
        raise ValueError(f"{operation.value} is not a list operation")
    resolution = await executor.resolve_id(organization_id, integration_id)
    resolved = resolution.resolved
    spec = _spec(resolved.definition, operation)
    prepared = _prepare_payload(operation, payload, resolved)
    params = _function_params(resolved, operation, spec, prepared)
    async for raw in executor.caller.iterate(resolved, spec.function, params):
        record = to_canonical(operation, spec, raw, resolved.settings)
        if _is_listed(operation, record, prepared):
            yield record


_LIST_OPERATIONS = (
    SyncOperation.APPOINTMENT_LIST_CHANGED,
    SyncOperation.PATIENT_LIST_CHANGED,
    SyncOperation.PRACTITIONER_LIST,
    SyncOperation.CONSULTATION_LIST,
)


async def pages_resolved(
    caller: ProviderCaller,
    resolved: ResolvedIntegration,
    operation: SyncOperation,
    payload: Mapping[str, Any],
    *,
    priority: Priority = Priority.BACKGROUND,
) -> AsyncIterator[list[dict[str, Any]]]:
    """A list operation's canonical records one provider page at a time (one request each),
    the next page fetched only when asked for: a sync run writes and checkpoints each."""
    if operation not in _LIST_OPERATIONS:
        raise ValueError(f"{operation.value} is not a list operation")
    spec = _spec(resolved.definition, operation)
    prepared = _prepare_payload(operation, payload, resolved)
    params = _function_params(resolved, operation, spec, prepared)
    async for raws in caller.pages(resolved, spec.function, params, priority=priority):
        records = [to_canonical(operation, spec, raw, resolved.settings) for raw in raws]
        yield [record for record in records if _is_listed(operation, record, prepared)]


async def perform_resolved(
    caller: ProviderCaller,
    resolved: ResolvedIntegration,
    operation: SyncOperation,
    payload: Mapping[str, Any],
    *,
    priority: Priority = Priority.LIVE,
) -> OperationResult:
    """The same, for an integration already resolved (no database needed). Sync runs read with
    `Priority.BACKGROUND`, so a booking being pushed never waits behind them."""
    spec = _spec(resolved.definition, operation)
    prepared = _prepare_payload(operation, payload, resolved)
    if operation is SyncOperation.PATIENT_FIND:
        return await _find_patients(caller, resolved, spec, prepared)
    if operation is SyncOperation.APPOINTMENT_FIND:
        _check_appointment_find(prepared)
    if operation.value.endswith((".update", ".cancel", ".get")) and prepared.get("id") is None:
        raise ValidationFailed("payload.id", f"is required by {operation.value}")
    try:
        records, requests, server_time, sync_token = await _call(
            caller, resolved, operation, spec, prepared, priority
        )
    except IntegrationError as exc:
        if (
            operation
            in (SyncOperation.APPOINTMENT_GET, SyncOperation.PATIENT_GET, SyncOperation.CONSULTATION_GET)
            and exc.code == "not_found"
        ):
            return OperationResult([], 1)
        if operation is SyncOperation.APPOINTMENT_CANCEL and exc.code in (
            "validation_failed",
            "gone",
            "permanent",
        ):
            done = await _already_cancelled(caller, resolved, prepared["id"])
            if done is not None:
                return OperationResult(done.records, done.requests + 1)
        raise
    if spec.read_back:
        record_id = prepared.get("id") or (records[0]["id"] if records else None)
        if record_id is None:
            raise IntegrationError("permanent", f"{operation.value} answered without an id to read back")
        getter = SyncOperation(f"{operation.kind}.get")
        read = await perform_resolved(caller, resolved, getter, {"id": record_id})
        records, requests = read.records, requests + read.requests
    if operation is SyncOperation.APPOINTMENT_FIND:
        records = [record for record in records if _appointment_matches(record, prepared)]
    if operation is not SyncOperation.SCHEDULE_CONFIG:  # one configuration, not records with ids
        records = [record for record in records if _is_listed(operation, record, prepared)]
    return OperationResult(records, requests, server_time, sync_token)


async def _already_cancelled(
    caller: ProviderCaller, resolved: ResolvedIntegration, record_id: str
) -> OperationResult | None:
    """A cancel refused because the appointment is cancelled already (a resent cancel whose
    first answer was lost: OpenDental breaks only Scheduled visits, Ascend answers 409) is done."""
    if SyncOperation.APPOINTMENT_GET not in resolved.definition.sync:
        return None
    try:
        read = await perform_resolved(caller, resolved, SyncOperation.APPOINTMENT_GET, {"id": record_id})
    except IntegrationError:
        return None
    if read.records and read.records[0]["status"] == "cancelled":
        return read
    return None


# ---- payloads ---------------------------------------------------------------------


def _spec(definition: ProviderDefinition, operation: SyncOperation) -> SyncOperationSpec:
    spec = definition.sync.get(operation)
    if spec is None:
        supported = ", ".join(sorted(op.value for op in definition.sync)) or "none"
        raise UnsupportedOperation(
            f"{definition.key} maps no function to {operation.value} (it supports: {supported})",
            details={"operation": operation.value, "provider": definition.key},
        )
    return spec


def _instant(name: str, value: Any) -> datetime:
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise ValidationFailed(f"payload.{name}", f"{value!r} is not an ISO 8601 date-time") from None
    if not isinstance(value, datetime):
        raise ValidationFailed(f"payload.{name}", "must be a date-time")
    if value.tzinfo is None:
        raise ValidationFailed(f"payload.{name}", "must carry a time zone (UTC is best)")
    return value.astimezone(UTC)


def _prepare_payload(
    operation: SyncOperation, payload: Mapping[str, Any], resolved: ResolvedIntegration
) -> dict[str, Any]:
    allowed = PAYLOAD_KEYS[operation]
    prepared: dict[str, Any] = {}
    for name, value in payload.items():
        if name not in allowed:
            raise ValidationFailed(
                f"payload.{name}", f"is not part of {operation.value} ({', '.join(allowed)})"
            )
        if value is None:
            continue
        if name in _INSTANTS:
            value = _instant(name, value)
        elif name == "date_of_birth":
            value = _as_date(value, f"payload.{name}", ValidationFailed)
        elif name in _IDS:
            value = str(value)
        elif name == "phone":
            value = _e164(value, resolved.settings) or _refuse_phone(value)
        prepared[name] = value
    starts, ends = prepared.get("starts_at"), prepared.get("ends_at")
    if operation is SyncOperation.APPOINTMENT_FIND and starts is not None:
        prepared.setdefault("starts_from", starts - timedelta(days=1))
        prepared.setdefault("starts_to", starts + timedelta(days=1))
    if starts is not None and ends is not None and "duration_minutes" in allowed:
        if ends <= starts:
            raise ValidationFailed("payload.ends_at", "must be after starts_at")
        prepared["duration_minutes"] = round((ends - starts).total_seconds() / 60)
    return prepared


def _refuse_phone(value: Any) -> str:
    raise ValidationFailed("payload.phone", f"{value!r} is not a phone number")


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _steps(spec_steps: list[Any], settings: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [(step.name, render(step.args, settings)) for step in spec_steps]


def _function_params(
    resolved: ResolvedIntegration,
    operation: SyncOperation,
    spec: SyncOperationSpec,
    payload: Mapping[str, Any],
) -> dict[str, Any]:
    settings = resolved.settings
    if spec.params is None:
        declared = {param.name for param in resolved.definition.functions[spec.function].params}
        return {name: _json_safe(value) for name, value in payload.items() if name in declared}
    params: dict[str, Any] = {}
    for name, source in spec.params.items():
        value = _param_value(source, payload, settings, name)
        if value is not None:
            params[name] = value
    return params


def _param_value(
    source: SyncParamSpec, payload: Mapping[str, Any], settings: Mapping[str, Any], name: str
) -> Any:
    if source.parts is not None:
        parts = [_param_value(part, payload, settings, name) for part in source.parts]
        given = [str(part) for part in parts if part is not None and part != ""]
        value: Any = source.join.join(given) if given else None
    elif source.source is not None:
        value = get_path(payload, source.source)
        value = None if value is None else _json_safe(value)
    else:
        value = render(source.value, settings)
    if value is None or not source.transform:
        return value
    try:
        return apply_steps(value, _steps(source.transform, settings))
    except TransformError as exc:
        raise ValidationFailed(f"payload.{source.source or name}", str(exc)) from None


async def _call(
    caller: ProviderCaller,
    resolved: ResolvedIntegration,
    operation: SyncOperation,
    spec: SyncOperationSpec,
    payload: Mapping[str, Any],
    priority: Priority = Priority.LIVE,
) -> tuple[list[dict[str, Any]], int, datetime | None, str | None]:
    params = _function_params(resolved, operation, spec, payload)
    result = await caller.execute(resolved, spec.function, params, priority=priority)
    records = [to_canonical(operation, spec, raw, resolved.settings) for raw in result.records]
    server_time = _server_time(operation, spec, result.records, resolved.settings)
    if spec.read_back:
        # The function's answer is not the record; only an id may be read from it.
        records = [record for record in records if record.get("id")]
    return records, max(result.pages, 1), server_time, result.sync_token


# ---- records ----------------------------------------------------------------------


def _server_time(
    operation: SyncOperation, spec: SyncOperationSpec, raws: list[Any], settings: Mapping[str, Any]
) -> datetime | None:
    """The latest provider clock stamped on the answer's records (none: the provider has none)."""
    if "server_time" not in MAPPABLE_KEYS.get(operation.kind, ()):
        return None
    field = spec.fields.get("server_time")
    stamps = []
    for raw in raws:
        source: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        value = (
            _field(source, field, settings, "server_time") if field is not None else source.get("server_time")
        )
        if value not in (None, ""):
            stamps.append(_read_instant("server_time", value, settings))
    return max(stamps) if stamps else None


def _zone(settings: Mapping[str, Any]) -> ZoneInfo:
    try:
        return ZoneInfo(str(settings.get("timezone") or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _read_instant(name: str, value: Any, settings: Mapping[str, Any]) -> datetime:
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise IntegrationError(
                "permanent", f"the provider's {name} {text!r} is not an ISO 8601 date-time"
            ) from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise IntegrationError("permanent", f"the provider's {name} is not a date-time")
    if value.tzinfo is None:
        # A time without an offset is the office's wall clock.
        value = value.replace(tzinfo=_zone(settings))
    return value.astimezone(UTC)


def _as_date(value: Any, name: str, error: type[Exception]) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        if error is ValidationFailed:
            raise ValidationFailed(name, f"{value!r} is not a date (YYYY-MM-DD)") from None
        raise IntegrationError("permanent", f"the provider's {name} {value!r} is not a date") from None


def _e164(value: Any, settings: Mapping[str, Any]) -> str | None:
    text = str(value).strip()
    if not text:
        return None
    region = str(settings.get("phone_region") or "US").upper()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _holds(found: Any, equals: Any) -> bool:
    if equals is None:
        return found not in _FALSY
    options = equals if isinstance(equals, list) else [equals]
    return found is not None and str(found) in {str(option) for option in options}


def _field(raw: Mapping[str, Any], spec: SyncFieldSpec, settings: Mapping[str, Any], name: str) -> Any:
    for case in spec.cases:
        if _holds(get_path(raw, case.when), render(case.equals, settings)):
            return case.value
    value = get_path(raw, spec.source) if spec.source else None
    if value is not None and spec.transform:
        try:
            value = apply_steps(value, _steps(spec.transform, settings))
        except TransformError as exc:
            raise IntegrationError(
                "permanent", f"the provider's {spec.source} could not be read as {name}: {exc}"
            ) from None
    return spec.default if value is None or value == "" else value


def to_canonical(
    operation: SyncOperation, spec: SyncOperationSpec, raw: Any, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """One function record as a canonical record of the operation's kind."""
    kind = operation.kind
    source: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    values: dict[str, Any] = {}
    for name in MAPPABLE_KEYS[kind]:
        field = spec.fields.get(name)
        values[name] = _field(source, field, settings, name) if field is not None else source.get(name)
    record: dict[str, Any] = {}
    for name in RECORD_KEYS[kind]:
        value = values.get(name)
        if value == "":
            value = None
        if value is None:
            record[name] = None
        elif name in _IDS:
            record[name] = str(value)
        elif name in _INSTANTS:
            record[name] = _read_instant(name, value, settings)
        elif name == "date_of_birth":
            record[name] = _as_date(value, name, IntegrationError)
        elif name == "phone":
            record[name] = _e164(value, settings)
        elif name == "status":
            if value not in APPOINTMENT_STATUSES:
                raise IntegrationError(
                    "permanent",
                    f"the provider's status {value!r} is not one of {', '.join(APPOINTMENT_STATUSES)};"
                    f" map it in sync.{operation.value}.fields.status",
                )
            record[name] = value
        else:
            record[name] = str(value) if name in ("note", "email", "first_name", "last_name") else value
    if kind == "appointment" and record["ends_at"] is None and record["starts_at"] is not None:
        minutes = values.get("duration_minutes")
        if minutes not in (None, ""):
            record["ends_at"] = record["starts_at"] + timedelta(minutes=int(minutes))
    if kind == "practitioner" and record["display_name"] is None:
        names = [record["first_name"], record["last_name"]]
        record["display_name"] = " ".join(name for name in names if name) or None
    return record


def _is_listed(operation: SyncOperation, record: Mapping[str, Any], payload: Mapping[str, Any]) -> bool:
    if record.get("id") is None:
        return False
    # A provider row the mapping gives no status (OpenDental's patient-note "appointments")
    # is not an appointment; lists and finds leave it out.
    listed_appointment = operation.kind == "appointment" and operation is not SyncOperation.APPOINTMENT_GET
    if listed_appointment and record.get("status") is None:
        return False
    # Providers without a change filter (the vet PIMS's calendar) list a window; the records'
    # own stamps say what changed.
    since, stamp = payload.get("updated_since"), record.get("updated_at")
    return not (
        operation.value.endswith(".list_changed")
        and since is not None
        and stamp is not None
        and stamp < since
    )


# ---- finds ------------------------------------------------------------------------


def _check_appointment_find(payload: Mapping[str, Any]) -> None:
    if payload.get("reference"):
        return
    if payload.get("patient_id") is None or payload.get("starts_at") is None:
        raise ValidationFailed(
            "payload", "appointment.find needs a reference, or patient_id and starts_at (and practitioner_id)"
        )


def _appointment_matches(record: Mapping[str, Any], payload: Mapping[str, Any]) -> bool:
    reference = payload.get("reference")
    if reference:
        return str(reference) in (record.get("note") or "")
    if record.get("patient_id") != payload.get("patient_id") or record.get("starts_at") != payload.get(
        "starts_at"
    ):
        return False
    practitioner = payload.get("practitioner_id")
    return practitioner is None or record.get("practitioner_id") == practitioner


def _patient_passes(payload: Mapping[str, Any]) -> list[tuple[str, ...]]:
    passes: list[tuple[str, ...]] = []
    if payload.get("email"):
        passes.append(("email",))
    if payload.get("phone") and payload.get("date_of_birth"):
        passes.append(("phone", "date_of_birth"))
    if not passes and payload.get("first_name") and payload.get("last_name") and payload.get("date_of_birth"):
        passes.append(("first_name", "last_name", "date_of_birth"))
    if not passes:
        raise ValidationFailed(
            "payload", "patient.find needs an email, or a phone and date_of_birth, or names and date_of_birth"
        )
    return passes


def _patient_matches(record: Mapping[str, Any], payload: Mapping[str, Any], keys: tuple[str, ...]) -> bool:
    for key in keys:
        mine, theirs = payload.get(key), record.get(key)
        if isinstance(mine, str) and key != "phone":
            if not isinstance(theirs, str) or mine.strip().casefold() != theirs.strip().casefold():
                return False
        elif mine != theirs:
            return False
    return True


async def _find_patients(
    caller: ProviderCaller, resolved: ResolvedIntegration, spec: SyncOperationSpec, payload: Mapping[str, Any]
) -> OperationResult:
    """Email first, then phone + date of birth: each a search of its own, matched exactly here."""
    requests = 0
    for keys in _patient_passes(payload):
        subset = {key: payload[key] for key in keys}
        records, used, _, _ = await _call(caller, resolved, SyncOperation.PATIENT_FIND, spec, subset)
        requests += used
        matches = [
            record for record in records if record.get("id") and _patient_matches(record, subset, keys)
        ]
        if matches:
            unique = {record["id"]: record for record in matches}
            return OperationResult(list(unique.values()), requests)
    return OperationResult([], requests)

"""Value transforms named by provider definitions, and nested-path helpers.

Each transform is a pure function ``(value, args) -> value``. A value it cannot handle
raises :class:`TransformError` with a sentence a clinic admin can act on; the executor
turns that into a validation error naming the parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers


class TransformError(ValueError):
    pass


Transform = Callable[[Any, Mapping[str, Any]], Any]
TRANSFORMS: dict[str, Transform] = {}


def _register(name: str) -> Callable[[Transform], Transform]:
    def decorator(function: Transform) -> Transform:
        TRANSFORMS[name] = function
        return function

    return decorator


# ---- nested paths -----------------------------------------------------------------


def path_parts(path: str | None) -> tuple[str, ...]:
    """A path split once, for reading it from many records (``get_parts``); () is the value itself."""
    return tuple(path.split(".")) if path else ()


def get_path(data: Any, path: str | None, default: Any = None) -> Any:
    """Read ``a.b.0.c`` from nested dicts and lists; an empty path is the value itself."""
    return get_parts(data, path_parts(path), default)


def get_parts(data: Any, parts: tuple[str, ...], default: Any = None) -> Any:
    if len(parts) == 1 and isinstance(data, dict):  # a plain field of a record: most reads
        return data.get(parts[0], default)
    current = data
    for part in parts:
        if isinstance(current, Mapping):
            if part not in current:
                return default
            current = current[part]
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(current) <= index < len(current):
                return default
            current = current[index]
        else:
            return default
    return current


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Write ``a.b.c`` into nested dicts, creating the levels that are missing."""
    parts = path.split(".")
    current = data
    for part in parts[:-1]:
        child = current.get(part)
        if not isinstance(child, dict):
            child = {}
            current[part] = child
        current = child
    current[parts[-1]] = value


# ---- helpers ----------------------------------------------------------------------


def _zone(name: Any) -> ZoneInfo:
    if name is None or name == "":
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise TransformError(f"unknown time zone {name!r}") from None


def _as_datetime(value: Any, assume_zone: ZoneInfo) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time())
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            raise TransformError(f"{value!r} is not an ISO 8601 date-time") from None
    else:
        raise TransformError(f"expected a date-time, got {type(value).__name__}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=assume_zone)
    return parsed


def _format(moment: datetime, fmt: str) -> str:
    if fmt == "iso":
        return moment.isoformat()
    if fmt == "iso_z":
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime(fmt)


# ---- transforms -------------------------------------------------------------------


@_register("rename")
def _identity(value: Any, args: Mapping[str, Any]) -> Any:
    return value


@_register("string")
def _string(value: Any, args: Mapping[str, Any]) -> Any:
    return None if value is None else str(value)


@_register("integer")
def _integer(value: Any, args: Mapping[str, Any]) -> Any:
    if value is None or value == "":
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise TransformError(f"{value!r} is not a whole number") from None


@_register("number")
def _number(value: Any, args: Mapping[str, Any]) -> Any:
    if value is None or value == "":
        return None
    try:
        return float(str(value).strip())
    except ValueError:
        raise TransformError(f"{value!r} is not a number") from None


_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off", ""}


@_register("boolean")
def _boolean(value: Any, args: Mapping[str, Any]) -> Any:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise TransformError(f"{value!r} is not a yes/no value")


@_register("boolean_string")
def _boolean_string(value: Any, args: Mapping[str, Any]) -> Any:
    """Booleans some APIs want as the strings "true"/"false" (OpenDental)."""
    parsed = _boolean(value, args)
    return None if parsed is None else ("true" if parsed else "false")


@_register("upper")
def _upper(value: Any, args: Mapping[str, Any]) -> Any:
    return None if value is None else str(value).upper()


@_register("lower")
def _lower(value: Any, args: Mapping[str, Any]) -> Any:
    return None if value is None else str(value).lower()


@_register("title")
def _title(value: Any, args: Mapping[str, Any]) -> Any:
    return None if value is None else str(value).title()


@_register("strip")
def _strip(value: Any, args: Mapping[str, Any]) -> Any:
    return None if value is None else str(value).strip()


_PHONE_FORMATS = {
    "e164": phonenumbers.PhoneNumberFormat.E164,
    "international": phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    "national": phonenumbers.PhoneNumberFormat.NATIONAL,
}


@_register("clean_phone")
def _clean_phone(value: Any, args: Mapping[str, Any]) -> Any:
    """Parse a phone number (E.164 or national in `region`) and write it as the provider wants.

    `format`: e164 (default), international, national, or digits (national digits only).
    """
    if value is None or value == "":
        return None
    region = str(args.get("region") or "US").upper()
    fmt = str(args.get("format") or "e164").lower()
    try:
        number = phonenumbers.parse(str(value), region)
    except phonenumbers.NumberParseException:
        raise TransformError(f"{value!r} is not a phone number") from None
    if not phonenumbers.is_possible_number(number):
        raise TransformError(f"{value!r} is not a possible phone number for region {region}")
    if fmt == "digits":
        return phonenumbers.national_significant_number(number)
    if fmt not in _PHONE_FORMATS:
        raise TransformError(f"unknown phone format {fmt!r}")
    return phonenumbers.format_number(number, _PHONE_FORMATS[fmt])


@_register("format_datetime")
def _format_datetime(value: Any, args: Mapping[str, Any]) -> Any:
    """An instant written in the provider's zone and format.

    `timezone`: the zone the provider expects (default UTC); `assume_timezone`: the zone of
    a value given without an offset (default: `timezone`); `format`: strftime, `iso` or `iso_z`.
    """
    if value is None or value == "":
        return None
    target = _zone(args.get("timezone"))
    assume = _zone(args.get("assume_timezone")) if args.get("assume_timezone") else target
    moment = _as_datetime(value, assume).astimezone(target)
    return _format(moment, str(args.get("format") or "iso"))


@_register("format_date")
def _format_date(value: Any, args: Mapping[str, Any]) -> Any:
    """A calendar date; an instant is first moved into `timezone` so the day is the clinic's day."""
    if value is None or value == "":
        return None
    fmt = str(args.get("format") or "%Y-%m-%d")
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.strftime(fmt)
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            return date.fromisoformat(value.strip()).strftime(fmt)
        except ValueError:
            raise TransformError(f"{value!r} is not a date (YYYY-MM-DD)") from None
    zone = _zone(args.get("timezone"))
    return _as_datetime(value, zone).astimezone(zone).date().strftime(fmt)


@_register("parse_datetime")
def _parse_datetime(value: Any, args: Mapping[str, Any]) -> Any:
    """A provider's date-time read back as ISO 8601 UTC.

    `format`: strftime of the provider's text (default ISO); `timezone`: the zone of values
    without an offset (OpenDental's office-local time); `null_values`: texts meaning "no date".
    """
    if value is None or value == "":
        return None
    if value in (args.get("null_values") or ()):
        return None
    zone = _zone(args.get("timezone"))
    fmt = args.get("format")
    if fmt and fmt not in ("iso", "iso_z"):
        try:
            parsed = datetime.strptime(str(value), str(fmt))
        except ValueError:
            raise TransformError(f"{value!r} does not match the date-time format {fmt!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zone)
    else:
        parsed = _as_datetime(value, zone)
    return parsed.astimezone(UTC).isoformat().replace("+00:00", "Z")


@_register("value_map")
def _value_map(value: Any, args: Mapping[str, Any]) -> Any:
    """Statuses and enums: `map` of our value -> theirs; `default` for the rest, else an error."""
    mapping = args.get("map") or {}
    if not isinstance(mapping, Mapping):
        raise TransformError("value_map needs a `map` mapping")
    if value is None:
        return args.get("default")
    key = value if value in mapping else str(value)
    if key in mapping:
        return mapping[key]
    if "default" in args:
        return args["default"]
    if args.get("passthrough"):
        return value
    raise TransformError(f"{value!r} is not one of {', '.join(map(str, mapping))}")


@_register("default")
def _default(value: Any, args: Mapping[str, Any]) -> Any:
    return args.get("value") if value is None or value == "" else value


@_register("constant")
def _constant(value: Any, args: Mapping[str, Any]) -> Any:
    return args.get("value")


@_register("pluck")
def _pluck(value: Any, args: Mapping[str, Any]) -> Any:
    """A value inside the value: `path` such as `0.number` or `links.self`."""
    return get_path(value, str(args.get("path") or ""))


@_register("last_segment")
def _last_segment(value: Any, args: Mapping[str, Any]) -> Any:
    """The id at the end of a resource link (Cliniko's `{"links":{"self":".../patients/82"}}`)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = get_path(value, str(args.get("path") or "links.self"))
        if value is None:
            return None
    return str(value).rstrip("/").rsplit("/", 1)[-1]


@_register("wrap")
def _wrap(value: Any, args: Mapping[str, Any]) -> Any:
    """Put the value under a key (Ascend's `{"id": .., "type": "PatientV1"}` references)."""
    if value is None:
        return None
    wrapped = {str(args.get("key") or "id"): value}
    wrapped.update(args.get("extra") or {})
    return wrapped


@_register("as_list")
def _as_list(value: Any, args: Mapping[str, Any]) -> Any:
    """A one-item list of the value (Cliniko's patient_phone_numbers, Ascend's phones)."""
    if value is None:
        return None
    return value if isinstance(value, list) else [value]


@_register("join")
def _join(value: Any, args: Mapping[str, Any]) -> Any:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        return str(value)
    return str(args.get("separator", ",")).join(str(item) for item in value)


@_register("split")
def _split(value: Any, args: Mapping[str, Any]) -> Any:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    return [part.strip() for part in str(value).split(str(args.get("separator", ",")))]


@_register("template")
def _template(value: Any, args: Mapping[str, Any]) -> Any:
    """Text around the value: `template: "status:{value}"`."""
    if value is None:
        return None
    return str(args.get("template", "{value}")).replace("{value}", str(value))


@_register("minutes_to_pattern")
def _minutes_to_pattern(value: Any, args: Mapping[str, Any]) -> Any:
    """A duration as a time-bar pattern, one character per `minutes_per_char` (OpenDental: X per 5 min)."""
    if value is None:
        return None
    minutes = _integer(value, args)
    step = int(args.get("minutes_per_char", 5))
    if minutes <= 0 or minutes % step:
        raise TransformError(f"{value!r} minutes is not a positive multiple of {step}")
    return str(args.get("char", "X")) * (minutes // step)


@_register("pattern_to_minutes")
def _pattern_to_minutes(value: Any, args: Mapping[str, Any]) -> Any:
    if value is None:
        return None
    return len(str(value)) * int(args.get("minutes_per_char", 5))


@_register("chain")
def _chain(value: Any, args: Mapping[str, Any]) -> Any:
    """Several transforms in order, as stored in one parameter-map row."""
    steps = args.get("steps") or []
    return apply_steps(value, [(str(step["name"]), step.get("args") or {}) for step in steps])


def apply_steps(value: Any, steps: list[tuple[str, Mapping[str, Any]]]) -> Any:
    return apply_resolved(value, resolve_steps(steps))


ResolvedSteps = tuple[tuple[Transform, Mapping[str, Any]], ...]


def resolve_steps(steps: list[tuple[str, Mapping[str, Any]]]) -> ResolvedSteps:
    """The steps' functions looked up once, for applying them to many values."""
    return tuple((TRANSFORMS.get(name) or _unknown(name), args) for name, args in steps)


def apply_resolved(value: Any, steps: ResolvedSteps) -> Any:
    for function, args in steps:
        value = function(value, args)
    return value


def _unknown(name: str) -> Transform:
    def fails(_value: Any, _args: Mapping[str, Any]) -> Any:
        raise TransformError(f"unknown transform {name!r}")

    return fails

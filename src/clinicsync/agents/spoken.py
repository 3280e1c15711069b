"""Reading what a caller says and saying what the clinic offers.

Voice agents pass on what they heard: "six one nine, five five five, one two three four",
"double five", "oh two nine nine ...". Chatbots pass what was typed. Both end up as the
E.164 number we store, read in the clinic's own country. Times go the other way: instants
become "Tuesday 3 March at 2:30 pm" in the clinic's zone, so an agent never does zone arithmetic.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime, timedelta
from importlib import resources
from pathlib import Path

import phonenumbers

DIGIT_WORDS = {
    "zero": "0",
    "oh": "0",
    "o": "0",
    "nought": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
REPEATS = {"double": 2, "triple": 3}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def spoken_digits(text: str) -> str:
    """The digits (and a leading +) in a phone number as spoken or typed, words and all."""
    tokens = re.findall(r"\+|\d|[a-z]+", text.lower())
    out: list[str] = []
    repeat = 1
    for token in tokens:
        if token in REPEATS:
            repeat = REPEATS[token]
            continue
        if token == "+" or token == "plus":
            out.append("+")
        elif token.isdigit():
            out.append(token * repeat)
        elif token in DIGIT_WORDS:
            out.append(DIGIT_WORDS[token] * repeat)
        repeat = 1
    return "".join(out)


def phone_e164(text: str, region: str) -> str | None:
    """E.164 for a phone number as said or typed in ``region``; None when it can't be a real number."""
    digits = spoken_digits(text)
    if not digits:
        return None
    try:
        parsed = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _zone_table() -> str:
    try:
        return resources.files("tzdata").joinpath("zoneinfo", "zone.tab").read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        system = Path("/usr/share/zoneinfo/zone.tab")
        return system.read_text() if system.exists() else ""


@functools.cache
def _zone_countries() -> dict[str, str]:
    countries: dict[str, str] = {}
    for line in _zone_table().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) >= 3:
            countries[parts[2]] = parts[0]
    return countries


def region_of_zone(zone: str, default: str) -> str:
    """The country a clinic's time zone lies in: how its callers write local numbers."""
    return _zone_countries().get(zone, default)


def spoken_time(local: datetime) -> str:
    """2:30 pm, 9 am: how a receptionist says a time."""
    hour = local.hour % 12 or 12
    suffix = "am" if local.hour < 12 else "pm"
    return f"{hour} {suffix}" if local.minute == 0 else f"{hour}:{local.minute:02d} {suffix}"


def spoken_day(day: date, today: date) -> str:
    if day == today:
        return f"today, {day:%A} {day.day} {day:%B}"
    if day == today + timedelta(days=1):
        return f"tomorrow, {day:%A} {day.day} {day:%B}"
    return f"{day:%A} {day.day} {day:%B}"


def spoken_when(local: datetime, today: date) -> str:
    """Tuesday 3 March at 2:30 pm (with "today"/"tomorrow" where they apply)."""
    return f"{spoken_day(local.date(), today)} at {spoken_time(local)}"


def read_day(text: str, today: date) -> date | None:
    """A local date from what an agent passes: 2026-03-03, today, tomorrow or a weekday name."""
    cleaned = text.strip().lower()
    if cleaned in ("today", "now"):
        return today
    if cleaned == "tomorrow":
        return today + timedelta(days=1)
    for offset_word in ("next ", "this "):
        cleaned = cleaned.removeprefix(offset_word)
    if cleaned in WEEKDAYS:
        ahead = (WEEKDAYS.index(cleaned) - today.weekday()) % 7
        return today + timedelta(days=ahead or 7)
    try:
        return date.fromisoformat(cleaned[:10])
    except ValueError:
        return None


def read_local_start(text: str) -> datetime | None:
    """A naive local start from "2026-03-03 14:30", "2026-03-03T14:30" or "2026-03-03T14:30:00+11:00"."""
    cleaned = text.strip().replace(" ", "T", 1)
    try:
        return datetime.fromisoformat(cleaned)
    except ValueError:
        return None

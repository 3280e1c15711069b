"""A clinic's country, for reading phone numbers typed the local way (0412 345 678)."""

from __future__ import annotations

from functools import cache
from importlib import resources

import phonenumbers


@cache
def _zone_countries() -> dict[str, str]:
    """IANA zone -> ISO country, from the tz database's zone.tab (shipped by the tzdata package)."""
    table = resources.files("tzdata.zoneinfo").joinpath("zone.tab").read_text(encoding="utf-8")
    countries: dict[str, str] = {}
    for line in table.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        code, _coordinates, zone, *_ = line.split("\t")
        countries[zone] = code
    return countries


def region_for_zone(time_zone: str) -> str | None:
    """The country a time zone belongs to (Australia/Sydney -> AU), if the tz database says."""
    region = _zone_countries().get(time_zone)
    return region if region in phonenumbers.SUPPORTED_REGIONS else None


def check_region(value: str) -> str:
    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{value!r} is not an ISO country code with a phone plan (e.g. US, AU, GB)")
    return region

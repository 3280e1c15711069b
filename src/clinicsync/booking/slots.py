"""Slot arithmetic: weekly hours and date overrides -> free start times, correct across DST.

Pure functions over plain values so they can be reasoned about (and tested) without a database.
Rules are local wall-clock times; we walk the local calendar in the clinic's zone and step
start times on the wall clock, because that is what a patient reads. Two DST traps:

* spring forward: local times inside the gap don't exist; they are skipped, never shifted.
* fall back: local times in the repeated hour happen twice; only the first occurrence
  (fold=0) is offered, so a list of slots never shows the same local time twice.

Durations and overlaps are always measured in UTC.
"""

from __future__ import annotations

import uuid
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class WeeklyInterval:
    day_of_week: int  # 0=Monday .. 6=Sunday
    start: time
    end: time
    is_available: bool = True


@dataclass(frozen=True, slots=True)
class DateOverride:
    day: date
    start: time | None  # None with end None: the whole day
    end: time | None
    is_available: bool


@dataclass(frozen=True, slots=True)
class Slot:
    practitioner_id: uuid.UUID
    start: datetime  # UTC
    end: datetime  # UTC
    local_start: datetime  # aware, in the clinic's zone


Interval = tuple[time, time]


def _subtract(windows: list[Interval], cut: Interval) -> list[Interval]:
    result: list[Interval] = []
    for start, end in windows:
        if cut[1] <= start or cut[0] >= end:
            result.append((start, end))
            continue
        if start < cut[0]:
            result.append((start, cut[0]))
        if cut[1] < end:
            result.append((cut[1], end))
    return result


def _union(windows: list[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def local_windows(
    day: date, weekly: Sequence[WeeklyInterval], overrides: Sequence[DateOverride]
) -> list[Interval]:
    """The local opening intervals of one day after its overrides."""
    weekday = day.weekday()
    windows = _union([(r.start, r.end) for r in weekly if r.day_of_week == weekday and r.is_available])
    for rule in weekly:
        if rule.day_of_week == weekday and not rule.is_available:
            windows = _subtract(windows, (rule.start, rule.end))
    todays = [o for o in overrides if o.day == day]
    if any(not o.is_available and o.start is None for o in todays):
        return []
    for override in todays:
        if override.start is None or override.end is None:
            continue
        if override.is_available:
            windows = _union([*windows, (override.start, override.end)])
        else:
            windows = _subtract(windows, (override.start, override.end))
    return windows


def to_utc(day: date, wall: time, zone: ZoneInfo) -> datetime | None:
    """The UTC instant of a local wall time (first occurrence), or None if it doesn't exist that day."""
    local = datetime.combine(day, wall, tzinfo=zone).replace(fold=0)
    instant = local.astimezone(UTC)
    # A nonexistent time doesn't survive the round trip: 02:30 on spring-forward day comes back as 03:30.
    if instant.astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
        return None
    return instant


def _window_bounds_utc(day: date, window: Interval, zone: ZoneInfo) -> tuple[datetime, datetime]:
    # Bounds that fall in a DST gap are pushed past it: the wall clock jumps forward there too.
    start = datetime.combine(day, window[0], tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day, window[1], tzinfo=zone).astimezone(UTC)
    return start, end


class BusyTimes:
    """Busy intervals answering "does [start, end) overlap any?" in O(log n).

    Sorted by start with a running maximum of ends: the intervals starting before ``end``
    are a prefix, and one of them overlaps exactly when the latest end in that prefix is
    after ``start``. No assumption that busy intervals are disjoint.
    """

    def __init__(self, busy: Iterable[tuple[datetime, datetime]]) -> None:
        ordered = sorted(busy)
        self._starts = [b_start for b_start, _ in ordered]
        self._max_ends: list[datetime] = []
        for _, b_end in ordered:
            self._max_ends.append(max(b_end, self._max_ends[-1]) if self._max_ends else b_end)

    def overlaps(self, start: datetime, end: datetime) -> bool:
        before_end = bisect_left(self._starts, end)
        return before_end > 0 and self._max_ends[before_end - 1] > start


def free_slots(
    *,
    practitioner_id: uuid.UUID,
    zone: ZoneInfo,
    first_day: date,
    last_day: date,
    weekly: Sequence[WeeklyInterval],
    overrides: Sequence[DateOverride],
    busy: Iterable[tuple[datetime, datetime]],
    duration: timedelta,
    interval: timedelta,
    earliest_start: datetime,
) -> Iterator[Slot]:
    """Free start times of ``duration`` between two local dates (inclusive), stepped by ``interval``."""
    busy_times = BusyTimes(busy)
    day = first_day
    while day <= last_day:
        for window in local_windows(day, weekly, overrides):
            window_start_utc, window_end_utc = _window_bounds_utc(day, window, zone)
            wall = datetime.combine(day, window[0])
            window_end_wall = datetime.combine(day, window[1])
            while wall < window_end_wall:
                start = to_utc(day, wall.time(), zone)
                wall += interval
                if start is None or start < window_start_utc:
                    continue
                end = start + duration
                if end > window_end_utc or start < earliest_start:
                    continue
                if busy_times.overlaps(start, end):
                    continue
                yield Slot(practitioner_id, start, end, start.astimezone(zone))
        day += timedelta(days=1)


def fits_availability(
    *,
    start: datetime,
    end: datetime,
    zone: ZoneInfo,
    weekly: Sequence[WeeklyInterval],
    overrides: Sequence[DateOverride],
) -> bool:
    """Whether [start, end) lies inside one opening window of the local day it starts on."""
    day = start.astimezone(zone).date()
    for window in local_windows(day, weekly, overrides):
        window_start, window_end = _window_bounds_utc(day, window, zone)
        if window_start <= start and end <= window_end:
            return True
    return False

"""Slot arithmetic: weekly hours and date overrides -> free start times, correct across DST.

Pure functions over plain values so they can be reasoned about (and tested) without a database.
Rules are local wall-clock times; we walk the local calendar in the clinic's zone and step
start times on the wall clock, because that is what a patient reads. Two DST traps:

* spring forward: local times inside the gap don't exist; they are skipped, never shifted.
* fall back: local times in the repeated hour happen twice; both occurrences are offered,
  each carrying its own UTC offset, so no real time is lost and none is ambiguous.

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
    override: bool = False  # offered to an admin only because they asked to override the rules


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


def occurrences(wall: datetime, zone: ZoneInfo) -> list[datetime]:
    """Every UTC instant at which the clock reads ``wall`` (naive): none in a spring-forward gap,
    two in a fall-back hour (earlier first), one otherwise."""
    found: list[datetime] = []
    for fold in (0, 1):
        local = wall.replace(tzinfo=zone, fold=fold)
        instant = local.astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) != wall:
            continue  # in the gap: the round trip lands elsewhere
        if instant not in found:
            found.append(instant)
    return found


def _window_bounds_utc(day: date, window: Interval, zone: ZoneInfo) -> tuple[datetime, datetime]:
    # Bounds that fall in a DST gap are pushed past it: the wall clock jumps forward there too.
    start = datetime.combine(day, window[0], tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day, window[1], tzinfo=zone).astimezone(UTC)
    return start, end


def grid_starts(
    *,
    day: date,
    zone: ZoneInfo,
    weekly: Sequence[WeeklyInterval],
    overrides: Sequence[DateOverride],
    duration: timedelta,
    interval: timedelta,
) -> list[datetime]:
    """Every start on the day's grid that fits its opening hours, as sorted UTC instants.

    The grid steps the wall clock from each window's opening time. A wall time that happens
    twice (fall back) gives both instants, so no real time is lost; one inside a gap gives none.
    Slot search and booking both use this, so a time is bookable exactly when search offers it.
    """
    starts: set[datetime] = set()
    for window in local_windows(day, weekly, overrides):
        window_start_utc, window_end_utc = _window_bounds_utc(day, window, zone)
        wall = datetime.combine(day, window[0])
        window_end_wall = datetime.combine(day, window[1])
        while wall < window_end_wall:
            for start in occurrences(wall, zone):
                if start >= window_start_utc and start + duration <= window_end_utc:
                    starts.add(start)
            wall += interval
    return sorted(starts)


def on_grid(
    start: datetime,
    *,
    day: date,
    zone: ZoneInfo,
    weekly: Sequence[WeeklyInterval],
    overrides: Sequence[DateOverride],
    duration: timedelta,
    interval: timedelta,
) -> bool:
    """``start in grid_starts(...)`` without building the day's grid (booking asks this once per
    request): the wall-clock reading of ``start`` must be a whole number of steps from the
    opening of a window that holds it, and the appointment must fit that window's instants.

    The same question as grid_starts asks of every step: a step's instants are exactly the
    instants whose wall clock reads that step, so only the step equal to ``start``'s own wall
    reading can produce it.
    """
    wall = start.astimezone(zone).replace(tzinfo=None, fold=0)
    if wall.date() != day:
        return False
    for window in local_windows(day, weekly, overrides):
        opening, closing = datetime.combine(day, window[0]), datetime.combine(day, window[1])
        if not opening <= wall < closing or (wall - opening) % interval:
            continue
        window_start_utc, window_end_utc = _window_bounds_utc(day, window, zone)
        if start >= window_start_utc and start + duration <= window_end_utc:
            return True
    return False


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


@dataclass(frozen=True, slots=True)
class SearchRules:
    """What one search applies to every practitioner it covers."""

    zone: ZoneInfo
    duration: timedelta
    interval: timedelta  # the grid offered
    clinic_interval: timedelta  # the clinic's own grid; other starts need an admin's override
    earliest_start: datetime  # notice
    latest_start: datetime  # horizon
    buffer_before: timedelta = timedelta(0)
    buffer_after: timedelta = timedelta(0)
    # Admin override: also show starts inside notice, past the horizon or off the clinic's grid,
    # flagged as such. Never the past, never outside hours, never over another booking.
    override: bool = False
    not_before: datetime | None = None


def day_slots(
    *,
    practitioner_id: uuid.UUID,
    day: date,
    weekly: Sequence[WeeklyInterval],
    overrides: Sequence[DateOverride],
    busy: BusyTimes,
    rules: SearchRules,
) -> list[Slot]:
    """The free starts of one practitioner on one local day, in time order."""
    regular = set(
        grid_starts(
            day=day,
            zone=rules.zone,
            weekly=weekly,
            overrides=overrides,
            duration=rules.duration,
            interval=rules.clinic_interval,
        )
    )
    if rules.override and rules.interval != rules.clinic_interval:
        offered = grid_starts(
            day=day,
            zone=rules.zone,
            weekly=weekly,
            overrides=overrides,
            duration=rules.duration,
            interval=rules.interval,
        )
    else:
        offered = sorted(regular)
    found: list[Slot] = []
    for start in offered:
        if rules.not_before is not None and start < rules.not_before:
            continue
        outside_rules = start not in regular or not rules.earliest_start <= start <= rules.latest_start
        if outside_rules and not rules.override:
            continue
        end = start + rules.duration
        if busy.overlaps(start - rules.buffer_before, end + rules.buffer_after):
            continue
        found.append(Slot(practitioner_id, start, end, start.astimezone(rules.zone), outside_rules))
    return found


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
    rules = SearchRules(
        zone=zone,
        duration=duration,
        interval=interval,
        clinic_interval=interval,
        earliest_start=earliest_start,
        latest_start=datetime.max.replace(tzinfo=UTC),
    )
    day = first_day
    while day <= last_day:
        yield from day_slots(
            practitioner_id=practitioner_id,
            day=day,
            weekly=weekly,
            overrides=overrides,
            busy=busy_times,
            rules=rules,
        )
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

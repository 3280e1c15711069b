"""Slot arithmetic without a database: windows, overrides, busy times and DST."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from clinicsync.booking.slots import (
    BusyTimes,
    DateOverride,
    WeeklyInterval,
    fits_availability,
    free_slots,
    grid_starts,
    local_windows,
    on_grid,
)

NEW_YORK = ZoneInfo("America/New_York")
PRACTITIONER = uuid.uuid4()
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def slots_on(day: date, weekly: list[WeeklyInterval], **kwargs: object) -> list[datetime]:
    params: dict[str, object] = {
        "practitioner_id": PRACTITIONER,
        "zone": NEW_YORK,
        "first_day": day,
        "last_day": day,
        "weekly": weekly,
        "overrides": [],
        "busy": [],
        "duration": timedelta(minutes=30),
        "interval": timedelta(minutes=30),
        "earliest_start": LONG_AGO,
    }
    params.update(kwargs)
    return [slot.local_start for slot in free_slots(**params)]  # type: ignore[arg-type]


def every_day(start: time, end: time) -> list[WeeklyInterval]:
    return [WeeklyInterval(day, start, end) for day in range(7)]


def test_several_intervals_a_day_and_a_lunch_break_are_honoured() -> None:
    monday = date(2027, 5, 3)
    weekly = [
        WeeklyInterval(0, time(9), time(12)),
        WeeklyInterval(0, time(13), time(15)),
        WeeklyInterval(0, time(11), time(11, 30), is_available=False),
    ]
    starts = [t.time() for t in slots_on(monday, weekly)]
    assert starts == [
        time(9),
        time(9, 30),
        time(10),
        time(10, 30),
        time(11, 30),
        time(13),
        time(13, 30),
        time(14),
        time(14, 30),
    ]


def test_closed_day_override_removes_the_day_and_extra_hours_add_to_it() -> None:
    day = date(2027, 5, 4)
    weekly = every_day(time(9), time(10))
    closed = [DateOverride(day, None, None, is_available=False)]
    extra = [DateOverride(day, time(18), time(19), is_available=True)]
    assert local_windows(day, weekly, closed) == []
    assert [t.time() for t in slots_on(day, weekly, overrides=extra)] == [
        time(9),
        time(9, 30),
        time(18),
        time(18, 30),
    ]


def test_busy_times_and_minimum_notice_remove_slots() -> None:
    day = date(2027, 5, 5)
    weekly = every_day(time(9), time(11))
    busy = [(datetime(2027, 5, 5, 9, 30, tzinfo=NEW_YORK), datetime(2027, 5, 5, 10, tzinfo=NEW_YORK))]
    earliest = datetime(2027, 5, 5, 9, 1, tzinfo=NEW_YORK)
    starts = [t.time() for t in slots_on(day, weekly, busy=busy, earliest_start=earliest)]
    assert starts == [time(10), time(10, 30)]


def test_spring_forward_skips_the_missing_hour() -> None:
    transition = date(2027, 3, 14)
    starts = slots_on(transition, every_day(time(0), time(5)))
    assert [t.strftime("%H:%M") for t in starts] == [
        "00:00",
        "00:30",
        "01:00",
        "01:30",
        "03:00",
        "03:30",
        "04:00",
        "04:30",
    ]
    # 01:30 EST is followed by 03:00 EDT: 30 real minutes apart, as the wall clock says.
    assert starts[4].astimezone(UTC) - starts[3].astimezone(UTC) == timedelta(minutes=30)


def test_fall_back_offers_both_occurrences_of_the_repeated_hour_each_with_its_offset() -> None:
    transition = date(2027, 11, 7)
    starts = slots_on(transition, every_day(time(0), time(3)))
    labels = [t.strftime("%H:%M %Z") for t in starts]
    assert labels == [
        "00:00 EDT",
        "00:30 EDT",
        "01:00 EDT",
        "01:30 EDT",
        "01:00 EST",
        "01:30 EST",
        "02:00 EST",
        "02:30 EST",
    ]
    # 00:00 EDT to 03:00 EST is four real hours: eight half-hours, none lost, none twice.
    instants = [t.astimezone(UTC) for t in starts]
    assert instants == sorted(set(instants))
    assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(instants))


def test_a_booking_fits_only_inside_one_window() -> None:
    weekly = [WeeklyInterval(2, time(9), time(12))]
    wednesday_9 = datetime(2027, 5, 5, 9, tzinfo=NEW_YORK)
    assert fits_availability(
        start=wednesday_9, end=wednesday_9 + timedelta(hours=1), zone=NEW_YORK, weekly=weekly, overrides=[]
    )
    assert not fits_availability(
        start=wednesday_9 + timedelta(hours=2, minutes=30),
        end=wednesday_9 + timedelta(hours=3, minutes=30),
        zone=NEW_YORK,
        weekly=weekly,
        overrides=[],
    )


def test_busy_times_find_overlaps_among_nested_and_unsorted_intervals() -> None:
    at = datetime(2027, 5, 5, tzinfo=UTC)
    busy = BusyTimes(
        [
            (at + timedelta(hours=5), at + timedelta(hours=6)),
            (at + timedelta(hours=1), at + timedelta(hours=4)),  # contains the next one
            (at + timedelta(hours=2), at + timedelta(hours=3)),
        ]
    )
    assert busy.overlaps(at + timedelta(hours=3, minutes=30), at + timedelta(hours=3, minutes=45))
    assert not busy.overlaps(at + timedelta(hours=4), at + timedelta(hours=5))  # half-open: back to back
    assert not busy.overlaps(at, at + timedelta(hours=1))
    assert busy.overlaps(at + timedelta(hours=5, minutes=59), at + timedelta(hours=7))
    assert not BusyTimes([]).overlaps(at, at + timedelta(hours=1))


def test_booking_grid_check_agrees_with_the_grid_search_offers_across_dst_and_odd_windows() -> None:
    """Booking asks on_grid instead of building the day's grid; it must answer exactly as
    membership in grid_starts does, including both 01:30s of a fall-back night and the missing
    hour of a spring-forward one, windows opening off the hour, and lengths that overrun."""
    weekly = [
        WeeklyInterval(day, start, end)
        for day in range(7)
        for start, end in ((time(0, 0), time(3, 10)), (time(9, 5), time(12, 0)), (time(13, 0), time(23, 59)))
    ]
    overrides = [DateOverride(date(2027, 7, 1), time(12, 0), time(12, 40), True)]
    days = (date(2027, 11, 7), date(2027, 3, 14), date(2027, 7, 1))
    for day, interval, minutes in itertools.product(days, (10, 15, 30), (10, 30, 45)):
        grid_args = {
            "day": day,
            "zone": NEW_YORK,
            "weekly": weekly,
            "overrides": overrides,
            "duration": timedelta(minutes=minutes),
            "interval": timedelta(minutes=interval),
        }
        offered = set(grid_starts(**grid_args))  # type: ignore[arg-type]
        opening = datetime.combine(day, time(0, 0), tzinfo=NEW_YORK).astimezone(UTC) - timedelta(hours=1)
        candidates = [opening + timedelta(minutes=5 * step) for step in range(12 * 27)]
        assert offered <= set(candidates)
        for start in candidates:
            assert on_grid(start, **grid_args) == (start in offered), (day, interval, minutes, start)  # type: ignore[arg-type]

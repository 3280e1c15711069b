"""Small inline SVG charts drawn on the server (no script, no build step)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class RunPoint:
    started_at: datetime
    seconds: float
    records: int
    failed: bool


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    failed: bool
    label: str


@dataclass(frozen=True)
class Chart:
    """Runs over time: a bar per run for its duration (left axis), a dot per run for the records
    it processed (right axis). Coordinates are in the SVG's own units."""

    width: int
    height: int
    bars: list[Bar]
    dots: list[tuple[float, float]]
    max_seconds: float
    max_records: int
    first: datetime | None
    last: datetime | None

    @property
    def line(self) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in self.dots)


LEFT, RIGHT, TOP, BOTTOM = 48, 48, 12, 28
MAX_BAR = 40.0  # a few runs should not look like a wall


def runs_chart(points: list[RunPoint], *, width: int = 720, height: int = 220) -> Chart:
    ordered = sorted(points, key=lambda point: point.started_at)
    inner_width = width - LEFT - RIGHT
    inner_height = height - TOP - BOTTOM
    max_seconds = max((point.seconds for point in ordered), default=0.0) or 1.0
    max_records = max((point.records for point in ordered), default=0) or 1
    slot = inner_width / max(len(ordered), 1)
    bars: list[Bar] = []
    dots: list[tuple[float, float]] = []
    for index, point in enumerate(ordered):
        x = LEFT + index * slot
        bar_height = inner_height * point.seconds / max_seconds
        bar_width = min(max(slot * 0.7, 1.0), MAX_BAR)
        bars.append(
            Bar(
                x=x + (slot - bar_width) / 2,
                y=TOP + inner_height - bar_height,
                width=bar_width,
                height=bar_height,
                failed=point.failed,
                label=f"{point.started_at:%d %b %H:%M}: {point.seconds:.1f} s, {point.records} records"
                + (" (failed)" if point.failed else ""),
            )
        )
        dots.append((x + slot / 2, TOP + inner_height - inner_height * point.records / max_records))
    return Chart(
        width=width,
        height=height,
        bars=bars,
        dots=dots,
        max_seconds=max_seconds,
        max_records=max_records,
        first=ordered[0].started_at if ordered else None,
        last=ordered[-1].started_at if ordered else None,
    )

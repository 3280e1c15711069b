"""The sandbox's fake clock: real time by default, settable, advanceable, freezable.

Simulated PMSs stamp every change (``DateTStamp``, ``updated_at``, ...) with ``SandboxClock.now()`` so a
test can move time forward ("the receptionist edits the booking two hours later") without sleeping.

- ``now()`` is always an aware UTC datetime.
- ``local_now()`` is the same instant in the office time zone (``timezone``, an IANA name), which is
  what providers with office-local wire formats (OpenDental) print.
- By default time flows with the real clock. ``set()`` moves the clock to an instant and keeps it
  flowing from there (or frozen, with ``frozen=True``); ``advance()`` jumps forward by a duration.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def load_zone(name: str) -> ZoneInfo:
    """Return the IANA zone ``name`` or raise ``ValueError`` naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


class SandboxClock:
    """A clock a test can steer. All instants are aware UTC datetimes."""

    def __init__(self, timezone: str = "UTC", *, start: datetime | None = None, frozen: bool = False) -> None:
        self._zone = load_zone(timezone)
        # The clock is "real now + offset" while flowing, or a fixed instant while frozen.
        self._offset = timedelta(0)
        self._frozen_at: datetime | None = None
        if start is not None:
            self.set(start, frozen=frozen)
        elif frozen:
            self._frozen_at = self._real_now()

    @staticmethod
    def _real_now() -> datetime:
        return datetime.fromtimestamp(time.time(), tz=UTC)

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    @property
    def timezone(self) -> str:
        return self._zone.key

    @timezone.setter
    def timezone(self, name: str) -> None:
        self._zone = load_zone(name)

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def now(self) -> datetime:
        """The sandbox's current instant, aware, in UTC."""
        if self._frozen_at is not None:
            return self._frozen_at
        return self._real_now() + self._offset

    def local_now(self) -> datetime:
        """The current instant in the office time zone."""
        return self.now().astimezone(self._zone)

    def to_local(self, instant: datetime) -> datetime:
        """Convert an aware instant to office-local time (aware)."""
        return instant.astimezone(self._zone)

    def from_local(self, naive_local: datetime) -> datetime:
        """Interpret a naive office-local wall time as an aware UTC instant."""
        if naive_local.tzinfo is not None:
            return naive_local.astimezone(UTC)
        return naive_local.replace(tzinfo=self._zone).astimezone(UTC)

    def set(self, instant: datetime, *, frozen: bool | None = None) -> None:
        """Move the clock to ``instant`` (naive values are read as office-local time).

        ``frozen`` None keeps the current flowing/frozen mode.
        """
        target = self.from_local(instant)
        keep_frozen = self.frozen if frozen is None else frozen
        if keep_frozen:
            self._frozen_at = target
            self._offset = timedelta(0)
        else:
            self._frozen_at = None
            self._offset = target - self._real_now()

    def advance(self, delta: timedelta | float) -> None:
        """Jump forward (or back, with a negative value) by ``delta`` (seconds when a number)."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        if self._frozen_at is not None:
            self._frozen_at += step
        else:
            self._offset += step

    def freeze(self) -> None:
        self._frozen_at = self.now()

    def unfreeze(self) -> None:
        if self._frozen_at is not None:
            self._offset = self._frozen_at - self._real_now()
            self._frozen_at = None

    def reset(self) -> None:
        """Back to real time, flowing."""
        self._offset = timedelta(0)
        self._frozen_at = None

    def describe(self) -> dict[str, object]:
        now = self.now()
        return {
            "now": now.isoformat(),
            "local_now": now.astimezone(self._zone).isoformat(),
            "timezone": self.timezone,
            "frozen": self.frozen,
            "offset_seconds": (now - self._real_now()).total_seconds(),
        }

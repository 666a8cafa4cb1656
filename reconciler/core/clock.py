"""Injectable time.

Every decision in the core that depends on "now" takes a :class:`Clock`. Production
code uses :class:`SystemClock`; unit tests use :class:`FakeClock` and move time by hand,
so no test ever sleeps on the wall clock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Source of the current instant (timezone-aware UTC) and of monotonic time."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock, optionally shifted by a fixed offset (used to inject skew in tests)."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, delta: timedelta | float) -> datetime:
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        if delta < timedelta(0):
            raise ValueError("use set() to move a FakeClock backwards")
        self._now += delta
        self._mono += delta.total_seconds()
        return self._now

    def set(self, instant: datetime) -> datetime:
        """Jump to ``instant`` (may go backwards, like a corrected wall clock)."""
        if instant.tzinfo is None:
            raise ValueError("FakeClock needs timezone-aware instants")
        self._now = instant.astimezone(UTC)
        return self._now


def utc(instant: datetime) -> datetime:
    """Return ``instant`` as timezone-aware UTC; naive values are taken to be UTC."""
    if instant.tzinfo is None:
        return instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)

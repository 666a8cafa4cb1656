"""Clock skew between this replica and the database, and a claim guard on it.

Every replica decides "is this slot due / missed / late" from its own clock; the
database's clock is the one they agree on. ``measure_skew`` reads the database's
time a few times, corrects each reading by half its round trip and keeps the one
with the shortest round trip::

    t0 = local now          (the daemon's Clock: an injected offset shows up here)
    db = SELECT <database now>
    t1 = t0 + round trip (the Clock's monotonic time)
    offset = db - (t0 + (t1 - t0) / 2)     +-  round trip / 2

``SkewGuard`` keeps the last measurement, refreshes it periodically, and between
measurements follows the local wall clock against the monotonic clock, so a clock
step on this host (NTP, an operator) is seen at once, not at the next query. It
refuses claims when the skew *may* exceed the bound (|offset| + uncertainty > bound)
or when no fresh measurement exists (e.g. the database is down: no claims then
anyway). ``SkewGuardedClaimer`` wraps any :class:`~reconciler.core.protocols.Claimer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from reconciler.core.clock import Clock, SystemClock
from reconciler.core.errors import StoreError
from reconciler.core.protocols import Claim, Claimer

log = logging.getLogger("reconciler.skew")

DEFAULT_BOUND = timedelta(seconds=2)

_NOW_SQL = {
    "postgresql": "SELECT clock_timestamp()",
    "mysql": "SELECT UTC_TIMESTAMP(6)",
    "mariadb": "SELECT UTC_TIMESTAMP(6)",
    "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
}


@dataclass(frozen=True, slots=True)
class SkewMeasurement:
    """``offset`` = database clock - local clock (positive: the database is ahead)."""

    offset: timedelta
    round_trip: timedelta
    local_at: datetime  # the local (Clock) time of the reading
    monotonic_at: float
    dialect: str

    @property
    def uncertainty(self) -> timedelta:
        return self.round_trip / 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "offset_ms": round(self.offset.total_seconds() * 1000, 3),
            "uncertainty_ms": round(self.uncertainty.total_seconds() * 1000, 3),
            "measured_at": self.local_at.isoformat(),
            "dialect": self.dialect,
        }


def database_now_sql(dialect: str) -> str:
    return _NOW_SQL.get(dialect, "SELECT CURRENT_TIMESTAMP")


def _as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise StoreError(f"the database returned {value!r} for its current time")
    # MariaDB's UTC_TIMESTAMP and SQLite's strftime are naive UTC
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def database_now(engine: Engine) -> datetime:
    """The database server's current time (UTC)."""
    with engine.connect() as conn:
        return _as_utc(conn.execute(text(database_now_sql(engine.dialect.name))).scalar_one())


def measure_skew(engine: Engine, clock: Clock | None = None, samples: int = 3) -> SkewMeasurement:
    """Measure this host's (``clock``'s) offset to the database; blocking (run off-loop)."""
    clock = clock or SystemClock()
    sql = text(database_now_sql(engine.dialect.name))
    best: SkewMeasurement | None = None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))  # connect and warm up outside the measurement
            for _ in range(max(1, samples)):
                local = clock.now()
                m0 = clock.monotonic()
                value = conn.execute(sql).scalar_one()
                m1 = clock.monotonic()
                rtt = m1 - m0
                mid = local + timedelta(seconds=rtt / 2)
                sample = SkewMeasurement(
                    offset=_as_utc(value) - mid,
                    round_trip=timedelta(seconds=rtt),
                    local_at=mid,
                    monotonic_at=m0 + rtt / 2,
                    dialect=engine.dialect.name,
                )
                if best is None or sample.round_trip < best.round_trip:
                    best = sample
    except SQLAlchemyError as exc:
        url = engine.url.render_as_string(hide_password=True)
        raise StoreError(f"cannot read the time of database {url}: "
                         f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}") from exc
    assert best is not None
    return best


class SkewGuard:
    """Refuses claims while this replica's clock may be more than ``bound`` off the DB's."""

    def __init__(
        self,
        measure: Callable[[], SkewMeasurement],
        *,
        bound: timedelta = DEFAULT_BOUND,
        interval: timedelta = timedelta(seconds=30),
        max_age: timedelta | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.measure = measure
        self.bound = bound
        self.interval = interval
        self.max_age = max_age if max_age is not None else 3 * interval
        self.clock = clock or SystemClock()
        self.last: SkewMeasurement | None = None
        self.last_error: str | None = None
        self._warned: str | None = None

    @classmethod
    def for_engine(cls, engine: Engine, clock: Clock | None = None, **options: Any) -> SkewGuard:
        clock = clock or SystemClock()
        return cls(lambda: measure_skew(engine, clock), clock=clock, **options)

    def current_offset(self) -> timedelta | None:
        """The offset now: the last measurement, corrected for local clock steps since."""
        m = self.last
        if m is None:
            return None
        wall = self.clock.now() - m.local_at
        mono = timedelta(seconds=self.clock.monotonic() - m.monotonic_at)
        return m.offset - (wall - mono)

    def refusal(self) -> str | None:
        """Why claims are refused now, or None when they are allowed."""
        m = self.last
        if m is None:
            return f"clock skew to the database not measured yet ({self.last_error or 'pending'})"
        age = self.clock.monotonic() - m.monotonic_at
        if age > self.max_age.total_seconds():
            return (f"clock skew to the database not measured for {age:.0f}s "
                    f"({self.last_error or 'no measurement'})")
        return self.over_bound()

    def over_bound(self) -> str | None:
        """Why this replica's clock may be off by more than the bound, or None (also when
        nothing was measured: that stops claims, but says nothing about this clock).

        A replica whose clock is off must not decide anything by it: not only claims,
        but also the ``missed`` / ``skipped`` rows it would write without a claim (a
        clock far ahead would record future slots missed before they are due).
        """
        m = self.last
        if m is None:
            return None
        offset = self.current_offset()
        assert offset is not None
        if abs(offset) + m.uncertainty > self.bound:
            return (f"clock skew to the database is {offset.total_seconds():+.3f}s "
                    f"(+-{m.uncertainty.total_seconds():.3f}s), over the bound of "
                    f"{self.bound.total_seconds():g}s")
        return None

    def allows(self) -> bool:
        reason = self.refusal()
        if reason != self._warned:
            self._warned = reason
            if reason:
                log.error("not claiming: %s", reason)
            else:
                log.info("clock skew within %gs again: claiming", self.bound.total_seconds())
        return reason is None

    async def refresh(
        self, run_blocking: Callable[[Callable[[], SkewMeasurement]],
                                     Awaitable[SkewMeasurement]] | None = None,
    ) -> SkewMeasurement | None:
        """Measure once (off the loop); keeps the error for ``refusal`` on failure."""
        try:
            if run_blocking is None:
                m = await asyncio.to_thread(self.measure)
            else:
                m = await run_blocking(self.measure)
        except StoreError as exc:
            self.last_error = str(exc)
            log.warning("clock skew measurement failed: %s", exc)
            return None
        self.last, self.last_error = m, None
        log.debug("clock skew to the database: %s", m.to_dict())
        return m

    async def run(self, stop: asyncio.Event, **kwargs: Any) -> None:
        """Refresh every ``interval`` (every second while failing) until ``stop``."""
        while not stop.is_set():
            ok = await self.refresh(**kwargs) is not None
            wait_s = self.interval.total_seconds() if ok else min(
                1.0, self.interval.total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait_s)

    def status(self) -> dict[str, Any]:
        offset = self.current_offset()
        return {
            "offset_ms": None if offset is None else round(offset.total_seconds() * 1000, 3),
            "bound_ms": self.bound.total_seconds() * 1000,
            "measurement": self.last.to_dict() if self.last else None,
            "refusing": self.refusal(),
            "error": self.last_error,
        }


class SkewGuardedClaimer:
    """A Claimer that refuses (returns None) while ``guard`` does not allow claims."""

    def __init__(self, inner: Claimer, guard: SkewGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.refused = 0

    async def claim(self, task: str, slot: datetime, attempt: int) -> Claim | None:
        if not self.guard.allows():
            self.refused += 1
            return None
        return await self.inner.claim(task, slot, attempt)

    async def close(self) -> None:
        await self.inner.close()

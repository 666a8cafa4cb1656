"""Clock skew to the database (SQLite, PostgreSQL, MariaDB) and the claim guard on it.

Distributed mode refuses to claim while a replica's clock may be more than the bound
(default 2 s) away from the database's. Skew is injected with ``SystemClock(offset)``,
the same way ``reconciler run --clock-offset`` does it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import URL

from reconciler.core.clock import SystemClock
from reconciler.core.errors import StoreError
from reconciler.daemon.claims import InProcessClaimer
from reconciler.locks import SkewGuard, SkewGuardedClaimer, SkewMeasurement, measure_skew
from reconciler.locks.skew import database_now
from reconciler.store.engine import make_engine

pytestmark = pytest.mark.integration

SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOLERANCE = 0.25  # seconds: database and test share this host's clock


def test_database_now_is_utc_and_close(database_url: URL) -> None:
    engine = make_engine(database_url)
    try:
        now = database_now(engine)
        assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
        assert abs((now - datetime.now(UTC)).total_seconds()) < TOLERANCE
    finally:
        engine.dispose()


@pytest.mark.parametrize("offset", [0.0, 5.0, -3.5])
def test_measured_skew_is_the_injected_offset(database_url: URL, offset: float) -> None:
    engine = make_engine(database_url)
    try:
        m = measure_skew(engine, SystemClock(timedelta(seconds=offset)), samples=5)
        dialect = engine.dialect.name
    finally:
        engine.dispose()
    # a clock `offset` ahead sees the database `offset` behind
    assert abs(m.offset.total_seconds() + offset) < TOLERANCE, m
    assert m.uncertainty < timedelta(seconds=0.1)
    assert m.dialect == dialect


def sqlite_guard(offset: float, **options: object) -> SkewGuard:
    engine = create_engine("sqlite://")
    return SkewGuard.for_engine(engine, SystemClock(timedelta(seconds=offset)), **options)


def test_the_guard_refuses_claims_beyond_the_bound() -> None:
    async def scenario() -> None:
        ok, skewed = sqlite_guard(0.5), sqlite_guard(5.0)
        for guard in (ok, skewed):
            assert not guard.allows()  # nothing measured yet: no claims
            assert await guard.refresh() is not None
        assert ok.allows() and ok.refusal() is None
        assert not skewed.allows()
        reason = skewed.refusal()
        assert reason is not None and "-5." in reason and "bound of 2s" in reason
        claimer = SkewGuardedClaimer(InProcessClaimer(), skewed)
        assert await claimer.claim("t", SLOT, 1) is None and claimer.refused == 1
        allowed = SkewGuardedClaimer(InProcessClaimer(), ok)
        assert await allowed.claim("t", SLOT, 1) is not None
        status = skewed.status()
        assert status["refusing"] and status["offset_ms"] < -4000

    asyncio.run(scenario())


def test_a_local_clock_step_is_seen_without_a_new_measurement() -> None:
    async def scenario() -> None:
        clock = SystemClock()
        guard = SkewGuard.for_engine(create_engine("sqlite://"), clock)
        await guard.refresh()
        assert guard.allows()
        clock.offset = timedelta(seconds=10)  # e.g. NTP stepped this host's clock
        offset = guard.current_offset()
        assert offset is not None and abs(offset.total_seconds() + 10) < TOLERANCE
        assert not guard.allows()
        clock.offset = timedelta(0)
        assert guard.allows()

    asyncio.run(scenario())


def test_no_claims_while_the_database_cannot_be_measured() -> None:
    async def scenario() -> None:
        engine = make_engine("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
        guard = SkewGuard.for_engine(engine)
        with pytest.raises(StoreError, match="cannot read the time"):
            measure_skew(engine)
        assert await guard.refresh() is None
        reason = guard.refusal()
        assert reason is not None and "not measured" in reason and "127.0.0.1:1" in reason

    asyncio.run(scenario())


def test_a_stale_measurement_stops_claims() -> None:
    calls = 0

    def measure() -> SkewMeasurement:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise StoreError("database down")
        return SkewMeasurement(timedelta(0), timedelta(milliseconds=1), datetime.now(UTC),
                               clock.monotonic(), "test")

    clock = SystemClock()
    guard = SkewGuard(measure, max_age=timedelta(seconds=0.2), clock=clock)

    async def scenario() -> None:
        await guard.refresh()
        assert guard.allows()
        assert await guard.refresh() is None  # the database went away
        assert guard.allows()  # the last measurement is still fresh
        last = guard.last
        assert last is not None
        guard.last = SkewMeasurement(last.offset, last.round_trip, last.local_at,
                                     last.monotonic_at - 1.0, last.dialect)  # age it
        reason = guard.refusal()
        assert reason is not None and "database down" in reason

    asyncio.run(scenario())

"""Several schedules as one: their union, the shortest interval between their slots,
and fast counting of slots in a window.

A task's ``spec.schedule`` is one expression or a list of them; its slots are the
union of the slots of each (:class:`ScheduleSet`). Two expressions that hit the same
instant give one slot: :meth:`ScheduleSet.next_after` returns the earliest next slot
of any member, and asking again after it skips every member at that instant.

:func:`shortest_interval` is what ``spec.jitter`` is checked against: the shortest
wall-clock distance between two consecutive slots of the union, worked out from the
parsed fields (no stepping through years of slots). It does not look at DST: a
repeated or skipped hour can bring two slots closer on one night a year; the jitter
policy (:func:`reconciler.core.scheduling.start_of`) keeps starts in order then.

:func:`slot_seconds` lists the slots in ``[start, end)`` as Unix seconds by arithmetic
on days without a DST change (a day's start plus each matching time of day) and with
:class:`~reconciler.core.schedule.Schedule` itself on days with one, so the capacity
of 10,000 tasks over a week is counted in a fraction of a second.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from reconciler.core._cron import _compile, _CronSpec, _EverySpec, seed_for
from reconciler.core._cron_days import day_fields, matching_days, reference_days, times_of_day
from reconciler.core._time_zones import check_time_zone
from reconciler.core.schedule import Schedule, SlotSteps, _offsets, wall_instant

__all__ = ["ScheduleSet", "shortest_interval", "slot_seconds"]

_DAY = 86_400
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ScheduleSet(SlotSteps):
    """The union of one or more schedules of a task (same time zone, same name for
    ``H``); the same queries as :class:`~reconciler.core.schedule.Schedule`."""

    schedules: tuple[Schedule, ...]

    @classmethod
    def parse(cls, expressions: str | Sequence[str], time_zone: str = "UTC",
              name: str | None = None) -> ScheduleSet:
        """Validate and build; raises :class:`~reconciler.core.errors.ScheduleError`."""
        items = (expressions,) if isinstance(expressions, str) else tuple(expressions)
        if not items:
            raise ValueError("a schedule set needs at least one expression")
        return cls(tuple(Schedule.parse(e, time_zone, name) for e in items))

    @property
    def expressions(self) -> tuple[str, ...]:
        return tuple(s.expression for s in self.schedules)

    @property
    def time_zone(self) -> str:
        return self.schedules[0].time_zone

    def next_after(self, instant: datetime) -> datetime | None:
        """The first slot of any member strictly after ``instant``."""
        if len(self.schedules) == 1:
            return self.schedules[0].next_after(instant)
        found = [s for s in (m.next_after(instant) for m in self.schedules) if s is not None]
        return min(found) if found else None

    def previous_before(self, instant: datetime) -> datetime | None:
        """The latest slot of any member at or before ``instant``."""
        if len(self.schedules) == 1:
            return self.schedules[0].previous_before(instant)
        found = [s for s in (m.previous_before(instant) for m in self.schedules)
                 if s is not None]
        return max(found) if found else None

    def describe(self) -> str:
        return "; ".join(s.describe() for s in self.schedules)


# --------------------------------------------------------------------------- interval


def shortest_interval(expressions: Sequence[str], time_zone: str = "UTC",
                      name: str | None = None) -> timedelta:
    """The shortest wall-clock interval between two consecutive slots of the union of
    ``expressions`` (``H`` resolved with ``name``), DST aside (see the module doc).

    Within a day: the closest two distinct times of day of expressions that fire on a
    common day. Across days: for each pair of expressions the fewest days ``k`` from a
    day one fires to a day the other fires, ``k`` days less the first one's last time
    plus the other's first time. Days are looked up in a 28-year reference window that
    holds every combination of month, day, weekday and leap year. An ``@every`` step
    counts itself; beside a cron expression, also how close its grid (in UTC) comes to
    the cron times (in the zone's standard and summer offsets).
    """
    crons: list[tuple[int, tuple[int, ...]]] = []
    steps: list[int] = []
    for expression in expressions:
        spec = _compile(expression, seed_for(expression, name))
        if isinstance(spec, _EverySpec):
            steps.append(int(spec.step.total_seconds()))
        else:
            crons.append((reference_days(spec), times_of_day(spec)))
    best = min(steps, default=math.inf)
    for i, (days_x, times_x) in enumerate(crons):
        for j, (days_y, times_y) in enumerate(crons):
            if j >= i and days_x & days_y:
                best = min(best, _closest(times_x if i == j else (*times_x, *times_y)))
            k = _days_apart(days_x, days_y)
            if k is not None:
                best = min(best, k * _DAY - times_x[-1] + times_y[0])
    if steps and crons:
        best = min(best, _grid_distance(steps, [t for _, times in crons for t in times],
                                        check_time_zone(time_zone)))
    return timedelta(seconds=best) if best != math.inf else timedelta(days=366)


def _closest(times: Sequence[int]) -> float:
    ordered = sorted(set(times))
    return min((b - a for a, b in itertools.pairwise(ordered)), default=math.inf)


def _days_apart(days_x: int, days_y: int) -> int | None:
    """The fewest days ``k >= 1`` from a day in ``days_x`` to a day in ``days_y``."""
    if not days_x or not days_y:
        return None
    span = max(days_x.bit_length(), days_y.bit_length())
    for k in range(1, span):
        if (days_x << k) & days_y:
            return k
    return None


def _grid_distance(steps: list[int], times: list[int], zone: ZoneInfo) -> float:
    """How close an ``@every`` grid (multiples of the step since the epoch, UTC) comes
    to a cron time of day, over every day: the grid meets day ``d`` at offsets that
    are multiples of gcd(step, 1 day)."""
    offsets = {int(o.total_seconds()) for o in (
        datetime(2026, m, 15, tzinfo=zone).utcoffset() for m in (1, 7)) if o is not None}
    best = math.inf
    for step in steps:
        g = math.gcd(step, _DAY)
        for t in times:
            for offset in offsets:
                r = (t - offset) % g
                best = min(best, min(r, g - r) if r else g)
    return best


# --------------------------------------------------------------------------- counting


def slot_seconds(expressions: Sequence[str], time_zone: str, name: str | None,
                 start: datetime, end: datetime) -> list[int]:
    """The slots of the union in ``[start, end)`` as Unix seconds, ascending, each once.

    The same slots as :meth:`ScheduleSet.between` (a test holds them equal), computed
    by arithmetic on days without a DST change."""
    lo, hi = _epoch(start), _epoch(end)
    found: set[int] = set()
    for expression in expressions:
        spec = _compile(expression, seed_for(expression, name))
        if isinstance(spec, _EverySpec):
            step = int(spec.step.total_seconds())
            found.update(range(-(-lo // step) * step, hi, step))
        else:
            found.update(_cron_seconds(expression, spec, time_zone, name, lo, hi))
    return sorted(found)


def _epoch(instant: datetime) -> int:
    return math.ceil((instant - _EPOCH).total_seconds())


def _cron_seconds(expression: str, spec: _CronSpec, time_zone: str, name: str | None,
                  lo: int, hi: int) -> list[int]:
    zone = check_time_zone(time_zone)
    times = times_of_day(spec)
    first = datetime.fromtimestamp(lo, zone).date() - timedelta(days=1)
    days = (datetime.fromtimestamp(hi, zone).date() + timedelta(days=1) - first).days + 1
    out: list[int] = []
    for day in matching_days(day_fields(spec), first, days):
        begin, stop, uniform = _day_span(day, zone)
        if begin >= hi or stop <= lo:
            continue
        if uniform:
            out.extend(v for v in (begin + t for t in times) if lo <= v < hi)
        else:  # a DST change on this day: each time by the DST rule
            out.extend(v for v in _dst_day(day, times, zone, spec.hour_star) if lo <= v < hi)
    return out


@functools.lru_cache(maxsize=65536)
def _day_span(day: date, zone: ZoneInfo) -> tuple[int, int, bool]:
    """A local date's first instant, the next date's, and whether the offset is the same
    all day (then a time of day is just added to the first instant)."""
    begin = _day_start(day, zone)
    stop = _day_start(day + timedelta(days=1), zone)
    uniform = stop - begin == _DAY and _offset(begin, zone) == _offset(stop - 1, zone)
    return begin, stop, uniform


def _dst_day(day: date, times: tuple[int, ...], zone: ZoneInfo, wildcard: bool) -> list[int]:
    """The slots of a day with a DST change, by the rule of
    :class:`~reconciler.core.schedule.Schedule` (its module doc)."""
    midnight = datetime(day.year, day.month, day.day)
    out = []
    for t in times:
        wall = midnight + timedelta(seconds=t)
        first, second = _offsets(wall, zone)
        if first == second:
            out.append(_epoch((wall - first).replace(tzinfo=UTC)))
        elif first > second:  # repeated: the first pass, and the second with a wildcard hour
            out.append(_epoch((wall - first).replace(tzinfo=UTC)))
            if wildcard:
                out.append(_epoch((wall - second).replace(tzinfo=UTC)))
        elif not wildcard:  # skipped: the first instant after the gap
            out.append(_epoch(wall_instant(wall, zone)))
    return out


@functools.lru_cache(maxsize=65536)
def _day_start(day: date, zone: ZoneInfo) -> int:
    """The first instant of a local date (Unix seconds)."""
    return _epoch(wall_instant(datetime(day.year, day.month, day.day), zone))


def _offset(ts: int, zone: ZoneInfo) -> timedelta | None:
    return datetime.fromtimestamp(ts, zone).utcoffset()

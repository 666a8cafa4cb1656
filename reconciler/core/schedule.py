"""Schedule expressions (cron, macros, ``@every``) and the project's daylight-saving rule.

Design notes: why this module looks the way it does
---------------------------------------------------

*Validation is a parser, not a trial run.* Manifests are validated on every apply, and
a large repository has thousands of distinct expressions. Building a croniter object
and asking it for one time costs a few hundred microseconds; parsing the five or six
fields into bit masks costs a few microseconds, gives precise messages
(``minute field: value 61 out of range 0-59``) and is cached with
:func:`functools.lru_cache`. :func:`check_schedule` therefore never touches croniter.

*croniter only ever sees a canonical expression.* croniter 6.2.4 (pinned) has sharp
edges that change *when* a job runs while looking valid:

* a single-value range ``5-5`` (also ``5-5/2``) means the whole field, so
  ``0 9 * * 1-1`` fires every day and ``10-10 * * * *`` every minute;
* with six fields it reads the *last* field as seconds, so ``*/10 * * * * *`` is
  "every second" unless the fields are moved;
* reversed ranges (``22-2``) silently wrap around;
* its day-of-month/day-of-week OR differs from Vixie cron for ``*/2``-style fields, and
  fails outright ("failed to find next date") when one side of the OR can never match
  (``0 0 30 2 1``) or uses ``#``/``L``;
* ``5L`` (last Friday) is spelled ``L5``.

So the expression is parsed here into sets of values and printed back as plain lists
and ranges (never ``a-a``), seconds last, and croniter is only used to step through
matching wall-clock times. Day-of-month and day-of-week are always handed to croniter
with ``day_or=False`` (AND); the Vixie OR case is evaluated as two croniter
expressions whose results are merged (:func:`normalize` shows them joined by `` | ``).

*Vixie OR rule.* When both day fields are restricted they combine with OR
(``0 0 1 * MON`` = the 1st and every Monday). As in Vixie cron, a field whose text
starts with ``*`` (including ``*/2``) counts as unrestricted for this decision, and
then the two combine with AND (``0 0 */2 * MON`` = odd-numbered days that are Mondays).

*The DST rule (the project's own).* Times are computed in naive local wall-clock time
and mapped to real instants afterwards:

* fixed hour (the hour field does not start with ``*``): one run per matching wall
  time. In a repeated (fall-back) hour only the first occurrence fires; a wall time
  inside a skipped (spring-forward) gap fires once, at the first instant after the gap
  (several wall times in one gap collapse to that instant);
* wildcard hour (``*``, ``*/N``): every real instant whose local time matches, so both
  passes of a repeated hour fire and a skipped hour has no slots;
* ``@every`` ignores time zones: slots are multiples of the interval counted from the
  Unix epoch, so every replica computes the same slots.

Because second-pass instants of a repeated hour come after first-pass instants of
later wall times, :meth:`Schedule.next_after` looks at the repeated hour containing
the given instant explicitly (found by bisection over ``zoneinfo`` offsets) instead
of scanning; each call costs one or two croniter steps.

Everything returned is a timezone-aware UTC :class:`~datetime.datetime`. Searches look
at most :data:`HORIZON_YEARS` years ahead (or back); a schedule that does not fire in
that window (``0 0 29 2 *`` with a day-of-week that only matches decades later)
yields ``None``. Schedules that can *never* fire (``0 0 30 2 *``) are rejected
analytically by :func:`check_schedule`.

*``H``* (Jenkins' hash) makes an expression's values depend on the task's name:
:meth:`Schedule.parse` takes the name and resolves every ``H`` to plain values once,
so the rest of this module never sees it (``_cron`` has the rules).

*Where the parts live.* This module holds :class:`Schedule` (stepping through slots
and the DST rule) and :func:`wall_instant` (a local wall time as an instant, by the
same rule). Parsing, ``H``, ``@every`` and the "never fires" check are in ``_cron``;
the canonical text for croniter (:func:`normalize`) and :func:`describe` in
``_cron_text``; which time zone names are accepted (:func:`check_time_zone`) in
``_time_zones``. Every public name of those is importable from here. Several schedules
as one (their union), the shortest interval between slots and fast counting of slots
in a window are in :mod:`reconciler.core.schedule_set`.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from reconciler.core._cron import (
    _SECOND,
    _compile,
    _EverySpec,
    check_schedule,
    seed_for,
    uses_hash,
)
from reconciler.core._cron_text import _branches, describe, normalize
from reconciler.core._time_zones import check_time_zone
from reconciler.core.durations import format_duration
from reconciler.core.errors import ScheduleError

__all__ = [
    "HORIZON_YEARS",
    "Schedule",
    "SlotSteps",
    "check_schedule",
    "check_time_zone",
    "describe",
    "normalize",
    "uses_hash",
    "wall_instant",
]

#: How far :meth:`Schedule.next_after` and :meth:`Schedule.previous_before` search.
HORIZON_YEARS = 5
_HORIZON = timedelta(days=366 * HORIZON_YEARS)
_NAIVE_EPOCH = datetime(1970, 1, 1)
#: Upper bound on DST gaps skipped in one search (there are two transitions a year).
_MAX_GAP_SKIPS = 64


# --------------------------------------------------------------------------- DST helpers


def _offsets(wall: datetime, zone: ZoneInfo) -> tuple[timedelta, timedelta]:
    """UTC offsets of a naive wall time with fold=0 and fold=1.

    Equal: an ordinary time. fold=0 larger: a repeated (fall-back) time, fold=0 being
    the first pass. fold=0 smaller: a time inside a skipped (spring-forward) gap.
    """
    aware = wall.replace(tzinfo=zone)
    first = aware.utcoffset()
    second = aware.replace(fold=1).utcoffset()
    assert first is not None and second is not None
    return first, second


def _offset_at(ts: int, zone: ZoneInfo) -> timedelta | None:
    return datetime.fromtimestamp(ts, zone).utcoffset()


def _transition(zone: ZoneInfo, lo: datetime, hi: datetime, after: timedelta) -> datetime:
    """The transition instant T (naive UTC) with lo < T <= hi where the offset becomes ``after``."""
    a = math.floor((lo - _NAIVE_EPOCH).total_seconds())
    b = math.ceil((hi - _NAIVE_EPOCH).total_seconds())
    while b - a > 1:
        mid = (a + b) // 2
        if _offset_at(mid, zone) == after:
            b = mid
        else:
            a = mid
    return _NAIVE_EPOCH + timedelta(seconds=b)


def wall_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant (aware, UTC) of a naive local wall time by the fixed-hour DST rule:
    a repeated time is its first occurrence, a time inside a skipped gap is the first
    instant after the gap. (Local midnight of a date is the first instant of that day,
    even where the day starts at 01:00.)"""
    wall = wall.replace(tzinfo=None, fold=0)
    first, second = _offsets(wall, zone)
    if first >= second:
        return (wall - first).replace(tzinfo=UTC)
    return _transition(zone, wall - second, wall - first, second).replace(tzinfo=UTC)


def _utc_naive(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"instant must be timezone-aware, got naive {instant.isoformat()}")
    return instant.astimezone(UTC).replace(tzinfo=None)


# --------------------------------------------------------------------------- Schedule


class SlotSteps:
    """``iter_after`` and ``between`` on top of ``next_after``: one implementation for
    :class:`Schedule`, :class:`~reconciler.core.schedule_set.ScheduleSet` and
    :class:`~reconciler.core.scheduling.TaskSlots`."""

    __slots__ = ()

    def next_after(self, instant: datetime) -> datetime | None:
        raise NotImplementedError

    def iter_after(self, instant: datetime) -> Iterator[datetime]:
        """Slots strictly after ``instant`` in increasing order (ends past the horizon)."""
        current: datetime | None = instant
        while current is not None:
            current = self.next_after(current)
            if current is not None:
                yield current

    def between(self, start: datetime, end: datetime, limit: int | None = None) -> list[datetime]:
        """Slots in ``(start, end]``, at most ``limit`` of them (the earliest ones)."""
        out: list[datetime] = []
        if limit is not None and limit <= 0:
            return out
        for slot in self.iter_after(start):
            if slot > end:
                break
            out.append(slot)
            if limit is not None and len(out) >= limit:
                break
        return out


@dataclass(frozen=True, slots=True)
class Schedule(SlotSteps):
    """A validated schedule in a time zone; use :meth:`parse` to build one.

    ``is_every`` is true for ``@every`` schedules (time zone ignored). ``wildcard_hour``
    is true for cron schedules whose hour field starts with ``*`` (both passes of a
    repeated hour fire, a skipped hour has no slots); it is false for fixed-hour cron
    schedules and for ``@every``. ``seed`` is the task name that resolved ``H`` (None
    for an expression without ``H``).
    """

    expression: str
    time_zone: str
    is_every: bool
    wildcard_hour: bool
    normalized: str
    seed: str | None
    _zone: ZoneInfo = field(repr=False, compare=False)
    _step: timedelta | None = field(repr=False, compare=False)
    _protos: tuple[Any, ...] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, expression: str, time_zone: str = "UTC", name: str | None = None
              ) -> Schedule:
        """Validate and build (cached); raises :class:`ScheduleError`. ``name`` (the
        task's) resolves ``H``; an expression with ``H`` and no name is an error."""
        if name is None and uses_hash(expression):
            raise ScheduleError(
                f"schedule {expression!r} uses H, whose values come from a task's name: "
                "a name is needed to resolve it"
            )
        return _parse_schedule(expression, time_zone, seed_for(expression, name))

    # ----------------------------------------------------------------- public queries

    def next_after(self, instant: datetime) -> datetime | None:
        """The first slot strictly after ``instant`` (aware), or None within the horizon."""
        x = _utc_naive(instant)
        try:
            if self._step is not None:
                found: datetime | None = _NAIVE_EPOCH + (
                    (x - _NAIVE_EPOCH) // self._step + 1
                ) * self._step
            else:
                found = self._next_cron(x, instant)
        except OverflowError:
            return None
        if found is None or found - x > _HORIZON:
            return None
        return found.replace(tzinfo=UTC)

    def previous_before(self, instant: datetime) -> datetime | None:
        """The latest slot at or before ``instant`` (aware), or None within the horizon."""
        x = _utc_naive(instant)
        try:
            if self._step is not None:
                found: datetime | None = _NAIVE_EPOCH + (
                    (x - _NAIVE_EPOCH) // self._step
                ) * self._step
            else:
                found = self._previous_cron(x, instant)
        except OverflowError:
            return None
        if found is None or x - found > _HORIZON:
            return None
        return found.replace(tzinfo=UTC)

    def describe(self) -> str:
        """A short English description of the expression (best effort)."""
        return describe(self.expression, self.seed)

    # ----------------------------------------------------------------- wall-clock steps

    def _next_wall(self, after: datetime) -> datetime | None:
        """The first matching naive wall time strictly after ``after`` (whole seconds)."""
        best: datetime | None = None
        for proto in self._protos:
            it = copy.copy(proto)
            try:
                wall: datetime = it.get_next(datetime, start_time=after)
            except (ValueError, OverflowError):  # CroniterBadDateError: nothing in range
                continue
            if best is None or wall < best:
                best = wall
        return best

    def _prev_wall(self, before: datetime) -> datetime | None:
        """The last matching naive wall time strictly before ``before`` (whole seconds)."""
        best: datetime | None = None
        for proto in self._protos:
            it = copy.copy(proto)
            try:
                wall: datetime = it.get_prev(datetime, start_time=before)
            except (ValueError, OverflowError):
                continue
            if best is None or wall > best:
                best = wall
        return best

    # ----------------------------------------------------------------- DST mapping

    def _next_cron(self, x: datetime, instant: datetime) -> datetime | None:
        zone = self._zone
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None, fold=0, microsecond=0)
        first, second = _offsets(wall, zone)
        if first <= second:  # an ordinary local time (a real instant is never in a gap)
            return self._first_primary_after(wall)
        # x lies in a repeated hour: walls [start, end) occur at offset `first`, then again
        # at offset `second`. Primary slots (first occurrences) come from walls after x's
        # wall (first pass) or from `end` on (second pass); with a wildcard hour the second
        # pass adds slots of its own.
        t = _transition(zone, wall - first, wall - second, second)
        start, end = t + second, t + first
        if local.fold:
            found = self._first_primary_after(end - _SECOND)
            again = self._next_wall(wall) if self.wildcard_hour else None
        else:
            found = self._first_primary_after(wall)
            again = self._next_wall(start - _SECOND) if self.wildcard_hour else None
        if again is not None and again < end:
            repeat = again - second
            if found is None or repeat < found:
                return repeat
        return found

    def _first_primary_after(self, after: datetime) -> datetime | None:
        """First-occurrence slot of the first matching wall time after ``after``."""
        zone = self._zone
        wall: datetime | None = after
        for _ in range(_MAX_GAP_SKIPS):
            wall = self._next_wall(wall) if wall is not None else None
            if wall is None:
                return None
            first, second = _offsets(wall, zone)
            if first >= second:  # ordinary, or first pass of a repeated hour
                return wall - first
            t = _transition(zone, wall - second, wall - first, second)  # inside a gap
            if not self.wildcard_hour:
                return t  # the first instant after the gap
            wall = t + second - _SECOND  # wildcard: no slots in the gap; skip past it
        return None

    def _previous_cron(self, x: datetime, instant: datetime) -> datetime | None:
        zone = self._zone
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None, fold=0, microsecond=0)
        first, second = _offsets(wall, zone)
        before = wall + _SECOND  # walls <= x's wall
        if first > second and local.fold:
            # Second pass of a repeated hour: its own slots (wildcard hour) are the latest;
            # otherwise every wall of the repeated hour has its first occurrence before x.
            t = _transition(zone, wall - first, wall - second, second)
            start, end = t + second, t + first
            if self.wildcard_hour:
                again = self._prev_wall(before)
                if again is not None and again >= start:
                    return again - second
            before = end
        return self._last_primary_before(before, x)

    def _last_primary_before(self, before: datetime, x: datetime) -> datetime | None:
        zone = self._zone
        wall: datetime | None = before
        for _ in range(_MAX_GAP_SKIPS):
            wall = self._prev_wall(wall) if wall is not None else None
            if wall is None:
                return None
            first, second = _offsets(wall, zone)
            if first == second:
                return wall - first
            if first > second:  # repeated: the second pass is later, if already reached
                if self.wildcard_hour and wall - second <= x:
                    return wall - second
                return wall - first
            t = _transition(zone, wall - second, wall - first, second)
            if not self.wildcard_hour:
                return t
            wall = t + first  # wildcard: skip the gap (walls before its start)
        return None


@functools.lru_cache(maxsize=16384)
def _prototype(expression: str) -> Any:
    """A croniter object for a canonical expression, shared by every schedule using it.

    It is never stepped itself (building one costs ~100 us): each query works on a
    shallow copy, so schedules stay immutable and safe to share between threads.
    """
    return croniter(
        expression,
        datetime(2000, 1, 1),
        ret_type=datetime,
        day_or=False,
        max_years_between_matches=HORIZON_YEARS,
    )


@functools.lru_cache(maxsize=4096)
def _parse_schedule(expression: str, time_zone: str, seed: str | None) -> Schedule:
    check_schedule(expression)
    spec = _compile(expression, seed)
    zone = check_time_zone(time_zone)
    if isinstance(spec, _EverySpec):
        return Schedule(
            expression=expression,
            time_zone=time_zone,
            is_every=True,
            wildcard_hour=False,
            normalized=f"@every {format_duration(spec.step)}",
            seed=None,
            _zone=zone,
            _step=spec.step,
            _protos=(),
        )
    branches = _branches(spec)
    try:
        protos = tuple(_prototype(b) for b in branches)
    except ValueError as exc:  # a form this module accepts but croniter does not
        raise ScheduleError(f"schedule {expression!r} cannot be evaluated: {exc}") from None
    return Schedule(
        expression=expression,
        time_zone=time_zone,
        is_every=False,
        wildcard_hour=spec.hour_star,
        normalized=" | ".join(branches),
        seed=seed,
        _zone=zone,
        _step=None,
        _protos=protos,
    )

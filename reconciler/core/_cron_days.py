"""Arithmetic on a parsed cron expression, without croniter: which dates match, which
times of day, and the days of a 28-year reference window as one bit set.

:mod:`reconciler.core.schedule_set` uses it to count slots in a window on days without
a DST change (adding seconds to a day's start, no stepping) and to find the shortest
interval between slots. The rules are those of :class:`~reconciler.core.schedule.
Schedule` (the Vixie day rule, ``L``, ``#``); a test compares both on random
expressions.
"""

from __future__ import annotations

import calendar
import functools
from datetime import date, timedelta

from reconciler.core._cron import _LAST, _bits, _CronSpec

#: The reference window: 28 years repeat the Gregorian calendar's weekdays and leap
#: years exactly (1901-2099), so every combination of month, day, weekday and leap
#: year that can ever occur occurs in it.
REFERENCE_START = date(2001, 1, 1)
REFERENCE_DAYS = (date(2029, 1, 1) - REFERENCE_START).days


def day_matches(spec: _CronSpec, day: date) -> bool:
    """Does the expression fire on ``day`` (month, day-of-month, day-of-week; Vixie)?"""
    if not spec.months >> day.month & 1:
        return False
    length = calendar.monthrange(day.year, day.month)[1]
    dom = bool(spec.doms >> day.day & 1) or (spec.dom_last and day.day == length)
    weekday = (day.weekday() + 1) % 7  # cron: Sunday is 0
    if spec.nth:
        dow = any(
            d == weekday and (day.day > length - 7 if k == _LAST else 7 * k - 6 <= day.day <= 7 * k)
            for d, k in spec.nth
        )
    else:
        dow = bool(spec.dows >> weekday & 1)
    if spec.day_or:
        return dom or dow
    return dom and dow


@functools.lru_cache(maxsize=65536)
def times_of_day(spec: _CronSpec) -> tuple[int, ...]:
    """The matching times of a day, in seconds since midnight, ascending."""
    seconds = _bits(spec.seconds, 0, 59)
    return tuple(
        h * 3600 + m * 60 + s
        for h in _bits(spec.hours, 0, 23)
        for m in _bits(spec.minutes, 0, 59)
        for s in seconds
    )


DayFields = tuple[int, int, bool, int, tuple[tuple[int, int], ...], bool]


def day_fields(spec: _CronSpec) -> DayFields:
    """What decides the matching days (a cache key shared by expressions that differ
    only in their times): months, days of the month, ``L``, weekdays, ``#``/``L``, OR."""
    return spec.months, spec.doms, spec.dom_last, spec.dows, spec.nth, spec.day_or


def _day_spec(fields: DayFields) -> _CronSpec:
    months, doms, dom_last, dows, nth, day_or = fields
    return _CronSpec(False, 1, 1, 1, doms, dom_last, months, dows, nth, not day_or, False, False)


@functools.lru_cache(maxsize=4096)
def matching_days(fields: DayFields, first: date, days: int) -> tuple[date, ...]:
    """The dates from ``first`` on (``days`` of them) that the day fields match."""
    spec = _day_spec(fields)
    return tuple(d for d in (first + timedelta(days=i) for i in range(days))
                 if day_matches(spec, d))


@functools.lru_cache(maxsize=1024)
def _reference_bits(fields: DayFields) -> int:
    spec = _day_spec(fields)
    bits = 0
    day = REFERENCE_START
    one = timedelta(days=1)
    for i in range(REFERENCE_DAYS):
        if day_matches(spec, day):
            bits |= 1 << i
        day += one
    return bits


def reference_days(spec: _CronSpec) -> int:
    """Bit ``i`` set: the expression fires on day ``i`` of the reference window."""
    return _reference_bits(day_fields(spec))

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
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from reconciler.core.durations import format_duration, parse_duration
from reconciler.core.errors import DurationError, ScheduleError

__all__ = [
    "HORIZON_YEARS",
    "Schedule",
    "check_schedule",
    "check_time_zone",
    "describe",
    "normalize",
]

#: How far :meth:`Schedule.next_after` and :meth:`Schedule.previous_before` search.
HORIZON_YEARS = 5
_HORIZON = timedelta(days=366 * HORIZON_YEARS)
_SECOND = timedelta(seconds=1)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MAX_EXPRESSION = 1024
#: Upper bound on DST gaps skipped in one search (there are two transitions a year).
_MAX_GAP_SKIPS = 64

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTH_ABBR = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_ABBR = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_MONTH_NAMES = (
    "", "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
)
_DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
#: Longest length of each month (February counts 29: leap years exist).
_MONTH_MAX = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_LONG_MONTHS = sum(1 << m for m in range(1, 13) if _MONTH_MAX[m] == 31)
_LAST = -1  # occurrence number used for "last <weekday> of the month"
_ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", _LAST: "last"}


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    lo: int
    hi: int  # largest value accepted (7 for day-of-week: 7 is Sunday too)
    top: int  # end of "*" and of open steps like "5/15" (6 for day-of-week)
    names: Mapping[str, int]
    unit: str  # for the "@every" hint on a "*/N" step that does not fit
    full: int  # bit mask of lo..top


def _field(name: str, lo: int, hi: int, top: int, names: Mapping[str, int], unit: str) -> _Field:
    return _Field(name, lo, hi, top, names, unit, ((1 << (top + 1)) - 1) & ~((1 << lo) - 1))


_SECONDS = _field("second", 0, 59, 59, {}, "s")
_MINUTES = _field("minute", 0, 59, 59, {}, "m")
_HOURS = _field("hour", 0, 23, 23, {}, "h")
_DOM = _field("day-of-month", 1, 31, 31, {}, "")
_MONTHS = _field("month", 1, 12, 12, {n: i + 1 for i, n in enumerate(_MONTH_ABBR)}, "")
_DOW = _field("day-of-week", 0, 7, 6, {n: i for i, n in enumerate(_DAY_ABBR)}, "")
_FIELDS = (_SECONDS, _MINUTES, _HOURS, _DOM, _MONTHS, _DOW)
_SEC, _MIN, _HOUR, _DAY, _MON, _WDAY = range(6)

_FULL_SECONDS = _SECONDS.full
_FULL_MINUTES = _MINUTES.full
_FULL_HOURS = _HOURS.full
_FULL_DOM = _DOM.full
_FULL_MONTHS = _MONTHS.full
_FULL_DOW = _DOW.full


class _CronSpec(NamedTuple):
    """A parsed cron expression: one bit mask per field plus the special day forms.

    A NamedTuple rather than a frozen dataclass: it is built once per distinct
    expression on the validation path, and tuples are several times cheaper to build.
    """

    has_seconds: bool
    seconds: int
    minutes: int
    hours: int
    doms: int  # bits 1..31
    dom_last: bool  # "L": the last day of the month
    months: int  # bits 1..12
    dows: int  # bits 0..6 (Sunday = 0)
    nth: tuple[tuple[int, int], ...]  # (weekday, occurrence 1-5 or _LAST)
    dom_star: bool  # day-of-month text starts with "*" (Vixie DOM_STAR)
    dow_star: bool  # day-of-week text starts with "*" (Vixie DOW_STAR)
    hour_star: bool  # hour text starts with "*": the wildcard-hour DST rule applies

    @property
    def day_or(self) -> bool:
        """Vixie: both day fields restricted (neither starts with ``*``) means OR."""
        return not (self.dom_star or self.dow_star)


@dataclass(frozen=True, slots=True)
class _EverySpec:
    step: timedelta


def _bits(mask: int, lo: int, hi: int) -> list[int]:
    return [i for i in range(lo, hi + 1) if mask >> i & 1]


def _value(token: str, f: _Field, item: str) -> int:
    if token.isascii() and token.isdigit():
        v = int(token)
    elif f.names and token.isascii() and token.isalpha():
        found = f.names.get(token.upper())
        if found is None:
            first, last = next(iter(f.names)), list(f.names)[-1]
            kind = "month" if f is _MONTHS else "day"
            raise ScheduleError(
                f"{f.name} field: unknown {kind} name {token!r} (use {first}-{last})"
            )
        return found
    else:
        raise ScheduleError(f"{f.name} field: invalid value {item!r}")
    if not f.lo <= v <= f.hi:
        raise ScheduleError(f"{f.name} field: value {v} out of range {f.lo}-{f.hi}")
    return v


@functools.lru_cache(maxsize=16384)
def _parse_field(text: str, index: int) -> tuple[int, bool, tuple[tuple[int, int], ...]]:
    """Parse one field into (bit mask, "L" seen, nth-weekday entries).

    Cached on its own: distinct expressions mostly recombine the same field texts.
    """
    f = _FIELDS[index]
    if text == "*":
        return f.full, False, ()
    if text.isascii() and text.isdigit():
        v = int(text)
        if not f.lo <= v <= f.hi:
            raise ScheduleError(f"{f.name} field: value {v} out of range {f.lo}-{f.hi}")
        return 1 << (0 if f is _DOW and v == 7 else v), False, ()

    mask = 0
    last = False
    nth: list[tuple[int, int]] = []
    for item in text.split(","):
        if not item:
            raise ScheduleError(f"{f.name} field: empty item in list {text!r}")
        upper = item.upper()
        if upper == "?":
            raise ScheduleError(f"{f.name} field: '?' is not supported, use '*'")
        if f is _DOM and upper == "L":
            last = True
            continue
        if f is _DOW and ("#" in upper or upper.endswith("L")):
            nth.append(_parse_nth(item, upper))
            continue
        base, slash, step_text = upper.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()):
                raise ScheduleError(f"{f.name} field: invalid step in {item!r}")
            step = int(step_text)
            if step < 1:
                raise ScheduleError(f"{f.name} field: step must be at least 1 in {item!r}")
        if base == "*":
            a, b = f.lo, f.top
        elif "-" in base:
            a_text, _, b_text = base.partition("-")
            a, b = _value(a_text, f, item), _value(b_text, f, item)
            if a > b:
                if f is _DOW and b == 0:
                    b = 7  # FRI-SUN: Sunday written as the end of a range is day 7
                else:
                    raise ScheduleError(
                        f"{f.name} field: range {item!r} is reversed "
                        f"(write {a}-{f.top},{f.lo}-{b})"
                    )
        else:
            a = _value(base, f, item)
            b = max(a, f.top) if slash else a
        if base == "*" and step > b - a:
            # "*/90" in the minute field reads as "every 90 minutes" but means minute 0 of
            # every hour: refuse it. Explicit ranges ("10-20/30") just give their first value.
            hint = f", or use @every {step}{f.unit} for a fixed interval" if f.unit else ""
            raise ScheduleError(
                f"{f.name} field: {item!r} only matches {a} (step {step} is larger than "
                f"the range {a}-{b}); write {a}{hint}"
            )
        if step == 1:
            mask |= ((1 << (b + 1)) - 1) & ~((1 << a) - 1)
        else:
            for v in range(a, b + 1, step):
                mask |= 1 << v
    if f is _DOW:
        if mask >> 7 & 1:
            mask = (mask | 1) & _FULL_DOW
        if nth and mask:
            raise ScheduleError(
                f"{f.name} field: cannot mix '#' or 'L' with plain days in {text!r}"
            )
    return mask, last, tuple(nth)


def _parse_nth(item: str, upper: str) -> tuple[int, int]:
    name = _DOW.name
    if "#" in upper:
        day_text, _, k_text = upper.partition("#")
        if not (k_text.isascii() and k_text.isdigit()) or not 1 <= int(k_text) <= 5:
            raise ScheduleError(f"{name} field: {item!r}: the number after '#' must be 1-5")
        occurrence = int(k_text)
    else:
        day_text, occurrence = upper[:-1], _LAST
        if not day_text:
            raise ScheduleError(
                f"{name} field: 'L' needs a day in front of it, e.g. 5L for the last Friday"
            )
    if not day_text or "-" in day_text or "/" in day_text or "*" in day_text:
        raise ScheduleError(f"{name} field: invalid value {item!r} ('#' and 'L' take one day)")
    return _value(day_text, _DOW, item) % 7, occurrence


def _compile_macro(parts: list[str]) -> _CronSpec | _EverySpec:
    word = parts[0].lower()
    if word == "@every":
        if len(parts) != 2:
            raise ScheduleError(
                "@every takes one duration such as 30s, 5m or 1h30m, e.g. \"@every 5m\""
            )
        try:
            step = parse_duration(parts[1])
        except DurationError as exc:
            raise ScheduleError(f"@every: {exc}") from None
        if step < _SECOND:
            raise ScheduleError(f"@every: {parts[1]!r} is shorter than the minimum of 1s")
        if step % _SECOND:
            raise ScheduleError(f"@every: {parts[1]!r} must be a whole number of seconds")
        return _EverySpec(step)
    if word == "@reboot":
        raise ScheduleError("@reboot is not supported: schedules are time-based")
    expansion = _MACROS.get(word)
    if expansion is None:
        raise ScheduleError(
            f"unknown macro {parts[0]!r} (use @yearly, @annually, @monthly, @weekly, @daily, "
            "@midnight, @hourly or @every <duration>)"
        )
    if len(parts) != 1:
        raise ScheduleError(f"{parts[0]} takes no fields after it")
    return _compile(expansion)


@functools.lru_cache(maxsize=65536)
def _compile(expression: str) -> _CronSpec | _EverySpec:
    if len(expression) > _MAX_EXPRESSION:
        raise ScheduleError(f"schedule is longer than {_MAX_EXPRESSION} characters")
    parts = expression.split()
    if not parts:
        raise ScheduleError("schedule is empty")
    if parts[0][0] == "@":
        return _compile_macro(parts)
    n = len(parts)
    if n == 5:
        has_seconds, seconds = False, 1
    elif n == 6:
        has_seconds = True
        seconds = _parse_field(parts[0], _SEC)[0]
        parts = parts[1:]
    else:
        raise ScheduleError(f"expected 5 fields (or 6 with seconds first), got {n}")
    minute_text, hour_text, dom_text, month_text, dow_text = parts
    minutes = _parse_field(minute_text, _MIN)[0]
    hours = _parse_field(hour_text, _HOUR)[0]
    doms, dom_last, _ = _parse_field(dom_text, _DAY)
    months = _parse_field(month_text, _MON)[0]
    dows, _, nth = _parse_field(dow_text, _WDAY)
    spec = _CronSpec(
        has_seconds=has_seconds,
        seconds=seconds,
        minutes=minutes,
        hours=hours,
        doms=doms,
        dom_last=dom_last,
        months=months,
        dows=dows,
        nth=nth,
        dom_star=dom_text[0] == "*",
        dow_star=dow_text[0] == "*",
        hour_star=hour_text[0] == "*",
    )
    if not spec.day_or:
        problem = _never_fires(spec)
        if problem:
            raise ScheduleError(f"schedule never fires: {problem}")
    return spec


def _dom_fits_months(spec: _CronSpec) -> bool:
    """Can some listed day of the month occur in some listed month (ignoring weekdays)?"""
    if spec.dom_last or spec.months & _LONG_MONTHS:
        return True  # "L" always exists; a 31-day month fits every day number
    lowest = (spec.doms & -spec.doms).bit_length() - 1
    return lowest <= max(_MONTH_MAX[m] for m in _bits(spec.months, 1, 12))


def _never_fires(spec: _CronSpec) -> str | None:
    """Why an AND-combined day specification can never match, or None if it can."""
    if not _dom_fits_months(spec):
        days = _bits(spec.doms, 1, 31)
        months = [_MONTH_NAMES[m] for m in _bits(spec.months, 1, 12)]
        what = f"day {days[0]} does" if len(days) == 1 else f"days {_join(days)} do"
        return f"{what} not exist in {_join(months, 'or')}"
    if not spec.nth:
        return None
    # A given (month, day) falls on every weekday in some year, so only the position
    # of the day inside the month matters for "#k" (days 7k-6..7k) and "L" (last 7).
    days = _bits(spec.doms, 1, 31)
    for m in _bits(spec.months, 1, 12):
        for length in (28, 29) if m == 2 else (_MONTH_MAX[m],):
            for d in [*days, length] if spec.dom_last else days:
                if d > length:
                    continue
                for _, k in spec.nth:
                    if (k == _LAST and d > length - 7) or (k != _LAST and 7 * k - 6 <= d <= 7 * k):
                        return None
    return f"day-of-month {_dom_text(spec)} never falls on {_nth_text(spec.nth)}"


# --------------------------------------------------------------------------- rendering


def _render(mask: int, f: _Field) -> str:
    """Canonical text of a field: ``*``, or values and ranges (never ``a-a``)."""
    if mask == f.full:
        return "*"
    return ",".join(_ranges(_bits(mask, f.lo, f.top)))


def _branches(spec: _CronSpec) -> tuple[str, ...]:
    """The croniter expressions (seconds last, day fields combined with AND) to merge."""
    head = f"{_render(spec.minutes, _MINUTES)} {_render(spec.hours, _HOURS)}"
    month = _render(spec.months, _MONTHS)
    tail = f" {_render(spec.seconds, _SECONDS)}" if spec.seconds != 1 else ""
    dom = "*" if spec.doms == _FULL_DOM else _render(spec.doms, _DOM)
    if spec.dom_last and dom != "*":
        dom = "L" if not spec.doms else f"{dom},L"
    if spec.nth:
        dow = ",".join(f"L{d}" if k == _LAST else f"{d}#{k}" for d, k in spec.nth)
    else:
        dow = _render(spec.dows, _DOW)
    if not spec.day_or or dom == "*" or dow == "*":
        if spec.day_or:  # OR with an all-days side: every day
            dom = dow = "*"
        return (f"{head} {dom} {month} {dow}{tail}",)
    out = [f"{head} * {month} {dow}{tail}"]
    if _dom_fits_months(spec):  # the day-of-month side of the OR can match at all
        out.insert(0, f"{head} {dom} {month} *{tail}")
    return tuple(out)


def normalize(expression: str) -> str:
    """The canonical expression(s) handed to croniter.

    For example ``"*/10 * * * * *"`` becomes ``"* * * * * 0,10,20,30,40,50"`` and
    ``"0 9 * * 1-1"`` becomes ``"0 9 * * 1"``.

    Fields are printed as plain values, lists and ranges with the seconds field (when
    not just second 0) *last*, as croniter expects. Day-of-month and day-of-week inside
    one expression combine with AND; when the Vixie OR rule applies, the alternatives
    are joined with ``" | "``. ``@every`` schedules print as ``@every <duration>``.
    Raises :class:`ScheduleError` for an invalid expression.
    """
    spec = _compile(expression)
    if isinstance(spec, _EverySpec):
        return f"@every {format_duration(spec.step)}"
    return " | ".join(_branches(spec))


# --------------------------------------------------------------------------- describe


def _join(items: list[Any], word: str = "and") -> str:
    texts = [str(i) for i in items]
    if len(texts) <= 1:
        return "".join(texts)
    return f"{', '.join(texts[:-1])} {word} {texts[-1]}"


def _ranges(values: list[int]) -> list[str]:
    """``[0, 1, 2, 5]`` -> ``["0-2", "5"]`` (runs of three or more become ranges)."""
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        if j - i >= 2:
            out.append(f"{values[i]}-{values[j]}")
        else:
            out.extend(str(v) for v in values[i : j + 1])
        i = j + 1
    return out


def _step_of(values: list[int], lo: int, hi: int) -> int | None:
    if len(values) < 2 or values[0] != lo:
        return None
    k = values[1] - values[0]
    return k if values == list(range(lo, hi + 1, k)) else None


def _plural(n: int, unit: str) -> str:
    return unit if n == 1 else f"{n} {unit}s"


def _human_step(step: timedelta) -> str:
    n = int(step.total_seconds())
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if n % size == 0 and (n // size < 60 or size == 86400 or unit == "hour"):
            return _plural(n // size, unit)
    return format_duration(step)


def _dom_text(spec: _CronSpec) -> str:
    days = _ranges(_bits(spec.doms, 1, 31))
    if spec.dom_last:
        days.append("the last day")
    return _join(days, "or")


def _nth_text(nth: tuple[tuple[int, int], ...]) -> str:
    return _join([f"the {_ORDINALS[k]} {_DAY_NAMES[d]}" for d, k in nth], "or")


def _dow_text(spec: _CronSpec) -> str:
    if spec.nth:
        return _nth_text(spec.nth)
    days = _bits(spec.dows, 0, 6)
    if days[0] == 0 and days[-1] == 6:  # a run through the weekend: list Sunday last
        days = [*days[1:], 7]
    if len(days) >= 3 and days == list(range(days[0], days[-1] + 1)):
        return f"{_DAY_NAMES[days[0] % 7]} to {_DAY_NAMES[days[-1] % 7]}"
    return _join([_DAY_NAMES[d % 7] for d in days], "and")


def _time_text(spec: _CronSpec) -> str:
    secs = _bits(spec.seconds, 0, 59)
    mins = _bits(spec.minutes, 0, 59)
    hours = _bits(spec.hours, 0, 23)
    all_m, all_h = spec.minutes == _FULL_MINUTES, spec.hours == _FULL_HOURS
    if secs != [0]:
        if spec.seconds == _FULL_SECONDS and all_m and all_h:
            return "every second"
        k = _step_of(secs, 0, 59)
        if k and all_m and all_h:
            return f"every {k} seconds"
    else:
        if all_m and all_h:
            return "every minute"
        k = _step_of(mins, 0, 59)
        if k and all_h:
            return f"every {k} minutes"
        if len(mins) == 1 and all_h:
            return f"every hour at :{mins[0]:02d}"
        k = _step_of(hours, 0, 23)
        if len(mins) == 1 and k:
            return f"every {k} hours at :{mins[0]:02d}"
    if len(secs) * len(mins) * len(hours) <= 6:
        fmt = "{:02d}:{:02d}" if secs == [0] else "{:02d}:{:02d}:{:02d}"
        return "at " + _join([fmt.format(h, m, s) for h in hours for m in mins for s in secs])
    text = "at " if secs == [0] else f"at second {_join(_ranges(secs))} of "
    text += "every minute" if all_m else f"minute {_join(_ranges(mins))}"
    return text + (" of every hour" if all_h else f" past hour {_join(_ranges(hours))}")


def _day_text(spec: _CronSpec) -> str:
    dom_all = spec.doms == _FULL_DOM
    dow_all = spec.dows == _FULL_DOW
    if spec.day_or and (dom_all or dow_all):
        dom_all = dow_all = True
    months = _bits(spec.months, 1, 12)
    if spec.months == _FULL_MONTHS:
        month_text = ""
    elif len(months) >= 3 and months == list(range(months[0], months[-1] + 1)):
        month_text = f" in {_MONTH_NAMES[months[0]]} to {_MONTH_NAMES[months[-1]]}"
    else:
        month_text = " in " + _join([_MONTH_NAMES[m] for m in months])
    if dom_all and dow_all:
        return month_text[1:] if month_text else "every day"
    days = _bits(spec.doms, 1, 31)
    if dow_all and len(months) == 1 and len(days) == 1 and not spec.dom_last:
        return f"on {_MONTH_NAMES[months[0]]} {days[0]}"
    k = _step_of(days, 1, 31)
    if k and not spec.dom_last:
        dom = f"on every {k}{'nd' if k == 2 else 'th'} day of the month"
    elif spec.dom_last and not days:
        dom = "on the last day of the month"
    else:
        dom = f"on day {_dom_text(spec)} of the month"
    if dow_all:
        return dom + month_text
    if dom_all:
        return f"on {_dow_text(spec)}{month_text}"
    link = "or on" if spec.day_or else "if it is"
    return f"{dom} {link} {_dow_text(spec)}{month_text}"


def describe(expression: str) -> str:
    """A short English description (best effort), e.g. ``"at 02:30 every day"``."""
    spec = _compile(expression)
    if isinstance(spec, _EverySpec):
        return f"every {_human_step(spec.step)}"
    time_text = _time_text(spec)
    day_text = _day_text(spec)
    if day_text == "every day" and "every" in time_text:
        return time_text
    return f"{time_text} {day_text}"


# --------------------------------------------------------------------------- validation


def check_schedule(expression: str) -> None:
    """Raise :class:`ScheduleError` unless ``expression`` is a usable schedule.

    Cheap and cached: parses the fields itself (no croniter), and detects schedules
    that can never fire (``0 0 30 2 *``) analytically.
    """
    if not isinstance(expression, str):
        raise ScheduleError(f"schedule must be a string, got {type(expression).__name__}")
    _compile(expression)


_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")
#: Names that exist in a zoneinfo directory but are not portable IANA zones.
_REFUSED_ZONE_PREFIXES = ("posix/", "right/")
_REFUSED_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@functools.lru_cache(maxsize=1024)
def check_time_zone(name: str) -> ZoneInfo:
    """The :class:`ZoneInfo` for an IANA name, or :class:`ScheduleError`.

    Only ``A-Z a-z 0-9 _ + -`` separated by single ``/`` are accepted, so relative or
    absolute paths (``../../etc/passwd``, ``/etc/localtime``) never reach the file
    system; host-specific entries (``localtime``) and the ``posix/``/``right/`` copies
    are refused too.
    """
    if (
        not isinstance(name, str)
        or len(name) > 255
        or not _ZONE_NAME.fullmatch(name)
        or name in _REFUSED_ZONES
        or name.startswith(_REFUSED_ZONE_PREFIXES)
    ):
        raise ScheduleError(f'unknown time zone "{name}"')
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f'unknown time zone "{name}"') from None


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


def _utc_naive(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"instant must be timezone-aware, got naive {instant.isoformat()}")
    return instant.astimezone(UTC).replace(tzinfo=None)


# --------------------------------------------------------------------------- Schedule


@dataclass(frozen=True, slots=True)
class Schedule:
    """A validated schedule in a time zone; use :meth:`parse` to build one.

    ``is_every`` is true for ``@every`` schedules (time zone ignored). ``wildcard_hour``
    is true for cron schedules whose hour field starts with ``*`` (both passes of a
    repeated hour fire, a skipped hour has no slots); it is false for fixed-hour cron
    schedules and for ``@every``.
    """

    expression: str
    time_zone: str
    is_every: bool
    wildcard_hour: bool
    normalized: str
    _zone: ZoneInfo = field(repr=False, compare=False)
    _step: timedelta | None = field(repr=False, compare=False)
    _protos: tuple[Any, ...] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, expression: str, time_zone: str = "UTC") -> Schedule:
        """Validate and build (cached); raises :class:`ScheduleError`."""
        return _parse_schedule(expression, time_zone)

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

    def describe(self) -> str:
        """A short English description of the expression (best effort)."""
        return describe(self.expression)

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
def _parse_schedule(expression: str, time_zone: str) -> Schedule:
    check_schedule(expression)
    spec = _compile(expression)
    zone = check_time_zone(time_zone)
    if isinstance(spec, _EverySpec):
        return Schedule(
            expression=expression,
            time_zone=time_zone,
            is_every=True,
            wildcard_hour=False,
            normalized=f"@every {format_duration(spec.step)}",
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
        _zone=zone,
        _step=None,
        _protos=protos,
    )

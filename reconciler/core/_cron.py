"""Cron expressions parsed into bit masks, and the analytic "never fires" check.

Parses the five or six fields, the macros (``@daily`` ...) and ``@every <duration>``
into a :class:`_CronSpec` or an :class:`_EverySpec` (cached), with precise messages
for every mistake; rejects day specifications that can never match (``0 0 30 2 *``)
without stepping through time. No croniter here: see the design notes in
:mod:`reconciler.core.schedule` for why.

``H`` (Jenkins' "hash") in a field stands for values derived from a *seed*, the task's
name, by a stable hash (:mod:`reconciler.core._spread`): ``H`` one value of the field
(day-of-month 1-28, which every month has; day-of-week 0-6), ``H(a-b)`` one value in
``a-b``, ``H/n`` every ``n`` from an offset in ``[0, n)``, ``H(a-b)/n`` the same inside
``a-b``. Each field (and each ``H`` item in it) hashes on its own, so ``H H * * *``
gets an independent minute and hour. An ``H`` item is replaced by the plain values
it stands for before the field is parsed; ``H/n`` counts as starting with ``*`` (the
Vixie day rule and the wildcard-hour DST rule see ``*/n`` shifted). Without a seed
(validation of the syntax alone) ``H`` takes the first value of its range, and the
"never fires" check is left to the seeded parse when a day or month field hashes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

from reconciler.core._spread import stable_int
from reconciler.core.durations import parse_duration
from reconciler.core.errors import DurationError, ScheduleError

_SECOND = timedelta(seconds=1)
_MAX_EXPRESSION = 1024

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


#: ``H``, ``H(a-b)``, ``H/n``, ``H(a-b)/n`` (the bounds may be names: ``H(MON-FRI)``).
_HASH_ITEM = re.compile(r"H(?:\((?P<a>[^()\-/]*)-(?P<b>[^()\-/]*)\))?(?:/(?P<step>[^/]*))?")
#: The top of a bare ``H`` (``H`` or ``H/n``): day-of-month stops at 28, which every
#: month has (as in Jenkins); day-of-week at 6 (7 is Sunday again).
_HASH_TOP = {"day-of-month": 28}


def _is_hashed(text: str) -> bool:
    """Does a field's text hold an ``H`` item? (No month or day name starts with H.)"""
    return any(item.startswith("H") for item in text.split(","))


def _hash_item(item: str, f: _Field, seed: str | None, index: int) -> str:
    """An ``H`` item as the plain values it stands for (``"17"``, ``"4,19,34,49"``)."""
    m = _HASH_ITEM.fullmatch(item)
    if m is None:
        raise ScheduleError(
            f"{f.name} field: invalid use of H in {item!r} (write H, H/15, H(0-29) or "
            "H(0-29)/10; H takes no '-', '#' or 'L' outside its parentheses)"
        )
    if m["a"] is not None:
        a, b = _value(m["a"], f, item), _value(m["b"], f, item)
        if a > b and f is _DOW and b == 0:
            b = 7  # H(FRI-SUN): Sunday written as the end of a range is day 7
        if a > b:
            raise ScheduleError(f"{f.name} field: range in {item!r} is reversed")
    else:
        a, b = f.lo, _HASH_TOP.get(f.name, f.top)
    if m["step"] is None:
        pick = stable_int(b - a + 1, seed, f.name, str(index)) if seed is not None else 0
        return str(a + pick)
    step_text = m["step"]
    if not (step_text.isascii() and step_text.isdigit()) or int(step_text) < 1:
        raise ScheduleError(f"{f.name} field: invalid step in {item!r} (a whole number >= 1)")
    step = int(step_text)
    if m["a"] is None:
        b = f.top  # H/n spans the whole field (day-of-month too: a step skips no month)
    if step > b - a + 1:
        raise ScheduleError(
            f"{f.name} field: step {step} in {item!r} is larger than the range {a}-{b}"
        )
    offset = stable_int(step, seed, f.name, str(index)) if seed is not None else 0
    return ",".join(str(v) for v in range(a + offset, b + 1, step))


def _resolve_hashes(text: str, index: int, seed: str | None) -> str:
    """A field's text with every ``H`` item replaced by the values it stands for."""
    f = _FIELDS[index]
    out: list[str] = []
    n = 0
    for item in text.split(","):
        if item.startswith("H"):
            out.append(_hash_item(item, f, seed, n))
            n += 1
        else:
            out.append(item)
    return ",".join(out)


@functools.lru_cache(maxsize=65536)
def uses_hash(expression: str) -> bool:
    """Does ``expression`` use ``H`` (so that its slots depend on the task's name)?"""
    if "H" not in expression:
        return False
    parts = expression.split()
    return bool(parts) and parts[0][:1] != "@" and any(_is_hashed(p) for p in parts)


def seed_for(expression: str, name: str | None) -> str | None:
    """The seed :func:`_compile` takes: the name for an expression with ``H``, else None
    (so that expressions without ``H`` share one cache entry whatever the task)."""
    return name if name is not None and uses_hash(expression) else None


def _compile_macro(parts: list[str]) -> _CronSpec | _EverySpec:
    word = parts[0].lower()
    if word == "@every":
        if len(parts) != 2:
            raise ScheduleError(
                "@every takes one duration such as 30s, 5m or 1h30m, e.g. \"@every 5m\""
            )
        if "H" in parts[1]:
            raise ScheduleError(
                "@every: H only goes in cron fields (an @every interval is already the "
                "same on every replica); spread @every tasks with spec.jitter"
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
def _compile(expression: str, seed: str | None = None) -> _CronSpec | _EverySpec:
    """Parse an expression; ``seed`` (the task's name) resolves ``H`` items."""
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
        seconds = _parse_field(_field_text(parts[0], _SEC, seed), _SEC)[0]
        parts = parts[1:]
    else:
        raise ScheduleError(f"expected 5 fields (or 6 with seconds first), got {n}")
    minute_text, hour_text, dom_text, month_text, dow_text = parts
    minutes = _parse_field(_field_text(minute_text, _MIN, seed), _MIN)[0]
    hours = _parse_field(_field_text(hour_text, _HOUR, seed), _HOUR)[0]
    doms, dom_last, _ = _parse_field(_field_text(dom_text, _DAY, seed), _DAY)
    months = _parse_field(_field_text(month_text, _MON, seed), _MON)[0]
    dows, _, nth = _parse_field(_field_text(dow_text, _WDAY, seed), _WDAY)
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
        dom_star=_starred(dom_text),
        dow_star=_starred(dow_text),
        hour_star=_starred(hour_text),
    )
    unseeded_days = seed is None and any(_is_hashed(t) for t in (dom_text, month_text))
    if not spec.day_or and not unseeded_days:
        problem = _never_fires(spec)
        if problem:
            raise ScheduleError(f"schedule never fires: {problem}")
    return spec


def _field_text(text: str, index: int, seed: str | None) -> str:
    return _resolve_hashes(text, index, seed) if _is_hashed(text) else text


def _starred(text: str) -> bool:
    """Vixie's "starts with ``*``", for which ``H/n`` (``*/n`` shifted) counts too."""
    return text[0] == "*" or text.startswith("H/")


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


# --------------------------------------------------------------------------- text helpers


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


def _dom_text(spec: _CronSpec) -> str:
    days = _ranges(_bits(spec.doms, 1, 31))
    if spec.dom_last:
        days.append("the last day")
    return _join(days, "or")


def _nth_text(nth: tuple[tuple[int, int], ...]) -> str:
    return _join([f"the {_ORDINALS[k]} {_DAY_NAMES[d]}" for d, k in nth], "or")


# --------------------------------------------------------------------------- validation


def check_schedule(expression: str, name: str | None = None) -> None:
    """Raise :class:`ScheduleError` unless ``expression`` is a usable schedule.

    Cheap and cached: parses the fields itself (no croniter), and detects schedules
    that can never fire (``0 0 30 2 *``) analytically. ``name`` (the task's) resolves
    ``H``; without it an expression with ``H`` is checked for its syntax only.
    """
    if not isinstance(expression, str):
        raise ScheduleError(f"schedule must be a string, got {type(expression).__name__}")
    _compile(expression, seed_for(expression, name))

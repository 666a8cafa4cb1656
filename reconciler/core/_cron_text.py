"""A parsed cron expression printed back: for croniter, and in English.

:func:`normalize` and :func:`_branches` give the canonical expression(s) croniter is
handed (plain lists and ranges, seconds last, day fields combined with AND; the Vixie
OR as two branches); :func:`describe` a short English description.
"""

from __future__ import annotations

from datetime import timedelta

from reconciler.core._cron import (
    _DAY_NAMES,
    _DOM,
    _DOW,
    _FULL_DOM,
    _FULL_DOW,
    _FULL_HOURS,
    _FULL_MINUTES,
    _FULL_MONTHS,
    _FULL_SECONDS,
    _HOURS,
    _LAST,
    _MINUTES,
    _MONTH_NAMES,
    _MONTHS,
    _SECONDS,
    _bits,
    _compile,
    _CronSpec,
    _dom_fits_months,
    _dom_text,
    _EverySpec,
    _Field,
    _join,
    _nth_text,
    _ranges,
    seed_for,
)
from reconciler.core.durations import format_duration

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


def normalize(expression: str, name: str | None = None) -> str:
    """The canonical expression(s) handed to croniter.

    For example ``"*/10 * * * * *"`` becomes ``"* * * * * 0,10,20,30,40,50"`` and
    ``"0 9 * * 1-1"`` becomes ``"0 9 * * 1"``.

    Fields are printed as plain values, lists and ranges with the seconds field (when
    not just second 0) *last*, as croniter expects. Day-of-month and day-of-week inside
    one expression combine with AND; when the Vixie OR rule applies, the alternatives
    are joined with ``" | "``. ``@every`` schedules print as ``@every <duration>``.
    ``H`` is resolved with ``name`` (the task's; without it, ``H`` shows the first
    value of its range). Raises :class:`ScheduleError` for an invalid expression.
    """
    spec = _compile(expression, seed_for(expression, name))
    if isinstance(spec, _EverySpec):
        return f"@every {format_duration(spec.step)}"
    return " | ".join(_branches(spec))


# --------------------------------------------------------------------------- describe


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


def describe(expression: str, name: str | None = None) -> str:
    """A short English description (best effort), e.g. ``"at 02:30 every day"``; ``H``
    is resolved with ``name`` as in :func:`normalize`."""
    spec = _compile(expression, seed_for(expression, name))
    if isinstance(spec, _EverySpec):
        return f"every {_human_step(spec.step)}"
    time_text = _time_text(spec)
    day_text = _day_text(spec)
    if day_text == "every day" and "every" in time_text:
        return time_text
    return f"{time_text} {day_text}"

"""Schedule expressions, the Vixie day rule, @every and the DST policy.

Times in the golden tests are exact UTC instants. Several tests also assert what plain
croniter 6.2.4 does with the same input, so they document the bug being guarded
against: if a croniter upgrade fixes (or changes) one, the test says so.
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from croniter.croniter import CroniterBadCronError, CroniterBadDateError

from reconciler.core import _cron
from reconciler.core import schedule as schedule_module
from reconciler.core.errors import ScheduleError
from reconciler.core.schedule import (
    Schedule,
    check_schedule,
    check_time_zone,
    describe,
    normalize,
)


def utc(text: str) -> datetime:
    """``"2024-03-10 07:00"`` (or with seconds) as an aware UTC datetime."""
    fmt = "%Y-%m-%d %H:%M:%S" if text.count(":") == 2 else "%Y-%m-%d %H:%M"
    return datetime.strptime(text, fmt).replace(tzinfo=UTC)


def fires(expr: str, start: str, n: int, tz: str = "UTC") -> list[str]:
    """The first ``n`` slots after ``start`` (UTC text), as UTC text."""
    out = []
    it = Schedule.parse(expr, tz).iter_after(utc(start))
    for _ in range(n):
        slot = next(it)
        out.append(slot.strftime("%Y-%m-%d %H:%M:%S" if slot.second else "%Y-%m-%d %H:%M"))
    return out


def window(expr: str, tz: str, start: str, end: str) -> list[str]:
    """All slots in (start, end] as UTC text."""
    return [t.strftime("%Y-%m-%d %H:%M") for t in Schedule.parse(expr, tz).between(
        utc(start), utc(end))]


def raw_croniter(expr: str, start: datetime, n: int, **kw: Any) -> list[datetime]:
    it = croniter(expr, start, ret_type=datetime, **kw)
    return [it.get_next() for _ in range(n)]


# --------------------------------------------------------------------------- field forms


@pytest.mark.parametrize(
    ("expr", "start", "expected"),
    [
        # plain values, lists, ranges
        ("7 * * * *", "2024-01-01 00:00", ["2024-01-01 00:07", "2024-01-01 01:07"]),
        ("5,35 * * * *", "2024-01-01 00:00",
         ["2024-01-01 00:05", "2024-01-01 00:35", "2024-01-01 01:05"]),
        ("58-59,1 * * * *", "2024-01-01 00:00",
         ["2024-01-01 00:01", "2024-01-01 00:58", "2024-01-01 00:59", "2024-01-01 01:01"]),
        ("0 22-23 * * *", "2024-01-01 00:00",
         ["2024-01-01 22:00", "2024-01-01 23:00", "2024-01-02 22:00"]),
        # steps on *, on a value (5/15 = 5,20,35,50) and on a range
        ("*/20 * * * *", "2024-01-01 00:00",
         ["2024-01-01 00:20", "2024-01-01 00:40", "2024-01-01 01:00"]),
        ("5/15 * * * *", "2024-01-01 00:00",
         ["2024-01-01 00:05", "2024-01-01 00:20", "2024-01-01 00:35", "2024-01-01 00:50",
          "2024-01-01 01:05"]),
        ("10-40/10 * * * *", "2024-01-01 00:00",
         ["2024-01-01 00:10", "2024-01-01 00:20", "2024-01-01 00:30", "2024-01-01 00:40",
          "2024-01-01 01:10"]),
        ("0 */6 * * *", "2024-01-01 00:00",
         ["2024-01-01 06:00", "2024-01-01 12:00", "2024-01-01 18:00", "2024-01-02 00:00"]),
        # an explicit range with a step larger than it gives its first value
        ("10-20/30 * * * *", "2024-01-01 00:00", ["2024-01-01 00:10", "2024-01-01 01:10"]),
        # day of month, month (numbers and names), day of week (numbers and names)
        ("0 0 15 * *", "2024-01-01 00:00", ["2024-01-15 00:00", "2024-02-15 00:00"]),
        ("0 0 1 */4 *", "2024-01-01 00:00",
         ["2024-05-01 00:00", "2024-09-01 00:00", "2025-01-01 00:00"]),
        ("0 0 1 FEB,aug *", "2024-01-01 00:00", ["2024-02-01 00:00", "2024-08-01 00:00"]),
        ("0 0 1 jan-Mar *", "2024-01-01 00:00",
         ["2024-02-01 00:00", "2024-03-01 00:00", "2025-01-01 00:00"]),
        ("0 0 1 NOV/2 *", "2024-01-01 00:00", ["2024-11-01 00:00", "2025-11-01 00:00"]),
        # 2024-01-01 is a Monday
        ("0 0 * * 1-5", "2024-01-05 00:00",
         ["2024-01-08 00:00", "2024-01-09 00:00"]),
        ("0 0 * * MON-wed", "2024-01-03 00:00",
         ["2024-01-08 00:00", "2024-01-09 00:00", "2024-01-10 00:00", "2024-01-15 00:00"]),
        ("0 0 * * sun", "2024-01-01 00:00", ["2024-01-07 00:00", "2024-01-14 00:00"]),
        ("0 0 * * 0", "2024-01-01 00:00", ["2024-01-07 00:00", "2024-01-14 00:00"]),
        ("0 0 * * 7", "2024-01-01 00:00", ["2024-01-07 00:00", "2024-01-14 00:00"]),
        ("0 0 * * 5-7", "2024-01-01 00:00",
         ["2024-01-05 00:00", "2024-01-06 00:00", "2024-01-07 00:00", "2024-01-12 00:00"]),
        ("0 0 * * FRI-SUN", "2024-01-01 00:00",
         ["2024-01-05 00:00", "2024-01-06 00:00", "2024-01-07 00:00", "2024-01-12 00:00"]),
        ("0 0 * * */3", "2024-01-01 00:00",  # Sunday, Wednesday, Saturday
         ["2024-01-03 00:00", "2024-01-06 00:00", "2024-01-07 00:00", "2024-01-10 00:00"]),
        # L in day-of-month; 5L and 1#2 in day-of-week
        ("0 0 L * *", "2024-01-01 00:00",
         ["2024-01-31 00:00", "2024-02-29 00:00", "2024-03-31 00:00", "2024-04-30 00:00"]),
        ("0 0 L,15 2 *", "2024-01-01 00:00",
         ["2024-02-15 00:00", "2024-02-29 00:00", "2025-02-15 00:00", "2025-02-28 00:00"]),
        ("0 0 * * 5L", "2024-01-01 00:00",
         ["2024-01-26 00:00", "2024-02-23 00:00", "2024-03-29 00:00"]),
        ("0 0 * * FRIL", "2024-01-01 00:00", ["2024-01-26 00:00", "2024-02-23 00:00"]),
        ("0 0 * * 1#2", "2024-01-01 00:00",
         ["2024-01-08 00:00", "2024-02-12 00:00", "2024-03-11 00:00"]),
        ("0 0 * * mon#1,5#3", "2024-01-01 00:00",
         ["2024-01-19 00:00", "2024-02-05 00:00", "2024-02-16 00:00", "2024-03-04 00:00"]),
        ("0 0 * * 0#5", "2024-01-01 00:00", ["2024-03-31 00:00", "2024-06-30 00:00"]),
        ("0 0 29 2 *", "2024-03-01 00:00", ["2028-02-29 00:00"]),
    ],
)
def test_field_forms(expr: str, start: str, expected: list[str]) -> None:
    assert fires(expr, start, len(expected)) == expected


def test_names_are_case_insensitive_and_normalized() -> None:
    assert normalize("0 0 * jan-MAR Mon-fri") == normalize("0 0 * 1-3 1-5") == "0 0 * 1-3 1-5"
    assert normalize("0 0 * * sat,SUN") == "0 0 * * 0,6"
    assert normalize("0 0 * * 1-7") == "0 0 * * *"


# --------------------------------------------------------------------------- single-value ranges


@pytest.mark.parametrize(
    ("expr", "start", "expected", "canonical"),
    [
        ("10-10 * * * *", "2024-01-01 00:00",
         ["2024-01-01 00:10", "2024-01-01 01:10", "2024-01-01 02:10"], "10 * * * *"),
        ("0 5-5 * * *", "2024-01-01 00:00",
         ["2024-01-01 05:00", "2024-01-02 05:00"], "0 5 * * *"),
        ("0 0 5-5 * *", "2024-01-01 00:00",
         ["2024-01-05 00:00", "2024-02-05 00:00"], "0 0 5 * *"),
        ("0 0 1 3-3 *", "2024-01-01 00:00",
         ["2024-03-01 00:00", "2025-03-01 00:00"], "0 0 1 3 *"),
        ("0 9 * * 1-1", "2024-01-01 10:00",
         ["2024-01-08 09:00", "2024-01-15 09:00"], "0 9 * * 1"),
        ("0 9 * * MON-MON", "2024-01-01 10:00",
         ["2024-01-08 09:00", "2024-01-15 09:00"], "0 9 * * 1"),
        ("5-5 * * * * *", "2024-01-01 00:00",
         ["2024-01-01 00:00:05", "2024-01-01 00:01:05"], "* * * * * 5"),
        ("10-10/5 * * * *", "2024-01-01 00:00",
         ["2024-01-01 00:10", "2024-01-01 01:10"], "10 * * * *"),
        ("0 0 * * 2-2/3", "2024-01-01 00:00",
         ["2024-01-02 00:00", "2024-01-09 00:00"], "0 0 * * 2"),
    ],
)
def test_single_value_ranges_mean_that_value(
    expr: str, start: str, expected: list[str], canonical: str
) -> None:
    assert fires(expr, start, len(expected)) == expected
    assert normalize(expr) == canonical


def test_croniter_expands_single_value_ranges_to_the_whole_field() -> None:
    """The croniter 6.2.4 bug the normalisation above guards against."""
    start = datetime(2024, 1, 1, 10, 0)  # a Monday
    daily = raw_croniter("0 9 * * 1-1", start, 3)
    assert [d.day for d in daily] == [2, 3, 4]  # Tuesday, Wednesday...: not only Mondays
    minutely = raw_croniter("10-10 * * * *", start, 2)
    assert minutely == [datetime(2024, 1, 1, 10, 1), datetime(2024, 1, 1, 10, 2)]
    stepped = raw_croniter("0 0 * * 2-2/3", start, 3)
    assert [d.isoweekday() % 7 for d in stepped] == [3, 6, 0]  # read as */3


def test_croniter_reads_six_fields_seconds_last() -> None:
    start = datetime(2024, 1, 1, 0, 0, 5)
    assert raw_croniter("*/10 * * * * *", start, 2) == [
        datetime(2024, 1, 1, 0, 0, 6), datetime(2024, 1, 1, 0, 0, 7)]  # every second
    assert fires("*/10 * * * * *", "2024-01-01 00:00:05", 3) == [
        "2024-01-01 00:00:10", "2024-01-01 00:00:20", "2024-01-01 00:00:30"]


def test_croniter_wraps_reversed_ranges_which_we_refuse() -> None:
    hours = [d.hour for d in raw_croniter("0 22-2 * * *", datetime(2024, 1, 1, 3), 5)]
    assert hours == [22, 23, 0, 1, 2]
    with pytest.raises(ScheduleError, match=r"hour field: range '22-2' is reversed "
                                            r"\(write 22-23,0-2\)"):
        check_schedule("0 22-2 * * *")


# --------------------------------------------------------------------------- seconds, macros


def test_six_fields_put_seconds_first() -> None:
    assert fires("*/10 * * * * *", "2024-01-01 00:00", 3) == [
        "2024-01-01 00:00:10", "2024-01-01 00:00:20", "2024-01-01 00:00:30"]
    assert fires("30 0 12 * * *", "2024-01-01 00:00", 2) == [
        "2024-01-01 12:00:30", "2024-01-02 12:00:30"]
    assert fires("0,30 * * * * *", "2024-01-01 00:00", 3) == [
        "2024-01-01 00:00:30", "2024-01-01 00:01", "2024-01-01 00:01:30"]
    assert normalize("0 */5 * * * *") == "0,5,10,15,20,25,30,35,40,45,50,55 * * * *"
    assert normalize("*/10 * * * * *") == "* * * * * 0,10,20,30,40,50"


@pytest.mark.parametrize(
    ("macro", "same_as"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_macros(macro: str, same_as: str) -> None:
    assert normalize(macro) == normalize(same_as)
    assert fires(macro, "2024-01-01 00:30", 3) == fires(same_as, "2024-01-01 00:30", 3)


def test_macro_goldens() -> None:
    assert fires("@weekly", "2024-01-01 00:00", 2) == ["2024-01-07 00:00", "2024-01-14 00:00"]
    assert fires("@yearly", "2024-01-01 00:00", 1) == ["2025-01-01 00:00"]
    assert Schedule.parse("@hourly", "Europe/Berlin").wildcard_hour
    assert not Schedule.parse("@daily", "Europe/Berlin").wildcard_hour


# --------------------------------------------------------------------------- Vixie day rule


@pytest.mark.parametrize(
    ("expr", "start", "expected"),
    [
        # both restricted: OR (the 1st, and every Monday)
        ("0 0 1 * 1", "2024-01-28 00:00",
         ["2024-01-29 00:00", "2024-02-01 00:00", "2024-02-05 00:00"]),
        ("0 0 1-7 * 1", "2024-01-01 00:00",
         ["2024-01-02 00:00", "2024-01-03 00:00", "2024-01-04 00:00", "2024-01-05 00:00",
          "2024-01-06 00:00", "2024-01-07 00:00", "2024-01-08 00:00", "2024-01-15 00:00"]),
        ("0 0 13 * 5", "2024-01-01 00:00",  # the 13th, and every Friday
         ["2024-01-05 00:00", "2024-01-12 00:00", "2024-01-13 00:00", "2024-01-19 00:00"]),
        # a field starting with * is unrestricted for the decision: AND
        ("0 0 */2 * 1", "2024-01-01 00:00",  # odd days that are Mondays
         ["2024-01-15 00:00", "2024-01-29 00:00", "2024-02-05 00:00", "2024-02-19 00:00"]),
        ("0 0 1-10 * */7", "2024-01-01 00:00", None),
        ("0 0 * * 1", "2024-01-01 00:00", ["2024-01-08 00:00", "2024-01-15 00:00"]),
        ("0 0 1 * *", "2024-01-01 00:00", ["2024-02-01 00:00", "2024-03-01 00:00"]),
        # OR where one side never fires on its own: Mondays in February only
        ("0 0 30 2 1", "2024-01-01 00:00",
         ["2024-02-05 00:00", "2024-02-12 00:00", "2024-02-19 00:00", "2024-02-26 00:00",
          "2025-02-03 00:00"]),
        # OR with #/L forms
        ("0 0 1 * 5L", "2024-01-01 00:00",
         ["2024-01-26 00:00", "2024-02-01 00:00", "2024-02-23 00:00", "2024-03-01 00:00"]),
        ("0 0 15 * 1#1", "2024-01-01 00:00",
         ["2024-01-15 00:00", "2024-02-05 00:00", "2024-02-15 00:00", "2024-03-04 00:00"]),
        # AND with #/L forms: odd days that are the last Friday
        ("0 0 */2 * 5L", "2024-01-01 00:00",
         ["2024-02-23 00:00", "2024-03-29 00:00", "2024-05-31 00:00", "2024-09-27 00:00"]),
    ],
)
def test_vixie_day_rule(expr: str, start: str, expected: list[str] | None) -> None:
    if expected is None:
        with pytest.raises(ScheduleError, match="only matches 0"):
            check_schedule(expr)
        return
    assert fires(expr, start, len(expected)) == expected


def test_croniter_day_or_differs_from_vixie() -> None:
    """Document what croniter 6.2.4 does by default with the same expressions."""
    start = datetime(2024, 1, 1)
    # `*/2` counts as restricted for croniter: OR instead of Vixie's AND.
    days = [d.day for d in raw_croniter("0 0 */2 * 1", start, 4)]
    assert days == [3, 5, 7, 8]
    # One side of the OR never matching makes croniter give up entirely.
    with pytest.raises(CroniterBadDateError):
        raw_croniter("0 0 30 2 1", start, 1)
    with pytest.raises(CroniterBadDateError):
        raw_croniter("0 0 1 * 1#2", start, 1)
    # and it spells "last Friday" L5, not 5L
    with pytest.raises(CroniterBadCronError):
        raw_croniter("0 0 * * 5L", start, 1)


def test_or_schedules_are_two_croniter_expressions() -> None:
    assert normalize("0 9 1,15 * mon") == "0 9 1,15 * * | 0 9 * * 1"
    assert normalize("0 0 30 2 1") == "0 0 * 2 1"  # Feb 30 never matches: one side only
    assert normalize("0 0 1-31 * 1") == "0 0 * * *"  # every day OR Mondays = every day
    assert normalize("0 0 */2 * 1").endswith(" * 1")  # AND: a single expression


# --------------------------------------------------------------------------- @every


def test_every_is_anchored_at_the_epoch() -> None:
    s = Schedule.parse("@every 7m", "Europe/Berlin")
    a = s.between(utc("2024-03-31 00:00"), utc("2024-03-31 01:00"))
    b = s.between(utc("2024-03-31 00:13:27"), utc("2024-03-31 01:00"))
    for slot in a + b:
        assert (slot - datetime(1970, 1, 1, tzinfo=UTC)) % timedelta(minutes=7) == timedelta(0)
    assert set(b) <= set(a)
    assert a[0] == utc("2024-03-31 00:06")  # 1711843560 = 4075818 * 420
    assert b[0] == utc("2024-03-31 00:20")
    assert s.is_every and not s.wildcard_hour
    # time zones and DST are ignored: steps of exactly 7 minutes through the transition
    assert all(y - x == timedelta(minutes=7) for x, y in itertools.pairwise(a))


def test_every_queries() -> None:
    s = Schedule.parse("@every 1h30m")
    assert s.next_after(utc("2024-01-01 00:00")) == utc("2024-01-01 01:30")
    assert s.next_after(utc("2024-01-01 01:30")) == utc("2024-01-01 03:00")
    assert s.previous_before(utc("2024-01-01 01:30")) == utc("2024-01-01 01:30")
    assert s.previous_before(utc("2024-01-01 01:29")) == utc("2024-01-01 00:00")
    assert s.between(utc("2024-01-01 00:00"), utc("2024-01-01 06:00"), limit=2) == [
        utc("2024-01-01 01:30"), utc("2024-01-01 03:00")]
    assert fires("@every 30s", "2024-01-01 00:00:10", 2) == [
        "2024-01-01 00:00:30", "2024-01-01 00:01"]
    assert normalize("@every 90s") == "@every 1m30s"
    assert describe("@every 30s") == "every 30 seconds"
    assert describe("@every 1h30m") == "every 1h30m"


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("@every", "@every takes one duration"),
        ("@every 5", "@every: invalid duration '5'"),
        ("@every 500ms", "shorter than the minimum of 1s"),
        ("@every 1500ms", "must be a whole number of seconds"),
        ("@every 0s", "must be greater than zero"),
        ("@every 5m 10s", "@every takes one duration"),
    ],
)
def test_every_errors(expr: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        check_schedule(expr)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "schedule is empty"),
        ("   ", "schedule is empty"),
        ("* * * *", "expected 5 fields (or 6 with seconds first), got 4"),
        ("* * * * * * *", "expected 5 fields (or 6 with seconds first), got 7"),
        ("hello", "expected 5 fields (or 6 with seconds first), got 1"),
        ("61 * * * *", "minute field: value 61 out of range 0-59"),
        ("* 24 * * *", "hour field: value 24 out of range 0-23"),
        ("0 0 0 * *", "day-of-month field: value 0 out of range 1-31"),
        ("0 0 32 * *", "day-of-month field: value 32 out of range 1-31"),
        ("0 0 * 13 *", "month field: value 13 out of range 1-12"),
        ("0 0 * * 8", "day-of-week field: value 8 out of range 0-7"),
        ("60 * * * * *", "second field: value 60 out of range 0-59"),
        ("a b c d e", "minute field: invalid value 'a'"),
        ("0 MON * * *", "hour field: invalid value 'MON'"),
        ("0 0 * FOO *", "month field: unknown month name 'FOO' (use JAN-DEC)"),
        ("0 0 * * FUNDAY", "day-of-week field: unknown day name 'FUNDAY' (use SUN-SAT)"),
        ("0 0 * * MONDAY", "day-of-week field: unknown day name 'MONDAY'"),
        ("0 0 ? * 1", "day-of-month field: '?' is not supported, use '*'"),
        ("0 0 * * ?", "day-of-week field: '?' is not supported, use '*'"),
        ("*/0 * * * *", "minute field: step must be at least 1 in '*/0'"),
        ("*/x * * * *", "minute field: invalid step in '*/x'"),
        ("*/90 * * * *", "minute field: '*/90' only matches 0 (step 90 is larger than the range "
                         "0-59); write 0, or use @every 90m for a fixed interval"),
        ("0 0 */40 * *", "day-of-month field: '*/40' only matches 1"),
        ("1,,2 * * * *", "minute field: empty item in list '1,,2'"),
        ("-5 * * * *", "minute field: invalid value '-5'"),
        ("5- * * * *", "minute field: invalid value '5-'"),
        ("1-2-3 * * * *", "minute field: invalid value '1-2-3'"),
        ("0 0 * * 5-1", "day-of-week field: range '5-1' is reversed"),
        ("0 0 * NOV-FEB *", "month field: range 'NOV-FEB' is reversed (write 11-12,1-2)"),
        ("0 0 * * 1#6", "the number after '#' must be 1-5"),
        ("0 0 * * 1#0", "the number after '#' must be 1-5"),
        ("0 0 * * L", "'L' needs a day in front of it"),
        ("0 0 * * 1-5#2", "'#' and 'L' take one day"),
        ("0 0 * * 1,5L", "cannot mix '#' or 'L' with plain days"),
        ("0 0 15W * *", "day-of-month field: invalid value '15W'"),
        ("h * * * *", "minute field: invalid value 'h'"),  # H is upper case only
        ("H-5 * * * *", "minute field: invalid use of H in 'H-5'"),
        ("0 0 * * H#2", "day-of-week field: invalid use of H in 'H#2'"),
        ("0 0 HL * *", "day-of-month field: invalid use of H in 'HL'"),
        ("H(30-10) * * * *", "minute field: range in 'H(30-10)' is reversed"),
        ("H(0-60) * * * *", "minute field: value 60 out of range 0-59"),
        ("H/0 * * * *", "minute field: invalid step in 'H/0'"),
        ("H/61 * * * *", "minute field: step 61 in 'H/61' is larger than the range 0-59"),
        ("H(0-9)/11 * * * *", "step 11 in 'H(0-9)/11' is larger than the range 0-9"),
        ("@every H", "@every: H only goes in cron fields"),
        ("@every 1H", "@every: H only goes in cron fields"),
        ("0 0 L-2 * *", "day-of-month field: invalid value 'L-2'"),
        ("0 0 31 2 *", "schedule never fires: day 31 does not exist in February"),
        ("0 0 30 2 *", "schedule never fires: day 30 does not exist in February"),
        ("0 0 30,31 2 *", "schedule never fires: days 30 and 31 do not exist in February"),
        ("0 0 31 4,6,9,11 *",
         "schedule never fires: day 31 does not exist in April, June, September or November"),
        ("0 0 */20 * 1#2",
         "schedule never fires: day-of-month 1 or 21 never falls on the second Monday"),
        ("@reboot", "@reboot is not supported"),
        ("@fortnightly", "unknown macro '@fortnightly'"),
        ("@daily 5", "@daily takes no fields after it"),
        ("x" * 2000, "longer than 1024 characters"),
    ],
)
def test_error_messages(expr: str, message: str) -> None:
    with pytest.raises(ScheduleError) as exc:
        check_schedule(expr)
    assert message in str(exc.value)
    with pytest.raises(ScheduleError):
        Schedule.parse(expr)


@pytest.mark.parametrize(
    "expr",
    [
        "0 0 29 2 *",  # leap years
        "0 0 30 2 1",  # OR: Mondays in February
        "0 0 31 2 mon",
        "0 0 31 1-2 *",  # January 31st exists
        "0 0 L 2 *",
        "0 0 */2 2 *",
        "0 0 * 2 1#5",  # the fifth Monday of February exists in some leap years
        "0 0 29-31 * 5L",  # OR
        "0 0 */10 * 5#5",  # AND: day 31 can be the fifth Friday
    ],
)
def test_possible_schedules_are_valid(expr: str) -> None:
    check_schedule(expr)
    Schedule.parse(expr)


def test_check_schedule_is_cached_and_does_not_use_croniter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("check_schedule must not construct croniter objects")

    monkeypatch.setattr(schedule_module, "croniter", boom)
    for i in range(500):
        check_schedule(f"{i % 60} {i % 24} {1 + i % 28} * {i % 7} ")
    check_schedule("7 7 7 7 *")
    info = _cron._compile.cache_info()
    check_schedule("7 7 7 7 *")
    assert _cron._compile.cache_info().hits == info.hits + 1


def test_many_distinct_expressions_validate_and_each_is_compiled_once() -> None:
    """10,000 distinct expressions all validate, each compiled once and then served
    from the cache (speed is measured in tests/bench/reconcile.py, not here)."""
    exprs = [f"{i % 60} {(i // 60) % 24} * * {(i // 1440) % 7},{i % 3}" for i in range(10_000)]
    _cron._compile.cache_clear()
    for e in exprs:
        check_schedule(e)
    first = _cron._compile.cache_info()
    for e in exprs:
        check_schedule(e)
    again = _cron._compile.cache_info()
    assert first.misses == len(set(exprs)) and again.misses == first.misses
    assert again.hits - first.hits == len(exprs)


def test_non_string_schedule() -> None:
    with pytest.raises(ScheduleError, match="must be a string"):
        check_schedule(5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- time zones


def test_check_time_zone() -> None:
    assert check_time_zone("Europe/Berlin") is ZoneInfo("Europe/Berlin")
    assert check_time_zone("UTC") == ZoneInfo("UTC")
    assert check_time_zone("America/Argentina/Buenos_Aires").key == (
        "America/Argentina/Buenos_Aires")
    assert check_time_zone("Etc/GMT+5").key == "Etc/GMT+5"


@pytest.mark.parametrize(
    "name",
    [
        "Europe/Berln",
        "../../etc/passwd",
        "",
        "/etc/localtime",
        "/usr/share/zoneinfo/UTC",
        "Europe/../UTC",
        "Europe//Berlin",
        "Europe",
        "zone.tab",
        "localtime",
        "right/UTC",
        "posix/Europe/Berlin",
        "Europe/Berlin\x00",
        "Europe\\Berlin",
        "x" * 300,
    ],
)
def test_check_time_zone_refuses(name: str) -> None:
    with pytest.raises(ScheduleError) as exc:
        check_time_zone(name)
    assert str(exc.value) == f'unknown time zone "{name}"'
    with pytest.raises(ScheduleError, match="unknown time zone"):
        Schedule.parse("* * * * *", name)


# --------------------------------------------------------------------------- Schedule object


def test_schedule_object() -> None:
    s = Schedule.parse("30 2 * * *", "Europe/Berlin")
    assert s is Schedule.parse("30 2 * * *", "Europe/Berlin")  # cached
    assert (s.expression, s.time_zone, s.is_every, s.wildcard_hour) == (
        "30 2 * * *", "Europe/Berlin", False, False)
    assert s.normalized == "30 2 * * *"
    assert Schedule.parse("*/30 * * * *", "Europe/Berlin").wildcard_hour
    assert Schedule.parse("0 */2 * * *").wildcard_hour
    assert not Schedule.parse("0 0-23 * * *").wildcard_hour  # spelled out: a fixed hour
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.expression = "x"  # type: ignore[misc]
    with pytest.raises(ValueError, match="timezone-aware"):
        s.next_after(datetime(2024, 1, 1))
    slot = s.next_after(datetime(2024, 1, 1, 12, tzinfo=ZoneInfo("Asia/Tokyo")))
    assert slot == utc("2024-01-02 01:30")
    assert slot is not None and slot.tzinfo is UTC
    assert s.describe() == "at 02:30 every day"


def test_next_after_is_strict_and_previous_before_inclusive() -> None:
    s = Schedule.parse("0 * * * *")
    assert s.next_after(utc("2024-01-01 05:00")) == utc("2024-01-01 06:00")
    assert s.next_after(utc("2024-01-01 04:59:59")) == utc("2024-01-01 05:00")
    assert s.next_after(utc("2024-01-01 05:00") - timedelta(microseconds=1)) == utc(
        "2024-01-01 05:00")
    assert s.previous_before(utc("2024-01-01 05:00")) == utc("2024-01-01 05:00")
    assert s.previous_before(utc("2024-01-01 05:59:59")) == utc("2024-01-01 05:00")
    assert s.previous_before(utc("2024-01-01 05:00") - timedelta(microseconds=1)) == utc(
        "2024-01-01 04:00")
    sec = Schedule.parse("*/15 * * * * *")
    x = utc("2024-01-01 05:00:15") + timedelta(microseconds=500)
    assert sec.next_after(x) == utc("2024-01-01 05:00:30")
    assert sec.previous_before(x) == utc("2024-01-01 05:00:15")


def test_between_and_limit() -> None:
    s = Schedule.parse("*/15 * * * *")
    got = s.between(utc("2024-01-01 00:00"), utc("2024-01-01 01:00"))
    assert got == [utc("2024-01-01 00:15"), utc("2024-01-01 00:30"), utc("2024-01-01 00:45"),
                   utc("2024-01-01 01:00")]
    assert s.between(utc("2024-01-01 00:00"), utc("2024-01-01 01:00"), limit=2) == got[:2]
    assert s.between(utc("2024-01-01 00:00"), utc("2024-01-01 01:00"), limit=0) == []
    assert s.between(utc("2024-01-01 01:00"), utc("2024-01-01 00:00")) == []


def test_horizon() -> None:
    # Feb 29 on a Saturday or Sunday (AND): 2032-02-29 is a Sunday
    s = Schedule.parse("0 0 29 2 */6")
    assert s.next_after(utc("2024-03-01 00:00")) is None  # more than 5 years away
    assert s.next_after(utc("2030-01-01 00:00")) == utc("2032-02-29 00:00")
    assert s.previous_before(utc("2033-01-01 00:00")) == utc("2032-02-29 00:00")
    assert s.previous_before(utc("2031-01-01 00:00")) is None
    assert list(Schedule.parse("0 0 1 1 *").iter_after(datetime(9998, 6, 1, tzinfo=UTC))) == [
        datetime(9999, 1, 1, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        ("30 2 * * *", "at 02:30 every day"),
        ("*/10 * * * * *", "every 10 seconds"),
        ("* * * * *", "every minute"),
        ("*/5 * * * *", "every 5 minutes"),
        ("0 * * * *", "every hour at :00"),
        ("15 */2 * * *", "every 2 hours at :15"),
        ("0 9 * * 1-5", "at 09:00 on Monday to Friday"),
        ("0 9,17 * * *", "at 09:00 and 17:00 every day"),
        ("0 0 1 * *", "at 00:00 on day 1 of the month"),
        ("@yearly", "at 00:00 on January 1"),
        ("0 0 L * *", "at 00:00 on the last day of the month"),
        ("0 0 * * 5L", "at 00:00 on the last Friday"),
        ("0 0 1 * 1", "at 00:00 on day 1 of the month or on Monday"),
        ("0 0 * * sat,sun", "at 00:00 on Saturday and Sunday"),
        ("0 6 * 6-8 *", "at 06:00 in June to August"),
        # seconds, lists of times, day steps, nth weekdays, @every units
        ("15 30 9 * * *", "at 09:30:15 every day"),
        ("*/20 0 9 * * *", "at 09:00:00, 09:00:20 and 09:00:40 every day"),
        ("0,30 * * * * *", "every 30 seconds"),
        ("* 5 * * * *", "at second 0-59 of minute 5 of every hour"),
        ("* * 3 * * *", "at second 0-59 of every minute past hour 3"),
        ("0 0,30 8-10 * * *", "at 08:00, 08:30, 09:00, 09:30, 10:00 and 10:30 every day"),
        ("*/15 9 * * *", "at 09:00, 09:15, 09:30 and 09:45 every day"),
        ("0 */3 * * *", "every 3 hours at :00"),
        ("* * * * 1", "every minute on Monday"),
        ("0 12 * * 0", "at 12:00 on Sunday"),
        ("0 0 */2 * *", "at 00:00 on every 2nd day of the month"),
        ("0 0 1-7 * 1", "at 00:00 on day 1-7 of the month or on Monday"),
        ("0 0 1,15 * *", "at 00:00 on day 1 or 15 of the month"),
        ("0 0 * * 2#1,4#3", "at 00:00 on the first Tuesday or the third Thursday"),
        ("0 0 * * 1,3,5", "at 00:00 on Monday, Wednesday and Friday"),
        ("0 0 * * 1-3,5", "at 00:00 on Monday, Tuesday, Wednesday and Friday"),
        ("0 0 * 1,7 *", "at 00:00 in January and July"),
        ("0 0 1 1 *", "at 00:00 on January 1"),
        ("@every 1s", "every second"),
        ("@every 2m", "every 2 minutes"),
        ("@every 1h", "every hour"),
        ("@every 36h", "every 36 hours"),
        ("@every 1d", "every day"),
        ("@every 90m", "every 1h30m"),
    ],
)
def test_describe(expr: str, text: str) -> None:
    assert describe(expr) == text


# --------------------------------------------------------------------------- DST goldens


def golden(expr: str, tz: str, start: str, end: str) -> list[str]:
    return window(expr, tz, start, end)


def test_new_york() -> None:
    # 2024-03-10 07:00Z: 02:00 EST -> 03:00 EDT; 2024-11-03 06:00Z: 02:00 EDT -> 01:00 EST
    tz = "America/New_York"
    assert golden("30 2 * * *", tz, "2024-03-09 00:00", "2024-03-12 00:00") == [
        "2024-03-09 07:30", "2024-03-10 07:00", "2024-03-11 06:30"]  # the gap: 03:00 EDT
    assert golden("30 1 * * *", tz, "2024-11-02 00:00", "2024-11-05 00:00") == [
        "2024-11-02 05:30", "2024-11-03 05:30", "2024-11-04 06:30"]  # first 01:30 only
    assert golden("0 * * * *", tz, "2024-03-10 04:30", "2024-03-10 08:00") == [
        "2024-03-10 05:00", "2024-03-10 06:00", "2024-03-10 07:00", "2024-03-10 08:00"]
    assert golden("*/30 * * * *", tz, "2024-11-03 04:45", "2024-11-03 07:00") == [
        "2024-11-03 05:00", "2024-11-03 05:30",  # 01:00, 01:30 EDT
        "2024-11-03 06:00", "2024-11-03 06:30",  # 01:00, 01:30 EST
        "2024-11-03 07:00"]


def test_berlin() -> None:
    # 2024-03-31 01:00Z: 02:00 CET -> 03:00 CEST; 2024-10-27 01:00Z: 03:00 CEST -> 02:00 CET
    tz = "Europe/Berlin"
    assert golden("30 2 * * *", tz, "2024-03-30 00:00", "2024-04-02 00:00") == [
        "2024-03-30 01:30", "2024-03-31 01:00", "2024-04-01 00:30"]
    assert golden("0,30 2 * * *", tz, "2024-03-30 12:00", "2024-03-31 23:00") == [
        "2024-03-31 01:00"]  # two wall times in the gap, one run
    assert golden("30 2 * * *", tz, "2024-10-26 00:00", "2024-10-29 00:00") == [
        "2024-10-26 00:30", "2024-10-27 00:30", "2024-10-28 01:30"]
    assert golden("*/30 * * * *", tz, "2024-03-31 00:00", "2024-03-31 01:30") == [
        "2024-03-31 00:30", "2024-03-31 01:00", "2024-03-31 01:30"]  # 01:30, 03:00, 03:30
    assert golden("*/30 * * * *", tz, "2024-10-26 23:45", "2024-10-27 02:00") == [
        "2024-10-27 00:00", "2024-10-27 00:30",  # 02:00, 02:30 CEST
        "2024-10-27 01:00", "2024-10-27 01:30",  # 02:00, 02:30 CET
        "2024-10-27 02:00"]  # 03:00 CET
    assert golden("* 2 * * *", tz, "2024-10-26 12:00", "2024-10-28 00:00")[::20] == [
        "2024-10-27 00:00", "2024-10-27 00:20", "2024-10-27 00:40"]  # 60 runs, first pass
    assert len(golden("* 2 * * *", tz, "2024-10-26 12:00", "2024-10-28 00:00")) == 60
    assert golden("* 2 * * *", tz, "2024-03-30 12:00", "2024-03-31 23:00") == [
        "2024-03-31 01:00"]


def test_lord_howe_half_hour_shift() -> None:
    # 2024-04-06 15:00Z: 02:00 +11 -> 01:30 +10:30; 2024-10-05 15:30Z: 02:00 +10:30 -> 02:30 +11
    tz = "Australia/Lord_Howe"
    assert golden("15 2 * * *", tz, "2024-10-04 00:00", "2024-10-07 00:00") == [
        "2024-10-04 15:45", "2024-10-05 15:30", "2024-10-06 15:15"]
    assert golden("45 1 * * *", tz, "2024-04-05 00:00", "2024-04-08 00:00") == [
        "2024-04-05 14:45", "2024-04-06 14:45", "2024-04-07 15:15"]
    assert golden("*/30 * * * *", tz, "2024-04-06 13:45", "2024-04-06 16:00") == [
        "2024-04-06 14:00", "2024-04-06 14:30",  # 01:00, 01:30 +11
        "2024-04-06 15:00", "2024-04-06 15:30",  # 01:30, 02:00 +10:30
        "2024-04-06 16:00"]
    assert golden("*/15 * * * *", tz, "2024-10-05 15:00", "2024-10-05 16:00") == [
        "2024-10-05 15:15", "2024-10-05 15:30", "2024-10-05 15:45", "2024-10-05 16:00"]
    # 01:45 +10:30, then 02:30 +11: 02:00 and 02:15 do not exist


def test_havana_midnight_transitions() -> None:
    # 2024-03-10 05:00Z: 00:00 CST -> 01:00 CDT (midnight skipped);
    # 2024-11-03 05:00Z: 01:00 CDT -> 00:00 CST (midnight hour repeated)
    tz = "America/Havana"
    assert golden("0 0 * * *", tz, "2024-03-08 12:00", "2024-03-11 12:00") == [
        "2024-03-09 05:00", "2024-03-10 05:00", "2024-03-11 04:00"]  # 01:00 CDT on the 10th
    assert golden("0 0 * * *", tz, "2024-11-01 12:00", "2024-11-04 12:00") == [
        "2024-11-02 04:00", "2024-11-03 04:00", "2024-11-04 05:00"]  # first midnight only
    assert golden("0 * * * *", tz, "2024-03-10 03:30", "2024-03-10 06:00") == [
        "2024-03-10 04:00", "2024-03-10 05:00", "2024-03-10 06:00"]  # 23:00 CST, 01:00, 02:00
    assert golden("*/30 * * * *", tz, "2024-11-03 03:15", "2024-11-03 06:00") == [
        "2024-11-03 03:30",  # 23:30 CDT
        "2024-11-03 04:00", "2024-11-03 04:30",  # 00:00, 00:30 CDT
        "2024-11-03 05:00", "2024-11-03 05:30",  # 00:00, 00:30 CST
        "2024-11-03 06:00"]  # 01:00 CST


def test_santiago_midnight_transitions() -> None:
    # 2024-04-07 03:00Z: 24:00 -03 -> 23:00 -04 (23:xx on the 6th repeats);
    # 2024-09-08 04:00Z: 24:00 -04 -> 01:00 -03 (midnight skipped)
    tz = "America/Santiago"
    assert golden("0 0 * * *", tz, "2024-09-06 12:00", "2024-09-09 12:00") == [
        "2024-09-07 04:00", "2024-09-08 04:00", "2024-09-09 03:00"]
    assert golden("30 23 * * *", tz, "2024-04-05 12:00", "2024-04-08 12:00") == [
        "2024-04-06 02:30", "2024-04-07 02:30", "2024-04-08 03:30"]
    assert golden("30 * * * *", tz, "2024-04-07 01:00", "2024-04-07 05:00") == [
        "2024-04-07 01:30", "2024-04-07 02:30", "2024-04-07 03:30", "2024-04-07 04:30"]


def test_croniter_fires_a_fixed_hour_twice_on_fall_back_day() -> None:
    """The bug the DST policy guards against, with plain croniter and an aware start."""
    ny = ZoneInfo("America/New_York")
    got = raw_croniter("30 1 * * *", datetime(2024, 11, 2, 12, tzinfo=ny), 3)
    assert [t.astimezone(UTC) for t in got] == [
        utc("2024-11-03 05:30"), utc("2024-11-03 06:30"), utc("2024-11-04 06:30")]
    ours = Schedule.parse("30 1 * * *", "America/New_York")
    assert ours.between(utc("2024-11-02 16:00"), utc("2024-11-04 12:00")) == [
        utc("2024-11-03 05:30"), utc("2024-11-04 06:30")]


def test_a_shared_schedule_is_safe_across_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    s = Schedule.parse("0 9 1,15 * mon", "Europe/Berlin")
    starts = [utc("2024-01-01 00:00") + timedelta(hours=7 * i) for i in range(200)]
    expected = [s.next_after(x) for x in starts]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            assert list(pool.map(s.next_after, starts)) == expected


# ------------------------------------------------------------------ day fields vs brute force

DOM_FORMS = {  # text -> (listed days, starts with "*"); "L" is checked separately
    "*": (set(range(1, 32)), True),
    "1-7": (set(range(1, 8)), False),
    "*/2": (set(range(1, 32, 2)), True),
    "L": (set(), False),
    "15,L": ({15}, False),
    "5-5": ({5}, False),
    "29-31": ({29, 30, 31}, False),
}
DOW_FORMS = {  # text -> (weekday predicate on a date, starts with "*")
    "*": (lambda d: True, True),
    "1": (lambda d: d.isoweekday() == 1, False),
    "MON-FRI": (lambda d: d.isoweekday() <= 5, False),
    "5L": (lambda d: d.isoweekday() == 5 and (d + timedelta(days=7)).month != d.month, False),
    "1#2": (lambda d: d.isoweekday() == 1 and 8 <= d.day <= 14, False),
    "*/2": (lambda d: d.isoweekday() % 7 in {0, 2, 4, 6}, True),
    "FRI-SUN": (lambda d: d.isoweekday() >= 5, False),
}
MONTH_FORMS = {"*": set(range(1, 13)), "2": {2}, "FEB-APR": {2, 3, 4}}


def _last_day(d: datetime) -> bool:
    return (d + timedelta(days=1)).month != d.month


@pytest.mark.parametrize("month", sorted(MONTH_FORMS))
@pytest.mark.parametrize("dow", sorted(DOW_FORMS))
@pytest.mark.parametrize("dom", sorted(DOM_FORMS))
def test_day_fields_against_brute_force(dom: str, dow: str, month: str) -> None:
    days, dom_star = DOM_FORMS[dom]
    weekday, dow_star = DOW_FORMS[dow]
    months = MONTH_FORMS[month]

    def matches(d: datetime) -> bool:
        dom_ok = d.day in days or (dom.endswith("L") and _last_day(d))
        dow_ok = weekday(d)
        day_ok = (dom_ok and dow_ok) if (dom_star or dow_star) else (dom_ok or dow_ok)
        return d.month in months and day_ok

    start, end = utc("2023-12-31 12:00"), utc("2024-04-30 12:00")
    expected = []
    d = utc("2024-01-01 00:00")
    while d <= end:
        if matches(d):
            expected.append(d)
        d += timedelta(days=1)
    expr = f"0 0 {dom} {month} {dow}"
    try:
        s = Schedule.parse(expr)
    except ScheduleError:  # rejected as never firing: nothing may match
        assert expected == []
        return
    assert s.between(start, end) == expected, expr

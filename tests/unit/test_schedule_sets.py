"""Several schedules, ``H``, the shortest interval and fast slot counting
(``reconciler.core.schedule_set``, ``H`` in ``_cron``), with golden DST days.

Golden instants are UTC. 2026 transitions: New York 03-08 07:00Z (02:00 EST -> 03:00
EDT) and 11-01 06:00Z (02:00 EDT -> 01:00 EST); Berlin 03-29 01:00Z and 10-25 01:00Z;
Lord Howe 04-04 15:00Z (02:00 +11 -> 01:30 +10:30) and 10-03 15:30Z (02:00 +10:30 ->
02:30 +11).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.core.errors import ScheduleError
from reconciler.core.schedule import Schedule, check_schedule, describe, normalize, uses_hash
from reconciler.core.schedule_set import ScheduleSet, shortest_interval, slot_seconds


def U(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def slots(expressions: list[str], zone: str, start: datetime, end: datetime,
          name: str | None = None) -> list[str]:
    found = ScheduleSet.parse(expressions, zone, name).between(start, end)
    return [s.strftime("%m-%d %H:%M") for s in found]


# ----------------------------------------------------------------------- the union


@pytest.mark.parametrize(
    ("expressions", "zone", "start", "end", "expected"),
    [
        # New York, spring: 02:00 is in the gap and runs at 03:00 EDT; 01:30 EST before it
        (["30 1 * * *", "0 2 * * *"], "America/New_York", U(2026, 3, 7, 12), U(2026, 3, 9, 12),
         ["03-08 06:30", "03-08 07:00", "03-09 05:30", "03-09 06:00"]),
        # New York, fall: 01:30 runs once (EDT, 05:30Z, not 06:30Z), 02:00 EST after it
        (["30 1 * * *", "0 2 * * *"], "America/New_York", U(2026, 10, 31, 12), U(2026, 11, 2, 12),
         ["11-01 05:30", "11-01 07:00", "11-02 06:30", "11-02 07:00"]),
        # two schedules on one instant: 02:30 (skipped, runs at 03:00 EDT) and 03:00 EDT
        (["30 2 * * *", "0 3 * * *"], "America/New_York", U(2026, 3, 7, 12), U(2026, 3, 9, 12),
         ["03-08 07:00", "03-09 06:30", "03-09 07:00"]),
        (["30 2 * * *", "0 3 * * *"], "Europe/Berlin", U(2026, 3, 28, 12), U(2026, 3, 30, 12),
         ["03-29 01:00", "03-30 00:30", "03-30 01:00"]),
        # Berlin, fall: a wildcard hour fires on both passes, a fixed 02:15 on the first only
        (["*/30 * * * *", "15 2 * * *"], "Europe/Berlin", U(2026, 10, 24, 23, 50),
         U(2026, 10, 25, 2, 10),
         ["10-25 00:00", "10-25 00:15", "10-25 00:30", "10-25 01:00", "10-25 01:30",
          "10-25 02:00"]),
        # Lord Howe, end of summer time: 01:45 at its first pass (+11), 02:15 at +10:30
        (["45 1 * * *", "15 2 * * *"], "Australia/Lord_Howe", U(2026, 4, 4), U(2026, 4, 6),
         ["04-04 14:45", "04-04 15:45", "04-05 15:15", "04-05 15:45"]),
        # Lord Howe, start of summer time: 02:15 (skipped) and 02:30 +11 are one instant
        (["15 2 * * *", "30 2 * * *"], "Australia/Lord_Howe", U(2026, 10, 3), U(2026, 10, 4, 12),
         ["10-03 15:30"]),
        # weekdays at 08:30, weekends at 10:00 (the example), UTC
        (["30 8 * * 1-5", "0 10 * * 0,6"], "UTC", U(2026, 6, 5), U(2026, 6, 9),
         ["06-05 08:30", "06-06 10:00", "06-07 10:00", "06-08 08:30"]),
        # cron and @every together: @every ignores the zone
        (["0 3 * * *", "@every 12h"], "Europe/Berlin", U(2026, 6, 1), U(2026, 6, 2),
         ["06-01 01:00", "06-01 12:00", "06-02 00:00"]),
    ],
)
def test_golden_unions(expressions: list[str], zone: str, start: datetime, end: datetime,
                       expected: list[str]) -> None:
    assert slots(expressions, zone, start, end) == expected


def test_a_union_steps_back_as_it_steps_forward() -> None:
    union = ScheduleSet.parse(["*/30 * * * *", "15 2 * * *"], "Europe/Berlin")
    forward = union.between(U(2026, 10, 24, 22), U(2026, 10, 25, 4))
    backward = []
    at = union.previous_before(U(2026, 10, 25, 4))
    while at is not None and at > U(2026, 10, 24, 22):
        backward.append(at)
        at = union.previous_before(at - timedelta(microseconds=1))
    assert backward[::-1] == forward


def test_a_set_of_one_is_the_schedule_itself() -> None:
    one = ScheduleSet.parse("30 2 * * *", "Europe/Berlin")
    alone = Schedule.parse("30 2 * * *", "Europe/Berlin")
    start = U(2026, 3, 27)
    assert one.between(start, start + timedelta(days=5)) == alone.between(
        start, start + timedelta(days=5))
    assert one.expressions == ("30 2 * * *",) and one.time_zone == "Europe/Berlin"
    assert one.describe() == "at 02:30 every day"
    with pytest.raises(ValueError, match="at least one"):
        ScheduleSet.parse([], "UTC")


# ----------------------------------------------------------------------------- H


def test_h_resolves_per_name_and_field() -> None:
    # pinned: a change of the hash would move every H task of every user
    assert Schedule.parse("H 2 * * *", "UTC", "backup-db").normalized == "42 2 * * *"
    assert Schedule.parse("H H(1-3) * * *", "UTC", "backup-db").normalized == "42 1 * * *"
    assert Schedule.parse("H H(1-3) * * *", "UTC", "e").normalized == "33 3 * * *"
    assert Schedule.parse("H/15 * * * *", "UTC", "x").normalized == "6,21,36,51 * * * *"
    assert Schedule.parse("H(0-29)/10 * * * *", "UTC", "x").normalized == "6,16,26 * * * *"
    # the minute of H is the same in every expression of the task (Jenkins)
    a = Schedule.parse("H 2 * * *", "UTC", "nightly-report").normalized.split()[0]
    b = Schedule.parse("H 14 * * 0", "UTC", "nightly-report").normalized.split()[0]
    assert a == b == "54"


@pytest.mark.parametrize(
    ("expression", "low", "high", "field"),
    [("H * * * *", 0, 59, 0), ("0 H * * *", 0, 23, 1), ("0 0 H * *", 1, 28, 2),
     ("0 0 1 H *", 1, 12, 3), ("0 0 * * H", 0, 6, 4), ("0 H(9-17) * * *", 9, 17, 1),
     ("0 0 * * H(MON-FRI)", 1, 5, 4), ("0 0 * * H(FRI-SUN)", 0, 7, 4),
     ("H * * * * *", 0, 59, 5)],  # seconds: printed last (for croniter)
)
def test_h_stays_in_its_range(expression: str, low: int, high: int, field: int) -> None:
    # (second 0 is not printed: croniter's default)
    seen = {int(([*normalize(expression, f"t{i}").split(), "0"])[field]) for i in range(2000)}
    if "FRI-SUN" in expression:
        assert seen == {5, 6, 0}  # 7 is Sunday: printed as 0
    else:
        assert seen == set(range(low, high + 1))


def test_h_steps_and_the_dst_rules() -> None:
    # H/6 in the hour field is */6 shifted: the wildcard-hour rule (both passes fire)
    assert Schedule.parse("0 H/6 * * *", "UTC", "x").wildcard_hour
    assert not Schedule.parse("0 H * * *", "UTC", "x").wildcard_hour
    assert not Schedule.parse("0 H(0-23)/6 * * *", "UTC", "x").wildcard_hour
    # H/2 in day-of-month starts like "*": AND with day-of-week (Vixie)
    assert " | " not in Schedule.parse("0 0 H/2 * MON", "UTC", "x").normalized
    assert " | " in Schedule.parse("0 0 H * MON", "UTC", "x").normalized


def test_h_golden_on_dst_days() -> None:
    # backup-db: H 2 * * * is 02:42
    nightly = ScheduleSet.parse(["H 2 * * *"], "Europe/Berlin", "backup-db")
    assert nightly.between(U(2026, 3, 28, 12), U(2026, 3, 29, 12)) == [U(2026, 3, 29, 1)]
    assert nightly.between(U(2026, 10, 24, 12), U(2026, 10, 25, 12)) == [U(2026, 10, 25, 0, 42)]
    ny = ScheduleSet.parse(["H 1 * * *", "H 2 * * *"], "America/New_York", "backup-db")
    assert ny.between(U(2026, 10, 31, 12), U(2026, 11, 1, 12)) == [
        U(2026, 11, 1, 5, 42), U(2026, 11, 1, 7, 42)]  # 01:42 EDT once, 02:42 EST
    howe = ScheduleSet.parse(["H H(1-3) * * *"], "Australia/Lord_Howe", "backup-db")
    assert howe.between(U(2026, 4, 4), U(2026, 4, 5)) == [U(2026, 4, 4, 14, 42)]  # 01:42 +11


def test_h_needs_a_name_to_run_but_not_to_be_checked() -> None:
    check_schedule("H H * * *")  # the syntax alone
    check_schedule("0 0 H(29-31) 2 *")  # whether its day exists depends on the name
    with pytest.raises(ScheduleError, match="uses H"):
        Schedule.parse("H * * * *")
    with pytest.raises(ScheduleError, match="never fires"):
        check_schedule("0 0 H(30-31) 2 *", "any-name")
    assert uses_hash("H * * * *") and uses_hash("0 0 * * H(MON-FRI)")
    assert not uses_hash("0 0 * * THU") and not uses_hash("@hourly")
    assert describe("H 2 * * *", "backup-db") == "at 02:42 every day"
    assert normalize("H 2 * * *", "backup-db") == "42 2 * * *"


# ----------------------------------------------------------------------- interval


@pytest.mark.parametrize(
    ("expressions", "expected"),
    [
        (["30 8 * * 1-5", "0 10 * * 0,6"], timedelta(hours=22, minutes=30)),  # Sun -> Mon
        (["0 * * * *"], timedelta(hours=1)),
        (["0 0 * * 0"], timedelta(days=7)),
        (["*/15 * * * *", "5 * * * *"], timedelta(minutes=5)),
        (["0 23 * * *", "30 0 * * *"], timedelta(hours=1, minutes=30)),  # across midnight
        (["0 9 * * MON#2"], timedelta(days=28)),
        (["0 0 29 2 *"], timedelta(days=1461)),
        (["*/10 * * * * *"], timedelta(seconds=10)),
        (["@every 90m"], timedelta(minutes=90)),
        (["@every 7m", "0 2 * * *"], timedelta(minutes=1)),  # the grid meets 02:00 1 min off
        (["0 0 1 * *", "0 0 L * *"], timedelta(days=1)),  # the last day, then the 1st
    ],
)
def test_shortest_interval(expressions: list[str], expected: timedelta) -> None:
    assert shortest_interval(expressions, "Europe/Berlin") == expected


def test_shortest_interval_resolves_h() -> None:
    # backup-db: H 2 and H 3 are 02:42 and 03:42; with other names they differ
    assert shortest_interval(["H 2 * * *", "H 3 * * *"], "UTC", "backup-db") == timedelta(hours=1)
    assert shortest_interval(["H 2 * * *", "0 3 * * *"], "UTC", "backup-db") == timedelta(
        minutes=18)


# ------------------------------------------------------------------ slot counting

EXPRESSIONS = ["30 2 * * *", "0,30 2 * * *", "*/30 * * * *", "0 * * * *", "15 2 * * *",
               "45 1 * * *", "*/15 * * * *", "0 0 * * *", "0 0 1 * MON", "0 0 */2 * MON",
               "0 9 L * *", "0 9 * * 5L", "0 9 * * MON#2", "@every 7m", "H H * * *",
               "H/15 H(1-3) * * *", "*/10 * 2 * * *", "0 0 29 2 *", "0 0 13 * FRI"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Havana",
         "America/Santiago"]
#: Two days before a DST change of one of the zones (2024), a leap day, an odd minute.
STARTS = [U(2024, 3, 9), U(2024, 3, 30), U(2024, 10, 25), U(2024, 11, 2), U(2024, 4, 5),
          U(2024, 9, 6), U(2024, 10, 4, 12), U(2024, 2, 27), U(2026, 3, 27, 13, 17)]


@pytest.mark.parametrize("zone", ZONES)
def test_slot_seconds_are_the_slots_the_schedule_steps_through(zone: str) -> None:
    for start in STARTS:
        end = start + timedelta(days=2, hours=5)
        for i, expression in enumerate(EXPRESSIONS):
            union = [expression, EXPRESSIONS[(i * 7) % len(EXPRESSIONS)]] if i % 3 == 0 else [
                expression]
            stepped = ScheduleSet.parse(union, zone, "task-x").between(
                start - timedelta(microseconds=1), end)
            expected = [int(s.timestamp()) for s in stepped if s < end]
            assert slot_seconds(union, zone, "task-x", start, end) == expected, (union, start)

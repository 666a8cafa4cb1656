"""A task's slots as the policy module decides them (``reconciler.core.scheduling``):
the active window, jitter (its delay, the cut on a DST night, what the decisions count
from), the exclusion hook and the rules across fields (``check_task``).

Golden instants are UTC; the DST dates are those of tests/unit/test_schedule_sets.py.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.core.model import TaskManifest
from reconciler.core.schedule_set import ScheduleSet
from reconciler.core.scheduling import (
    MAX_EXCLUDED_IN_A_ROW,
    ActiveWindow,
    FieldProblem,
    TaskPolicy,
    TaskSlots,
    Verdict,
    active_window,
    check_task,
    decide_backlog,
    decide_slot,
    jitter_delay,
    recover_missed,
)


def U(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def manifest(name: str = "t", **spec: Any) -> TaskManifest:
    spec.setdefault("schedule", "* * * * *")
    return TaskManifest.model_validate({
        "apiVersion": "reconciler/v1", "kind": "Task", "metadata": {"name": name},
        "spec": {"run": {"command": ["true"]}, **spec}})


def slots_of(name: str = "t", **spec: Any) -> TaskSlots:
    return TaskSlots.of(manifest(name, **spec))


def policy(name: str = "t", **spec: Any) -> TaskPolicy:
    m = manifest(name, **spec)
    return TaskPolicy.from_document(name, 1, m.canonical(), suspended=False, calendars={})


# -------------------------------------------------------------------- active window


@pytest.mark.parametrize(
    ("active_from", "active_until", "zone", "expected"),
    [
        # Berlin: the spring day's midnight is CET, the fall day's end is CET again
        ("2026-03-29", "2026-10-25", "Europe/Berlin",
         ActiveWindow(U(2026, 3, 28, 23), U(2026, 10, 25, 23))),
        # Havana: 2026-03-08 has no midnight (00:00 CST -> 01:00 CDT): its first instant
        ("2026-03-08", None, "America/Havana", ActiveWindow(U(2026, 3, 8, 5), None)),
        # Lord Howe: +10:30 on both days (after the April change, before October's)
        ("2026-10-04", "2026-04-05", "Australia/Lord_Howe",
         ActiveWindow(U(2026, 10, 3, 13, 30), U(2026, 4, 5, 13, 30))),
        # an instant includes itself: the second 01:30 of New York's fall night
        (None, "2026-11-01T01:30:00-05:00", "America/New_York",
         ActiveWindow(None, U(2026, 11, 1, 6, 30) + timedelta(microseconds=1))),
        ("2026-06-01T08:00:00Z", None, "Europe/Berlin", ActiveWindow(U(2026, 6, 1, 8), None)),
    ],
)
def test_active_window_bounds(active_from: str | None, active_until: str | None, zone: str,
                              expected: ActiveWindow) -> None:
    assert active_window(active_from, active_until, zone) == expected


def test_slots_keep_to_the_window_across_dst() -> None:
    s = slots_of(schedule="30 2 * * *", timeZone="Europe/Berlin",
                 activeFrom="2026-03-29", activeUntil="2026-10-25")
    assert s.next_after(U(2026, 1, 1)) == U(2026, 3, 29, 1)  # 03:00 CEST, after the gap
    assert s.previous_before(U(2027, 1, 1)) == U(2026, 10, 25, 0, 30)  # first 02:30 CEST
    assert s.next_after(U(2026, 10, 25, 0, 30)) is None
    assert s.previous_before(U(2026, 3, 29)) is None
    assert s.between(U(2026, 3, 28), U(2026, 3, 31)) == [U(2026, 3, 29, 1), U(2026, 3, 30, 0, 30)]
    assert s.window.contains(U(2026, 3, 28, 23)) and s.window.contains(U(2026, 10, 25, 22, 59))
    assert not s.window.contains(U(2026, 3, 28, 22, 59)) and not s.window.contains(
        U(2026, 10, 25, 23))
    ny = slots_of(schedule="*/30 * * * *", timeZone="America/New_York",
                  activeUntil="2026-11-01T01:30:00-05:00")
    assert ny.between(U(2026, 11, 1, 5), U(2026, 11, 2)) == [
        U(2026, 11, 1, 5, 30), U(2026, 11, 1, 6), U(2026, 11, 1, 6, 30)]  # both passes, then stop
    howe = slots_of(schedule="0 0 * * *", timeZone="Australia/Lord_Howe",
                    activeFrom="2026-10-04", activeUntil="2026-10-05")
    assert howe.between(U(2026, 10, 1), U(2026, 10, 9)) == [
        U(2026, 10, 3, 13, 30), U(2026, 10, 4, 13)]  # +10:30, then +11


def test_slot_seconds_keep_to_the_window() -> None:
    s = slots_of(schedule=["0 * * * *", "30 2 * * *"], timeZone="Europe/Berlin",
                 activeFrom="2026-03-29", activeUntil="2026-03-29")
    stepped = s.between(U(2026, 3, 27), U(2026, 4, 2))
    assert s.slot_seconds(U(2026, 3, 27), U(2026, 4, 2)) == [int(x.timestamp()) for x in stepped]
    assert len(stepped) == 23  # 23 hours that day; 02:30 (skipped) is 03:00 CEST, as 03:00


# -------------------------------------------------------------------------- jitter


def test_jitter_delays_are_pinned() -> None:
    # a change of the hash moves every jittered task of every user: pinned
    ten = timedelta(minutes=10)
    days = [U(2026, 3, 29, 1) + timedelta(days=k) for k in range(3)]
    assert [jitter_delay("nightly-report", d, ten) for d in days] == [
        timedelta(minutes=1, seconds=35), timedelta(minutes=2, seconds=59),
        timedelta(minutes=7, seconds=36)]
    assert jitter_delay("nightly-report", days[0], None) == timedelta(0)
    assert jitter_delay("x", days[0], timedelta(milliseconds=1)) == timedelta(0)


def test_start_of_is_slot_plus_delay_and_keeps_the_order_of_slots() -> None:
    s = slots_of("nightly-report", schedule="0 3 * * *", timeZone="Europe/Berlin", jitter="10m")
    assert s.start_of(U(2026, 3, 29, 1)) == U(2026, 3, 29, 1, 1, 35)
    # Lord Howe, 2026-04-04: 01:30 +11 (14:30Z) and 01:30 +10:30 (15:00Z) are 30 minutes
    # apart although the wall clock says an hour; sync-0's delay of 36m20s is cut short
    howe = slots_of("sync-0", schedule="30 * * * *", timeZone="Australia/Lord_Howe",
                    jitter="45m")
    assert jitter_delay("sync-0", U(2026, 4, 4, 14, 30), timedelta(minutes=45)) == timedelta(
        minutes=36, seconds=20)
    assert howe.start_of(U(2026, 4, 4, 14, 30)) == U(2026, 4, 4, 15) - timedelta(milliseconds=1)
    starts = [howe.start_of(x) for x in howe.between(U(2026, 4, 4, 12), U(2026, 4, 4, 18))
              if x < U(2026, 4, 4, 18)]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert howe.start_seconds(howe.slot_seconds(U(2026, 4, 4, 12), U(2026, 4, 4, 18))) == [
        int(x.timestamp()) for x in starts]


def test_jitter_on_new_yorks_fall_night_is_pinned() -> None:
    # */30 fires on both passes of the repeated hour (01:00 and 01:30 EDT, then EST);
    # each slot starts by its own delay, in the order of the slots
    s = slots_of("ny-sync", schedule=["*/30 * * * *"], timeZone="America/New_York",
                 jitter="30m")
    slots = s.between(U(2026, 11, 1, 4, 50), U(2026, 11, 1, 7))
    assert slots == [U(2026, 11, 1, 5), U(2026, 11, 1, 5, 30), U(2026, 11, 1, 6),
                     U(2026, 11, 1, 6, 30), U(2026, 11, 1, 7)]
    assert [s.start_of(x) for x in slots] == [
        U(2026, 11, 1, 5, 10, 43), U(2026, 11, 1, 5, 39, 18), U(2026, 11, 1, 6, 5),
        U(2026, 11, 1, 6, 36, 58), U(2026, 11, 1, 7, 28, 10)]


def test_the_slot_to_plan_may_be_one_that_has_not_started_yet() -> None:
    s = slots_of("nightly-report", schedule="0 3 * * *", timeZone="Europe/Berlin", jitter="10m")
    slot = U(2026, 3, 29, 1)  # starts at 01:01:35
    assert s.next_planned(slot + timedelta(minutes=1)) == slot
    assert s.next_planned(slot + timedelta(minutes=2)) == U(2026, 3, 30, 1)
    assert s.next_planned(slot + timedelta(minutes=1), after=slot) == U(2026, 3, 30, 1)
    # a clock behind the last slot decided waits for the one after it
    assert s.next_planned(slot - timedelta(minutes=5), after=slot) == U(2026, 3, 30, 1)
    plain = slots_of(schedule="0 3 * * *")
    assert plain.next_planned(U(2026, 1, 1, 3)) == U(2026, 1, 2, 3)


def test_decisions_count_lateness_from_the_start() -> None:
    p = policy("nightly-report", schedule="0 3 * * *", timeZone="Europe/Berlin", jitter="10m",
               startingDeadline="1m")
    slot = U(2026, 3, 29, 1)
    start = slot + timedelta(minutes=1, seconds=35)
    assert decide_slot(p, slot, start + timedelta(seconds=30), 0).verdict is Verdict.RUN
    late = decide_slot(p, slot, start + timedelta(minutes=2), 0)
    assert late.verdict is Verdict.MISSED and "its jittered start" in (late.reason or "")
    # recovery at 01:01 leaves the slot alone: it has not started yet
    before = U(2026, 3, 28, 2)  # the slot before (03:00 CET)
    assert recover_missed(p, before, slot + timedelta(minutes=1)) == []
    recovered = recover_missed(p, before, start + timedelta(seconds=5))
    assert [(d.slot, d.verdict) for d in recovered] == [(slot, Verdict.RUN)]
    # a backlog counts the next slot as due only from its start (03-30 01:00Z starts
    # at 01:02:59)
    assert decide_backlog(p, slot, U(2026, 3, 30, 1, 1)) == []
    assert decide_backlog(p, slot, U(2026, 3, 30, 1, 5))[-1].slot == U(2026, 3, 30, 1)


# ----------------------------------------------------------------- exclusion hook


@dataclass(frozen=True)
class Weekends:
    """A stand-in for a calendar: removes Saturday and Sunday slots (UTC)."""

    name: str = "weekends"

    def excludes(self, slot: datetime) -> bool:
        return slot.weekday() >= 5


@dataclass(frozen=True)
class Everything:
    name: str = "everything"

    def excludes(self, slot: datetime) -> bool:
        return True


def test_exclusions_remove_slots_and_say_which_rule() -> None:
    base = slots_of(schedule="0 12 * * *")
    s = TaskSlots(base.name, base.schedules, base.window, base.jitter, (Weekends(),))
    friday = U(2026, 6, 5, 12)
    assert s.next_after(friday) == U(2026, 6, 8, 12)
    assert s.previous_before(U(2026, 6, 7, 23)) == friday
    assert [(x.day, why) for x, why in itertools.islice(s.candidates(friday), 3)] == [
        (6, "weekends"), (7, "weekends"), (8, None)]
    assert s.slot_seconds(friday, U(2026, 6, 9)) == [int(friday.timestamp()),
                                                     int(U(2026, 6, 8, 12).timestamp())]
    never = TaskSlots(base.name, base.schedules, exclusions=(Everything(),))
    assert never.next_after(friday) is None and never.previous_before(friday) is None
    assert MAX_EXCLUDED_IN_A_ROW >= 1000


# ---------------------------------------------------------------------- check_task


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"schedule": ["0 3 * * *", "0 0 H(30-31) 4 *"]},
         [FieldProblem(("spec", "schedule", 1), "schedule never fires: day 31 does not exist "
                       "in April (H resolved for 'victim')")]),
        ({"schedule": "0 3 * * *", "activeFrom": "2026-06-01", "activeUntil": "2026-05-31"},
         [FieldProblem(("spec", "activeUntil"), "activeUntil 2026-05-31 is before activeFrom "
                       "2026-06-01: the task would never run")]),
        ({"schedule": ["*/15 * * * *", "5 * * * *"], "jitter": "6m"},
         [FieldProblem(("spec", "jitter"), "jitter 6m is longer than the shortest interval "
                       "between slots (5m): runs could start out of order; use at most 5m")]),
        ({"schedule": "@every 1h", "jitter": "1h"}, []),  # as long as the interval: in order
        ({"schedule": "@every 1h", "jitter": "10m", "deadline": "10m"},
         [FieldProblem(("spec", "deadline"), "deadline 10m is not longer than the jitter (10m):"
                       " a slot that starts late by its jitter could never succeed in time; "
                       "the deadline counts from the nominal slot")]),
        ({"schedule": "@every 1h", "jitter": "10m", "deadline": "11m"}, []),
        ({"schedule": "0 3 * * *", "activeFrom": "2026-06-01", "activeUntil": "2026-06-01"}, []),
    ],
)
def test_check_task(spec: dict[str, Any], expected: list[FieldProblem]) -> None:
    m = manifest("victim", **spec)
    problems = check_task(m)
    if "H(30-31)" in str(spec["schedule"]):
        # whether day 31 is picked depends on the name: find one that picks it
        name = next(n for n in (f"v{i}" for i in range(100)) if check_task(manifest(n, **spec)))
        problems = check_task(manifest(name, **spec))
        expected = [FieldProblem(p.path, p.message.replace("'victim'", repr(name)))
                    for p in expected]
    assert problems == expected


def test_a_set_of_schedules_steps_like_its_task() -> None:
    s = slots_of(schedule=["30 8 * * 1-5", "0 10 * * 0,6"])
    assert s.schedules == ScheduleSet.parse(["30 8 * * 1-5", "0 10 * * 0,6"], "UTC", "t")
    assert s.describe() == "at 08:30 on Monday to Friday; at 10:00 on Saturday and Sunday"

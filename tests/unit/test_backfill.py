"""Backfill: the slots of a range across DST days (golden, through the pure function
and ``reconciler backfill --dry-run``), and the decision of which slots to start."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from reconciler.cli.main import main
from reconciler.core.backfill import (
    BackfillState,
    backfill_slots,
    outcomes,
    plan_backfill,
    range_bound,
)
from reconciler.core.model import ConcurrencyPolicy
from reconciler.core.runtime import RunRecord, RunStatus, Trigger
from reconciler.core.schedule_set import ScheduleSet
from reconciler.core.scheduling import ActiveWindow, TaskSlots

#: (schedule, zone, from, to, the slots as local times): every DST change crossed.
GOLDEN = [
    # Berlin, spring forward: 02:30 does not exist on 29 March, it runs at 03:00
    ("30 2 * * *", "Europe/Berlin", "2026-03-28", "2026-03-31",
     ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
    # Berlin, fall back: 02:30 happens twice on 25 October, it runs once (the first)
    ("30 2 * * *", "Europe/Berlin", "2026-10-24", "2026-10-27",
     ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
    # New York, spring forward on 8 March
    ("30 2 * * *", "America/New_York", "2026-03-07", "2026-03-10",
     ["2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
    # New York, fall back on 1 November: 01:30 twice, once
    ("30 1 * * *", "America/New_York", "2026-10-31", "2026-11-03",
     ["2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
    # Lord Howe, a half-hour shift: 02:00-02:30 skipped on 4 October
    ("15 2 * * *", "Australia/Lord_Howe", "2026-10-03", "2026-10-06",
     ["2026-10-03T02:15:00+10:30", "2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]),
    # Lord Howe, 01:30-02:00 twice on 5 April
    ("45 1 * * *", "Australia/Lord_Howe", "2026-04-04", "2026-04-07",
     ["2026-04-04T01:45:00+11:00", "2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]),
    # an hourly wildcard runs both passes of the repeated hour (the scheduler's DST rule)
    ("30 * * * *", "Europe/Berlin", "2026-10-25T01:00", "2026-10-25T04:00",
     ["2026-10-25T01:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00",
      "2026-10-25T03:30:00+01:00"]),
]


def _slots(schedule: str, zone: str, window: ActiveWindow | None = None) -> TaskSlots:
    return TaskSlots("nightly", ScheduleSet.parse(schedule, zone, "nightly"),
                     window or ActiveWindow())


def _local(slots: list[datetime], zone: str) -> list[str]:
    return [s.astimezone(ZoneInfo(zone)).isoformat() for s in slots]


@pytest.mark.parametrize(("schedule", "zone", "start", "end", "expected"), GOLDEN)
def test_a_range_across_a_dst_change_gives_the_schedulers_slots(
        schedule: str, zone: str, start: str, end: str, expected: list[str]) -> None:
    found = backfill_slots(_slots(schedule, zone), range_bound(start, zone, "--from"),
                           range_bound(end, zone, "--to"))
    assert _local(found, zone) == expected


@pytest.mark.parametrize(("schedule", "zone", "start", "end", "expected"), GOLDEN)
def test_dry_run_lists_the_same_slots_from_the_manifests(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        schedule: str, zone: str, start: str, end: str, expected: list[str]) -> None:
    (tmp_path / "t.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Task\nmetadata: {name: nightly}\n"
        f"spec:\n  schedule: {schedule!r}\n  timeZone: {zone}\n  run: {{command: [\"true\"]}}\n")
    monkeypatch.setenv("RECONCILER_DATABASE_URL", f"sqlite:///{tmp_path}/absent/db.sqlite")
    code = main(["backfill", "nightly", "--from", start, "--to", end, "--dry-run",
                 "--manifests", str(tmp_path), "-o", "json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["local"] for s in doc["slots"]] == expected
    assert doc["count"] == len(expected)
    assert not (tmp_path / "absent").exists()  # no database was opened


def test_the_range_is_half_open_and_read_in_the_tasks_zone() -> None:
    zone = "Europe/Berlin"
    slots = _slots("30 2 * * *", zone)
    # --to at a slot leaves it out, --from at a slot takes it
    found = backfill_slots(slots, range_bound("2026-03-28T02:30", zone, "--from"),
                           range_bound("2026-03-30T02:30+02:00", zone, "--to"))
    assert _local(found, zone) == ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00"]
    with pytest.raises(ValueError, match=r"--to .* is not after --from"):
        backfill_slots(slots, range_bound("2026-03-30", zone, "f"),
                       range_bound("2026-03-28", zone, "t"))
    with pytest.raises(ValueError, match="--from: not a date"):
        range_bound("yesterday", zone, "--from")


def test_the_active_window_applies() -> None:
    window = ActiveWindow(start=datetime(2026, 3, 29, tzinfo=UTC))
    found = backfill_slots(_slots("30 2 * * *", "Europe/Berlin", window),
                           datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC))
    assert _local(found, "Europe/Berlin") == ["2026-03-29T03:00:00+02:00",
                                              "2026-03-30T02:30:00+02:00"]


def test_too_many_slots_are_refused() -> None:
    with pytest.raises(ValueError, match="more than 3 slots"):
        backfill_slots(_slots("* * * * *", "UTC"), datetime(2026, 1, 1, tzinfo=UTC),
                       datetime(2026, 1, 2, tzinfo=UTC), limit=3)


# ------------------------------------------------------------------------ decisions

S = [datetime(2026, 1, d, tzinfo=UTC) for d in range(1, 6)]
FORBID, ALLOW, REPLACE = (ConcurrencyPolicy.FORBID, ConcurrencyPolicy.ALLOW,
                          ConcurrencyPolicy.REPLACE)


def test_at_most_parallel_runs_at_once_oldest_first() -> None:
    step = plan_backfill(S, {}, set(), parallel=2, rerun=False, policy=FORBID, others_active=0)
    assert step.start == (S[0], S[1]) and step.state is BackfillState.RUNNING
    own = {S[0]: RunStatus.RUNNING, S[1]: RunStatus.SUCCEEDED}
    step = plan_backfill(S, own, set(), parallel=2, rerun=False, policy=FORBID, others_active=0)
    assert step.start == (S[2],)
    assert (step.done, step.running, step.total) == (1, 1, 5)


def test_slots_that_succeeded_before_are_skipped_unless_rerun() -> None:
    step = plan_backfill(S, {}, {S[0], S[2]}, parallel=5, rerun=False, policy=ALLOW,
                         others_active=0)
    assert step.start == (S[1], S[3], S[4]) and step.done == 2
    step = plan_backfill(S, {}, {S[0], S[2]}, parallel=5, rerun=True, policy=ALLOW,
                         others_active=0)
    assert step.start == tuple(S)


@pytest.mark.parametrize(("policy", "starts"), [(FORBID, False), (REPLACE, False),
                                                (ALLOW, True)])
def test_the_concurrency_policy_applies_against_other_runs(
        policy: ConcurrencyPolicy, starts: bool) -> None:
    step = plan_backfill(S, {}, set(), parallel=2, rerun=False, policy=policy, others_active=1)
    assert bool(step.start) is starts
    assert (step.waiting is None) is starts
    # the backfill's own runs do not count against it: only parallel limits them
    own = {S[0]: RunStatus.RUNNING}
    step = plan_backfill(S, own, set(), parallel=2, rerun=False, policy=FORBID, others_active=0)
    assert step.start == (S[1],)


def test_a_slot_that_ended_in_any_way_is_never_started_again() -> None:
    own = {s: RunStatus.ABANDONED for s in S[:2]} | {s: RunStatus.SUCCEEDED for s in S[2:]}
    step = plan_backfill(S, own, set(), parallel=5, rerun=True, policy=ALLOW, others_active=0)
    assert step.start == () and step.state is BackfillState.FAILED
    assert (step.done, step.failed) == (5, 2)
    own = {s: RunStatus.SUCCEEDED for s in S}
    step = plan_backfill(S, own, set(), parallel=1, rerun=False, policy=ALLOW, others_active=0)
    assert step.state is BackfillState.SUCCEEDED and step.done == 5


def _run(slot: datetime, attempt: int, status: RunStatus,
         trigger: Trigger = Trigger.BACKFILL) -> RunRecord:
    return RunRecord(id=attempt, task_name="t", slot=slot, attempt=attempt, trigger=trigger,
                     status=status)


def test_outcomes_follow_retries_and_tell_runs_from_outside() -> None:
    ledger = {S[0]: 2}
    runs = [_run(S[0], 1, RunStatus.SUCCEEDED, Trigger.SCHEDULE),
            _run(S[0], 2, RunStatus.FAILED), _run(S[0], 3, RunStatus.SUCCEEDED, Trigger.RETRY),
            _run(S[1], 1, RunStatus.SUCCEEDED, Trigger.SCHEDULE),
            _run(S[2], 1, RunStatus.FAILED, Trigger.SCHEDULE)]
    own, succeeded = outcomes(ledger, runs)
    assert own == {S[0]: RunStatus.SUCCEEDED}
    assert succeeded == {S[0], S[1]}

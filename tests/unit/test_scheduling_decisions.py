"""The pure scheduling decisions, value by value (``reconciler.core.scheduling``).

tests/unit/test_scheduler.py and test_clock_jumps.py drive these through the real
scheduler; here each rule of a decision is held on its own, with plain values: the
concurrency policy of a run asked for now, the bookkeeping of a long outage (which
slots get a ``missed`` row and which one says that earlier ones exist), the backoff
of retries and the cancelling of a removed task's entries in the timeline.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.core.runtime import Trigger
from reconciler.core.scheduling import (
    MAX_MISSED_RECORDS,
    EntryKind,
    SlotDecision,
    TaskPolicy,
    Timeline,
    Verdict,
    decide_slot,
    decide_trigger,
    recover_missed,
    retry_delay,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
NOTE = "are not recorded one by one"


def policy(**spec: Any) -> TaskPolicy:
    document = {
        "apiVersion": "reconciler/v1",
        "kind": "Task",
        "metadata": {"name": "t"},
        "spec": {"schedule": "* * * * *", "run": {"command": ["true"]}, **spec},
    }
    return TaskPolicy.from_document("t", 1, document, suspended=False, calendars={})


def verdicts(decisions: list[SlotDecision]) -> list[Verdict]:
    return [d.verdict for d in decisions]


def noted(decisions: list[SlotDecision]) -> list[datetime]:
    return [d.slot for d in decisions if NOTE in (d.reason or "")]


@pytest.mark.parametrize("trigger", [Trigger.MANUAL, Trigger.CATCH_UP])
def test_a_run_asked_for_now_follows_the_concurrency_policy(trigger: Trigger) -> None:
    forbid, replace, allow = (policy(concurrencyPolicy=p) for p in ("Forbid", "Replace", "Allow"))
    assert decide_trigger(forbid, T0, 1, trigger) == SlotDecision(
        T0, Verdict.SKIPPED, trigger, "previous run active"
    )
    assert decide_trigger(replace, T0, 2, trigger) == SlotDecision(
        T0, Verdict.REPLACE, trigger, "replaces the previous run"
    )
    assert decide_trigger(allow, T0, 1, trigger) == SlotDecision(T0, Verdict.RUN, trigger)
    for p in (forbid, replace, allow):
        assert decide_trigger(p, T0, 0, trigger) == SlotDecision(T0, Verdict.RUN, trigger)
    assert decide_trigger(forbid, T0, 0).trigger is Trigger.MANUAL


def test_no_last_slot_or_a_last_slot_not_in_the_past_recovers_nothing() -> None:
    p = policy(catchUp="All")
    assert recover_missed(p, None, T0) == []
    assert recover_missed(p, T0, T0) == []
    assert recover_missed(p, T0 + MINUTE, T0) == []


def test_a_short_outage_records_each_slot_with_its_cause_and_no_note() -> None:
    # last_slot is itself a slot: the walk back stops on it, nothing is truncated.
    out = recover_missed(policy(catchUp="None"), T0 - 3 * MINUTE, T0)
    assert [d.slot for d in out] == [T0 - 2 * MINUTE, T0 - MINUTE, T0]
    assert {d.reason for d in out} == {"downtime: catchUp is None"}
    assert {d.trigger for d in out} == {Trigger.CATCH_UP}
    latest = recover_missed(policy(catchUp="Latest"), T0 - 3 * MINUTE, T0, cause="clock jump")
    assert verdicts(latest) == [Verdict.MISSED, Verdict.MISSED, Verdict.RUN]
    assert latest[0].reason == "clock jump: catchUp is Latest: only the most recent slot runs"


def test_exactly_the_record_limit_of_missed_slots_gets_no_note() -> None:
    out = recover_missed(policy(catchUp="None"), T0 - MAX_MISSED_RECORDS * MINUTE, T0)
    assert len(out) == MAX_MISSED_RECORDS and noted(out) == []


def test_one_slot_over_the_record_limit_drops_the_oldest_and_says_so() -> None:
    # catchUp None, maxCatchUp 5: the walk back covers 105 slots, so 101 are all seen
    # (nothing truncated) and the oldest one is dropped from the rows.
    last = T0 - (MAX_MISSED_RECORDS + 1) * MINUTE
    out = recover_missed(policy(catchUp="None", maxCatchUp=5), last, T0)
    assert len(out) == MAX_MISSED_RECORDS
    oldest = T0 - (MAX_MISSED_RECORDS - 1) * MINUTE
    assert out[0].slot == oldest and noted(out) == [oldest]
    assert f"since {last.isoformat()} {NOTE}" in (out[0].reason or "")
    assert len({d.slot for d in out}) == MAX_MISSED_RECORDS


def test_a_long_outage_with_catch_up_all_runs_the_newest_and_notes_the_oldest_row() -> None:
    # The walk back stops after 100 + maxCatchUp slots: 5 run, exactly 100 are recorded
    # missed, and the oldest recorded one says that earlier slots exist.
    out = recover_missed(policy(catchUp="All", maxCatchUp=5), T0 - 24 * 60 * MINUTE, T0)
    assert verdicts(out) == [Verdict.MISSED] * MAX_MISSED_RECORDS + [Verdict.RUN] * 5
    assert [d.slot for d in out[-5:]] == [T0 - i * MINUTE for i in range(4, -1, -1)]
    assert noted(out) == [T0 - 104 * MINUTE]
    assert "more than maxCatchUp 5 slots missed" in (out[0].reason or "")


def test_retry_delay_doubles_from_the_backoff_up_to_the_cap() -> None:
    ten, hour = timedelta(seconds=10), timedelta(hours=1)
    assert [retry_delay(n, ten, hour).total_seconds() for n in (0, 1, 2, 3, 4)] == [
        10, 10, 20, 40, 80,
    ]
    assert retry_delay(20, ten, hour) == hour
    # The exponent stops at 40 (no huge integers), whatever the attempt.
    tiny, far = timedelta(microseconds=1), timedelta(days=999_999)
    assert retry_delay(60, tiny, far) == tiny * 2**40


def test_removing_a_task_cancels_its_slot_and_its_retries_only() -> None:
    tl = Timeline()
    tl.set_slot("a", T0, 1)
    tl.set_slot("b", T0, 1)
    tl.add_retry("a", T0 - MINUTE, T0 - 2 * MINUTE, 2, 1)
    tl.add_retry("b", T0 - MINUTE, T0 - 2 * MINUTE, 2, 1)
    tl.add_retry("b", T0 - MINUTE, T0 - 3 * MINUTE, 3, 1)  # same instant: order by seq
    assert len(tl) == 5
    tl.remove("a")
    assert len(tl) == 3 and tl.slot_of("a") is None and list(tl.names()) == ["b"]
    due = tl.pop_due(T0)
    assert [(e.name, e.kind, e.attempt) for e in due] == [
        ("b", EntryKind.RETRY, 2), ("b", EntryKind.RETRY, 3), ("b", EntryKind.SLOT, 1),
    ]
    assert len(tl) == 0 and tl.next_at() is None


def test_a_slot_exactly_at_its_starting_deadline_still_runs() -> None:
    p = policy(startingDeadline="10s", concurrencyPolicy="Replace")
    assert decide_slot(p, T0, T0 + timedelta(seconds=10), 0).verdict is Verdict.RUN
    late = decide_slot(p, T0, T0 + timedelta(seconds=10, milliseconds=1), 0)
    assert late.verdict is Verdict.MISSED
    assert late.reason == "started too late: 10.001s after the slot, past startingDeadline 10s"
    assert decide_slot(p, T0, T0, 1) == SlotDecision(
        T0, Verdict.REPLACE, reason="replaces the previous run"
    )


def test_a_policy_carries_the_manifest_values() -> None:
    p = TaskPolicy.from_document("t", 7, policy(timeout="5m").manifest.model_dump(
        mode="json", by_alias=True), suspended=True, calendars={})
    assert (p.name, p.generation, p.suspended, p.spec.timeout) == (
        "t", 7, True, timedelta(minutes=5))


def test_entries_due_at_the_same_instant_come_out_in_the_order_they_were_added() -> None:
    tl = Timeline()
    tl.add_retry("r", T0, T0 - MINUTE, 2, 1)
    tl.set_slot("s", T0, 1)
    tl.add_retry("q", T0, T0 - MINUTE, 2, 1)
    assert [e.name for e in tl.pop_due(T0)] == ["r", "s", "q"]

"""The outbox's pure decisions: when a failed delivery is retried, when it is given up,
and which claimed rows are sent now, folded or postponed (grouping)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from reconciler.core.outbox import (
    GIVE_UP_AFTER,
    NotificationRecord,
    OutboxStatus,
    plan_delivery,
    retry_at,
)

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
S = timedelta(seconds=1)
BASE = timedelta(seconds=10)


def row(id_: int, task: str = "a", event: str = "failed", channel: str = "ops",
        attempts: int = 0) -> NotificationRecord:
    return NotificationRecord(id=id_, channel=channel, task_name=task, event=event,
                              event_id=f"{task}/{id_}", run_id=id_, body={},
                              status=OutboxStatus.PENDING, created_at=T0, next_attempt_at=T0,
                              attempts=attempts)


def test_retries_back_off_exponentially_up_to_the_cap() -> None:
    assert retry_at(T0, 1, T0, base=BASE) == T0 + 10 * S
    assert retry_at(T0, 2, T0, base=BASE) == T0 + 20 * S
    assert retry_at(T0, 3, T0, base=BASE) == T0 + 40 * S
    assert retry_at(T0, 30, T0, base=BASE) == T0 + timedelta(hours=1)  # the cap
    assert retry_at(T0, 1000, T0, base=BASE) == T0 + timedelta(hours=1)  # no overflow


def test_a_row_is_given_up_after_24_hours_with_one_last_attempt_at_the_limit() -> None:
    almost = T0 + GIVE_UP_AFTER - timedelta(minutes=5)
    assert retry_at(T0, 20, almost, base=BASE) == T0 + GIVE_UP_AFTER
    assert retry_at(T0, 21, T0 + GIVE_UP_AFTER, base=BASE) is None
    assert retry_at(T0, 21, T0 + GIVE_UP_AFTER + S, base=BASE) is None


def test_the_first_event_of_a_group_is_sent_at_once() -> None:
    plan = plan_delivery([row(1)], {}, T0, timedelta(minutes=5))
    assert [(s.row.id, s.repeats) for s in plan.sends] == [(1, 0)] and not plan.postponed


def test_events_inside_the_window_wait_for_its_end_then_go_as_one_message() -> None:
    window = timedelta(minutes=5)
    last = {("ops", "a", "failed"): T0}
    plan = plan_delivery([row(2), row(3)], last, T0 + 60 * S, window)
    assert plan.sends == []
    assert [(r.id, at) for r, at in plan.postponed] == [(2, T0 + window), (3, T0 + window)]
    # at the end of the window: the newest is the message, the older one folded into it
    plan = plan_delivery([row(2), row(3)], last, T0 + window, window)
    (send,) = plan.sends
    assert (send.row.id, [f.id for f in send.folded], send.repeats) == (3, [2], 1)


def test_groups_are_per_channel_task_and_event() -> None:
    last = {("ops", "a", "failed"): T0}
    rows = [row(1), row(2, task="b"), row(3, event="missed"), row(4, channel="dev")]
    plan = plan_delivery(rows, last, T0 + S, timedelta(minutes=5))
    assert sorted(s.row.id for s in plan.sends) == [2, 3, 4]
    assert [r.id for r, _ in plan.postponed] == [1]


def test_a_retry_is_sent_on_its_own_and_keeps_its_count() -> None:
    retried = replace(row(1, attempts=2), repeats=4)
    plan = plan_delivery([retried, row(5)], {("ops", "a", "failed"): T0}, T0 + S,
                         timedelta(minutes=5))
    assert [(s.row.id, s.repeats) for s in plan.sends] == [(1, 4)]
    assert [r.id for r, _ in plan.postponed] == [5]

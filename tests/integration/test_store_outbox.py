"""The notification outbox (``NotificationStore`` and the ``notify`` of ``update_run`` /
``insert_runs``) on memory, SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.core.outbox import (
    DeliveryAttempt,
    NewNotification,
    NotificationUpdate,
    OutboxStatus,
)
from reconciler.core.protocols import NewRun, Store
from reconciler.core.runtime import RunRecord, RunStatus, Trigger

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def note(task: str = "a", channel: str = "ops", event: str = "failed",
         at: datetime = T0, run_id: int | None = None) -> NewNotification:
    return NewNotification(channel=channel, task_name=task, event=event,
                           event_id=f"{task}/{at.isoformat()}/1/{event}",
                           body={"id": "x", "event": event, "task": task}, created_at=at,
                           run_id=run_id)


def running(store: Store, task: str = "a", slot: datetime = T0) -> RunRecord:
    return store.insert_run(NewRun(task_name=task, slot=slot, attempt=1,
                                   trigger=Trigger.SCHEDULE, status=RunStatus.RUNNING,
                                   fencing_token=5, started_at=slot))


def builder(*channels: str) -> Any:
    def build(record: RunRecord) -> list[NewNotification]:
        return [note(record.task_name, c, record.status.value, T0, record.id)
                for c in channels]
    return build


def test_the_final_status_and_its_notifications_are_written_together(store: Store) -> None:
    run = running(store)
    assert store.update_run(run.id, fencing_token=5, notify=builder("ops", "dev"),
                            status=RunStatus.FAILED, finished_at=T0)
    rows = store.list_notifications()
    assert sorted(r.channel for r in rows) == ["dev", "ops"]
    assert {(r.run_id, r.event, r.status, r.attempts) for r in rows} == {
        (run.id, "failed", OutboxStatus.PENDING, 0)}
    assert rows[0].body == {"id": "x", "event": "failed", "task": "a"}
    assert rows[0].created_at == rows[0].next_attempt_at == T0


def test_a_refused_update_writes_no_notification(store: Store) -> None:
    run = running(store)
    assert not store.update_run(run.id, fencing_token=4, notify=builder("ops"),
                                status=RunStatus.FAILED)
    assert not store.update_run(run.id + 100, notify=builder("ops"), status=RunStatus.FAILED)
    assert store.list_notifications() == []


def test_no_final_status_without_its_notifications(store: Store) -> None:
    """One transaction: when writing the outbox fails, the status is not written either."""
    run = running(store)

    def broken(record: RunRecord) -> list[NewNotification]:
        raise RuntimeError("outbox broke")

    with pytest.raises(RuntimeError):
        store.update_run(run.id, fencing_token=5, notify=broken, status=RunStatus.FAILED)
    got = store.get_run(run.id)
    assert got is not None and got.status is RunStatus.RUNNING
    with pytest.raises(RuntimeError):
        store.insert_runs([NewRun(task_name="b", slot=T0, attempt=1, trigger=Trigger.SCHEDULE,
                                  status=RunStatus.MISSED, finished_at=T0)], notify=broken)
    assert store.list_runs("b") == [] and store.list_notifications() == []


def test_inserted_missed_slots_get_their_notifications_duplicates_none(store: Store) -> None:
    missed = NewRun(task_name="a", slot=T0, attempt=1, trigger=Trigger.SCHEDULE,
                    status=RunStatus.MISSED, finished_at=T0, reason="down")
    (first,) = store.insert_runs([missed], notify=builder("ops"))
    assert first is not None
    assert store.insert_runs([missed], notify=builder("ops")) == [None]
    (row,) = store.list_notifications()
    assert (row.run_id, row.event) == (first.id, "missed")


def test_each_row_is_claimed_by_one_replica_until_its_lease_runs_out(store: Store) -> None:
    store.add_notifications([note(at=T0), note(task="b", at=T0)])
    store.add_notifications([note(task="c", at=T0 + timedelta(minutes=5))])  # not due yet
    got = store.claim_notifications(replica="r1", now=T0, lease=LEASE)
    assert [(r.task_name, r.claimed_by) for r in got] == [("a", "r1"), ("b", "r1")]
    assert got[0].lease_until == T0 + LEASE
    assert store.claim_notifications(replica="r2", now=T0 + LEASE, lease=LEASE) == []
    later = T0 + LEASE + timedelta(seconds=1)  # r1 crashed: its lease ran out
    taken = store.claim_notifications(replica="r2", now=later, lease=LEASE, limit=1)
    assert [(r.task_name, r.claimed_by) for r in taken] == [("a", "r2")]
    # r1 can no longer write the row r2 holds
    assert store.finish_notifications(
        [NotificationUpdate(got[0].id, OutboxStatus.SENT, sent_at=later)], replica="r1") == 0
    assert store.list_notifications("a")[0].status is OutboxStatus.PENDING
    # a single replica at start-up takes over whatever the leases say
    again = store.claim_notifications(replica="r3", now=later, lease=LEASE, takeover=True)
    assert sorted(r.task_name for r in again) == ["a", "b"]


def test_concurrent_claims_never_share_a_row(store: Store) -> None:
    store.add_notifications([note(task=f"t{i}") for i in range(40)])
    got: dict[str, list[int]] = {}

    def claim(name: str) -> None:
        got[name] = [r.id for r in store.claim_notifications(replica=name, now=T0,
                                                              lease=LEASE, limit=40)]

    threads = [threading.Thread(target=claim, args=(f"r{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for v in got.values() for i in v]
    assert len(ids) == len(set(ids)) == 40


def test_attempts_are_recorded_and_the_row_released(store: Store) -> None:
    (row_id,) = store.add_notifications([note()])
    store.claim_notifications(replica="r1", now=T0, lease=LEASE)
    retry = T0 + timedelta(seconds=10)
    assert store.finish_notifications([NotificationUpdate(
        row_id, OutboxStatus.PENDING, next_attempt_at=retry,
        attempt=DeliveryAttempt(T0, 503, "HTTP 503"))], replica="r1") == 1
    (row,) = store.list_notifications()
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == (
        OutboxStatus.PENDING, 1, 503, "HTTP 503")
    assert row.claimed_by is None and row.lease_until is None
    assert row.next_attempt_at == retry
    assert store.claim_notifications(replica="r1", now=T0, lease=LEASE) == []
    store.claim_notifications(replica="r1", now=retry, lease=LEASE)
    store.finish_notifications([NotificationUpdate(
        row_id, OutboxStatus.SENT, sent_at=retry, repeats=3,
        attempt=DeliveryAttempt(retry, 200, None))], replica="r1")
    (row,) = store.list_notifications()
    assert (row.status, row.attempts, row.repeats, row.sent_at) == (
        OutboxStatus.SENT, 2, 3, retry)
    assert [a["statusCode"] for a in row.attempt_log] == [503, 200]
    assert row.attempt_log[0] == {"at": T0.isoformat(), "statusCode": 503, "error": "HTTP 503"}
    assert store.last_sent([("ops", "a", "failed"), ("ops", "b", "failed")]) == {
        ("ops", "a", "failed"): retry}


def test_listing_and_counting(store: Store) -> None:
    ids = store.add_notifications([note("a"), note("b"), note("a", event="missed")])
    store.claim_notifications(replica="r", now=T0, lease=LEASE, limit=1)
    store.finish_notifications([NotificationUpdate(ids[0], OutboxStatus.FAILED)],
                               replica="r")
    assert [r.id for r in store.list_notifications()] == ids[::-1]
    assert [r.id for r in store.list_notifications("a")] == [ids[2], ids[0]]
    assert [r.id for r in store.list_notifications(statuses=[OutboxStatus.FAILED])] == ids[:1]
    assert [r.id for r in store.list_notifications(limit=1)] == ids[2:]
    assert store.notification_counts() == {"failed": 1, "pending": 2}


def test_abandoned_runs_and_their_notifications_are_written_together(store: Store) -> None:
    run = running(store)

    def broken(record: RunRecord) -> list[NewNotification]:
        raise RuntimeError("outbox broke")

    with pytest.raises(RuntimeError):
        store.abandon_runs(replica="r1", stale_before=None, now=T0, reason="gone",
                           notify=broken)
    got = store.get_run(run.id)
    assert got is not None and got.status is RunStatus.RUNNING
    assert store.list_notifications() == []
    (abandoned,) = store.abandon_runs(replica="r1", stale_before=None, now=T0, reason="gone",
                                      notify=builder("ops", "dev"))
    assert (abandoned.id, abandoned.status) == (run.id, RunStatus.ABANDONED)
    rows = store.list_notifications()
    assert sorted((r.channel, r.event, r.run_id) for r in rows) == [
        ("dev", "abandoned", run.id), ("ops", "abandoned", run.id)]
    # nothing left to abandon: no rows either
    assert store.abandon_runs(replica="r1", stale_before=None, now=T0, reason="gone",
                              notify=builder("ops")) == []
    assert len(store.list_notifications()) == 2


def test_an_event_is_written_once_per_channel(store: Store) -> None:
    """One row per (channel, event id): a late event decided twice (two replicas, a
    restart) is written once; the rest of the batch still lands."""
    (first,) = store.add_notifications([note(event="late")])
    assert store.add_notifications([note(event="late"), note(event="late", channel="dev"),
                                    note(task="b", event="late")]) != []
    rows = store.list_notifications()
    assert sorted((r.channel, r.task_name) for r in rows) == [
        ("dev", "a"), ("ops", "a"), ("ops", "b")]
    assert first in {r.id for r in rows}
    assert store.add_notifications([note(event="late")]) == []
    # in a run's transaction too: the run's status is written, the repeat skipped
    run = running(store)
    assert store.update_run(run.id, fencing_token=5, notify=builder("ops"),
                            status=RunStatus.FAILED, finished_at=T0)
    again = running(store, slot=T0 + LEASE)
    assert store.update_run(again.id, fencing_token=5, notify=builder("ops"),
                            status=RunStatus.FAILED, finished_at=T0)
    got = store.get_run(again.id)
    assert got is not None and got.status is RunStatus.FAILED
    assert len(store.list_notifications(statuses=[OutboxStatus.PENDING])) == 4


def test_the_runs_of_a_slot(store: Store) -> None:
    first = running(store)
    store.insert_run(NewRun(task_name="a", slot=T0, attempt=2, trigger=Trigger.RETRY,
                            status=RunStatus.PENDING))
    running(store, slot=T0 + LEASE)
    running(store, task="b")
    got = store.runs_of_slot("a", T0)
    assert [(r.task_name, r.slot, r.attempt) for r in got] == [("a", T0, 1), ("a", T0, 2)]
    assert got[0].id == first.id
    assert store.runs_of_slot("a", T0 + timedelta(hours=1)) == []

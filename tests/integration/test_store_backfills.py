"""Backfills (``BackfillStore``) on memory, SQLite, PostgreSQL and MariaDB: stored and
read back, progress written only while unfinished, a slot started once per backfill."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.core.backfill import BackfillState, NewBackfill
from reconciler.core.protocols import NewRun, Store
from reconciler.core.runtime import RunStatus, Trigger

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 28, 1, 30, tzinfo=UTC)
DAY = timedelta(days=1)


def new(task: str = "nightly", rerun: bool = False) -> NewBackfill:
    return NewBackfill(task_name=task, start=T0, end=T0 + 3 * DAY, parallel=2, rerun=rerun,
                       total=3, created_by="alice", created_at=T0 + 10 * DAY)


def pending(slot: datetime, attempt: int = 1, task: str = "nightly") -> NewRun:
    return NewRun(task_name=task, slot=slot, attempt=attempt, trigger=Trigger.BACKFILL,
                  status=RunStatus.PENDING, replica="r1", reason="backfill 1 by alice")


def test_a_backfill_is_stored_and_read_back(store: Store) -> None:
    b = store.add_backfill(new())
    assert (b.task_name, b.start, b.end, b.parallel, b.rerun) == ("nightly", T0, T0 + 3 * DAY,
                                                                   2, False)
    assert (b.state, b.total, b.done, b.failed, b.created_by) == (BackfillState.PENDING, 3, 0,
                                                                   0, "alice")
    assert b.created_at == T0 + 10 * DAY and b.finished_at is None
    assert store.get_backfill(b.id) == b
    assert store.get_backfill(b.id + 100) is None
    other = store.add_backfill(new("other", rerun=True))
    assert [x.id for x in store.list_backfills()] == [other.id, b.id]
    assert [x.id for x in store.list_backfills(task_name="nightly")] == [b.id]
    assert store.list_backfills(states=[BackfillState.RUNNING]) == []
    assert [x.id for x in store.list_backfills(limit=1)] == [other.id]


def test_progress_is_written_until_the_backfill_finishes(store: Store) -> None:
    b = store.add_backfill(new())
    now = T0 + 11 * DAY
    assert store.update_backfill(b.id, state=BackfillState.RUNNING, done=1, failed=0, now=now)
    got = store.get_backfill(b.id)
    assert got is not None and (got.state, got.done, got.updated_at) == (
        BackfillState.RUNNING, 1, now)
    assert [x.id for x in store.list_backfills(states=[BackfillState.RUNNING])] == [b.id]
    assert store.update_backfill(b.id, state=BackfillState.CANCELLED, done=1, failed=0,
                                 now=now, reason="cancelled by bob (CLI)")
    # a cancelled backfill stays cancelled: the driver's late write is refused
    assert not store.update_backfill(b.id, state=BackfillState.RUNNING, done=2, failed=0,
                                     now=now + DAY)
    got = store.get_backfill(b.id)
    assert got is not None and (got.state, got.done, got.finished_at, got.reason) == (
        BackfillState.CANCELLED, 1, now, "cancelled by bob (CLI)")
    assert not store.update_backfill(999, state=BackfillState.RUNNING, done=0, failed=0, now=now)


def test_a_slot_is_started_once_per_backfill(store: Store) -> None:
    b = store.add_backfill(new())
    run = store.insert_backfill_run(b.id, pending(T0))
    assert run is not None and (run.trigger, run.status, run.slot) == (
        Trigger.BACKFILL, RunStatus.PENDING, T0)
    assert store.insert_backfill_run(b.id, pending(T0, attempt=2)) is None  # ledger taken
    assert store.backfill_ledger(b.id) == {T0: 1}
    # the run's key taken (a scheduled run at that slot and attempt): nothing written
    store.insert_run(NewRun(task_name="nightly", slot=T0 + DAY, attempt=1,
                            trigger=Trigger.SCHEDULE, status=RunStatus.SUCCEEDED))
    assert store.insert_backfill_run(b.id, pending(T0 + DAY)) is None
    assert store.backfill_ledger(b.id) == {T0: 1}
    assert store.insert_backfill_run(b.id, pending(T0 + DAY, attempt=2)) is not None
    assert store.backfill_ledger(b.id) == {T0: 1, T0 + DAY: 2}
    other = store.add_backfill(new())
    assert store.insert_backfill_run(other.id, pending(T0, attempt=2)) is not None


def test_two_drivers_racing_for_a_slot_start_it_once(store: Store) -> None:
    b = store.add_backfill(new())
    results: list[object] = []
    barrier = threading.Barrier(4)

    def race() -> None:
        barrier.wait()
        results.append(store.insert_backfill_run(b.id, pending(T0 + 2 * DAY)))

    threads = [threading.Thread(target=race) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sum(r is not None for r in results) == 1
    assert len(store.runs_between("nightly", T0, T0 + 3 * DAY)) == 1


def test_runs_between_is_half_open_and_per_task(store: Store) -> None:
    for slot, task in [(T0 - DAY, "nightly"), (T0, "nightly"), (T0 + DAY, "nightly"),
                       (T0 + 3 * DAY, "nightly"), (T0, "other")]:
        store.insert_run(NewRun(task_name=task, slot=slot, attempt=1,
                                trigger=Trigger.SCHEDULE, status=RunStatus.SUCCEEDED))
    store.insert_run(NewRun(task_name="nightly", slot=T0, attempt=2, trigger=Trigger.RETRY,
                            status=RunStatus.FAILED))
    got = store.runs_between("nightly", T0, T0 + 3 * DAY)
    assert [(r.slot, r.attempt) for r in got] == [(T0, 1), (T0, 2), (T0 + DAY, 1)]
    with pytest.raises(ValueError):
        store.runs_between("nightly", T0.replace(tzinfo=None), T0 + DAY)

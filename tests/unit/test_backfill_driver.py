"""The backfill driver over the real scheduler (fake clock, in-memory store, fake
executor), and the backfill operations: create, cancel, the refusals."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.backfill import BackfillState
from reconciler.core.errors import OperationRefused, TaskNotFoundError
from reconciler.core.protocols import NewRun
from reconciler.core.runtime import RunStatus, Trigger
from reconciler.daemon.backfills import BackfillDriver
from reconciler.service.operations import Caller, TaskOperations
from tests.unit.test_scheduler import Harness, doc

NOW = datetime(2026, 4, 10, 12, 0, tzinfo=UTC)
ALICE = Caller("alice", "cli", "CLI")
BERLIN = {"timeZone": "Europe/Berlin"}


def sync(fn: Callable[[Harness], Coroutine[Any, Any, None]]) -> Callable[[Harness], None]:
    """A test written as a coroutine, run on a fresh loop (the scheduler's tests do so)."""
    @functools.wraps(fn)
    def wrapper(h: Harness) -> None:
        asyncio.run(fn(h))
    return wrapper


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path, NOW)
    yield harness
    harness.worker.close()


def driver(h: Harness, may_drive: bool = True) -> BackfillDriver:
    return BackfillDriver(h.store, h.worker, h.sched, h.clock, replica="local",
                          may_drive=lambda: may_drive)


async def setup(h: Harness, **spec: object) -> TaskOperations:
    h.apply(doc("nightly", "30 2 * * *", **{**BERLIN, **spec}))
    await h.sync()
    return TaskOperations(h.store, h.clock)


def backfill_runs(h: Harness) -> list[tuple[str, RunStatus]]:
    return [(r.slot.isoformat(), r.status) for r in h.runs("nightly")
            if r.trigger is Trigger.BACKFILL]


@sync
async def test_a_backfill_runs_each_slot_once_parallel_at_a_time(h: Harness) -> None:
    ops = await setup(h)
    b = await ops.backfill("nightly", "2026-03-28", "2026-03-31", ALICE, parallel=2)
    assert (b.total, b.state) == (3, BackfillState.PENDING)
    h.executor.blocked.add("nightly")
    d = driver(h)
    await d.step()
    await asyncio.sleep(0)
    assert h.executor.running["nightly"] == 2  # parallel 2
    got = h.store.get_backfill(b.id)
    assert got is not None and (got.state, got.done) == (BackfillState.RUNNING, 0)
    await d.step()  # nothing more while both run
    assert len(h.executor.calls) == 2
    h.executor.release.set()
    await h.sched.drain()
    await d.step()
    await h.sched.drain()
    await d.step()
    got = h.store.get_backfill(b.id)
    assert got is not None and (got.state, got.done, got.total, got.failed) == (
        BackfillState.SUCCEEDED, 3, 3, 0)
    assert got.finished_at == NOW
    assert backfill_runs(h) == [  # the nominal slots, DST day included
        ("2026-03-28T01:30:00+00:00", RunStatus.SUCCEEDED),
        ("2026-03-29T01:00:00+00:00", RunStatus.SUCCEEDED),
        ("2026-03-30T00:30:00+00:00", RunStatus.SUCCEEDED)]
    assert [c.extra_env["RECONCILER_SLOT"] for c in h.executor.calls][2] == \
        "2026-03-30T00:30:00+00:00"
    assert h.executor.peak["nightly"] == 2


@sync
async def test_succeeded_slots_are_skipped_unless_rerun(h: Harness) -> None:
    ops = await setup(h)
    slot = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    h.store.insert_run(NewRun(task_name="nightly", slot=slot, attempt=1,
                              trigger=Trigger.SCHEDULE, status=RunStatus.SUCCEEDED))
    b = await ops.backfill("nightly", "2026-03-28", "2026-03-31", ALICE, parallel=3)
    d = driver(h)
    for _ in range(3):
        await d.step()
        await h.sched.drain()
    assert [s for s, _ in backfill_runs(h)] == ["2026-03-28T01:30:00+00:00",
                                               "2026-03-30T00:30:00+00:00"]
    got = h.store.get_backfill(b.id)
    assert got is not None and (got.state, got.done) == (BackfillState.SUCCEEDED, 3)
    again = await ops.backfill("nightly", "2026-03-28", "2026-03-31", ALICE, parallel=3,
                               rerun=True)
    for _ in range(3):
        await d.step()
        await h.sched.drain()
    assert len(backfill_runs(h)) == 5  # every slot once more, the succeeded one too
    got = h.store.get_backfill(again.id)
    assert got is not None and got.state is BackfillState.SUCCEEDED
    assert [r.attempt for r in h.runs("nightly") if r.slot == slot] == [1, 2]


@sync
async def test_forbid_waits_for_a_scheduled_run(h: Harness) -> None:
    ops = await setup(h, concurrencyPolicy="Forbid")
    h.store.insert_run(NewRun(task_name="nightly", slot=NOW - timedelta(minutes=1), attempt=1,
                              trigger=Trigger.SCHEDULE, status=RunStatus.RUNNING))
    b = await ops.backfill("nightly", "2026-03-28", "2026-03-31", ALICE)
    await driver(h).step()
    assert backfill_runs(h) == []
    got = h.store.get_backfill(b.id)
    assert got is not None and got.state is BackfillState.PENDING
    assert got.reason is not None and "concurrencyPolicy Forbid" in got.reason


@sync
async def test_a_cancelled_backfill_starts_no_further_slot(h: Harness) -> None:
    ops = await setup(h)
    b = await ops.backfill("nightly", "2026-03-28", "2026-03-31", ALICE)
    d = driver(h)
    await d.step()
    await h.sched.drain()
    record, changed = await ops.cancel_backfill(b.id, Caller("bob", "cli", "CLI"))
    assert changed and record.state is BackfillState.CANCELLED
    assert record.reason == "cancelled by bob (CLI)"
    for _ in range(3):
        await d.step()
        await h.sched.drain()
    assert len(backfill_runs(h)) == 1
    again, changed = await ops.cancel_backfill(b.id, ALICE)
    assert not changed and again.state is BackfillState.CANCELLED
    with pytest.raises(OperationRefused, match="not found"):
        await ops.cancel_backfill(999, ALICE)


@sync
async def test_only_the_replica_that_may_drive_does(h: Harness) -> None:
    ops = await setup(h)
    await ops.backfill("nightly", "2026-03-28", "2026-03-31", ALICE)
    await driver(h, may_drive=False).step()
    assert backfill_runs(h) == []


@sync
async def test_a_slot_abandoned_by_a_dead_daemon_is_not_run_again(h: Harness) -> None:
    ops = await setup(h)
    b = await ops.backfill("nightly", "2026-03-28", "2026-03-31", ALICE, parallel=2)
    h.executor.blocked.add("nightly")
    await driver(h).step()
    await asyncio.sleep(0)
    # the daemon dies: its runs are marked abandoned at the next start-up
    h.store.abandon_runs(replica="local", stale_before=None, now=NOW, reason="daemon died")
    for a in list(h.sched.active_runs):
        a.cancel.set()
    await h.sched.drain()
    h.executor.blocked.clear()
    h.executor.calls.clear()
    d = driver(h)
    for _ in range(3):
        await d.step()
        await h.sched.drain()
    assert [c.extra_env["RECONCILER_SLOT"] for c in h.executor.calls] == [
        "2026-03-30T00:30:00+00:00"]
    got = h.store.get_backfill(b.id)
    assert got is not None and (got.state, got.done, got.failed) == (
        BackfillState.FAILED, 3, 2)


@sync
async def test_the_operation_refuses_bad_input(h: Harness) -> None:
    ops = await setup(h)
    with pytest.raises(TaskNotFoundError):
        await ops.backfill("nope", "2026-03-28", "2026-03-31", ALICE)
    with pytest.raises(OperationRefused, match="parallel must be at least 1"):
        await ops.backfill("nightly", "2026-03-28", "2026-03-31", ALICE, parallel=0)
    with pytest.raises(OperationRefused, match="no slots"):
        await ops.backfill("nightly", "2026-03-28T03:00", "2026-03-28T04:00", ALICE)
    with pytest.raises(OperationRefused, match="not after"):
        await ops.backfill("nightly", "2026-03-31", "2026-03-28", ALICE)
    with pytest.raises(OperationRefused, match="from: not a date"):
        await ops.backfill("nightly", "soon", "2026-03-28", ALICE)
    assert h.store.list_backfills() == []
    assert [a["outcome"] for a in h.store.list_audit()][:2] == ["conflict", "conflict"]


@sync
async def test_a_row_another_replica_wrote_and_never_started_is_taken_over(h: Harness) -> None:
    ops = await setup(h)
    b = await ops.backfill("nightly", "2026-03-28", "2026-03-29", ALICE)
    # the replica that drove wrote the slot's row (with its ledger entry), then died
    slot = datetime(2026, 3, 28, 1, 30, tzinfo=UTC)
    h.store.insert_backfill_run(b.id, NewRun(
        task_name="nightly", slot=slot, attempt=1, trigger=Trigger.BACKFILL,
        status=RunStatus.PENDING, replica="gone", reason="backfill", generation=1))
    d = driver(h)
    await d.step()
    await h.sched.drain()
    assert h.executor.calls == []  # it may still start it itself
    row = next(r for r in h.runs("nightly") if r.status is RunStatus.PENDING)
    assert row.created_at is not None  # the store's own clock wrote it
    h.clock.set(row.created_at + timedelta(seconds=31))
    await d.step()
    await h.sched.drain()
    assert [c.extra_env["RECONCILER_SLOT"] for c in h.executor.calls] == [slot.isoformat()]
    await d.step()
    got = h.store.get_backfill(b.id)
    assert got is not None and (got.state, got.done) == (BackfillState.SUCCEEDED, 1)
    assert [(r.attempt, r.replica) for r in h.runs("nightly")] == [(1, "local")]  # taken over

"""The deadline watcher on a fake clock: a slot not succeeded by slot + deadline gets
one ``late`` event (still running, never started, failed), written once however many
watchers or restarts decide it; only the writer watches; a restarted daemon looks
back for deadlines that passed while it was down."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.runtime import RunStatus
from reconciler.daemon.deadlines import DeadlineWatcher
from reconciler.daemon.scheduler import Scheduler
from tests.unit.test_notify_outbox import KEY, MIN, OutboxHarness, synchronous
from tests.unit.test_scheduler import T0, doc


class DeadlineHarness(OutboxHarness):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.writer = True
        self.watcher = self.new_watcher()
        self.sched = Scheduler(self.store, self.worker, self.sched.claimer, self.executor,
                               self.clock, notices=self.notices, listener=self.watcher)

    def new_watcher(self) -> DeadlineWatcher:
        """A watcher as a (re)started daemon builds it (its first sync told it the
        tasks)."""
        watcher = DeadlineWatcher(self.store, self.worker, self.clock, self.notices,
                                  lambda name: self.sched.policy_of(name),
                                  is_writer=lambda: self.writer)
        for row in self.store.load_tasks():
            watcher.task_row(row)
        return watcher

    def late(self) -> list[tuple[str, str]]:
        return [(r.event_id, r.body["run"]["status"]) for r in self.outbox()
                if r.event == "late"]


@pytest.fixture
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DeadlineHarness]:
    monkeypatch.setenv("HOOK_KEY", KEY)
    harness = DeadlineHarness(tmp_path)
    yield harness
    harness.worker.close()


def task(name: str = "backup", **spec: Any) -> dict[str, Any]:
    return doc(name, "*/10 * * * *", deadline="5m", notify=[{"channel": "ops"}], **spec)


def late_id(slot_minutes: int, name: str = "backup") -> str:
    return f"{name}/{(T0 + slot_minutes * MIN).isoformat()}/0/late"


@synchronous
async def test_a_run_still_going_at_its_deadline_is_late_once(h: DeadlineHarness) -> None:
    h.setup(task())
    await h.sync()
    await h.watcher.check()
    h.executor.blocked.add("backup")
    h.clock.set(T0 + 10 * MIN)
    await h.sched.tick()  # the 12:10 run starts and hangs
    for _ in range(5):
        await asyncio.sleep(0)
    assert [r.status for r in h.runs("backup")] == [RunStatus.RUNNING]
    h.clock.set(T0 + 15 * MIN - timedelta(milliseconds=1))
    assert await h.watcher.check() == 0 and h.late() == []
    assert h.watcher.next_due() == T0 + 15 * MIN
    h.clock.set(T0 + 15 * MIN)
    assert await h.watcher.check() == 1
    assert h.late() == [(late_id(10), "running")]
    assert await h.watcher.check() == 0  # decided once
    h.executor.release.set()
    await h.sched.drain()
    assert await h.sender.cycle() == 1
    assert h.receiver.bodies()[0]["event"] == "late"


@synchronous
async def test_success_in_time_is_not_late_failure_is(h: DeadlineHarness) -> None:
    h.setup(task(), task("flaky"), task("retried", retries={"limit": 1, "backoff": "1m"}))
    await h.sync()
    await h.watcher.check()
    h.executor.outcomes.update(flaky=[RunStatus.FAILED], retried=[RunStatus.FAILED])
    await h.advance_to(T0 + 12 * MIN)  # retried's attempt 2 succeeds at 12:11
    h.clock.set(T0 + 15 * MIN)
    await h.watcher.check()
    assert sorted(h.late()) == [(late_id(10, "flaky"), "failed")]


@synchronous
async def test_a_restart_after_the_deadline_looks_back_and_writes_each_event_once(
        h: DeadlineHarness) -> None:
    """No daemon ran: the slots 12:10, 12:20, 12:30 were never started. The restarted
    daemon's watcher writes their events at start-up; a second one (another restart,
    a new writer) writes nothing more."""
    h.setup(task())
    await h.sync()
    h.clock.set(T0 + 35 * MIN)
    assert await h.new_watcher().check() == 3
    assert h.late() == [(late_id(m), "not_started") for m in (10, 20, 30)]
    assert await h.new_watcher().check() == 0
    assert len(h.late()) == 3


@synchronous
async def test_only_the_writer_watches_and_a_new_writer_looks_back(h: DeadlineHarness) -> None:
    h.setup(task())
    await h.sync()
    h.writer = False
    h.clock.set(T0 + 15 * MIN)
    assert await h.watcher.check() == 0 and h.late() == []
    h.writer = True  # the writer died; this replica took over
    h.clock.set(T0 + 16 * MIN)
    assert await h.watcher.check() == 1
    assert h.late() == [(late_id(10), "not_started")]


@synchronous
async def test_suspended_tasks_and_slots_before_the_task_are_never_late(
        h: DeadlineHarness) -> None:
    h.clock.set(T0 + 12 * MIN)  # created after the 12:10 slot
    h.setup(task(), task("paused", suspend=True), doc("plain", "*/10 * * * *",
                                                       notify=[{"channel": "ops"}]))
    await h.sync()
    h.clock.set(T0 + 45 * MIN)
    assert await h.watcher.check() == 3  # 12:20, 12:30, 12:40 of backup only
    assert [i for i, _ in h.late()] == [late_id(m) for m in (20, 30, 40)]


def test_a_deadline_watcher_runs_until_stopped(h: DeadlineHarness) -> None:
    async def go() -> None:
        stop = asyncio.Event()
        stop.set()
        await h.watcher.run(stop)  # returns at once: stopped
    asyncio.run(go())

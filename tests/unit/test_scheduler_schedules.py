"""The scheduler with several schedules, ``H``, jitter and an active window, driven by a
fake clock (the harness of test_scheduler.py): it fires at slot + jitter, records the
nominal slot (the run row, the claim, ``RECONCILER_SLOT``) and the real start.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from test_scheduler import Harness, doc

from reconciler.core.runtime import RunStatus, Trigger
from reconciler.core.scheduling import jitter_delay
from reconciler.daemon.claims import InProcessClaimer


def U(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class RecordingClaimer(InProcessClaimer):
    """Claims as the scheduler asks for them: (task, slot, attempt)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, datetime, int]] = []

    async def claim(self, task: str, slot: datetime, attempt: int) -> Any:
        self.asked.append((task, slot, attempt))
        return await super().claim(task, slot, attempt)


def harness(tmp_path: Path, start: datetime) -> Harness:
    h = Harness(tmp_path, start)
    h.sched.claimer = RecordingClaimer()
    return h


def test_two_schedules_with_jitter_across_berlin_spring(tmp_path: Path) -> None:
    h = harness(tmp_path, U(2026, 3, 28, 12))
    schedules = ["30 2 * * *", "0 12 * * 0,6"]  # 02:30 every day, noon at weekends

    async def go() -> None:
        h.apply(doc("report", schedules, timeZone="Europe/Berlin", jitter="10m"))
        await h.sync()
        await h.advance_to(U(2026, 3, 30, 12))
    asyncio.run(go())
    h.worker.close()
    runs = h.runs("report")
    slots = [U(2026, 3, 29, 1), U(2026, 3, 29, 10), U(2026, 3, 30, 0, 30)]  # 03:00 CEST (gap)
    assert [r.slot for r in runs] == slots
    for r in runs:
        delay = jitter_delay("report", r.slot, timedelta(minutes=10))
        assert r.status is RunStatus.SUCCEEDED and r.trigger is Trigger.SCHEDULE
        assert r.started_at == r.slot + delay and r.lateness_seconds == delay.total_seconds()
    assert [c.extra_env["RECONCILER_SLOT"] for c in h.executor.calls] == [
        s.isoformat() for s in slots]
    claimer = h.sched.claimer
    assert isinstance(claimer, RecordingClaimer)
    assert claimer.asked == [("report", s, 1) for s in slots]  # keyed by the nominal slot
    task = h.store.get_task("report")
    assert task is not None and task.next_fire_at == U(2026, 3, 31, 0, 30)
    assert task.last_slot_at == U(2026, 3, 30, 0, 30)


def test_a_restart_between_a_slot_and_its_start_runs_the_slot_at_its_start(
        tmp_path: Path) -> None:
    slot = U(2026, 6, 1, 3)
    delay = jitter_delay("warehouse-load", slot, timedelta(minutes=30))
    assert delay > timedelta(minutes=1)  # the restart below falls between slot and start
    h = harness(tmp_path, slot + timedelta(minutes=1))

    async def go() -> None:
        h.apply(doc("warehouse-load", "0 3 * * *", jitter="30m"))
        h.store.set_schedule_state({"warehouse-load": {"last_slot_at": slot - timedelta(days=1)}})
        await h.sync(recover=True)  # start-up after downtime: nothing is missed yet
        assert h.runs("warehouse-load") == []
        assert h.sched.next_wakeup() == slot + delay
        await h.advance_to(slot + timedelta(hours=1))
    asyncio.run(go())
    h.worker.close()
    (run,) = h.runs("warehouse-load")
    assert run.slot == slot and run.started_at == slot + delay
    assert run.status is RunStatus.SUCCEEDED and run.trigger is Trigger.SCHEDULE


def test_no_run_outside_the_active_window(tmp_path: Path) -> None:
    h = harness(tmp_path, U(2026, 10, 23, 12))

    async def go() -> None:
        h.apply(doc("campaign", "30 2 * * *", timeZone="Europe/Berlin",
                    activeFrom="2026-10-25", activeUntil="2026-10-26"))
        await h.sync()
        await h.advance_to(U(2026, 10, 29))
    asyncio.run(go())
    h.worker.close()
    # 10-25: the first 02:30 (CEST) only; 10-26: 02:30 CET; then the window is over
    assert [r.slot for r in h.runs("campaign")] == [U(2026, 10, 25, 0, 30), U(2026, 10, 26, 1, 30)]
    task = h.store.get_task("campaign")
    assert task is not None and task.next_fire_at is None


def test_an_h_task_runs_at_its_resolved_minute(tmp_path: Path) -> None:
    h = harness(tmp_path, U(2026, 11, 1))

    async def go() -> None:
        # backup-db: H 1 * * * is 01:42; New York's fall night has 01:42 twice: once
        h.apply(doc("backup-db", ["H 1 * * *", "H 2 * * *"], timeZone="America/New_York"))
        await h.sync()
        await h.advance_to(U(2026, 11, 2))
    asyncio.run(go())
    h.worker.close()
    assert [r.slot for r in h.runs("backup-db")] == [U(2026, 11, 1, 5, 42), U(2026, 11, 1, 7, 42)]


def test_a_missed_start_counts_from_the_jittered_start(tmp_path: Path) -> None:
    slot = U(2026, 6, 1, 3)
    delay = jitter_delay("deadline", slot, timedelta(minutes=30))
    h = harness(tmp_path, slot - timedelta(minutes=5))

    async def go() -> None:
        h.apply(doc("deadline", "0 3 * * *", jitter="30m", startingDeadline="1m"))
        await h.sync()
        h.clock.set(slot + delay + timedelta(minutes=2))  # the loop stalled past the deadline
        await h.sched.tick()
        await h.sched.drain()
    asyncio.run(go())
    h.worker.close()
    (run,) = h.runs("deadline")
    assert run.status is RunStatus.MISSED and "after its jittered start" in (run.reason or "")

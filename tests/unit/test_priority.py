"""``spec.priority`` and the pool of ``--max-concurrent-runs``: when it is full, waiting
runs start by priority (higher first), then by slot; a flood of low-priority runs does
not hold back a high-priority one. The order is one pure function
(``core/scheduling.start_order``); ``daemon/pool.RunPool`` carries it out."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.scheduling import start_order
from reconciler.daemon.pool import RunPool
from reconciler.daemon.runs import SchedulerConfig
from reconciler.daemon.scheduler import Scheduler
from tests.unit.test_scheduler import Harness, doc

T0 = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)


def test_start_order_is_priority_then_slot_then_arrival() -> None:
    waiting = [(5, T0, 0), (9, T0 + timedelta(hours=1), 1), (5, T0 - timedelta(hours=1), 2),
               (1, T0 - timedelta(days=9), 3), (9, T0, 4), (5, T0, 5)]
    order = sorted(waiting, key=lambda w: start_order(*w))
    assert [w[2] for w in order] == [4, 1, 2, 0, 5, 3]


def test_the_pool_starts_waiting_runs_by_priority() -> None:
    async def scenario() -> list[str]:
        pool = RunPool(1)
        started: list[str] = []
        gate = asyncio.Event()

        async def run(name: str, priority: int, slot: datetime) -> None:
            async with pool.place(priority, slot):
                started.append(name)
                if name == "first":
                    await gate.wait()

        first = asyncio.create_task(run("first", 1, T0))
        await asyncio.sleep(0)  # it holds the one place
        others = [asyncio.create_task(run(f"low{i}", 1, T0 + timedelta(seconds=i)))
                  for i in range(5)]
        others.append(asyncio.create_task(run("high-late", 10, T0 + timedelta(hours=1))))
        others.append(asyncio.create_task(run("mid", 5, T0)))
        others.append(asyncio.create_task(run("high-early", 10, T0)))
        await asyncio.sleep(0)
        assert pool.waiting == 8 and pool.running == 1
        gate.set()
        await asyncio.gather(first, *others)
        assert pool.running == 0 and pool.waiting == 0
        return started

    assert asyncio.run(scenario()) == ["first", "high-early", "high-late", "mid",
                                       "low0", "low1", "low2", "low3", "low4"]


def test_a_cancelled_waiter_leaves_the_queue_and_its_place_is_passed_on() -> None:
    async def scenario() -> list[str]:
        pool = RunPool(1)
        started: list[str] = []
        gate = asyncio.Event()

        async def run(name: str, priority: int) -> None:
            async with pool.place(priority, T0):
                started.append(name)
                await gate.wait()

        first = asyncio.create_task(run("first", 5))
        await asyncio.sleep(0)
        doomed = asyncio.create_task(run("doomed", 10))
        later = asyncio.create_task(run("later", 1))
        await asyncio.sleep(0)
        doomed.cancel()
        gate.set()
        await asyncio.gather(first, later)
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert pool.running == 0
        return started

    assert asyncio.run(scenario()) == ["first", "later"]


def test_a_low_priority_flood_does_not_starve_a_high_priority_task(tmp_path: Path) -> None:
    """One place; 20 low-priority tasks and one of priority 9 come due at the same slot
    (the flood's names sort before it and its slot is not earlier): it runs second,
    right after the run that held the place, not after the flood."""

    async def scenario(h: Harness) -> list[str]:
        h.sched = Scheduler(h.store, h.worker, h.sched.claimer, h.executor, h.clock,
                            SchedulerConfig(max_concurrent_runs=1))
        flood = [doc(f"a-low-{i:02d}", "0 * * * *", priority=1) for i in range(20)]
        h.apply(*flood, doc("z-urgent", "0 * * * *", priority=9))
        await h.sync()
        h.executor.blocked.add("a-low-00")
        h.clock.set(T0 + timedelta(hours=1))
        await h.sched.tick()
        for _ in range(50):  # let every run reach the pool
            await asyncio.sleep(0)
        h.executor.blocked.clear()
        h.executor.release.set()
        await h.sched.drain()
        return [r.task for r in h.executor.calls]

    h = Harness(tmp_path)
    try:
        order = asyncio.run(scenario(h))
    finally:
        h.worker.close()
    assert len(order) == 21
    assert order[:2] == ["a-low-00", "z-urgent"], order


def test_priority_is_declared_from_1_to_10() -> None:
    from reconciler.core.model import TaskManifest

    def spec(**extra: Any) -> dict[str, Any]:
        return doc("t", "@daily", **extra)

    assert TaskManifest.model_validate(spec()).spec.priority == 5
    assert TaskManifest.model_validate(spec(priority=10)).spec.priority == 10
    for bad in (0, 11, "high"):
        with pytest.raises(ValueError, match="priority"):
            TaskManifest.model_validate(spec(priority=bad))

"""The scheduler driven by a fake clock: no sleeps, exact slots, every policy.

The store is the in-memory store (the contract suite holds it to the SQL store's
semantics, so what is recorded is what SQL would record); the executor is a fake
whose runs finish when the test says so.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.clock import FakeClock
from reconciler.core.model import DesiredState, TaskDef
from reconciler.core.plan import plan
from reconciler.core.protocols import (
    ExecutionEvents,
    ExecutionRequest,
    ExecutionResult,
    NewRun,
)
from reconciler.core.runtime import RunRecord, RunStatus, SuspendOverride, Trigger
from reconciler.daemon.claims import InProcessClaimer
from reconciler.daemon.scheduler import Scheduler
from reconciler.daemon.worker import StoreWorker
from reconciler.store import MemoryStore

T0 = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)


class FakeExecutor:
    def __init__(self) -> None:
        self.calls: list[ExecutionRequest] = []
        self.outcomes: dict[str, list[RunStatus]] = {}
        self.blocked: set[str] = set()
        self.release = asyncio.Event()
        self.running: dict[str, int] = {}  # executions in progress, by task
        self.peak: dict[str, int] = {}  # the most at once, by task

    async def execute(
        self, request: ExecutionRequest, events: ExecutionEvents, cancel: asyncio.Event
    ) -> ExecutionResult:
        self.calls.append(request)
        self.running[request.task] = self.running.get(request.task, 0) + 1
        self.peak[request.task] = max(self.peak.get(request.task, 0), self.running[request.task])
        try:
            return await self._execute(request, events, cancel)
        finally:
            self.running[request.task] -= 1

    async def _execute(
        self, request: ExecutionRequest, events: ExecutionEvents, cancel: asyncio.Event
    ) -> ExecutionResult:
        events.output(f"hello from {request.task}\n")
        if request.task in self.blocked:
            waiters = {asyncio.ensure_future(self.release.wait()),
                       asyncio.ensure_future(cancel.wait())}
            _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
            if cancel.is_set():
                return ExecutionResult(RunStatus.CANCELLED, exit_code=-15)
        queue = self.outcomes.get(request.task)
        status = queue.pop(0) if queue else RunStatus.SUCCEEDED
        code = 0 if status is RunStatus.SUCCEEDED else 1
        return ExecutionResult(status, exit_code=code, output_tail=f"out {request.attempt}")


def doc(name: str, schedule: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "reconciler/v1", "kind": "Task", "metadata": {"name": name},
            "spec": {"schedule": schedule, "run": {"command": ["true"]}, **spec}}


class Harness:
    def __init__(self, tmp: Path, start: datetime = T0) -> None:
        self.store = MemoryStore()
        self.clock = FakeClock(start)
        self.executor = FakeExecutor()
        self.worker = StoreWorker()
        self.sched = Scheduler(self.store, self.worker, InProcessClaimer(), self.executor,
                               self.clock)

    def apply(self, *docs: dict[str, Any]) -> None:
        desired = DesiredState(tasks=tuple(TaskDef.from_document(d, "t.yaml") for d in docs))
        p = plan(desired, self.store.load_tasks())
        self.store.apply_plan(p, actor="test", revision=None, now=self.clock.now())

    async def sync(self, recover: bool = False) -> None:
        await self.sched.sync(self.store.load_tasks(), recover=recover)

    async def advance_to(self, instant: datetime) -> None:
        """Move the fake clock slot by slot up to ``instant``, ticking at every entry."""
        while True:
            nxt = self.sched.next_wakeup()
            if nxt is None or nxt > instant:
                break
            self.clock.set(max(nxt, self.clock.now()))
            await self.sched.tick()
            await self.sched.drain()
        self.clock.set(instant)
        await self.sched.tick()
        await self.sched.drain()

    def runs(self, task: str) -> list[RunRecord]:
        return sorted(self.store.list_runs(task, limit=10_000), key=lambda r: (r.slot, r.attempt))


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.worker.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_runs_fire_at_exact_slots_and_are_recorded(h: Harness) -> None:
    async def go() -> None:
        h.apply(doc("every-min", "* * * * *"))
        await h.sync()
        await h.advance_to(T0 + timedelta(minutes=3, seconds=30))
    run(go())
    runs = h.runs("every-min")
    assert [r.slot for r in runs] == [T0 + timedelta(minutes=i) for i in (1, 2, 3)]
    assert all(r.status is RunStatus.SUCCEEDED and r.lateness_seconds == 0 for r in runs)
    assert runs[0].output_tail == "out 1"
    task = h.store.get_task("every-min")
    assert task is not None and task.next_fire_at == T0 + timedelta(minutes=4)
    assert task.last_slot_at == T0 + timedelta(minutes=3)
    assert task.last_success_at is not None


def test_environment_of_a_run(h: Harness) -> None:
    async def go() -> None:
        h.apply(doc("env", "@every 30s"))
        await h.sync()
        await h.advance_to(T0 + timedelta(seconds=30))
    run(go())
    (req,) = h.executor.calls
    assert req.extra_env["RECONCILER_TASK"] == "env"
    assert req.extra_env["RECONCILER_SLOT"] == (T0 + timedelta(seconds=30)).isoformat()
    assert req.extra_env["RECONCILER_ATTEMPT"] == "1"


def test_fall_back_day_fires_a_fixed_hour_job_once(tmp_path: Path) -> None:
    h = Harness(tmp_path, datetime(2026, 10, 24, 12, 0, tzinfo=UTC))

    async def go() -> None:
        h.apply(doc("nightly", "30 2 * * *", timeZone="Europe/Berlin"),
                doc("half-hourly", "*/30 * * * *", timeZone="Europe/Berlin"))
        await h.sync()
        await h.advance_to(datetime(2026, 10, 25, 3, 0, tzinfo=UTC))
    run(go())
    h.worker.close()
    # 2026-10-25: CEST -> CET at 01:00Z; 02:30 local happens twice, runs once (00:30Z).
    assert [r.slot for r in h.runs("nightly")] == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC)]
    local_halves = [r.slot for r in h.runs("half-hourly")
                    if datetime(2026, 10, 25, 0, 0, tzinfo=UTC) <= r.slot
                    <= datetime(2026, 10, 25, 1, 30, tzinfo=UTC)]
    # The wildcard-hour job fires on both passes of the repeated hour.
    assert len(local_halves) == 4


def test_spring_forward_day_runs_the_skipped_time_after_the_gap(tmp_path: Path) -> None:
    h = Harness(tmp_path, datetime(2026, 3, 28, 12, 0, tzinfo=UTC))

    async def go() -> None:
        h.apply(doc("nightly", "30 2 * * *", timeZone="Europe/Berlin"))
        await h.sync()
        await h.advance_to(datetime(2026, 3, 30, 12, 0, tzinfo=UTC))
    run(go())
    h.worker.close()
    assert [r.slot for r in h.runs("nightly")] == [
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 03:00 CEST, first instant after the gap
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
    ]


def test_catch_up_latest_after_downtime(h: Harness) -> None:
    async def go() -> None:
        h.apply(doc("five", "*/5 * * * *"))
        h.store.set_schedule_state({"five": {"last_slot_at": T0 - timedelta(hours=1)}})
        await h.sync(recover=True)
        await h.sched.drain()
    run(go())
    runs = h.runs("five")
    missed = [r for r in runs if r.status is RunStatus.MISSED]
    ran = [r for r in runs if r.status is RunStatus.SUCCEEDED]
    assert len(missed) == 11 and len(ran) == 1
    assert ran[0].slot == T0 and ran[0].trigger is Trigger.CATCH_UP
    assert all("catchUp is Latest" in (r.reason or "") for r in missed)


def test_catch_up_none_and_all(tmp_path: Path) -> None:
    # the catch-up runs start together: Forbid lets one of them run, never overlapping
    for policy, concurrency, expect_runs in (("None", "Forbid", 0), ("All", "Allow", 3),
                                             ("All", "Forbid", 1)):
        (tmp_path / f"{policy}{concurrency}").mkdir()
        h = Harness(tmp_path / f"{policy}{concurrency}")

        async def go(h: Harness = h, policy: str = policy, conc: str = concurrency) -> None:
            h.apply(doc("t", "*/10 * * * *", catchUp=policy, maxCatchUp=3,
                        concurrencyPolicy=conc))
            h.store.set_schedule_state({"t": {"last_slot_at": T0 - timedelta(hours=1)}})
            await h.sync(recover=True)
            await h.sched.drain()
        run(go())
        runs = h.runs("t")
        assert len(runs) == 6
        assert sum(r.status is RunStatus.SUCCEEDED for r in runs) == expect_runs
        skipped = [r for r in runs if r.status is RunStatus.SKIPPED]
        assert len(skipped) == (2 if concurrency == "Forbid" and policy == "All" else 0)
        assert all(r.reason == "previous run active" for r in skipped)
        h.worker.close()


def test_starting_deadline_turns_late_slots_into_missed(h: Harness) -> None:
    async def go() -> None:
        h.apply(doc("t", "* * * * *", startingDeadline="10s"))
        await h.sync()
        h.clock.set(T0 + timedelta(minutes=1, seconds=30))  # the loop was stalled
        await h.sched.tick()
        await h.sched.drain()
    run(go())
    (r,) = h.runs("t")
    assert r.status is RunStatus.MISSED and "past startingDeadline 10s" in (r.reason or "")


def test_forbid_skips_while_the_previous_run_is_active(h: Harness) -> None:
    async def go() -> None:
        h.apply(doc("slow", "* * * * *"))
        await h.sync()
        h.executor.blocked.add("slow")
        h.clock.set(T0 + timedelta(minutes=1))
        await h.sched.tick()
        await asyncio.sleep(0)
        h.clock.set(T0 + timedelta(minutes=2))
        await h.sched.tick()
        h.executor.release.set()
        await h.sched.drain()
    run(go())
    first, second = h.runs("slow")
    assert first.status is RunStatus.SUCCEEDED
    assert second.status is RunStatus.SKIPPED and second.reason == "previous run active"


def test_replace_cancels_the_active_run(h: Harness) -> None:
    async def go() -> None:
        h.apply(doc("r", "* * * * *", concurrencyPolicy="Replace"))
        await h.sync()
        h.executor.blocked.add("r")
        h.clock.set(T0 + timedelta(minutes=1))
        await h.sched.tick()
        await asyncio.sleep(0)
        h.clock.set(T0 + timedelta(minutes=2))
        await h.sched.tick()
        await asyncio.sleep(0)
        h.executor.release.set()
        await h.sched.drain()
    run(go())
    first, second = h.runs("r")
    assert first.status is RunStatus.CANCELLED and "replaced by" in (first.reason or "")
    assert second.status is RunStatus.SUCCEEDED


def test_allow_overlaps(h: Harness) -> None:
    async def go() -> None:
        h.apply(doc("a", "* * * * *", concurrencyPolicy="Allow"))
        await h.sync()
        h.executor.blocked.add("a")
        for m in (1, 2):
            h.clock.set(T0 + timedelta(minutes=m))
            await h.sched.tick()
            await asyncio.sleep(0)
        assert len(h.sched.active_runs) == 2
        h.executor.release.set()
        await h.sched.drain()
    run(go())
    assert [r.status for r in h.runs("a")] == [RunStatus.SUCCEEDED] * 2


def test_retries_with_exponential_backoff(h: Harness) -> None:
    slot = T0 + timedelta(hours=1)

    async def go() -> None:
        h.apply(doc("flaky", "0 * * * *", retries={"limit": 3, "backoff": "10s",
                                                   "maxBackoff": "15s"}))
        await h.sync()
        h.executor.outcomes["flaky"] = [RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.FAILED]
        await h.advance_to(slot + timedelta(minutes=5))
    run(go())
    runs = h.runs("flaky")
    assert [(r.slot, r.attempt, r.status, r.trigger) for r in runs] == [
        (slot, 1, RunStatus.FAILED, Trigger.SCHEDULE),
        (slot, 2, RunStatus.TIMED_OUT, Trigger.RETRY),
        (slot, 3, RunStatus.FAILED, Trigger.RETRY),
        (slot, 4, RunStatus.SUCCEEDED, Trigger.RETRY),
    ]
    starts = [r.started_at for r in runs]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(starts)] == [
        10, 15, 15]  # 10s, 20s capped at 15s, 40s capped at 15s


def test_retries_stop_at_the_limit(h: Harness) -> None:
    async def go() -> None:
        h.apply(doc("bad", "0 * * * *", retries={"limit": 1}))
        await h.sync()
        h.executor.outcomes["bad"] = [RunStatus.FAILED] * 5
        await h.advance_to(T0 + timedelta(hours=1, minutes=5))
    run(go())
    assert [r.attempt for r in h.runs("bad")] == [1, 2]


def test_suspend_and_resume_continue_from_now(h: Harness) -> None:
    async def go() -> None:
        h.apply(doc("s", "* * * * *"))
        await h.sync()
        h.store.set_override("s", SuspendOverride(True, "maintenance", "alice", h.clock.now()))
        await h.sync()
        await h.advance_to(T0 + timedelta(minutes=10))
        assert h.runs("s") == []
        h.store.set_override("s", None)
        await h.sync()
        await h.advance_to(T0 + timedelta(minutes=11))
    run(go())
    assert [r.slot for r in h.runs("s")] == [T0 + timedelta(minutes=11)]


def test_schedule_change_computes_the_next_slot_from_now(h: Harness) -> None:
    async def go() -> None:
        h.apply(doc("c", "0 0 * * *"))
        await h.sync()
        h.clock.set(T0 + timedelta(minutes=7, seconds=5))
        h.apply(doc("c", "*/5 * * * *"))
        await h.sync()
        assert h.sched.timeline.slot_of("c") == T0 + timedelta(minutes=10)
        await h.advance_to(T0 + timedelta(minutes=10))
    run(go())
    assert [r.slot for r in h.runs("c")] == [T0 + timedelta(minutes=10)]


def test_deleted_task_leaves_the_timeline(h: Harness) -> None:
    async def go() -> None:
        h.apply(doc("gone", "* * * * *"), doc("kept", "* * * * *"))
        await h.sync()
        h.apply(doc("kept", "* * * * *"))
        await h.sync()
        await h.advance_to(T0 + timedelta(minutes=1))
    run(go())
    assert h.runs("gone") == [] and len(h.runs("kept")) == 1


class LosingClaimer:
    """Another replica always holds the lock."""

    async def claim(self, task: str, slot: datetime, attempt: int) -> None:
        return None

    async def close(self) -> None:
        return None


def test_unclaimed_slot_without_a_row_is_recorded_missed_after_the_grace(h: Harness) -> None:
    h.sched.claimer = LosingClaimer()

    async def go() -> None:
        h.apply(doc("t", "0 * * * *"), doc("u", "0 * * * *"))
        await h.sync()
        h.clock.set(T0 + timedelta(hours=1))
        await h.sched.tick()
        # The winner recorded its run for u, but not for t (it died holding the lock).
        from reconciler.core.protocols import NewRun

        h.store.insert_run(NewRun("u", T0 + timedelta(hours=1), 1, Trigger.SCHEDULE,
                                  RunStatus.SUCCEEDED, replica="other"))
        h.clock.set(T0 + timedelta(hours=1, seconds=10))
        await h.sched.flush_state()
        assert h.runs("t") == []  # still within the grace period
        h.clock.set(T0 + timedelta(hours=1, seconds=31))
        await h.sched.flush_state()
    run(go())
    (missed,) = h.runs("t")
    assert missed.status is RunStatus.MISSED and "no replica recorded" in (missed.reason or "")
    (ran,) = h.runs("u")
    assert ran.status is RunStatus.SUCCEEDED and ran.replica == "other"


def test_database_outage_records_the_slots_missed_afterwards(h: Harness) -> None:
    from reconciler.core.errors import StoreError

    real = h.store.insert_runs
    down = {"on": False}

    def flaky(rows: Any) -> Any:
        if down["on"]:
            raise StoreError("cannot insert: connection refused")
        return real(rows)

    h.store.insert_runs = flaky  # type: ignore[method-assign]

    async def go() -> None:
        h.apply(doc("t", "* * * * *"))
        await h.sync()
        down["on"] = True
        await h.advance_to(T0 + timedelta(minutes=2))
        assert h.executor.calls == []  # no run starts without its row
        down["on"] = False
        await h.advance_to(T0 + timedelta(minutes=3))
    run(go())
    runs = h.runs("t")
    assert [r.status for r in runs] == [RunStatus.MISSED, RunStatus.MISSED, RunStatus.SUCCEEDED]
    assert all("database unavailable" in (r.reason or "") for r in runs[:2])


# ------------------------------------------------- every door a run comes in by


def _pending(h: Harness, name: str, trigger: Trigger, slot: datetime) -> RunRecord:
    """A pending row, as ``reconciler trigger`` or ``resume --catch-up`` write them."""
    task = h.store.get_task(name)
    assert task is not None
    return h.store.insert_run(NewRun(task_name=name, slot=slot, attempt=1, trigger=trigger,
                                     status=RunStatus.PENDING, reason="by a test",
                                     generation=task.generation))


async def _second_run(h: Harness, door: str, name: str) -> None:
    """Start a second run of ``name`` through ``door`` while its first one is active."""
    now = h.clock.now() + timedelta(seconds=1)  # manual slots: when they were asked for
    if door == "schedule":
        h.clock.set(T0 + timedelta(hours=2))
        await h.sched.tick()
    elif door == "trigger":
        await h.sched.trigger(name, slot=now)
    elif door == "pending":  # the CLI's trigger in database mode
        await h.sched.trigger(name, existing=_pending(h, name, Trigger.MANUAL, now))
    elif door == "catch-up":  # resume --catch-up
        await h.sched.trigger(name, existing=_pending(h, name, Trigger.CATCH_UP, now),
                              trigger=Trigger.CATCH_UP)
    elif door == "retry":
        state = h.sched.tasks[name]
        h.sched.timeline.add_retry(name, now, now - timedelta(minutes=5), 2,
                                   state.policy.generation)
        h.clock.set(now)
        await h.sched.tick()
    elif door == "50 at once":
        await asyncio.gather(*(h.sched.trigger(name, slot=now + timedelta(microseconds=i))
                               for i in range(50)))
    await asyncio.sleep(0)


@pytest.mark.parametrize("door", ["schedule", "trigger", "pending", "catch-up", "retry",
                                  "50 at once"])
@pytest.mark.parametrize("policy", ["Forbid", "Allow", "Replace"])
def test_concurrency_policy_holds_for_every_door(h: Harness, policy: str, door: str) -> None:
    async def go() -> None:
        h.apply(doc("t", "0 * * * *", concurrencyPolicy=policy))
        await h.sync()
        h.executor.blocked.add("t")
        h.clock.set(T0 + timedelta(hours=1))
        await h.sched.tick()  # the first run, held running
        await asyncio.sleep(0)
        assert h.executor.running.get("t") == 1
        await _second_run(h, door, "t")
        await asyncio.sleep(0)
        h.executor.release.set()
        await h.sched.drain()
    run(go())
    runs = sorted(h.runs("t"), key=lambda r: r.id)
    first = runs[0]
    if policy == "Forbid":
        assert h.executor.peak["t"] == 1, [(r.trigger, r.status) for r in runs]
        assert first.status is RunStatus.SUCCEEDED
        assert all(r.status is RunStatus.SKIPPED for r in runs[1:] if r.status
                   is not RunStatus.SUCCEEDED or r.started_at is None)
    elif policy == "Allow":
        assert h.executor.peak["t"] >= 2
        assert all(r.status is RunStatus.SUCCEEDED for r in runs)
    else:
        assert first.status is RunStatus.CANCELLED
        assert (first.reason or "").startswith("replaced by"), first.reason
        assert runs[-1].status is RunStatus.SUCCEEDED


def test_fifty_triggers_at_once_start_one_forbid_run(h: Harness) -> None:
    async def go() -> list[RunRecord | None]:
        h.apply(doc("f", "@yearly"))
        await h.sync()
        h.executor.blocked.add("f")
        now = h.clock.now()
        started = await asyncio.gather(*(h.sched.trigger("f", slot=now + timedelta(
            microseconds=i)) for i in range(50)))
        h.executor.release.set()
        await h.sched.drain()
        return started
    started = run(go())
    assert sum(r is not None for r in started) == 1
    assert h.executor.peak["f"] == 1 and len(h.runs("f")) == 1


def test_a_tick_with_slots_is_announced_to_the_api_and_its_end_too(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    told: list[tuple[bool, int]] = []
    h.sched = Scheduler(h.store, h.worker, InProcessClaimer(), h.executor, h.clock,
                        on_tick=lambda on: told.append((on, len(h.store.list_runs("t")))))

    async def go() -> None:
        h.apply(doc("t", "* * * * *"))
        await h.sync()
        await h.sched.tick()  # nothing due: the API is not held back
        assert told == []
        h.clock.set(T0 + timedelta(minutes=1))
        await h.sched.tick()
        await h.sched.drain()
    try:
        run(go())
    finally:
        h.worker.close()
    # held back before the run's row was written, released once it was
    assert told == [(True, 0), (False, 1)]

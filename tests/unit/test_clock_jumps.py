"""The wall clock steps under the scheduler: forward one hour, back ten minutes.

NTP correcting a drifted host, a VM resumed after a pause, an operator fixing the date:
the scheduler's "now" moves at once while nothing else happens. The promises:

* **Forward**: the slots the jump skipped over are *missed slots*, and README "The
  daemon: policies" says what happens to missed slots: ``startingDeadline``, ``catchUp``
  and ``maxCatchUp`` decide which run; every one that does not run is recorded
  ``missed`` with its reason (at most 100 rows per task, the oldest saying earlier ones
  exist). No slot runs twice.
* **Back**: no slot that already ran runs again, whatever happens while the clock is
  behind (a manifest edit, a restart); the next slot of a task stays the slot after the
  last one it ran, so nothing fires until the clock reaches it again.

The real :class:`~reconciler.daemon.scheduler.Scheduler` on a SQLite file, driven by a
``FakeClock`` (the harness of ``test_scheduler.py``): no test sleeps.
``tests/faults/test_manifests_and_clock.py`` shows the same on the real daemon.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
import test_scheduler
from test_scheduler import T0, Harness, doc

from reconciler.core.runtime import RunRecord, RunStatus
from reconciler.core.scheduling import MAX_MISSED_RECORDS
from reconciler.daemon.claims import InProcessClaimer
from reconciler.daemon.scheduler import Scheduler

h = test_scheduler.h  # the harness fixture: a Harness at T0 on a fresh SQLite file

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
JUMP = timedelta(hours=1)
BACK = timedelta(minutes=10)
#: Keep every row, so the table shows each slot's fate (history pruning is not the point).
KEEP_ALL = {"history": {"successful": 100_000, "failed": 100_000}}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def settle(h: Harness, max_ticks: int) -> int:
    """Tick at the current instant until nothing is due, as ``run_forever`` does (it
    loops without waiting while an entry is due); return the number of ticks."""
    for ticks in range(max_ticks):
        nxt = h.sched.next_wakeup()
        if nxt is None or nxt > h.clock.now():
            return ticks
        await h.sched.tick()
        await h.sched.drain()
    nxt = h.sched.next_wakeup()
    behind = h.clock.now() - nxt if nxt is not None else timedelta(0)
    summary = {name: dict(Counter(r.status.value for r in h.runs(name)))
               for name in h.sched.tasks}
    raise AssertionError(
        f"after {max_ticks} ticks at {h.clock.now().isoformat()} the scheduler is still "
        f"{behind} of slots behind: it walks the jump one slot per tick instead of deciding "
        f"the skipped slots by catchUp/maxCatchUp; rows so far: {summary}"
    )


def executed(h: Harness) -> Counter[tuple[str, datetime, int]]:
    """How often the executor was started for each (task, slot, attempt)."""
    return Counter((c.task, c.slot, c.attempt) for c in h.executor.calls)


def assert_no_slot_ran_twice(h: Harness) -> None:
    twice = sorted((k for k, n in executed(h).items() if n > 1), key=lambda k: (k[0], k[1]))
    assert not twice, f"{len(twice)} slot(s) executed more than once, first: {twice[:3]}"
    for name in h.sched.tasks:
        keys = Counter((r.slot, r.attempt) for r in h.runs(name))
        assert all(n == 1 for n in keys.values()), f"{name}: a (slot, attempt) has two rows"


def ran(runs: list[RunRecord]) -> list[datetime]:
    return [r.slot for r in runs if r.status is not RunStatus.MISSED]


def missed(runs: list[RunRecord]) -> list[RunRecord]:
    return [r for r in runs if r.status is RunStatus.MISSED]


def minutes(*offsets: int) -> list[datetime]:
    return [T0 + timedelta(minutes=m) for m in offsets]


# ------------------------------------------------------------------------ forward


def test_forward_jump_decides_the_skipped_slots_by_the_catch_up_rules(h: Harness) -> None:
    """A one-hour forward step is handled like downtime: per task, catchUp/maxCatchUp/
    startingDeadline choose the slots that run (at most maxCatchUp, Latest: one), every
    other skipped slot is recorded missed with its reason (at most 100 rows per task),
    no slot runs twice, and the schedule then continues on the exact slots."""
    at_jump = T0 + timedelta(seconds=10.5)
    after = at_jump + JUMP  # T0 + 1h + 10.5s

    async def go() -> None:
        h.apply(
            doc("sec", "* * * * * *", **KEEP_ALL),
            doc("sec-deadline", "* * * * * *", startingDeadline="10s", **KEEP_ALL),
            doc("min", "* * * * *", **KEEP_ALL),
            doc("min-all", "* * * * *", catchUp="All", maxCatchUp=5, **KEEP_ALL),
            doc("min-none", "* * * * *", catchUp="None", **KEEP_ALL),
        )
        await h.sync()
        await h.advance_to(at_jump)  # normal running: every second slot up to T0 + 10s
        assert len(h.executor.calls) == 2 * 10
        h.clock.set(after)
        await settle(h, max_ticks=20)  # a decided backlog takes a tick or two, not 3600
        await h.advance_to(T0 + 61 * MINUTE)  # and the schedule continues afterwards
    run(go())

    in_jump = minutes(*range(1, 61))  # the 60 minute slots the step skipped over
    for name, expect_ran, why in (
        ("min", minutes(60), "catchUp is Latest"),
        ("min-all", minutes(56, 57, 58, 59, 60), "more than maxCatchUp 5"),
        # None drops the backlog, not the slot due now (10.5 s late, as after a hiccup)
        ("min-none", minutes(60), "catchUp is None"),
    ):
        runs = [r for r in h.runs(name) if r.slot in in_jump]
        assert ran(runs) == expect_ran, name
        assert sorted(r.slot for r in missed(runs)) == [s for s in in_jump if s not in expect_ran]
        assert all(why in (r.reason or "") for r in missed(runs)), (name, missed(runs)[0].reason)
        assert ran(h.runs(name))[-1] == T0 + 61 * MINUTE  # back on schedule

    newest = T0 + JUMP + 10 * SECOND  # the newest second slot at or before `after`
    for name in ("sec", "sec-deadline"):
        runs = [r for r in h.runs(name) if at_jump < r.slot <= after]
        assert ran(runs) == [newest], name
        rows = missed(runs)
        assert 0 < len(rows) <= MAX_MISSED_RECORDS
        assert rows[-1].slot == newest - SECOND  # the newest missed slots get the rows
        assert "not recorded one by one" in (rows[0].reason or "")
        assert all(r.reason for r in rows)
        following = [s for s in ran(h.runs(name)) if s > after]
        assert following == [newest + i * SECOND for i in range(1, 51)], name
    deadline_reasons = {r.slot: r.reason or "" for r in missed(h.runs("sec-deadline"))}
    assert "past startingDeadline 10s" in deadline_reasons[newest - 20 * SECOND]
    assert "catchUp is Latest" in deadline_reasons[newest - SECOND]
    assert_no_slot_ran_twice(h)


def test_forward_jump_never_runs_a_slot_twice(h: Harness) -> None:
    """Whatever the catch-up rules decide, each slot inside a forward step is decided
    once: no (task, slot) is executed twice or has two rows, and after the step the
    next slot fires exactly on time."""
    at_jump = T0 + 2 * MINUTE + timedelta(seconds=0.5)

    async def go() -> None:
        h.apply(doc("latest", "* * * * *", **KEEP_ALL),
                doc("all", "*/2 * * * *", catchUp="All", maxCatchUp=100,
                    concurrencyPolicy="Allow", **KEEP_ALL),
                doc("deadline", "* * * * *", startingDeadline="90s", **KEEP_ALL))
        await h.sync()
        await h.advance_to(at_jump)
        h.clock.set(at_jump + JUMP)
        await settle(h, max_ticks=200)
        await h.advance_to(at_jump + JUMP + 2 * MINUTE)
    run(go())
    assert_no_slot_ran_twice(h)
    for name, step in (("latest", 1), ("all", 2), ("deadline", 1)):
        slots = [r.slot for r in h.runs(name)]
        expected = [T0 + timedelta(minutes=m) for m in range(step, 65, step)]
        assert slots == expected, f"{name}: every slot has exactly one row"
        last = h.runs(name)[-1]
        assert last.slot == expected[-1] and last.lateness_seconds == 0


# ------------------------------------------------------------------------ backward


def test_backward_jump_reruns_nothing_and_waits_for_the_next_slot(h: Harness) -> None:
    """Ten minutes back: no slot runs again and no row is added while the clock is
    behind (the scheduler waits: next slot = the slot after the last one run); when the
    clock reaches that slot, the schedule continues slot by slot, each exactly once."""
    last_run = T0 + MINUTE
    at_jump = last_run + timedelta(seconds=0.5)

    async def go() -> None:
        h.apply(doc("sec", "@every 1s", **KEEP_ALL), doc("min", "* * * * *", **KEEP_ALL))
        await h.sync()
        await h.advance_to(at_jump)
        calls, rows = len(h.executor.calls), len(h.runs("sec")) + len(h.runs("min"))
        h.clock.set(at_jump - BACK)
        assert await settle(h, max_ticks=5) == 0
        assert h.sched.timeline.slot_of("sec") == last_run + SECOND
        assert h.sched.timeline.slot_of("min") == last_run + MINUTE
        for _ in range(10):  # the ten minutes the clock repeats
            await h.sched.tick()
            await h.sched.drain()
            assert len(h.executor.calls) == calls, "a slot ran while the clock was behind"
            h.clock.advance(MINUTE - timedelta(seconds=0.1))
        assert len(h.runs("sec")) + len(h.runs("min")) == rows
        await h.advance_to(at_jump + MINUTE)
    run(go())
    assert_no_slot_ran_twice(h)
    assert [r.slot for r in h.runs("sec")] == [T0 + i * SECOND for i in range(1, 121)]
    assert [r.slot for r in h.runs("min")] == minutes(1, 2)
    task = h.store.get_task("sec")
    assert task is not None and task.next_fire_at == T0 + 121 * SECOND


@pytest.mark.parametrize("event", ["manifest edit", "restart"])
def test_nothing_while_the_clock_is_behind_reruns_a_slot(h: Harness, event: str) -> None:
    """While the clock is ten minutes behind, a manifest edit (a new generation) or a
    restart of the scheduler still continues after the last slot decided: none of the
    slots already run (their rows deleted by history pruning, so the unique run key
    cannot stop it) runs again when the clock passes them a second time."""
    at_jump = T0 + 3 * MINUTE + timedelta(seconds=0.5)
    small_history = {"history": {"successful": 2, "failed": 2}}

    async def go() -> None:
        h.apply(doc("q", "*/15 * * * * *", **small_history))
        await h.sync()
        await h.advance_to(at_jump)
        assert len(h.runs("q")) < 12  # pruned: the table no longer shows every slot run
        h.clock.set(at_jump - BACK)
        if event == "manifest edit":
            h.apply(doc("q", "*/15 * * * * *", timeout="5m", **small_history))
            await h.sched.sync(h.store.load_tasks(), full=False)
        else:
            await h.sched.flush_state()
            h.sched = Scheduler(h.store, h.worker, InProcessClaimer(), h.executor, h.clock)
            await h.sync(recover=True)
        await h.advance_to(at_jump + 30 * SECOND)
    run(go())
    assert_no_slot_ran_twice(h)
    slots = sorted(s for _, s, _ in executed(h))
    assert slots == [T0 + i * 15 * SECOND for i in range(1, 15)]


# ----------------------------------------------------------------- backlog details


def test_replace_runs_only_the_newest_slot_of_a_backlog(h: Harness) -> None:
    """Replace with catchUp All: each catch-up run would replace the one before it at
    once, so only the newest runs; the others are missed, saying why."""
    async def go() -> None:
        h.executor.blocked.add("r")
        h.apply(doc("r", "* * * * *", catchUp="All", maxCatchUp=3,
                    concurrencyPolicy="Replace", **KEEP_ALL))
        await h.sync()
        h.clock.set(T0 + 4 * MINUTE + SECOND)  # the loop was stuck for three periods
        await h.sched.tick()
        state = h.sched.tasks["r"]
        assert [a.record.slot for a in state.active.values()] == [T0 + 4 * MINUTE]
        h.executor.release.set()
        await h.sched.drain()
    run(go())
    rows = {r.slot: r for r in h.runs("r")}
    assert ran(list(rows.values())) == [T0 + 4 * MINUTE]
    for m in (2, 3):
        assert "replaced by the run of slot" in (rows[T0 + m * MINUTE].reason or "")


def test_catch_up_none_still_runs_the_slot_due_now(h: Harness) -> None:
    """catchUp None drops a backlog, not the slot that is due now: after a one-second
    hiccup of a per-second task, the slot it skipped is missed and the current one runs."""
    async def go() -> None:
        h.apply(doc("n", "* * * * * *", catchUp="None", **KEEP_ALL))
        await h.sync()
        await h.advance_to(T0 + 3 * SECOND)
        h.clock.set(T0 + 5 * SECOND + timedelta(milliseconds=1))
        await settle(h, max_ticks=5)
    run(go())
    rows = {r.slot: r for r in h.runs("n")}
    assert rows[T0 + 4 * SECOND].status is RunStatus.MISSED
    assert rows[T0 + 5 * SECOND].status is RunStatus.SUCCEEDED


def test_a_refused_clock_records_no_progress_and_a_far_future_last_slot_is_ignored(
        h: Harness) -> None:
    """A replica whose clock the skew guard refuses decides nothing, so it must not move
    the task's ``last_slot_at`` either (a clock a day ahead would stop the task for a
    day everywhere); and a last slot more than an hour ahead of the clock is taken for
    the work of a wrong clock: planning starts from now."""
    from reconciler.core.clock import FakeClock

    async def go() -> None:
        h.apply(doc("t", "* * * * *", **KEEP_ALL))
        await h.sync()
        await h.advance_to(T0 + 2 * MINUTE + 5 * SECOND)
        ahead = FakeClock(T0 + timedelta(days=1))
        bad = Scheduler(h.store, h.worker, InProcessClaimer(), h.executor, ahead,
                        clock_refusal=lambda: "clock off by a day")
        await bad.sync(h.store.load_tasks())
        ahead.advance(3 * MINUTE)
        await bad.tick()
        task = h.store.get_task("t")
        assert task is not None and task.last_slot_at == T0 + 2 * MINUTE
        h.store.set_schedule_state({"t": {"last_slot_at": T0 + timedelta(days=1)}})
        fresh = Scheduler(h.store, h.worker, InProcessClaimer(), h.executor, h.clock)
        await fresh.sync(h.store.load_tasks(), recover=True)
        assert fresh.timeline.slot_of("t") == T0 + 3 * MINUTE
    run(go())


def test_a_task_suspended_while_its_slot_starts_is_not_planned_again(h: Harness) -> None:
    """A suspend that lands while tick() awaits the claims removes the task from the
    timeline, and tick() must not put the next slot back afterwards."""
    from reconciler.core.runtime import SuspendOverride

    fired: list[int] = []

    class SuspendDuringClaim(InProcessClaimer):
        async def claim(self, task: str, slot: datetime, attempt: int) -> Any:
            if not fired:
                fired.append(1)
                row = h.store.set_override("s", SuspendOverride(True, None, "op", h.clock.now()))
                await h.sched.sync([row], full=False)
            return await super().claim(task, slot, attempt)

    async def go() -> None:
        h.sched.claimer = SuspendDuringClaim()
        h.apply(doc("s", "* * * * *", **KEEP_ALL))
        await h.sync()
        await h.advance_to(T0 + 3 * MINUTE + 30 * SECOND)
        await h.sched.drain()
    run(go())
    assert [r.slot for r in h.runs("s")] == [T0 + MINUTE]
    assert h.sched.timeline.slot_of("s") is None

"""The backfill driver: carries out the stored backfills, a step at a time.

Each step (every second, and when woken) reads the backfills that have not finished
and, for each, its ledger and the task's runs in its range, asks the core which slots
to start now (:func:`~reconciler.core.backfill.plan_backfill`), and starts them: a
``pending`` run row with trigger ``backfill`` and its nominal slot, written with the
ledger row in one transaction (``insert_backfill_run``), then started by the
scheduler (claim, executor, run record; :meth:`BackfillStarter.start_decided`). Then
it writes the backfill's progress and state.

Exactly once: only the replica that may drive (one replica, or the writer in
distributed mode) takes steps; the ledger's key (backfill, slot) and the run's key
(task, slot, attempt) refuse a second start of a slot even when two replicas both
believe they are the writer for a moment. A daemon killed while a backfill's runs were
live finds them ``abandoned`` at start-up (:meth:`~reconciler.core.protocols.RunStore.
abandon_runs`); such a slot counts as done (failed) and is not started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from reconciler.core.backfill import (
    BackfillRecord,
    BackfillState,
    BackfillStep,
    backfill_slots,
    outcomes,
    plan_backfill,
)
from reconciler.core.clock import Clock
from reconciler.core.errors import ReconcilerError
from reconciler.core.protocols import BackfillStore, NewRun, RunStore
from reconciler.core.runtime import RunRecord, RunStatus, Trigger
from reconciler.core.scheduling import TaskPolicy
from reconciler.daemon.worker import StoreWorker

log = logging.getLogger("reconciler.backfills")

#: How many unfinished backfills one step looks at (oldest first).
MAX_ACTIVE = 100


class BackfillStarter(Protocol):
    """The scheduler, as the driver uses it."""

    def policy_of(self, name: str) -> TaskPolicy | None: ...

    async def start_decided(self, name: str, pending: RunRecord) -> RunRecord | None: ...


class DriverStore(BackfillStore, RunStore, Protocol):
    """The store calls the driver makes."""


class BackfillDriver:
    def __init__(self, store: DriverStore, worker: StoreWorker, starter: BackfillStarter,
                 clock: Clock, *, replica: str, may_drive: Callable[[], bool] = lambda: True,
                 interval: float = 1.0) -> None:
        self.store = store
        self.worker = worker
        self.starter = starter
        self.clock = clock
        self.replica = replica
        #: False while another replica drives (distributed mode: not the writer)
        self.may_drive = may_drive
        self.interval = interval
        self.wake = asyncio.Event()

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.step()
            except ReconcilerError as exc:
                log.warning("backfills: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.interval)
            self.wake.clear()

    async def step(self) -> None:
        """One pass over the unfinished backfills."""
        if not self.may_drive():
            return
        active: list[BackfillRecord] = await self.worker.call(
            self.store.list_backfills, states=[BackfillState.PENDING, BackfillState.RUNNING],
            limit=MAX_ACTIVE)
        for backfill in reversed(active):
            await self._drive(backfill)

    async def _drive(self, backfill: BackfillRecord) -> None:
        policy = self.starter.policy_of(backfill.task_name)
        if policy is None:  # deleted, or not usable here: wait for it
            return
        try:
            slots = backfill_slots(policy.schedule, backfill.start, backfill.end)
        except ValueError as exc:
            await self._write(backfill, BackfillStep((), backfill.total, backfill.done,
                                                     backfill.failed, 0, BackfillState.FAILED),
                              reason=str(exc))
            return
        ledger = await self.worker.call(self.store.backfill_ledger, backfill.id)
        runs: list[RunRecord] = await self.worker.call(
            self.store.runs_between, backfill.task_name, backfill.start, backfill.end)
        own, succeeded = outcomes(ledger, runs)
        active = await self.worker.call(self.store.list_runs, backfill.task_name, limit=100,
                                         statuses=[RunStatus.RUNNING])
        others = sum(1 for r in active if r.trigger is not Trigger.BACKFILL)
        step = plan_backfill(slots, own, succeeded, parallel=backfill.parallel,
                             rerun=backfill.rerun,
                             policy=policy.spec.concurrency_policy, others_active=others)
        # rows written but not started: this replica's (the scheduler was busy), and
        # another's that it left behind (it died or stopped driving between writing a
        # row and starting it); starting claims the slot, so a row runs at most once
        now = self.clock.now()
        for run in runs:
            if (run.status is RunStatus.PENDING and ledger.get(run.slot) == run.attempt
                    and stranded_or_own(run, self.replica, now)):
                await self.starter.start_decided(backfill.task_name, run)
        attempts = {r.slot: r.attempt for r in runs}  # ascending: the newest attempt wins
        for slot in step.start:
            pending = await self.worker.call(self.store.insert_backfill_run, backfill.id, NewRun(
                task_name=backfill.task_name, slot=slot, attempt=attempts.get(slot, 0) + 1,
                trigger=Trigger.BACKFILL, status=RunStatus.PENDING, replica=self.replica,
                reason=f"backfill {backfill.id} by {backfill.created_by}",
                generation=policy.generation))
            if pending is not None:
                await self.starter.start_decided(backfill.task_name, pending)
        if step.start and step.state is BackfillState.RUNNING:
            step = BackfillStep((), step.total, step.done, step.failed,
                                step.running + len(step.start), step.state, step.waiting)
        await self._write(backfill, step)

    async def _write(self, backfill: BackfillRecord, step: BackfillStep,
                     reason: str | None = None) -> None:
        state = step.state
        if state is BackfillState.RUNNING and not step.running and not step.done:
            state = BackfillState.PENDING if step.waiting else BackfillState.RUNNING
        reason = reason or step.waiting
        if ((state, step.done, step.failed) == (backfill.state, backfill.done, backfill.failed)
                and reason in (None, backfill.reason)):
            return
        await self.worker.call(self.store.update_backfill, backfill.id, state=state,
                               done=step.done, failed=step.failed, now=self.clock.now(),
                               reason=reason)
        if state.finished:
            log.info("backfill %d of %s %s: %d/%d slot(s), %d failed", backfill.id,
                     backfill.task_name, state, step.done, step.total, step.failed)


#: A pending backfill row another replica wrote and did not start within this is taken
#: over by the replica that drives now.
TAKEOVER_AFTER = timedelta(seconds=30)


def stranded_or_own(run: RunRecord, replica: str, now: datetime) -> bool:
    """Whether the driving replica starts this pending row: its own, or another's that
    stayed pending past :data:`TAKEOVER_AFTER` (that replica died or stopped driving)."""
    if run.replica == replica:
        return True
    return run.created_at is None or now - run.created_at >= TAKEOVER_AFTER

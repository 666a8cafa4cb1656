"""The scheduler's in-memory state: its settings, each task's state and active runs,
and the listener that watches it (the API's index, metrics and events)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from reconciler.core.clock import Clock
from reconciler.core.protocols import Claim, ExecutionRequest, RunStore
from reconciler.core.runtime import ActualTask, RunRecord, RunStatus, Trigger
from reconciler.core.scheduling import SlotDecision, TaskPolicy, Verdict

STARTS = (Verdict.RUN, Verdict.REPLACE)  # decisions that start a run


@dataclass
class SchedulerConfig:
    replica: str = "local"
    max_concurrent_runs: int = 16
    max_queued_runs: int = 10_000
    output_limit: int = 64 * 1024
    kill_grace: timedelta = timedelta(seconds=5)
    prune_every: int = 10  # prune a task's history after every N finished runs
    # A slot whose claim went to another replica is checked after this long: if that
    # replica recorded nothing (it died holding the lock), the slot is recorded missed.
    unclaimed_grace: timedelta = timedelta(seconds=30)
    max_deferred_rows: int = 100_000
    # Distributed mode: a slot this replica reaches after the next one was due already
    # is skipped when a peer recorded a later slot of the task (the cluster moved past
    # it). Without this, a replica back from a stall would claim old slots whose rows
    # history pruning had deleted, and run them a second time.
    skip_covered_slots: bool = False


@dataclass
class ActiveRun:
    record: RunRecord
    claim: Claim
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_status: RunStatus | None = None
    cancel_reason: str | None = None
    output: list[str] = field(default_factory=list)
    output_size: int = 0
    output_seq: int = 0  # chunks ever appended; output holds the newest ones
    done: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def waiter(self) -> asyncio.Event:
        """An event set at the next change (new output, or the run ending)."""
        return self._changed

    def notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


class SchedulerListener(Protocol):
    """Observes the scheduler (the HTTP API's index, metrics and events); called on the loop."""

    def task_row(self, row: ActualTask) -> None: ...

    def task_removed(self, name: str) -> None: ...

    def next_fire(self, name: str, at: datetime | None) -> None: ...

    def run_started(self, record: RunRecord) -> None: ...

    def run_finished(self, record: RunRecord) -> None: ...

    def run_recorded(self, record: RunRecord) -> None: ...


class NoListener:
    def task_row(self, row: ActualTask) -> None:
        pass

    def task_removed(self, name: str) -> None:
        pass

    def next_fire(self, name: str, at: datetime | None) -> None:
        pass

    def run_started(self, record: RunRecord) -> None:
        pass

    def run_finished(self, record: RunRecord) -> None:
        pass

    def run_recorded(self, record: RunRecord) -> None:
        pass


class Listeners:
    """Several listeners as one (the API's observer, the deadline watcher, pings), each
    called in order."""

    def __init__(self, *listeners: SchedulerListener) -> None:
        self.listeners = listeners

    def task_row(self, row: ActualTask) -> None:
        for listener in self.listeners:
            listener.task_row(row)

    def task_removed(self, name: str) -> None:
        for listener in self.listeners:
            listener.task_removed(name)

    def next_fire(self, name: str, at: datetime | None) -> None:
        for listener in self.listeners:
            listener.next_fire(name, at)

    def run_started(self, record: RunRecord) -> None:
        for listener in self.listeners:
            listener.run_started(record)

    def run_finished(self, record: RunRecord) -> None:
        for listener in self.listeners:
            listener.run_finished(record)

    def run_recorded(self, record: RunRecord) -> None:
        for listener in self.listeners:
            listener.run_recorded(record)


@dataclass
class TaskState:
    policy: TaskPolicy
    active: dict[int, ActiveRun] = field(default_factory=dict)
    finished_since_prune: int = 0
    #: The newest scheduled slot decided (run, skipped or missed): planning never goes
    #: back to it or before, so a wall clock stepped back re-runs nothing.
    last_slot: datetime | None = None
    #: Runs decided but not started yet (claim and run row in flight). They count as
    #: running for the concurrency policy: the decision and the registration of a run
    #: are one step, with no await between, whatever starts it (slot, trigger, retry).
    starting: int = 0

    @property
    def busy(self) -> int:
        """Runs active or being started: what the concurrency policy counts."""
        return len(self.active) + self.starting

    def reserve(self, decision: SlotDecision) -> SlotDecision:
        """Count a run decided now as started, until :meth:`Scheduler._carry_out_many`
        has launched it or given up. Call it in the same step as the decision."""
        if decision.verdict in STARTS:
            self.starting += 1
        return decision

    def saw_slot(self, slot: datetime | None) -> None:
        if slot is not None and (self.last_slot is None or slot > self.last_slot):
            self.last_slot = slot




class RunEvents:
    """Executor callbacks for one run: live output (the newest ``output_limit``
    characters kept in memory) and progress, passed on at most once a second (0 % and
    100 % always)."""

    def __init__(self, active: ActiveRun, output_limit: int, clock: Clock,
                 record_progress: Callable[[float | None, str | None], None]) -> None:
        self._a = active
        self._limit = output_limit
        self._clock = clock
        self._record_progress = record_progress
        self._last_progress = -1e9

    def output(self, text: str) -> None:
        a = self._a
        a.output.append(text)
        a.output_size += len(text)
        while a.output_size > self._limit and len(a.output) > 1:
            a.output_size -= len(a.output.pop(0))
        a.output_seq += 1
        a.notify()

    def progress(self, percent: float | None, message: str | None) -> None:
        now = self._clock.monotonic()
        if now - self._last_progress < 1.0 and percent not in (0, 100):
            return
        self._last_progress = now
        self._record_progress(percent, message)


def execution_request(policy: TaskPolicy, record: RunRecord,
                      config: SchedulerConfig) -> ExecutionRequest:
    """What the executor gets for the run ``record`` of ``policy``'s task: the run,
    its limits, its parameters (the row's values) and the ``RECONCILER_*`` identity."""
    spec = policy.spec
    return ExecutionRequest(
        task=policy.name, run_id=record.id, slot=record.slot, attempt=record.attempt,
        run=spec.run, timeout=spec.timeout, output_limit=config.output_limit,
        kill_grace=config.kill_grace, limits=spec.limits,
        params=record.params or {}, param_specs=spec.params,
        extra_env={
            "RECONCILER_TASK": policy.name,
            "RECONCILER_RUN_ID": str(record.id),
            "RECONCILER_SLOT": record.slot.isoformat(),
            "RECONCILER_ATTEMPT": str(record.attempt),
        },
    )


def newest_scheduled_slots(store: RunStore, names: list[str]) -> dict[str, datetime]:
    """The newest slot any replica recorded for each task of ``names`` (store thread).
    Manual runs are keyed by their trigger time, not the schedule's progress: skipped."""
    out: dict[str, datetime] = {}
    for name in names:
        for run in store.list_runs(name, limit=5):
            if run.trigger is not Trigger.MANUAL:
                out[name] = run.slot
                break
    return out

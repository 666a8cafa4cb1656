"""The deadline watcher: ``late`` events at slot + ``spec.deadline``.

For every task with a ``spec.deadline`` (not suspended), the watcher knows the next
deadline of its slots and, once that instant passes, asks the core whether the slot
is late (:func:`~reconciler.core.notify.decide_late`: no run of it succeeded by then,
whether it is still running, never started or failed) and writes the outbox rows of
its ``late`` event. It sleeps until the next deadline (at most ``poll`` seconds, so
task changes are picked up), on the scheduler's loop; the reads and writes go through
the store worker.

Exactly once: only the writer replica watches (a single replica always does), and the
outbox keeps one row per (channel, event id); a ``late`` event's id is
``task/slot/0/late`` whoever decides it. A daemon that starts, or a replica that
becomes the writer, looks back :data:`~reconciler.core.notify.LATE_LOOKBACK` (at most
:data:`~reconciler.core.notify.LATE_MAX_SLOTS` slots per task): deadlines that passed
while no daemon watched get their event then; those already written are skipped by
the outbox. Slots before the task was created are never late; a task that appears or
is resumed while the watcher runs is watched from then on.

The watcher is a scheduler listener (``task_row``, ``task_removed``): it learns of
task changes with the scheduler's syncs and reads the policies the scheduler holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from reconciler.core.clock import Clock
from reconciler.core.durations import format_duration
from reconciler.core.errors import ReconcilerError
from reconciler.core.model import NotifyEvent
from reconciler.core.notify import (
    LATE_LOOKBACK,
    deadline_slots,
    decide_late,
    late_event,
    late_rows,
    next_deadline,
)
from reconciler.core.outbox import NewNotification
from reconciler.core.runtime import ActualTask, RunRecord
from reconciler.core.scheduling import TaskPolicy
from reconciler.daemon.notices import Notices, PolicyOf
from reconciler.daemon.runs import NoListener
from reconciler.daemon.worker import StoreWorker

log = logging.getLogger("reconciler.notify")

class DeadlineStore(Protocol):
    def runs_of_slot(self, task_name: str, slot: datetime) -> list[RunRecord]: ...

    def add_notifications(self, rows: Sequence[NewNotification]) -> list[int]: ...


@dataclass
class _Watch:
    after: datetime  # deadlines up to this instant are decided
    due: datetime | None  # the next deadline (None: no slot follows)


def _always() -> bool:
    return True


class DeadlineWatcher(NoListener):
    def __init__(self, store: DeadlineStore, worker: StoreWorker, clock: Clock,
                 notices: Notices, policy_of: PolicyOf, *,
                 is_writer: Callable[[], bool] = _always,
                 lookback: timedelta = LATE_LOOKBACK, poll: float = 1.0) -> None:
        self.store = store
        self.worker = worker
        self.clock = clock
        self.notices = notices
        self.policy_of = policy_of
        self.is_writer = is_writer
        self.lookback = lookback
        self.poll = poll
        self._rows: dict[str, ActualTask] = {}
        self._dirty: set[str] = set()
        self._watch: dict[str, _Watch] = {}
        #: Where a look-back starts (None: not watching, i.e. not the writer)
        self._origin: datetime | None = None

    # ------------------------------------------------------------- the listener

    def task_row(self, row: ActualTask) -> None:
        self._rows[row.name] = row
        self._dirty.add(row.name)  # planned at the next check, with the new policy

    def task_removed(self, name: str) -> None:
        self._rows.pop(name, None)
        self._watch.pop(name, None)
        self._dirty.discard(name)

    # -------------------------------------------------------------------- loop

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.check()
            except ReconcilerError as exc:  # kept: retried at the next check
                log.warning("late events: the store could not be read or written: %s", exc)
            delay = self.poll
            due = self.next_due()
            if due is not None:
                delay = min(delay, max(0.0, (due - self.clock.now()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    def next_due(self) -> datetime | None:
        return min((w.due for w in self._watch.values() if w.due is not None), default=None)

    async def check(self) -> int:
        """Decide the deadlines passed by now; return how many outbox rows were written."""
        now = self.clock.now()
        if not self.is_writer():
            self._origin = None  # the writer watches; look back when this replica is it
            self._watch.clear()
            return 0
        start = now  # a task new to the watch is watched from now on...
        if self._origin is None:  # ...except at the start: look back
            start = self._origin = now - self.lookback
            self._dirty = set(self._rows)
        for name in sorted(self._dirty):
            self._plan(name, start)
        self._dirty.clear()
        batches: list[tuple[TaskPolicy, list[datetime]]] = []
        for name, watch in self._watch.items():
            policy = self.policy_of(name)
            if watch.due is None or watch.due > now or policy is None:
                continue
            deadline = policy.spec.deadline
            assert deadline is not None  # only such tasks are watched
            slots = deadline_slots(policy.schedule, deadline, watch.after, now)
            if slots:
                batches.append((policy, slots))
        written = await self.worker.call(self._write, batches, now) if batches else 0
        for policy, _ in batches:  # decided (written, or not late): move on
            watch = self._watch[policy.name]
            deadline = policy.spec.deadline
            assert deadline is not None
            watch.after = now
            watch.due = next_deadline(policy.schedule, deadline, now)
        return written

    def _plan(self, name: str, start: datetime) -> None:
        """(Re)plan a task's next deadline; a task new to the watch starts at ``start``."""
        policy, row = self.policy_of(name), self._rows.get(name)
        deadline = None if policy is None else policy.spec.deadline
        if policy is None or row is None or policy.suspended or deadline is None:
            self._watch.pop(name, None)
            return
        watch = self._watch.get(name)
        after = start if watch is None else watch.after
        if row.created_at is not None:  # no slot up to the task's creation is late
            after = max(after, row.created_at + deadline)
        self._watch[name] = _Watch(after, next_deadline(policy.schedule, deadline, after))

    # ------------------------------------------------------------- store thread

    def _write(self, batches: Sequence[tuple[TaskPolicy, list[datetime]]],
               now: datetime) -> int:
        rows: list[NewNotification] = []
        for policy, slots in batches:
            deadline = policy.spec.deadline
            channels = [c for c, _ in self.notices.pairs(policy, (NotifyEvent.LATE,))]
            if deadline is None or not channels:
                continue  # nobody listens: no read either
            labels = dict(policy.manifest.metadata.labels)
            for slot in slots:
                runs = self.store.runs_of_slot(policy.name, slot)
                if decide_late(slot, deadline, runs, now):
                    log.info("task %s: the slot %s is late (no success within %s)",
                             policy.name, slot.isoformat(), format_duration(deadline))
                    event = late_event(policy.name, slot, deadline, runs, labels)
                    rows.extend(late_rows(event, channels, now))
        written = len(self.store.add_notifications(rows)) if rows else 0
        if written:
            self.notices.wake()
        return written

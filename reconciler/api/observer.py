"""Scheduler and daemon hooks -> the task index, the metrics and the event stream.

The daemon passes an :class:`ApiObserver` to its scheduler as the listener; every
method runs on the event loop, does a few dictionary operations and returns (no I/O).
"""

from __future__ import annotations

from datetime import datetime

from reconciler.api.events import EventHub
from reconciler.api.index import TaskIndex
from reconciler.api.metrics import Metrics
from reconciler.api.views import run_doc
from reconciler.core.runtime import ActualTask, RunRecord, RunStatus


class ApiObserver:
    def __init__(self, index: TaskIndex, metrics: Metrics, events: EventHub) -> None:
        self.index = index
        self.metrics = metrics
        self.events = events
        self.reconciles = 0

    # ------------------------------------------------------------ scheduler hooks

    def task_row(self, row: ActualTask) -> None:
        self.metrics.task_loaded(row.name, row.created_at)
        if self.index.upsert(row):
            self.events.publish("task", {"name": row.name, "change": "updated"})

    def task_removed(self, name: str) -> None:
        self.metrics.forget_task(name)
        if self.index.remove(name):
            self.events.publish("task", {"name": name, "change": "removed"})

    def next_fire(self, name: str, at: datetime | None) -> None:
        entry = self.index.get(name)
        before = entry.next_fire if entry is not None else None
        if before is not None and at is not None and at > before:
            self.metrics.set_interval(name, (at - before).total_seconds())
        self.index.set_next(name, at)
        self.metrics.set_next_fire(name, at)

    def run_started(self, record: RunRecord) -> None:
        self.index.run_changed(record)
        self.metrics.run_started(record)
        self.events.publish("run", {"task": record.task_name, "run": run_doc(record, live=True)})

    def run_finished(self, record: RunRecord) -> None:
        """A run reached a final status (also a slot recorded missed or skipped)."""
        if not record.status.finished:
            return
        self.index.run_changed(record)
        self.metrics.run_final(record)
        self.events.publish("run", {"task": record.task_name, "run": run_doc(record)})

    def run_recorded(self, record: RunRecord) -> None:
        """A run row written without running (missed, skipped) or queued (pending)."""
        if record.status is RunStatus.PENDING:
            self.index.run_changed(record)
            self.events.publish("run", {"task": record.task_name, "run": run_doc(record)})
        else:
            self.run_finished(record)

    # --------------------------------------------------------------- daemon hooks

    def seeded(self) -> None:
        """After the index was seeded from the database: export the last successes."""
        for name in self.index.names():
            entry = self.index.get(name)
            if entry is not None and entry.last_success is not None:
                self.metrics.set_last_success(name, entry.last_success)

    def reconciled(self, *, seconds: float, at: datetime, errors: int, revision: str | None,
                   created: int = 0, updated: int = 0, deleted: int = 0) -> None:
        self.reconciles += 1
        self.metrics.reconciled(seconds, at, errors)
        self.events.publish("reconcile", {
            "at": at.isoformat(), "revision": revision, "errors": errors,
            "created": created, "updated": updated, "deleted": deleted,
        })

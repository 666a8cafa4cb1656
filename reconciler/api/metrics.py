"""Prometheus metrics of one daemon (``GET /metrics``).

Every metric lives in the :class:`Metrics` object's own registry (not the process-wide
default one), so tests can create as many daemons as they like. The daemon's
scheduler hooks feed it (see :mod:`reconciler.api.observer`); the distributed mode
sets :meth:`Metrics.set_writer` and :meth:`Metrics.set_zookeeper_state`.

==============================================  =============================================
``reconciler_runs_total{task,status}``          runs that reached a final status (every
                                                status but pending/running; missed and
                                                skipped slots included)
``reconciler_run_duration_seconds{task}``       histogram: finished_at - started_at
``reconciler_run_lateness_seconds``             histogram: started_at - slot, scheduled runs
``reconciler_missed_slots_total{task,reason}``  slots recorded missed or skipped; reason is
                                                ``deadline``, ``catch_up`` or ``concurrency``
``reconciler_tasks{state}``                     tasks: ``active`` + ``suspended`` = all;
                                                ``running`` and ``failing`` are subsets
``reconciler_manifest_errors``                  errors in the manifests at the last reconcile
``reconciler_reconcile_duration_seconds``       histogram: load + plan + apply
``reconciler_last_reconcile_timestamp_seconds`` end of the last successful reconcile
``reconciler_is_writer``                        1 when this replica fires slots
``reconciler_zookeeper_state{state}``           1 for the current ZooKeeper session state
``reconciler_next_fire_timestamp_seconds{task}`` next slot (absent while suspended)
``reconciler_notifications_total{channel,event,status}`` delivery attempts of notifications:
                                                ``sent``, ``retry`` (failed, tried again) or
                                                ``failed`` (given up after 24 h)
``reconciler_notification_backlog``             notifications waiting to be delivered
==============================================  =============================================

Three more per-task gauges serve the "no success within the expected interval" alert:
``reconciler_last_success_timestamp_seconds{task}`` (end of the last successful run),
``reconciler_task_created_timestamp_seconds{task}`` (when the task's row was created, so a
task that never succeeded is measured from then) and
``reconciler_schedule_interval_seconds{task}`` (the time between the task's last two
slots, known once the task has fired since the daemon started).

A task's series follow the task, not its runs: when it is loaded from the table
(:meth:`Metrics.task_loaded`, at start-up for every task and later for each new one),
``reconciler_runs_total`` is created at 0 for every final status and
``reconciler_missed_slots_total`` at 0 for every reason, so ``increase()`` sees the first
failure or miss (a counter that appears at 1 looks unchanged to Prometheus). When the
task is deleted (:meth:`Metrics.forget_task`) every series with its ``task`` label goes,
and a run of it that ends later is not counted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from reconciler.core.runtime import RunRecord, RunStatus, Trigger

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TASK_STATES = ("active", "suspended", "running", "failing")
ZOOKEEPER_STATES = ("connecting", "connected", "suspended", "lost", "closed", "disabled")
MISSED_REASONS = ("deadline", "catch_up", "concurrency")
FINAL_STATUSES = tuple(status.value for status in RunStatus if status.finished)

LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 300.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
                    3600.0, 7200.0, 21600.0)
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# The ``*_created`` companion series would double every counter's cardinality.
disable_created_metrics()  # type: ignore[no-untyped-call]


def missed_reason(record: RunRecord) -> str:
    """The ``reason`` label of a missed or skipped slot (a small, fixed set)."""
    if record.status is RunStatus.SKIPPED:
        return "concurrency"
    text = record.reason or ""
    if "startingDeadline" in text or "too late" in text:
        return "deadline"
    return "catch_up"


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.runs_total = Counter(
            "reconciler_runs", "Runs that reached a final status.", ["task", "status"],
            registry=r)
        self.run_duration = Histogram(
            "reconciler_run_duration_seconds", "Run duration (finished - started).", ["task"],
            buckets=DURATION_BUCKETS, registry=r)
        self.run_lateness = Histogram(
            "reconciler_run_lateness_seconds",
            "Start of a scheduled run minus its slot.", buckets=LATENESS_BUCKETS, registry=r)
        self.missed_slots = Counter(
            "reconciler_missed_slots", "Slots recorded missed or skipped.", ["task", "reason"],
            registry=r)
        self.tasks = Gauge("reconciler_tasks", "Tasks by state.", ["state"], registry=r)
        self.manifest_errors = Gauge(
            "reconciler_manifest_errors", "Manifest errors at the last reconcile.", registry=r)
        self.reconcile_duration = Histogram(
            "reconciler_reconcile_duration_seconds", "Duration of a reconcile (load, plan, apply).",
            buckets=RECONCILE_BUCKETS, registry=r)
        self.last_reconcile = Gauge(
            "reconciler_last_reconcile_timestamp_seconds",
            "Unix time at the end of the last successful reconcile.", registry=r)
        self.is_writer = Gauge(
            "reconciler_is_writer", "1 when this replica is the one firing slots.", registry=r)
        self.zookeeper_state = Gauge(
            "reconciler_zookeeper_state",
            "1 for the current state of the ZooKeeper session (disabled: single replica).",
            ["state"], registry=r)
        self.next_fire = Gauge(
            "reconciler_next_fire_timestamp_seconds", "Unix time of the task's next slot.",
            ["task"], registry=r)
        self.last_success = Gauge(
            "reconciler_last_success_timestamp_seconds",
            "Unix time at the end of the task's last successful run.", ["task"], registry=r)
        self.interval = Gauge(
            "reconciler_schedule_interval_seconds",
            "Seconds between the task's last two slots (set once it has fired).", ["task"],
            registry=r)
        self.created = Gauge(
            "reconciler_task_created_timestamp_seconds",
            "Unix time the task was created (its row in the table).", ["task"], registry=r)
        self._tasks: set[str] = set()  # tasks whose series exist (loaded, not deleted)
        self.notifications = Counter(
            "reconciler_notifications", "Notification delivery attempts by outcome.",
            ["channel", "event", "status"], registry=r)
        self.notification_backlog = Gauge(
            "reconciler_notification_backlog", "Notifications waiting to be delivered.",
            registry=r)
        for state in TASK_STATES:
            self.tasks.labels(state).set(0)
        self.set_writer(True)
        self.set_zookeeper_state("disabled")

    # ------------------------------------------------------------- setters (public)

    def notification_result(self, channel: str, event: str, status: str) -> None:
        """One delivery attempt (from the sender's thread; the client is thread-safe)."""
        self.notifications.labels(channel, event, status).inc()

    def set_notification_backlog(self, pending: int) -> None:
        self.notification_backlog.set(pending)

    def set_writer(self, writer: bool) -> None:
        self.is_writer.set(1 if writer else 0)

    def set_zookeeper_state(self, state: str) -> None:
        if state not in ZOOKEEPER_STATES:
            raise ValueError(f"unknown ZooKeeper state {state!r}; one of {ZOOKEEPER_STATES}")
        for s in ZOOKEEPER_STATES:
            self.zookeeper_state.labels(s).set(1 if s == state else 0)

    def set_task_counts(self, counts: Mapping[str, int]) -> None:
        for state in TASK_STATES:
            self.tasks.labels(state).set(counts.get(state, 0))

    def set_next_fire(self, task: str, at: datetime | None) -> None:
        if at is None:
            with contextlib.suppress(KeyError):
                self.next_fire.remove(task)
        else:
            self.next_fire.labels(task).set(at.timestamp())

    def set_last_success(self, task: str, at: datetime) -> None:
        self.last_success.labels(task).set(at.timestamp())

    def set_interval(self, task: str, seconds: float) -> None:
        self.interval.labels(task).set(seconds)

    def task_loaded(self, task: str, created: datetime | None) -> None:
        """A task of the table: its counters exist at 0 from now on, with its creation time."""
        if task not in self._tasks:
            self._tasks.add(task)
            for status in FINAL_STATUSES:
                self.runs_total.labels(task, status)
            for reason in MISSED_REASONS:
                self.missed_slots.labels(task, reason)
        if created is not None:
            self.created.labels(task).set(created.timestamp())

    def forget_task(self, task: str) -> None:
        """The task was deleted: every series of it goes (Prometheus marks them stale)."""
        self._tasks.discard(task)
        self.set_next_fire(task, None)
        for metric in (self.last_success, self.interval, self.created, self.run_duration):
            with contextlib.suppress(KeyError):
                metric.remove(task)
        for status in FINAL_STATUSES:
            with contextlib.suppress(KeyError):
                self.runs_total.remove(task, status)
        for reason in MISSED_REASONS:
            with contextlib.suppress(KeyError):
                self.missed_slots.remove(task, reason)

    # -------------------------------------------------------------- run events

    def run_started(self, record: RunRecord) -> None:
        if record.trigger is Trigger.SCHEDULE and record.lateness_seconds is not None:
            self.run_lateness.observe(max(0.0, record.lateness_seconds))

    def run_final(self, record: RunRecord) -> None:
        if record.task_name not in self._tasks:
            return  # deleted while it ran (or never loaded here): no series to count in
        self.runs_total.labels(record.task_name, record.status.value).inc()
        if record.status in (RunStatus.MISSED, RunStatus.SKIPPED):
            self.missed_slots.labels(record.task_name, missed_reason(record)).inc()
        elif record.started_at is not None and record.finished_at is not None:
            seconds = (record.finished_at - record.started_at).total_seconds()
            self.run_duration.labels(record.task_name).observe(max(0.0, seconds))
            if record.status is RunStatus.SUCCEEDED:
                self.set_last_success(record.task_name, record.finished_at)

    def reconciled(self, seconds: float, at: datetime, errors: int) -> None:
        self.reconcile_duration.observe(seconds)
        self.last_reconcile.set(at.timestamp())
        self.manifest_errors.set(errors)

    def render(self) -> bytes:
        return generate_latest(self.registry)

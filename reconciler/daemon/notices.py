"""The notifications of a run's outcome, written with the outcome.

:class:`Notices` runs on the store worker's thread: it asks the core which events an
outcome produces (:func:`~reconciler.core.notify.decide_events`) and which channel gets
which (:func:`~reconciler.core.notify.route`), and hands the store a builder for the
outbox rows, which the store writes in the transaction of the run's final status or
missed slot. Then it wakes the sender. A task no channel routes costs nothing more
than before: no extra read, the plain write.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from reconciler.core.clock import Clock
from reconciler.core.errors import ReconcilerError
from reconciler.core.model import NotifyEvent
from reconciler.core.notify import (
    ChannelRoute,
    decide_events,
    notify_rules,
    outbox_rows,
    route,
)
from reconciler.core.outbox import NewNotification, NotifyBuilder
from reconciler.core.protocols import NewRun, RunStore
from reconciler.core.runtime import ActualChannel, ActualTask, RunRecord, RunStatus
from reconciler.core.scheduling import TaskPolicy, decide_retry

#: The outcomes that count for ``recovered`` (runs that ran to an end).
RAN = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED)
ALL_EVENTS = tuple(NotifyEvent)
PolicyOf = Callable[[str], TaskPolicy | None]


def _nothing() -> None:
    pass


class Notices:
    """Writes a run's end (``finish_run``) and slot rows (``insert_runs``) with their
    notifications. ``channels`` reads the channel table (re-read at most every
    ``refresh`` seconds); None: no channels, nothing is ever routed."""

    def __init__(self, store: RunStore, clock: Clock, *,
                 channels: Callable[[], Sequence[ActualChannel]] | None = None,
                 wake: Callable[[], None] = _nothing, refresh: float = 2.0) -> None:
        self.store = store
        self.clock = clock
        self._channels = channels
        self._wake = wake
        self.refresh = refresh
        self._routes: list[ChannelRoute] | None = None
        self._loaded_at = 0.0

    def wake(self) -> None:
        """Tell the sender that rows were written."""
        self._wake()

    def routes(self) -> list[ChannelRoute]:
        if self._channels is None:
            return []
        now = self.clock.monotonic()
        if self._routes is None or now - self._loaded_at >= self.refresh:
            self._routes = [
                ChannelRoute(c.name, c.document.get("spec", {}).get("selector"))
                for c in self._channels()
            ]
            self._loaded_at = now
        return self._routes

    def forget_routes(self) -> None:
        """Read the channels again at the next use (the start-up's read came before the
        first apply wrote them)."""
        self._routes = None

    def pairs(self, policy: TaskPolicy,
               events: Sequence[NotifyEvent]) -> tuple[tuple[str, NotifyEvent], ...]:
        if not events:
            return ()
        routes = self.routes()
        if not routes:
            return ()
        return route(notify_rules(policy.manifest), policy.manifest.metadata.labels, routes,
                     events)

    def _previous(self, record: RunRecord) -> RunStatus | None:
        """The final outcome of the task's previous slot (for ``recovered``)."""
        for run in self.store.list_runs(record.task_name, limit=20, statuses=RAN):
            if run.slot != record.slot:
                return run.status
        return None

    def finish_run(self, record: RunRecord, policy: TaskPolicy | None, retrying: bool,
                   token: int | None, values: dict[str, Any]) -> bool:
        """``update_run`` of a run's end, with the outbox rows of its events."""
        notify: NotifyBuilder | None = None
        status = RunStatus(values["status"])
        if policy is not None and self.pairs(policy, ALL_EVENTS):
            previous = self._previous(record) if status is RunStatus.SUCCEEDED else None
            pairs = self.pairs(policy, decide_events(status, retrying=retrying,
                                                      previous=previous))
            if pairs:
                labels = dict(policy.manifest.metadata.labels)
                notify = functools.partial(_rows, pairs, labels, self.clock)
        if notify is None:  # the plain write (no channel wants this outcome)
            return self.store.update_run(record.id, fencing_token=token, **values)
        ok = self.store.update_run(record.id, fencing_token=token, notify=notify, **values)
        if ok:
            self._wake()
        return ok

    def insert_runs(self, rows: Sequence[NewRun],
                    policy_of: PolicyOf) -> list[RunRecord | None]:
        """``insert_runs`` of slot rows (started, missed, skipped), with the outbox rows
        of the events of those that ended already (``missed``)."""
        chosen: dict[str, tuple[tuple[tuple[str, NotifyEvent], ...], dict[str, str]]] = {}
        for row in rows:
            events = decide_events(row.status, retrying=False, previous=None)
            policy = policy_of(row.task_name) if events else None
            if policy is None or row.task_name in chosen:
                continue
            pairs = self.pairs(policy, events)
            if pairs:
                chosen[row.task_name] = (pairs, dict(policy.manifest.metadata.labels))
        if not chosen:
            return self.store.insert_runs(rows)

        def notify(record: RunRecord) -> list[NewNotification]:
            pairs, labels = chosen.get(record.task_name, ((), {}))
            wanted = set(decide_events(record.status, retrying=False, previous=None))
            return _rows([p for p in pairs if p[1] in wanted], labels, self.clock, record)

        records = self.store.insert_runs(rows, notify=notify)
        self._wake()
        return records


    def abandon_runs(self, policy_of: PolicyOf, **query: Any) -> list[RunRecord]:
        """``abandon_runs`` (``query``: its arguments) with the outbox rows of each run's
        ``abandoned`` event, none while the task's retry policy runs the slot again (the
        daemon queues that retry by the same :func:`decide_retry`)."""
        if not self.routes():
            return self.store.abandon_runs(**query)

        def notify(record: RunRecord) -> list[NewNotification]:
            policy = policy_of(record.task_name)
            if policy is None:
                return []
            ended = record.finished_at or self.clock.now()
            retrying = decide_retry(policy, RunStatus.ABANDONED, record.attempt,
                                    ended) is not None
            pairs = self.pairs(policy, decide_events(RunStatus.ABANDONED, retrying=retrying,
                                                      previous=None))
            return _rows(pairs, dict(policy.manifest.metadata.labels), self.clock, record)

        records = self.store.abandon_runs(notify=notify, **query)
        if records:
            self._wake()
        return records


def stored_policies(rows: Sequence[ActualTask]) -> PolicyOf:
    """Policies of stored task rows, built when asked for (before the scheduler knows
    any task: the runs abandoned at start-up)."""
    by_name = {r.name: r for r in rows}

    @functools.cache
    def policy_of(name: str) -> TaskPolicy | None:
        row = by_name.get(name)
        if row is None:
            return None
        try:
            # asked for retries, not slots: the calendars do not matter here
            return TaskPolicy.from_document(row.name, row.generation, row.document,
                                            row.suspended, {})
        except (ValueError, ReconcilerError):  # unusable stored spec: the scheduler logs it
            return None

    return policy_of


def _rows(pairs: Sequence[tuple[str, NotifyEvent]], labels: dict[str, str], clock: Clock,
          record: RunRecord) -> list[NewNotification]:
    return outbox_rows(record, pairs, labels, record.finished_at or clock.now())

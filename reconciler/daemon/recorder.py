"""What the scheduler writes besides starting runs, and how it rides out a database
outage: rows deferred until they are due or the database answers again (missed slots,
the rows of unclaimed slots), the ends of runs that could not be recorded, and the
schedule state (``next_fire_at``, ``last_slot_at``, ``last_success_at``) written in
batches. Failed writes are logged once every :data:`DB_LOG_EVERY` seconds of an
outage, and the last failure is kept for ``/readyz`` (its ``writes`` check)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from reconciler.core.clock import Clock
from reconciler.core.errors import ReconcilerError
from reconciler.core.protocols import NewRun, RunStore
from reconciler.core.runtime import RunStatus
from reconciler.daemon.notices import Notices, PolicyOf
from reconciler.daemon.runs import SchedulerListener
from reconciler.daemon.worker import StoreWorker

log = logging.getLogger("reconciler.scheduler")

#: During a database outage, failed writes are logged once per this many seconds.
DB_LOG_EVERY = 10.0


class Recorder:
    def __init__(self, store: RunStore, worker: StoreWorker, clock: Clock,
                 listener: SchedulerListener, max_deferred_rows: int, notices: Notices,
                 policy_of: PolicyOf) -> None:
        self.store = store
        self.notices = notices
        self.policy_of = policy_of
        self.worker = worker
        self.clock = clock
        self.listener = listener
        self.max_deferred_rows = max_deferred_rows
        #: Why the last write to the database failed; None once a write succeeded
        #: again. A database can answer reads while refusing writes (a read-only or
        #: full file system): /readyz reports this as its ``writes`` check.
        self.write_error: str | None = None
        self._db_logged_at: float | None = None  # monotonic, of the last failure logged
        self._db_quiet = 0  # failures logged at debug level since
        self._state_updates: dict[str, dict[str, datetime | None]] = {}
        self._deferred: list[tuple[datetime, NewRun]] = []
        # The ends of runs that could not be recorded (database down): (id, status, write)
        self._unrecorded: list[tuple[int, RunStatus, Callable[[], bool]]] = []

    def state(self, name: str, key: str, value: datetime | None) -> None:
        """Set a schedule-state column of a task at the next flush."""
        self._state_updates.setdefault(name, {})[key] = value

    def unrecorded(self, run_id: int, status: RunStatus, write: Callable[[], bool]) -> None:
        """The end of a run that could not be written (``write`` writes it with its
        notifications): retried at every flush (left ``running``, a peer would mark it
        abandoned and might run the slot again)."""
        if len(self._unrecorded) < self.max_deferred_rows:
            self._unrecorded.append((run_id, status, write))

    def wrote(self, error: Exception | None = None) -> None:
        """Record the outcome of a write to the database (for readiness)."""
        if error is None:
            if self.write_error is not None:
                log.info("writes to the database succeed again (%d similar message(s) "
                         "of the outage were logged at debug level)", self._db_quiet)
            self.write_error = None
            self._db_logged_at, self._db_quiet = None, 0
        else:
            self.write_error = str(error)[:500]

    def write_failed(self, error: Exception, level: int, message: str, *args: Any) -> None:
        """A write failed: for readiness, and logged at ``level`` once every
        :data:`DB_LOG_EVERY` of an outage (debug otherwise), not several times a second."""
        self.wrote(error)
        now = self.clock.monotonic()
        if self._db_logged_at is not None and now - self._db_logged_at < DB_LOG_EVERY:
            self._db_quiet += 1
            log.debug(message, *args)
            return
        if self._db_logged_at is not None:
            message += " (still failing; %d similar message(s) at debug level since)"
            args = (*args, self._db_quiet)
        self._db_logged_at, self._db_quiet = now, 0
        log.log(level, message, *args)

    def defer(self, due: datetime, row: NewRun) -> None:
        if len(self._deferred) < self.max_deferred_rows:
            self._deferred.append((due, row))
        else:
            log.error("deferred run rows are full; slot %s of %s is not recorded",
                      row.slot.isoformat(), row.task_name)

    async def flush_deferred(self) -> None:
        """Insert deferred rows that are due (ignored where the slot already has a row)."""
        if not self._deferred:
            return
        now = self.clock.now()
        due = [row for at, row in self._deferred if at <= now]
        if not due:
            return
        try:
            records = await self.worker.call(self.notices.insert_runs, due, self.policy_of)
        except ReconcilerError as exc:
            self.write_failed(exc, logging.WARNING,
                               "could not record %d deferred run row(s) yet: %s", len(due), exc)
            return
        self.wrote()
        self._deferred = [(at, row) for at, row in self._deferred if at > now]
        recorded = [r for r in records if r is not None]
        for record in recorded:
            log.debug("slot %s of %s recorded %s: %s", record.slot.isoformat(),
                      record.task_name, record.status, record.reason)
            self.listener.run_recorded(record)
        if recorded:  # one line, not one per slot: an outage can leave thousands
            first = recorded[0]
            log.warning("recorded %d slot(s) of %d task(s) late, e.g. slot %s of %s %s: %s",
                        len(recorded), len({r.task_name for r in recorded}),
                        first.slot.isoformat(), first.task_name, first.status, first.reason)

    async def flush_unrecorded(self) -> None:
        """Record the ends of runs that finished while the database was unreachable."""
        pending, self._unrecorded = self._unrecorded, []
        for i, (run_id, status, write) in enumerate(pending):
            try:
                await self.worker.call(write)
            except ReconcilerError as exc:
                self.write_failed(exc, logging.WARNING,
                                   "could not record the end of %d run(s) yet: %s",
                                   len(pending) - i, exc)
                self._unrecorded[:0] = pending[i:]
                return
            log.info("recorded the end of run %d (%s) late", run_id, status)

    async def flush_state(self) -> None:
        if self._unrecorded:
            await self.flush_unrecorded()
        await self.flush_deferred()
        if not self._state_updates:
            return
        updates, self._state_updates = self._state_updates, {}
        try:
            await self.worker.call(self.store.set_schedule_state, updates)
        except ReconcilerError as exc:
            self.write_failed(exc, logging.WARNING, "could not persist schedule state: %s",
                               exc)
            for k, v in updates.items():  # keep them for the next flush
                self._state_updates.setdefault(k, {}).update(v)


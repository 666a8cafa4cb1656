"""The operations on tasks and runs, written once: trigger, suspend, resume, cancel.

The CLI against the database, the HTTP API and the daemon all call
:class:`TaskOperations`; the CLI against a server calls the API, which calls this.
Each operation checks what it must, writes its rows, leaves one audit row (one
writer for every client) and, inside a daemon, hands the run to the scheduler through
the :class:`RunHost` port. Without a daemon (the CLI on the database) a run is a
``pending`` row that the daemon's poll loop starts within a second.

The rules, the same from every door:

* **trigger** checks the values given for the task's parameters (``spec.params``,
  :func:`~reconciler.core.params.bind_params`: an unknown name, a wrong type, a
  missing required value or a secret one is refused naming the parameter, exit 1,
  HTTP 422) and records them on the run row; then it follows the task's concurrency
  policy. Forbid with a run active (or
  starting) is refused (exit 1, HTTP 409), Replace cancels the active run, Allow
  overlaps. Without a daemon at hand the active runs are read from the run rows.
* **suspend** and **resume** are idempotent: suspending a suspended task, or resuming
  one that is not suspended, changes nothing and says so (exit 0, no run).
* **resume with catch-up** runs the newest slot that came while the task was
  suspended, if one did.
* **cancel** stops a live run of this daemon, or a pending run nobody took yet.
* **backfill** stores a backfill of a task's slots in ``[from, to)`` (read in the task's
  zone, :func:`~reconciler.core.backfill.range_bound`); a daemon carries it out
  (``daemon/backfills.py``). Refused (exit 1, HTTP 409) for a range without slots or
  with more than :data:`~reconciler.core.backfill.MAX_BACKFILL_SLOTS`; ``parallel``
  is at least 1. **cancel_backfill** stops one that has not finished: no further slot
  starts (runs already started finish); cancelling a cancelled one changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ParamSpec, Protocol, TypeVar

from reconciler.core.backfill import (
    BackfillRecord,
    BackfillState,
    NewBackfill,
    backfill_slots,
    range_bound,
)
from reconciler.core.calendars import calendars_of_rows
from reconciler.core.clock import Clock
from reconciler.core.errors import (
    DuplicateRunError,
    OperationRefused,
    ReconcilerError,
    TaskNotFoundError,
)
from reconciler.core.model import ConcurrencyPolicy, TaskManifest
from reconciler.core.params import (
    ParamError,
    ParamValue,
    bind_params,
    defaults,
    row_values,
    shown_values,
)
from reconciler.core.protocols import NewRun
from reconciler.core.redaction import redact
from reconciler.core.runtime import (
    ActualCalendar,
    ActualTask,
    RunRecord,
    RunStatus,
    SuspendOverride,
    Trigger,
)
from reconciler.core.scheduling import TaskSlots, Verdict, concurrency_verdict

log = logging.getLogger("reconciler.operations")

P = ParamSpec("P")
T = TypeVar("T")
#: How a store call is made: on a worker thread in the daemon, inline in the CLI.
StoreCall = Callable[..., Awaitable[Any]]
#: Rows that stand for a run that may be executing (the CLI's view of "active").
ACTIVE = (RunStatus.RUNNING,)


class OperationsStore(Protocol):
    """The store calls the operations make (a subset of the store's ports)."""

    def get_task(self, name: str, *, include_deleted: bool = False) -> ActualTask | None: ...

    def load_calendars(self) -> list[ActualCalendar]: ...

    def set_override(self, name: str, override: SuspendOverride | None) -> ActualTask: ...

    def insert_run(self, run: NewRun) -> RunRecord: ...

    def get_run(self, run_id: int) -> RunRecord | None: ...

    def list_runs(self, task_name: str | None = None, *, limit: int = 50,
                  statuses: Sequence[RunStatus] = ()) -> list[RunRecord]: ...

    def next_attempt(self, task_name: str, slot: datetime) -> int: ...

    def claim_pending_run(self, run_id: int, *, replica: str, fencing_token: int | None,
                          started_at: datetime, status: RunStatus = RunStatus.RUNNING,
                          reason: str | None = None) -> bool: ...

    def add_audit(self, *, at: datetime, actor: str, action: str, target: str | None,
                  outcome: str, client: str | None = None,
                  detail: Mapping[str, Any] | None = None) -> int: ...

    def add_backfill(self, backfill: NewBackfill) -> BackfillRecord: ...

    def get_backfill(self, backfill_id: int) -> BackfillRecord | None: ...

    def update_backfill(self, backfill_id: int, *, state: BackfillState, done: int,
                        failed: int, now: datetime, reason: str | None = None) -> bool: ...


class RunHost(Protocol):
    """The daemon's side: its scheduler, for the operations that run in it."""

    replica: str

    def accepting(self) -> bool:
        """False while the daemon shuts down."""

    def policy(self, task: str) -> ConcurrencyPolicy | None:
        """The task's policy as the scheduler knows it; None: it cannot run it."""

    def busy(self, task: str) -> int:
        """Runs of the task active or being started in this daemon."""

    async def start_pending(self, task: str, pending: RunRecord) -> RunRecord | None:
        """Start a pending row now (None: it was not started here)."""

    async def synced(self, row: ActualTask) -> None:
        """The task's row changed (suspend/resume): re-plan it."""

    def cancel_live(self, task: str, run_id: int, reason: str) -> tuple[RunRecord, bool] | None:
        """Cancel a run executing here: (record, changed), or None when not live here."""

    def recorded(self, record: RunRecord) -> None:
        """A run row was written or changed by an operation (for the API's views)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: ``actor`` (token name or ``user@host``), the ``client`` for the audit
    row (an address, or ``cli``) and ``via`` for run reasons ("API", "CLI")."""

    actor: str
    client: str | None = None
    via: str = "API"


@dataclass(frozen=True, slots=True)
class ResumeResult:
    task: ActualTask
    changed: bool
    run: RunRecord | None = None
    #: Why no catch-up run was made although one was asked for (None otherwise).
    no_catch_up: str | None = None


async def _inline(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    return fn(*args, **kwargs)


def _default_values(row: ActualTask) -> dict[str, ParamValue] | None:
    """The parameters of a run of the schedule (a catch-up): the defaults."""
    try:
        declared = TaskManifest.model_validate(row.document).spec.params
    except ValueError:
        return None  # the daemon records why it cannot run it
    return row_values(declared, defaults(declared))


class TaskOperations:
    """trigger, suspend, resume and cancel, with their audit rows (see the module)."""

    def __init__(self, store: OperationsStore, clock: Clock, *,
                 call: StoreCall = _inline, host: RunHost | None = None) -> None:
        self.store = store
        self.clock = clock
        self.call = call
        self.host = host

    # ------------------------------------------------------------------ audit

    async def audit(self, caller: Caller, action: str, target: str, outcome: str,
                    detail: Mapping[str, Any] | None = None) -> None:
        """The audit row of an operation (written after it; a failure is logged)."""
        detail = redact(dict(detail)) if detail else None
        log.info("%s: %s %s %s by %s: %s", caller.via, action, target, detail or "",
                 caller.actor, outcome)
        try:
            await self.call(self.store.add_audit, at=self.clock.now(), actor=caller.actor,
                            action=action, target=target, outcome=outcome,
                            client=caller.client, detail=detail)
        except ReconcilerError as exc:
            log.error("could not write the audit row for %s %s by %s: %s", action, target,
                      caller.actor, exc)

    async def _task(self, name: str) -> ActualTask:
        row: ActualTask | None = await self.call(self.store.get_task, name)
        if row is None:
            raise TaskNotFoundError(name)
        return row

    # ---------------------------------------------------------------- trigger

    async def trigger(self, name: str, caller: Caller,
                      params: Mapping[str, object] | None = None) -> RunRecord:
        """Run a task now, with ``params`` over its parameters' defaults, by its
        concurrency policy (see the module)."""
        try:
            record = await self._trigger(name, caller, params or {})
        except OperationRefused as exc:
            await self.audit(caller, "trigger", name, exc.code)
            raise
        detail: dict[str, Any] = {"run": record.id}
        if params:
            detail["params"] = shown_values(dict(params))
        await self.audit(caller, "trigger", name, "ok", detail)
        return record

    async def _trigger(self, name: str, caller: Caller, given: Mapping[str, object]
                       ) -> RunRecord:
        row = await self._task(name)
        manifest = self._manifest(row)
        try:
            values = row_values(manifest.spec.params,
                                bind_params(manifest.spec.params, given))
        except ParamError as exc:
            raise OperationRefused(f"{name}: {exc}", status=422, code="invalid_params"
                                   ) from None
        policy = self.host.policy(name) if self.host is not None else None
        if self.host is not None and policy is None:
            raise OperationRefused(f"task {row.name!r} cannot run: its stored spec is not "
                                   "usable by this daemon (see the daemon log)")
        if self.host is not None and not self.host.accepting():
            raise OperationRefused("the daemon is shutting down", status=503,
                                   code="shutting_down")
        busy = await self._busy(name)
        if concurrency_verdict(policy or manifest.spec.concurrency_policy,
                               busy) is Verdict.SKIPPED:
            raise OperationRefused(f"{name}: a run is active and concurrencyPolicy is Forbid")
        pending = await self._insert_pending(row, caller, values)
        if self.host is None:
            return pending  # the daemon's poll loop starts it
        self.host.recorded(pending)
        started = await self.host.start_pending(name, pending)
        record = started or await self.call(self.store.get_run, pending.id) or pending
        if record.status is RunStatus.SKIPPED:
            raise OperationRefused(f"{name}: a run is active and concurrencyPolicy is Forbid "
                                   f"(run {record.id} recorded as skipped)")
        return record

    @staticmethod
    def _manifest(row: ActualTask) -> TaskManifest:
        try:
            return TaskManifest.model_validate(row.document)
        except ValueError as exc:
            raise OperationRefused(f"task {row.name!r} cannot run: its stored spec is not "
                                   f"usable: {exc}") from None

    async def _busy(self, name: str) -> int:
        if self.host is not None:
            return self.host.busy(name)
        active = await self.call(self.store.list_runs, name, limit=1, statuses=list(ACTIVE))
        return len(active)

    async def _insert_pending(self, row: ActualTask, caller: Caller,
                              params: Mapping[str, ParamValue] | None) -> RunRecord:
        slot = self.clock.now()
        for _ in range(100):  # two triggers within the same microsecond: the next one
            try:
                record: RunRecord = await self.call(self.store.insert_run, NewRun(
                    task_name=row.name, slot=slot, attempt=1, trigger=Trigger.MANUAL,
                    status=RunStatus.PENDING,
                    reason=f"triggered by {caller.actor} ({caller.via})",
                    generation=row.generation, params=params,
                ))
                return record
            except DuplicateRunError:
                slot += timedelta(microseconds=1)
        raise OperationRefused(f"{row.name}: too many triggers at {slot.isoformat()}")

    # ---------------------------------------------------------- suspend/resume

    async def suspend(self, name: str, note: str | None, caller: Caller
                      ) -> tuple[ActualTask, bool]:
        """Suspend at run time; (row, changed): False when it already was."""
        row = await self._task(name)
        changed = not row.suspended
        if changed:
            row = await self.call(self.store.set_override, name,
                                  SuspendOverride(True, note, caller.actor, self.clock.now()))
            if self.host is not None:
                await self.host.synced(row)
        await self.audit(caller, "suspend", name, "ok" if changed else "unchanged",
                         {"note": note})
        return row, changed

    async def resume(self, name: str, catch_up: bool, caller: Caller) -> ResumeResult:
        """Resume a task suspended at run time or in git; a task that is not suspended
        is left alone (no catch-up run either)."""
        before = await self._task(name)
        if not before.suspended:
            await self.audit(caller, "resume", name, "unchanged",
                             {"catchUp": catch_up, "run": None})
            return ResumeResult(before, False)
        override = (SuspendOverride(False, None, caller.actor, self.clock.now())
                    if before.suspended_in_git else None)
        row = await self.call(self.store.set_override, name, override)
        if self.host is not None:
            await self.host.synced(row)
        run, why = await self._catch_up(row, before, caller) if catch_up else (None, None)
        await self.audit(caller, "resume", name, "ok",
                         {"catchUp": catch_up, "run": run.id if run else None})
        return ResumeResult(row, True, run, why)

    async def _catch_up(self, row: ActualTask, before: ActualTask, caller: Caller
                        ) -> tuple[RunRecord | None, str | None]:
        now = self.clock.now()
        try:
            rows = await self.call(self.store.load_calendars)
            calendars = calendars_of_rows(rows)
            slot = TaskSlots.from_document(row.document, calendars).previous_before(now)
        except (ReconcilerError, ValueError) as exc:
            return None, f"the schedule cannot be read: {exc}"
        since = before.override.at if before.override and before.override.suspended else None
        if slot is None or (since is not None and slot < since):
            return None, "no slot came while it was suspended"
        attempt = await self.call(self.store.next_attempt, row.name, slot)
        pending: RunRecord = await self.call(self.store.insert_run, NewRun(
            task_name=row.name, slot=slot, attempt=attempt, trigger=Trigger.CATCH_UP,
            status=RunStatus.PENDING,
            reason=f"catch-up on resume by {caller.actor} ({caller.via})",
            generation=row.generation, params=_default_values(row),
        ))
        if self.host is None:
            return pending, None
        self.host.recorded(pending)
        started = await self.host.start_pending(row.name, pending)
        current = started or await self.call(self.store.get_run, pending.id)
        return current or pending, None

    # ----------------------------------------------------------------- cancel

    async def cancel(self, run_id: int, caller: Caller) -> tuple[RunRecord, bool]:
        """Cancel a run: (record, changed). Refused for a run that already ended
        otherwise, or that runs on another replica."""
        try:
            record, changed = await self._cancel(run_id, caller)
        except OperationRefused as exc:
            await self.audit(caller, "cancel", f"run/{run_id}", exc.code)
            raise
        await self.audit(caller, "cancel", f"run/{run_id}", "ok" if changed else "unchanged",
                         {"task": record.task_name})
        return record, changed

    async def _cancel(self, run_id: int, caller: Caller) -> tuple[RunRecord, bool]:
        record: RunRecord | None = await self.call(self.store.get_run, run_id)
        if record is None:
            raise OperationRefused(f"run {run_id} not found", status=404, code="not_found")
        if record.status.finished:
            if record.status is RunStatus.CANCELLED:
                return record, False
            raise OperationRefused(f"run {run_id} already finished: {record.status}")
        reason = f"cancelled by {caller.actor} ({caller.via})"
        if self.host is not None:
            live = self.host.cancel_live(record.task_name, run_id, reason)
            if live is not None:
                return live
        if record.status is RunStatus.PENDING and record.replica is None:
            replica = self.host.replica if self.host is not None else "cli"
            ok = await self.call(
                self.store.claim_pending_run, run_id, replica=replica, fencing_token=None,
                started_at=self.clock.now(), status=RunStatus.CANCELLED,
                reason=f"{reason} before it started",
            )
            current: RunRecord | None = await self.call(self.store.get_run, run_id)
            if ok and current is not None:
                if self.host is not None:
                    self.host.recorded(current)
                return current, True
            if current is not None and self.host is not None:
                live = self.host.cancel_live(current.task_name, run_id, reason)
                if live is not None:  # the scheduler took it meanwhile
                    return live
            if current is not None and current.status.finished:
                return current, False
        here = self.host.replica if self.host is not None else "the command line"
        where = f"replica {record.replica}" if record.replica else "no replica yet"
        raise OperationRefused(f"run {run_id} is {record.status} on {where}, not on {here}; "
                               "cancel it there")

    # --------------------------------------------------------------- backfill

    async def backfill(self, name: str, start: str, end: str, caller: Caller, *,
                       parallel: int = 1, rerun: bool = False) -> BackfillRecord:
        """Store a backfill of ``name`` over ``[start, end)`` (see the module)."""
        try:
            record = await self._backfill(name, start, end, caller, parallel, rerun)
        except OperationRefused as exc:
            await self.audit(caller, "backfill", name, exc.code, {"from": start, "to": end})
            raise
        await self.audit(caller, "backfill", name, "ok", {
            "backfill": record.id, "from": start, "to": end, "parallel": parallel,
            "rerun": rerun, "slots": record.total})
        return record

    async def backfill_slots(self, name: str, start: str, end: str
                             ) -> tuple[ActualTask, datetime, datetime, list[datetime]]:
        """The stored task, the range read in its zone and its slots in [start, end),
        after its active window and calendars: what a backfill runs (and a dry run shows)."""
        row = await self._task(name)
        calendars = calendars_of_rows(await self.call(self.store.load_calendars))
        try:
            slots = TaskSlots.from_document(row.document, calendars)
            begin = range_bound(start, row.time_zone, "from")
            until = range_bound(end, row.time_zone, "to")
            return row, begin, until, list(backfill_slots(slots, begin, until))
        except (ReconcilerError, ValueError) as exc:
            raise OperationRefused(f"{name}: {exc}") from None

    async def _backfill(self, name: str, start: str, end: str, caller: Caller,
                        parallel: int, rerun: bool) -> BackfillRecord:
        if parallel < 1:
            await self._task(name)
            raise OperationRefused(f"parallel must be at least 1 (got {parallel})",
                                   status=400, code="invalid")
        _, begin, until, found = await self.backfill_slots(name, start, end)
        total = len(found)
        if not total:
            raise OperationRefused(f"{name}: no slots in [{begin.isoformat()}, "
                                   f"{until.isoformat()})")
        record: BackfillRecord = await self.call(self.store.add_backfill, NewBackfill(
            task_name=name, start=begin, end=until, parallel=parallel, rerun=rerun,
            total=total, created_by=caller.actor, created_at=self.clock.now()))
        return record

    async def cancel_backfill(self, backfill_id: int, caller: Caller
                              ) -> tuple[BackfillRecord, bool]:
        """Cancel a backfill: (record, changed). Refused when it finished otherwise."""
        target = f"backfill/{backfill_id}"
        record: BackfillRecord | None = await self.call(self.store.get_backfill, backfill_id)
        if record is None:
            await self.audit(caller, "cancel", target, "not_found")
            raise OperationRefused(f"backfill {backfill_id} not found", status=404,
                                   code="not_found")
        changed = await self.call(
            self.store.update_backfill, backfill_id, state=BackfillState.CANCELLED,
            done=record.done, failed=record.failed, now=self.clock.now(),
            reason=f"cancelled by {caller.actor} ({caller.via})")
        current: BackfillRecord = await self.call(self.store.get_backfill, backfill_id) or record
        if not changed and current.state is not BackfillState.CANCELLED:
            await self.audit(caller, "cancel", target, "conflict")
            raise OperationRefused(f"backfill {backfill_id} already finished: {current.state}")
        await self.audit(caller, "cancel", target, "ok" if changed else "unchanged",
                         {"task": current.task_name})
        return current, changed

"""Extension points, all in one module (the APScheduler 4 way).

Adapters implement these Protocols: the SQLAlchemy store, the executors, and (later)
the claim/lock implementations. The daemon and the CLI depend on these shapes only,
which is what lets one contract test suite run against every implementation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from reconciler.core.backfill import BackfillRecord, BackfillState, NewBackfill
from reconciler.core.model import Limits, Param, RunSpec
from reconciler.core.outbox import (
    NewNotification,
    NotificationRecord,
    NotificationUpdate,
    NotifyBuilder,
    OutboxStatus,
)
from reconciler.core.plan import Plan
from reconciler.core.runtime import (
    ActualCalendar,
    ActualChannel,
    ActualTask,
    ApplyRecord,
    GitRevision,
    RunRecord,
    RunStatus,
    SuspendOverride,
    Trigger,
)

# ----------------------------------------------------------------------------- store


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run row to insert; (task_name, slot, attempt) is unique across the table."""

    task_name: str
    slot: datetime
    attempt: int
    trigger: Trigger
    status: RunStatus
    replica: str | None = None
    fencing_token: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None
    generation: int | None = None
    params: Mapping[str, Any] | None = None  # spec.params values (core/params.row_values)


class TaskStore(Protocol):
    """The runtime table, for planning and applying (service, CLI, daemon resync).

    ``apply_plan`` is the only writer of task definitions; operators' suspend
    overrides are the only other writes to a task row besides the scheduler's columns.
    """

    def upgrade(self) -> None:
        """Create or migrate the schema to the newest revision."""

    def load_tasks(self) -> list[ActualTask]:
        """Every live (not deleted) task, by name."""

    def get_task(self, name: str, *, include_deleted: bool = False) -> ActualTask | None: ...

    def load_channels(self) -> list[ActualChannel]:
        """Every channel (``kind: Channel``), by name; ``apply_plan`` writes them."""

    def load_calendars(self) -> list[ActualCalendar]:
        """Every calendar (``kind: Calendar``), by name; ``apply_plan`` writes them."""

    def get_tasks(self, names: Sequence[str]) -> list[ActualTask]:
        """The live tasks among ``names``, by name; unknown and deleted names are left out."""

    def apply_plan(
        self, plan: Plan, *, actor: str, revision: GitRevision | None, now: datetime
    ) -> ApplyRecord:
        """Write a plan's creates, updates and deletes plus an ``applies`` row, atomically.

        Raises ``PlanRefusedError`` for a refused plan and ``StoreError`` when a row
        changed since the plan was made (optimistic check on generation).
        """

    def set_override(self, name: str, override: SuspendOverride | None) -> ActualTask:
        """Set or clear a runtime suspend override (raises ``TaskNotFoundError``)."""

    def override_marker(self) -> tuple[datetime | None, int, int]:
        """A fingerprint of every suspend override; changes on every ``set_override``."""


class RunStore(Protocol):
    """What the scheduler writes: run records and the scheduler columns of tasks.

    Inserting a duplicate (task, slot, attempt) raises ``DuplicateRunError``.
    """

    def insert_run(self, run: NewRun) -> RunRecord: ...

    def insert_runs(
        self, batch: Sequence[NewRun], *, notify: NotifyBuilder | None = None
    ) -> list[RunRecord | None]:
        """Insert many in one transaction; None where the unique key was already taken.

        ``notify`` is called with each inserted run; the outbox rows it returns are
        written in the same transaction."""

    def update_run(
        self, run_id: int, *, fencing_token: int | None = None,
        notify: NotifyBuilder | None = None, **values: Any,
    ) -> bool:
        """Update columns of a run; refused (False) when the row carries a newer fencing
        token. When the row was updated, ``notify`` is called with the run as written and
        the outbox rows it returns are written in the same transaction."""

    def get_run(self, run_id: int) -> RunRecord | None: ...

    def list_runs(
        self, task_name: str | None = None, *, limit: int = 50, statuses: Sequence[RunStatus] = ()
    ) -> list[RunRecord]: ...

    def prune_runs(self, task_name: str, *, successful: int, failed: int) -> int:
        """Keep the newest N successful and N failed finished runs; return how many were deleted."""

    def claim_pending_run(
        self,
        run_id: int,
        *,
        replica: str,
        fencing_token: int | None,
        started_at: datetime,
        status: RunStatus = RunStatus.RUNNING,
        reason: str | None = None,
    ) -> bool:
        """Take a ``pending`` run; True only for the one caller that got it."""

    def abandon_runs(
        self, *, replica: str, stale_before: datetime | None, now: datetime, reason: str,
        notify: NotifyBuilder | None = None,
    ) -> list[RunRecord]:
        """Mark runs whose process is gone ``abandoned``; return them (oldest id first).
        ``notify`` is called with each run as written; the outbox rows it returns are
        written in the same transaction."""

    def runs_of_slot(self, task_name: str, slot: datetime) -> list[RunRecord]:
        """Every run of ``(task_name, slot)``, by attempt (``spec.deadline``)."""

    def next_attempt(self, task_name: str, slot: datetime) -> int:
        """1 + the highest attempt recorded for ``(task_name, slot)``; 1 when there is none."""

    def set_schedule_state(self, updates: Mapping[str, Mapping[str, datetime | None]]) -> None:
        """Persist scheduler columns, e.g. ``{"t": {"next_fire_at": ..., "last_slot_at": ...}}``."""


class ReadModel(Protocol):
    """Aggregate reads for the API, the dashboard and ``reconciler status``."""

    def ping(self) -> None:
        """Raise ``StoreError`` when the store cannot be reached."""

    def load_calendars(self) -> list[ActualCalendar]:
        """Every calendar, for the next fire times of the tasks that name one."""

    def latest_runs(
        self, names: Sequence[str] | None = None, *, executed: bool = False
    ) -> dict[str, RunRecord]:
        """The newest run (highest id) per task; with ``executed``, of runs that ran."""

    def run_counts(self, task_name: str) -> dict[str, int]:
        """Run rows of one task per status (statuses with none left out)."""

    def count_runs(self, task_name: str | None = None) -> int: ...

    def list_applies(self, limit: int = 20) -> list[ApplyRecord]: ...

    def apply_summary(self, apply_id: int) -> dict[str, Any] | None:
        """The JSON summary of one apply: task names per action."""


class AuditStore(Protocol):
    """One row per operator action (API mutations, CLI trigger/suspend/resume)."""

    def add_audit(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        target: str | None,
        outcome: str,
        client: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> int: ...

    def list_audit(
        self, *, limit: int = 50, target: str | None = None, before_id: int | None = None
    ) -> list[dict[str, Any]]:
        """Newest first: ``id``, ``at``, ``actor``, ``action``, ``target``, ``outcome``,
        ``client`` and ``detail``."""


class ReplicaStore(Protocol):
    """One status row per daemon replica."""

    def write_replica_status(
        self, replica: str, status: Mapping[str, Any] | None, now: datetime
    ) -> None:
        """Upsert a replica's row (heartbeat); ``status=None`` marks it stopped."""

    def list_replicas(self, *, include_stopped: bool = True) -> list[dict[str, Any]]: ...

    def delete_stale_replicas(self, before: datetime) -> int: ...


class NotificationStore(Protocol):
    """The notification outbox (rows are written with the run's status, see ``RunStore``).

    Exactly one sender holds a row at a time: ``claim_notifications`` takes due rows
    whose lease is free or ran out; ``finish_notifications`` writes back only rows the
    caller still holds.
    """

    def add_notifications(self, rows: Sequence[NewNotification]) -> list[int]:
        """Write outbox rows on their own (not tied to a run); return their ids."""

    def claim_notifications(
        self, *, replica: str, now: datetime, lease: timedelta, limit: int = 100,
        takeover: bool = False,
    ) -> list[NotificationRecord]:
        """Claim ``pending`` rows due at ``now`` (oldest first) whose lease is free or
        ran out (``takeover``: whatever their lease; a single replica at start-up)."""

    def finish_notifications(
        self, updates: Sequence[NotificationUpdate], *, replica: str
    ) -> int:
        """Write back rows claimed by ``replica`` (released); rows it no longer holds
        are left alone. Returns how many were written."""

    def last_sent(
        self, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], datetime]:
        """The newest ``sent_at`` per (channel, task, event) among ``keys``."""

    def list_notifications(
        self, task_name: str | None = None, *, limit: int = 50,
        statuses: Sequence[OutboxStatus] = (),
    ) -> list[NotificationRecord]:
        """Newest first (by id)."""

    def notification_counts(self) -> dict[str, int]:
        """Outbox rows per status (statuses with none left out)."""


class BackfillStore(Protocol):
    """Backfills (``reconciler backfill``) and the runs they started.

    ``insert_backfill_run`` writes a run row and the backfill's ledger row for its slot
    in one transaction; the ledger's key (backfill, slot) and the run's (task, slot,
    attempt) make a slot start at most once per backfill, whichever replica drives it.
    """

    def add_backfill(self, backfill: NewBackfill) -> BackfillRecord:
        """Store a new backfill (state ``pending``, nothing done)."""

    def get_backfill(self, backfill_id: int) -> BackfillRecord | None: ...

    def list_backfills(
        self, *, task_name: str | None = None, states: Sequence[BackfillState] = (),
        limit: int = 50,
    ) -> list[BackfillRecord]:
        """Newest first (by id)."""

    def update_backfill(
        self, backfill_id: int, *, state: BackfillState, done: int, failed: int,
        now: datetime, reason: str | None = None,
    ) -> bool:
        """Write a backfill's state and progress; only while it has not finished (a
        cancelled backfill stays cancelled). ``finished_at`` = ``now`` when ``state``
        is a finished one. False: unknown or already finished."""

    def insert_backfill_run(self, backfill_id: int, run: NewRun) -> RunRecord | None:
        """The run of one slot of a backfill and its ledger row, together; None when the
        backfill has a run for that slot already, or the run's key is taken."""

    def backfill_ledger(self, backfill_id: int) -> dict[datetime, int]:
        """The slots the backfill started, each with the attempt of its run."""

    def runs_between(self, task_name: str, start: datetime, end: datetime) -> list[RunRecord]:
        """Every run of a task whose slot is in ``[start, end)``, oldest slot first."""


class Store(TaskStore, RunStore, ReadModel, AuditStore, ReplicaStore, NotificationStore,
            BackfillStore, Protocol):
    """Every port together: what the SQL store and the in-memory store implement."""

    def close(self) -> None: ...


#: The ports, one per kind of caller (the contract suite checks each implementation).
STORE_PORTS: tuple[type, ...] = (TaskStore, RunStore, ReadModel, AuditStore, ReplicaStore,
                                 NotificationStore, BackfillStore, Store)


# ------------------------------------------------------------------------- executors


@dataclass(frozen=True, slots=True)
class ExecutionRequest:
    task: str
    run_id: int
    slot: datetime
    attempt: int
    run: RunSpec
    timeout: timedelta | None = None
    output_limit: int = 64 * 1024
    kill_grace: timedelta = timedelta(seconds=5)
    extra_env: Mapping[str, str] = field(default_factory=dict)
    limits: Limits | None = None  # spec.limits (process runs)
    #: The run's parameter values (the run row's; a secret one is resolved from
    #: ``param_specs`` at run time) and the task's declarations (``spec.params``).
    params: Mapping[str, Any] = field(default_factory=dict)
    param_specs: Mapping[str, Param] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    status: RunStatus  # SUCCEEDED, FAILED, TIMED_OUT or CANCELLED
    exit_code: int | None = None
    error: str | None = None
    output_tail: str = ""
    output_truncated: bool = False  # the output was longer than output_tail (cut at the start)


class ExecutionEvents(Protocol):
    """Callbacks an executor makes while a run is live (called on the event loop)."""

    def output(self, text: str) -> None: ...

    def progress(self, percent: float | None, message: str | None) -> None: ...


class Executor(Protocol):
    """Runs one attempt. Never raises for a failing task: failures are results."""

    async def execute(
        self, request: ExecutionRequest, events: ExecutionEvents, cancel: asyncio.Event
    ) -> ExecutionResult: ...


# ---------------------------------------------------------------------------- claims


class Claim(Protocol):
    """The right to run one (task, slot, attempt), held until released.

    ``token`` is a fencing token: it grows with every grant for the same task, and the
    run row records it so updates from an older holder are refused. ``valid`` turns
    False when the claim was lost (e.g. a ZooKeeper session expired).
    """

    @property
    def token(self) -> int: ...

    @property
    def valid(self) -> bool: ...

    async def release(self) -> None: ...


class Claimer(Protocol):
    """Grants claims. In-process for one replica; ZooKeeper locks across replicas."""

    async def claim(self, task: str, slot: datetime, attempt: int) -> Claim | None:
        """Try to claim; None means another holder has it (do nothing, record nothing)."""

    async def close(self) -> None: ...

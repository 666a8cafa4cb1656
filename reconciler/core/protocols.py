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

from reconciler.core.model import RunSpec
from reconciler.core.plan import Plan
from reconciler.core.runtime import (
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


class TaskStore(Protocol):
    """The runtime table. ``apply_plan`` is the only writer of task definitions."""

    def upgrade(self) -> None:
        """Create or migrate the schema to the newest revision."""

    def load_tasks(self) -> list[ActualTask]:
        """Every live (not deleted) task."""

    def get_task(self, name: str, *, include_deleted: bool = False) -> ActualTask | None: ...

    def apply_plan(
        self, plan: Plan, *, actor: str, revision: GitRevision | None, now: datetime
    ) -> ApplyRecord:
        """Write a plan's creates, updates and deletes plus an ``applies`` row, atomically.

        Raises ``PlanRefusedError`` for a refused plan and ``StoreError`` when a row
        changed since the plan was made (optimistic check on generation).
        """

    def list_applies(self, limit: int = 20) -> list[ApplyRecord]: ...

    def set_override(self, name: str, override: SuspendOverride | None) -> ActualTask:
        """Set or clear a runtime suspend override (raises ``TaskNotFoundError``)."""

    def set_schedule_state(self, updates: Mapping[str, Mapping[str, datetime | None]]) -> None:
        """Persist scheduler columns, e.g. ``{"t": {"next_fire_at": ..., "last_slot_at": ...}}``."""


class RunStore(Protocol):
    """Run records. Inserting a duplicate (task, slot, attempt) raises ``DuplicateRunError``."""

    def insert_run(self, run: NewRun) -> RunRecord: ...

    def insert_runs(self, batch: Sequence[NewRun]) -> list[RunRecord | None]:
        """Insert many in one transaction; None where the unique key was already taken."""

    def update_run(self, run_id: int, *, fencing_token: int | None = None, **values: Any) -> bool:
        """Update columns of a run; refused (False) when the row carries a newer fencing token."""

    def get_run(self, run_id: int) -> RunRecord | None: ...

    def list_runs(
        self, task_name: str | None = None, *, limit: int = 50, statuses: Sequence[RunStatus] = ()
    ) -> list[RunRecord]: ...

    def prune_runs(self, task_name: str, *, successful: int, failed: int) -> int:
        """Keep the newest N successful and N failed finished runs; return how many were deleted."""


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

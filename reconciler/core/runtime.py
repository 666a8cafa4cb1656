"""Plain values describing the runtime table: what the store returns and accepts.

The store adapter maps these to and from SQL rows; nothing here knows about SQL.
All instants are timezone-aware UTC ``datetime`` values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class RunStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    MISSED = "missed"
    ABANDONED = "abandoned"

    @property
    def finished(self) -> bool:
        return self not in (RunStatus.PENDING, RunStatus.RUNNING)


class Trigger(enum.StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    CATCH_UP = "catch-up"
    RETRY = "retry"
    BACKFILL = "backfill"


@dataclass(frozen=True, slots=True)
class GitRevision:
    """The commit a manifests directory was read at; ``dirty`` when the tree had edits."""

    sha: str
    dirty: bool = False

    def __str__(self) -> str:
        return self.sha[:12] + ("-dirty" if self.dirty else "")


@dataclass(frozen=True, slots=True)
class SuspendOverride:
    """A suspend/resume set at run time (CLI/API), outside git."""

    suspended: bool
    note: str | None = None
    actor: str | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ActualTask:
    """One live row of the ``tasks`` table."""

    name: str
    document: dict[str, Any] = field(compare=False, hash=False)
    hash: str
    generation: int
    source_file: str
    source_revision: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    next_fire_at: datetime | None = None
    last_slot_at: datetime | None = None
    last_success_at: datetime | None = None
    override: SuspendOverride | None = None

    @property
    def schedule(self) -> str:
        """The schedule as one line (several expressions joined by ``"; "``)."""
        return "; ".join(self.schedules)

    @property
    def schedules(self) -> tuple[str, ...]:
        value = self.document["spec"]["schedule"]
        return (value,) if isinstance(value, str) else tuple(value)

    @property
    def time_zone(self) -> str:
        return str(self.document["spec"].get("timeZone", "UTC"))

    @property
    def suspended_in_git(self) -> bool:
        return bool(self.document["spec"].get("suspend", False))

    @property
    def suspended(self) -> bool:
        if self.override is not None:
            return self.override.suspended
        return self.suspended_in_git


@dataclass(frozen=True, slots=True)
class ActualObject:
    """One row of the table of a kind other than Task (``channels``, ``calendars``); a
    deleted object's row is removed."""

    name: str
    document: dict[str, Any] = field(compare=False, hash=False)
    hash: str
    generation: int
    source_file: str
    source_revision: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ActualChannel(ActualObject):
    """One row of the ``channels`` table."""


@dataclass(frozen=True, slots=True)
class ActualCalendar(ActualObject):
    """One row of the ``calendars`` table."""


@dataclass(frozen=True, slots=True)
class ApplyRecord:
    """One row of the ``applies`` audit table."""

    id: int
    applied_at: datetime
    actor: str
    revision: str | None
    dirty: bool
    created: int
    updated: int
    deleted: int
    unchanged: int
    kept: int


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One row of the ``runs`` table."""

    id: int
    task_name: str
    slot: datetime
    attempt: int
    trigger: Trigger
    status: RunStatus
    replica: str | None = None
    fencing_token: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    exit_code: int | None = None
    error: str | None = None
    reason: str | None = None
    output_tail: str | None = None
    output_truncated: bool = False  # output_tail is the end of a longer output
    progress_percent: float | None = None
    progress_message: str | None = None
    generation: int | None = None
    #: The run's parameter values (``***`` for a secret one); None: the task declared none
    params: dict[str, Any] | None = field(default=None, hash=False)

    @property
    def lateness_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.started_at - self.slot).total_seconds()

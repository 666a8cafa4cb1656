"""Pydantic models of the API's documents: request bodies and the OpenAPI schema.

Responses are built by :mod:`reconciler.api.views` and :mod:`reconciler.api.index`
(plain dicts, for speed); these models describe them for ``specs/openapi.json``, and
the schemathesis run validates every response against that document, so a key added
in one place and not the other fails the test suite.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reconciler.core.model import RunKind
from reconciler.core.params import ParamValue
from reconciler.core.plan_document import ErrorDoc, PlanDocument

RunStatusName = Literal[
    "pending", "running", "succeeded", "failed", "timed_out", "cancelled", "skipped", "missed",
    "abandoned",
]
TriggerName = Literal["schedule", "manual", "catch-up", "retry", "backfill"]
TaskState = Literal["active", "suspended", "running", "failing"]
NOTE_MAX = 1024


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------ errors


class ErrorDetail(_Doc):
    field: str
    message: str


class ErrorInfo(_Doc):
    code: str = Field(description="Machine-readable, e.g. not_found, unauthorized, conflict.")
    message: str = Field(description="For people.")
    details: list[ErrorDetail] | None = Field(
        default=None, description="Validation errors, one per field.")


class ErrorResponse(_Doc):
    error: ErrorInfo


# -------------------------------------------------------------------------- runs


class RunBrief(_Doc):
    id: int
    status: RunStatusName
    trigger: TriggerName
    attempt: int
    slot: str
    startedAt: str | None
    finishedAt: str | None
    durationSeconds: float | None


class Run(_Doc):
    """A run record (the same keys as ``reconciler runs -o json``)."""

    id: int
    task: str
    slot: str = Field(description="The slot (UTC, ISO 8601) this run is for.")
    attempt: int
    trigger: TriggerName
    status: RunStatusName
    replica: str | None
    startedAt: str | None
    finishedAt: str | None
    latenessSeconds: float | None = Field(description="startedAt - slot.")
    durationSeconds: float | None
    exitCode: int | None
    error: str | None
    reason: str | None
    progressPercent: float | None
    progressMessage: str | None
    generation: int | None
    params: dict[str, ParamValue] | None = Field(
        description="The values of the run's parameters (spec.params): the defaults for a "
                    "run of the schedule; *** for a secret one or one under a "
                    "credential-like name; null when the task declares none.")
    live: bool = Field(description="True while this daemon is executing it.")


class RunDetail(Run):
    outputTail: str | None = Field(
        description="The end of the run's output (live output while it runs), as text.")
    outputTruncated: bool = Field(
        description="The output was longer than outputTail: only its end was kept (or, while "
                    "the run is live, older chunks were dropped).")


class RunList(_Doc):
    items: list[Run]
    count: int


class RunResponse(_Doc):
    run: Run
    changed: bool = True


# ------------------------------------------------------------------------- tasks


class Suspension(_Doc):
    source: Literal["git", "override"]
    note: str | None
    actor: str | None
    at: str | None


class Override(_Doc):
    suspended: bool
    note: str | None
    actor: str | None
    at: str | None


class Source(_Doc):
    file: str
    revision: str | None
    generation: int


class TaskSummary(_Doc):
    name: str
    labels: dict[str, str]
    schedule: str
    scheduleText: str | None = Field(description="The schedule in words.")
    timeZone: str
    runType: RunKind | None
    suspended: bool
    suspension: Suspension | None
    running: int = Field(description="Runs of this task executing now.")
    failing: bool = Field(description="The last executed run failed, timed out or was abandoned.")
    nextFireAt: str | None = Field(description="Next slot, UTC.")
    nextFireAtLocal: str | None = Field(description="Next slot in the task's time zone.")
    lastRun: RunBrief | None
    lastResult: RunBrief | None = Field(description="The last run that executed and finished.")
    source: Source


class TaskList(_Doc):
    items: list[TaskSummary]
    count: int
    total: int = Field(description="Tasks in the runtime table, before filtering.")


class FireTime(_Doc):
    at: str = Field(description="The slot, UTC.")
    local: str = Field(description="The slot in the task's time zone.")
    start: str = Field(description="When the slot starts, UTC: later than the slot by the "
                                   "task's jitter delay, else the slot itself.")


class TaskDetail(TaskSummary):
    annotations: dict[str, str] = Field(description="Credential-looking parts masked as ***.")
    spec: dict[str, Any] = Field(
        description="The stored spec; secrets are masked as *** (see docs/security.md).")
    suspendedInGit: bool
    override: Override | None
    createdAt: str | None
    updatedAt: str | None
    lastSuccessAt: str | None
    nextFireTimes: list[FireTime]
    runCounts: dict[str, int]
    activeRuns: list[Run]


class TaskResponse(_Doc):
    task: TaskSummary
    changed: bool
    run: Run | None = None


# -------------------------------------------------------------------- mutations


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SuspendRequest(_Request):
    note: str | None = Field(default=None, max_length=NOTE_MAX,
                             description="Why; shown in the dashboard and status.")


class TriggerRequest(_Request):
    params: dict[Annotated[str, Field(max_length=64)], ParamValue] = Field(
        default={}, max_length=64,
        description="Values for the task's parameters (spec.params) over their defaults; "
                    "a string is read as on the command line (\"3\", \"false\"). An "
                    "unknown name, a wrong type, a missing required value or a secret "
                    "parameter: 422 naming it.")


class ResumeRequest(_Request):
    catchUp: bool = Field(default=False,
                          description="Also run the most recent slot missed while suspended.")


class BackfillRequest(_Request):
    from_: str = Field(alias="from", max_length=64,
                       description="First instant (inclusive): a date (local midnight in the "
                                   "task's zone), a local time, or an RFC 3339 instant.")
    to: str = Field(max_length=64, description="End (exclusive), the same forms.")
    parallel: int = Field(default=1, ge=1, le=1000,
                          description="At most this many of its runs at once.")
    rerun: bool = Field(default=False,
                        description="Also run slots that already have a succeeded run.")
    dryRun: bool = Field(default=False,
                         description="Only list the slots (BackfillPreview); store nothing.")


# --------------------------------------------------------------------- backfills


class Backfill(_Doc):
    """A backfill (the same keys as ``reconciler backfills -o json``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: int
    task: str
    from_: str = Field(alias="from", description="First instant (UTC, inclusive).")
    to: str = Field(description="End (UTC, exclusive).")
    parallel: int
    rerun: bool
    state: Literal["pending", "running", "succeeded", "failed", "cancelled"]
    total: int = Field(description="Slots in the range.")
    done: int = Field(description="Slots finished (run, or skipped as already succeeded).")
    failed: int = Field(description="Finished slots whose run did not succeed.")
    progress: str = Field(description="done/total.")
    createdBy: str
    createdAt: str
    updatedAt: str | None
    finishedAt: str | None
    reason: str | None = Field(description="Why it waits, or who cancelled it.")


class BackfillResponse(_Doc):
    backfill: Backfill
    changed: bool = True


class BackfillList(_Doc):
    items: list[Backfill]
    count: int


class PreviewSlot(_Doc):
    slot: str
    local: str | None


class BackfillPreview(_Doc):
    """The slots a backfill would run (``dryRun``; ``reconciler backfill --dry-run``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    task: str
    from_: str = Field(alias="from")
    to: str
    timeZone: str
    count: int
    slots: list[PreviewSlot]


# ----------------------------------------------------------------- plan, status


class PlanResponse(_Doc):
    plan: PlanDocument
    revision: str | None
    computedAt: str


class ReconcileInfo(_Doc):
    at: str | None
    revision: str | None
    durationSeconds: float | None
    error: str | None


class Replica(_Doc):
    id: str
    host: str | None
    pid: int | None
    startedAt: str | None
    heartbeatAt: str | None
    stoppedAt: str | None
    healthy: bool
    writer: bool
    tasks: int | None
    activeRuns: int | None
    lastError: str | None
    isolation: str | None = None  # "rlimit: ..." or "cgroup: ...": how limits are enforced


class TaskCounts(_Doc):
    total: int
    active: int
    suspended: int
    running: int
    failing: int


class Status(_Doc):
    version: str
    replica: str
    mode: Literal["single", "distributed"]
    writer: str | None
    ready: bool
    lastReconcile: ReconcileInfo | None
    manifestErrors: list[ErrorDoc]
    refusals: list[str]
    tasks: TaskCounts
    replicas: list[Replica]


class Notification(_Doc):
    """A notification in the outbox (the same keys as ``reconciler notifications -o
    json``)."""

    id: int
    channel: str
    task: str
    event: str
    eventId: str = Field(description="The event's stable id: task/slot/attempt/event.")
    runId: int | None
    status: Literal["pending", "sent", "failed", "grouped"] = Field(
        description="grouped: folded into the message of notification groupedInto.")
    attempts: int
    repeats: int = Field(description="Events folded into this message.")
    createdAt: str
    nextAttemptAt: str | None = Field(description="The next attempt (pending only).")
    sentAt: str | None
    lastStatusCode: int | None
    lastError: str | None
    groupedInto: int | None


class NotificationList(_Doc):
    items: list[Notification]
    backlog: int = Field(description="Notifications waiting to be delivered.")


class AuditEntry(_Doc):
    id: int
    at: str
    actor: str
    action: str
    target: str | None
    outcome: str
    client: str | None
    detail: dict[str, Any] | None


class AuditList(_Doc):
    items: list[AuditEntry]


class Health(_Doc):
    status: Literal["ok"]


class Check(_Doc):
    ok: bool
    message: str


class Readiness(_Doc):
    ready: bool
    checks: dict[str, Check]

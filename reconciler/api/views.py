"""JSON documents of the API, built by hand from the store's values.

These functions produce exactly the shapes the pydantic models in
:mod:`reconciler.api.models` describe (and the OpenAPI document publishes); the
schemathesis run checks every response against them. They are plain dict builders
because the task list is on a hot path (10,000 tasks within a frame budget).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

from reconciler.core.backfill import BackfillRecord
from reconciler.core.errors import ReconcilerError
from reconciler.core.model import RUN_TARGETS
from reconciler.core.outbox import NotificationRecord, OutboxStatus
from reconciler.core.params import shown_values
from reconciler.core.redaction import redact
from reconciler.core.runtime import ActualTask, RunRecord
from reconciler.core.schedule import describe


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@functools.lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_iso(value: datetime | None, time_zone: str) -> str | None:
    if value is None:
        return None
    try:
        return value.astimezone(zone(time_zone)).isoformat()
    except (ValueError, KeyError, OSError):
        return value.isoformat()


@functools.lru_cache(maxsize=4096)
def schedule_text(expressions: tuple[str, ...], name: str | None = None) -> str | None:
    """The schedules in words (``H`` resolved with the task's name), joined by ``"; "``."""
    try:
        return "; ".join(describe(e, name) for e in expressions)
    except (ReconcilerError, ValueError, KeyError, IndexError):
        return None


def duration(record: RunRecord) -> float | None:
    if record.started_at is None or record.finished_at is None:
        return None
    return round((record.finished_at - record.started_at).total_seconds(), 6)


def run_brief(record: RunRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "status": record.status.value,
        "trigger": record.trigger.value,
        "attempt": record.attempt,
        "slot": iso(record.slot),
        "startedAt": iso(record.started_at),
        "finishedAt": iso(record.finished_at),
        "durationSeconds": duration(record),
    }


class RunDoc(TypedDict):
    """A run on the wire: the API's run responses, ``api/client.py`` and ``reconciler
    runs -o json`` (against the database or a server) all carry this, built by
    :func:`run_doc` only (``api/models.py``'s ``Run`` is its published schema)."""

    id: int
    task: str
    slot: str
    attempt: int
    trigger: str
    status: str
    replica: str | None
    startedAt: str | None
    finishedAt: str | None
    latenessSeconds: float | None
    durationSeconds: float | None
    exitCode: int | None
    error: str | None
    reason: str | None
    progressPercent: float | None
    progressMessage: str | None
    generation: int | None
    params: dict[str, Any] | None
    live: bool


class NotificationDoc(TypedDict):
    """A notification's outbox row on the wire: ``GET /api/v1/notifications``,
    ``api/client.py`` and ``reconciler notifications -o json`` (against the database or
    a server), built by :func:`notification_doc` only (``models.Notification``)."""

    id: int
    channel: str
    task: str
    event: str
    eventId: str
    runId: int | None
    status: str
    attempts: int
    repeats: int
    createdAt: str
    nextAttemptAt: str | None
    sentAt: str | None
    lastStatusCode: int | None
    lastError: str | None
    groupedInto: int | None


def notification_doc(record: NotificationRecord) -> NotificationDoc:
    """The one place an outbox row becomes JSON (see :class:`NotificationDoc`)."""
    waiting = record.status is OutboxStatus.PENDING
    return {
        "id": record.id,
        "channel": record.channel,
        "task": record.task_name,
        "event": record.event,
        "eventId": record.event_id,
        "runId": record.run_id,
        "status": record.status.value,
        "attempts": record.attempts,
        "repeats": record.repeats,
        "createdAt": record.created_at.isoformat(),
        "nextAttemptAt": iso(record.next_attempt_at) if waiting else None,
        "sentAt": iso(record.sent_at),
        "lastStatusCode": record.last_status_code,
        "lastError": record.last_error,
        "groupedInto": record.grouped_into,
    }


class RunDetailDoc(RunDoc):
    """One run with the end of its output (``GET /api/v1/runs/{id}``)."""

    outputTail: str | None
    outputTruncated: bool


def run_doc(record: RunRecord, *, live: bool = False) -> RunDoc:
    """The one place a run becomes JSON (see :class:`RunDoc`)."""
    return {
        "id": record.id,
        "task": record.task_name,
        "slot": record.slot.isoformat(),
        "attempt": record.attempt,
        "trigger": record.trigger.value,
        "status": record.status.value,
        "replica": record.replica,
        "startedAt": iso(record.started_at),
        "finishedAt": iso(record.finished_at),
        "latenessSeconds": record.lateness_seconds,
        "durationSeconds": duration(record),
        "exitCode": record.exit_code,
        "error": record.error,
        "reason": record.reason,
        "progressPercent": record.progress_percent,
        "progressMessage": record.progress_message,
        "generation": record.generation,
        "params": shown_values(record.params),
        "live": live,
    }


def run_type(document: Mapping[str, Any]) -> str | None:
    run = document.get("spec", {}).get("run", {})
    for kind in RUN_TARGETS:
        if kind in run:
            return kind
    return None


def suspension(row: ActualTask) -> dict[str, Any] | None:
    if not row.suspended:
        return None
    o = row.override
    if o is not None and o.suspended:
        return {"source": "override", "note": o.note, "actor": o.actor, "at": iso(o.at)}
    return {"source": "git", "note": None, "actor": None, "at": None}


def override_doc(row: ActualTask) -> dict[str, Any] | None:
    o = row.override
    if o is None:
        return None
    return {"suspended": o.suspended, "note": o.note, "actor": o.actor, "at": iso(o.at)}


def redacted_spec(document: Mapping[str, Any]) -> dict[str, Any]:
    """The stored spec with its secrets masked (:mod:`reconciler.core.redaction`)."""
    spec: dict[str, Any] = redact(document.get("spec", {}), ("spec",))
    return spec


#: A backfill on the wire: ``POST /api/v1/tasks/{name}/backfill``, ``GET
#: /api/v1/backfills``, ``api/client.py`` and ``reconciler backfill(s) -o json`` (against
#: the database or a server), built by :func:`backfill_doc` only (``models.Backfill``).
BackfillDoc = TypedDict("BackfillDoc", {
    "id": int, "task": str, "from": str, "to": str, "parallel": int, "rerun": bool,
    "state": str, "total": int, "done": int, "failed": int, "progress": str,
    "createdBy": str, "createdAt": str, "updatedAt": str | None, "finishedAt": str | None,
    "reason": str | None,
})


def backfill_doc(record: BackfillRecord) -> BackfillDoc:
    """The one place a backfill becomes JSON (see :data:`BackfillDoc`)."""
    return {
        "id": record.id, "task": record.task_name, "from": record.start.isoformat(),
        "to": record.end.isoformat(), "parallel": record.parallel, "rerun": record.rerun,
        "state": record.state.value, "total": record.total, "done": record.done,
        "failed": record.failed, "progress": f"{record.done}/{record.total}",
        "createdBy": record.created_by, "createdAt": record.created_at.isoformat(),
        "updatedAt": iso(record.updated_at), "finishedAt": iso(record.finished_at),
        "reason": record.reason,
    }


def backfill_preview_doc(task: str, time_zone: str, start: datetime, end: datetime,
                         slots: list[datetime]) -> dict[str, Any]:
    """The slots a backfill would run (``--dry-run``, and ``dryRun`` in the API)."""
    return {
        "task": task, "from": start.isoformat(), "to": end.isoformat(),
        "timeZone": time_zone, "count": len(slots),
        "slots": [{"slot": s.isoformat(), "local": local_iso(s, time_zone)} for s in slots],
    }

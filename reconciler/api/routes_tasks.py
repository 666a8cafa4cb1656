"""The task list, one task's detail, and its runs."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from reconciler.api import models
from reconciler.api.deps import Ctx, Read, TaskName, json
from reconciler.api.errors import ApiError
from reconciler.api.index import STATES
from reconciler.api.security import OPTIONAL_AUTH, Reader
from reconciler.api.views import RunDoc, iso, local_iso, override_doc, redacted_spec, run_doc
from reconciler.core.calendars import calendars_of_rows, task_calendars
from reconciler.core.errors import ReconcilerError, TaskNotFoundError
from reconciler.core.protocols import ReadModel
from reconciler.core.redaction import redact
from reconciler.core.runtime import RunStatus
from reconciler.core.scheduling import TaskSlots
from reconciler.core.selectors import SelectorError, parse_selector

NEXT_FIRE_COUNT = 5
COUNTS_TTL_S = 5.0  # run counts are cached per task until a run event, at most this long

router = APIRouter()


@router.get("/api/v1/tasks",
            openapi_extra=OPTIONAL_AUTH, tags=["tasks"], response_model=models.TaskList,
            summary="List tasks")
async def list_tasks(
    _: Reader,
    c: Ctx,
    selector: Annotated[str | None, Query(
        max_length=4096, description="Label selector, e.g. team=data,tier!=batch")] = None,
    state: Annotated[Literal["active", "suspended", "running", "failing"] | None,
                     Query(description="active (not suspended), suspended, running "
                                       "(a run is live), failing (last run failed)")] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> Response:
    try:
        parsed = parse_selector(selector) if selector else None
    except SelectorError as exc:
        raise ApiError(400, f"invalid selector: {exc}", "invalid_selector") from None
    assert state is None or state in STATES
    body = await c.index.render_list(parsed, state, limit)
    return Response(body, media_type="application/json")


@router.get("/api/v1/tasks/{name}",
            openapi_extra=OPTIONAL_AUTH, tags=["tasks"], response_model=models.TaskDetail,
            summary="One task: spec, suspension, next fire times, runs")
async def get_task(name: TaskName, _: Reader, c: Ctx, read: Read) -> JSONResponse:
    entry = c.index.get(name)  # kept current by the scheduler: no database read
    if entry is None:
        raise TaskNotFoundError(name)
    row = entry.row
    nxt = entry.next_fire
    cached_counts = entry.counts
    if cached_counts is not None and time.monotonic() - cached_counts[0] < COUNTS_TTL_S:
        counts: dict[str, int] | None = dict(cached_counts[1])
    else:  # after a run event of this task, or from time to time (other writers)
        counts = None
    times: list[dict[str, str]] | None = []
    if not row.suspended:
        cached_times = entry.next_times
        hit = cached_times is not None and nxt is not None and cached_times[0] == nxt
        times = list(cached_times[1]) if hit and cached_times else None
    if counts is None or times is None:
        # One trip to an API thread: the count query and the schedule math (a yearly
        # cron in a DST zone costs a millisecond) stay off the event loop.
        read_at, version = time.monotonic(), entry.runs_version
        got_counts, got_times = await read(
            _detail_reads, c.store, name, row, nxt, c.clock.now(),
            counts is None, times is None)
        entry = c.index.get(name)
        if entry is None:  # deleted meanwhile
            raise TaskNotFoundError(name)
        if counts is None:
            counts = got_counts
            if entry.runs_version == version:  # no run event while reading: cache
                entry.counts = (read_at, dict(got_counts))
        if times is None:
            times = got_times
            if entry.next_fire == nxt and nxt is not None:
                entry.next_times = (nxt, list(got_times))
    summary = c.index.summary(name)
    assert summary is not None
    active: list[RunDoc] = []
    if entry is not None:
        for run_id in sorted(entry.live):
            live = c.ops.live_run(name, run_id)
            if live is not None:
                active.append(run_doc(live.record, live=True))
    annotations = row.document.get("metadata", {}).get("annotations", {})
    doc = {
        **summary,
        "annotations": redact(annotations, ("metadata", "annotations"))
        if isinstance(annotations, dict) else {},
        "spec": redacted_spec(row.document),
        "suspendedInGit": row.suspended_in_git,
        "override": override_doc(row),
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
        "lastSuccessAt": iso(entry.last_success),
        "nextFireTimes": times,
        "runCounts": counts,
        "activeRuns": active,
    }
    return json(doc)


@router.get("/api/v1/tasks/{name}/runs",
            openapi_extra=OPTIONAL_AUTH, tags=["runs"], response_model=models.RunList,
            summary="Runs of a task, newest slot first")
async def task_runs(
    name: TaskName,
    _: Reader,
    c: Ctx,
    read: Read,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    status: Annotated[str | None, Query(
        max_length=256, pattern=r"^[a-z_]+(,[a-z_]+)*$",
        description="Comma-separated statuses, e.g. failed,timed_out")] = None,
) -> JSONResponse:
    statuses: list[RunStatus] = []
    for s in (status.split(",") if status else []):
        try:
            statuses.append(RunStatus(s))
        except ValueError:
            raise ApiError(400, f"unknown run status {s!r}; one of: "
                           + ", ".join(x.value for x in RunStatus)) from None
    row = await read(c.store.get_task, name, include_deleted=True)
    runs = await read(c.store.list_runs, name, limit=limit, statuses=statuses)
    if row is None and not runs:
        raise TaskNotFoundError(name)
    items = [run_doc(r, live=c.ops.live_run(name, r.id) is not None) for r in runs]
    return json({"items": items, "count": len(items)})


def _fire_times(row: Any, nxt: Any, now: Any, calendars: Any) -> list[dict[str, str]]:
    """The next fire times, from the scheduler's next slot on (an API thread runs this);
    ``calendars``: the table's, by name (the slots they exclude are left out)."""
    times: list[dict[str, str]] = []
    try:
        slots = TaskSlots.from_document(row.document, calendars)
        at = nxt or slots.next_planned(now)
        while at is not None and len(times) < NEXT_FIRE_COUNT:
            times.append({"at": at.isoformat(),
                          "local": local_iso(at, row.time_zone) or at.isoformat(),
                          "start": slots.start_of(at).isoformat()})
            at = slots.next_after(at)
    except (ReconcilerError, ValueError):
        return []
    return times


def _detail_reads(store: ReadModel, name: str, row: Any, nxt: Any, now: Any, want_counts: bool,
                  want_times: bool) -> tuple[dict[str, int], list[dict[str, str]]]:
    counts: dict[str, int] = store.run_counts(name) if want_counts else {}
    times: list[dict[str, str]] = []
    if want_times:
        used = task_calendars(row.document.get("spec"))
        rows = store.load_calendars() if used else []
        times = _fire_times(row, nxt, now, calendars_of_rows(rows))
    return counts, times


"""Backfills: start one for a task (or preview its slots), list them, cancel one.

Starting and cancelling need a writer's token and call the daemon's operations
(:meth:`~reconciler.service.operations.TaskOperations.backfill`), which leave the
audit row; the daemon's backfill driver carries a stored backfill out.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import JSONResponse

from reconciler.api import models
from reconciler.api.contract import errors
from reconciler.api.deps import MAX_RUN_ID, Ctx, Read, TaskName, caller, json
from reconciler.api.errors import ApiError
from reconciler.api.security import OPTIONAL_AUTH, Reader, Writer
from reconciler.api.views import backfill_doc, backfill_preview_doc

router = APIRouter()

BackfillId = Annotated[int, Path(ge=1, le=MAX_RUN_ID, description="Backfill id.",
                                 examples=[1])]


@router.post("/api/v1/tasks/{name}/backfill", tags=["mutations"], status_code=201,
             response_model=models.BackfillResponse,
             responses={200: {"model": models.BackfillPreview,
                              "description": "dryRun: the slots it would run."},
                        **errors(409)},
             summary="Run the task's slots in [from, to): a backfill the daemon carries out")
async def backfill(name: TaskName, request: Request, actor: Writer, c: Ctx, read: Read,
                   body: Annotated[models.BackfillRequest, Body()]) -> JSONResponse:
    if body.dryRun:
        row, start, end, found = await c.ops.backfill_slots(name, body.from_, body.to)
        return json(backfill_preview_doc(name, row.time_zone, start, end, found))
    record = await c.ops.backfill(name, body.from_, body.to, caller(request, actor),
                                  parallel=body.parallel, rerun=body.rerun)
    return json({"backfill": backfill_doc(record), "changed": True}, 201)


@router.get("/api/v1/backfills", openapi_extra=OPTIONAL_AUTH, tags=["backfills"],
            response_model=models.BackfillList, summary="Backfills, newest first")
async def list_backfills(
    _: Reader, c: Ctx, read: Read,
    task: Annotated[str | None, Query(max_length=63, description="Only this task's")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JSONResponse:
    records = await read(c.store.list_backfills, task_name=task, limit=limit)
    items = [backfill_doc(r) for r in records]
    return json({"items": items, "count": len(items)})


@router.get("/api/v1/backfills/{backfill_id}", openapi_extra=OPTIONAL_AUTH,
            tags=["backfills"], response_model=models.BackfillResponse,
            summary="One backfill and its progress")
async def get_backfill(backfill_id: BackfillId, _: Reader, c: Ctx, read: Read) -> JSONResponse:
    record = await read(c.store.get_backfill, backfill_id)
    if record is None:
        raise ApiError(404, f"backfill {backfill_id} not found", "not_found")
    return json({"backfill": backfill_doc(record), "changed": False})


@router.post("/api/v1/backfills/{backfill_id}/cancel", tags=["mutations"],
             response_model=models.BackfillResponse, responses=errors(409),
             summary="Cancel a backfill: no further slot starts (idempotent)")
async def cancel_backfill(backfill_id: BackfillId, request: Request, actor: Writer,
                          c: Ctx) -> JSONResponse:
    record, changed = await c.ops.cancel_backfill(backfill_id, caller(request, actor))
    return json({"backfill": backfill_doc(record), "changed": changed})

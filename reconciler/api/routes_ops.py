"""The mutations: trigger, suspend, resume, cancel.

Each one needs a writer's token and is a call into the daemon's operations, which
leave the audit row (the ``Caller`` says who asked, from where).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from reconciler.api import models
from reconciler.api.contract import errors
from reconciler.api.deps import Ctx, RunId, TaskName, caller, json, live_of
from reconciler.api.security import Writer
from reconciler.api.views import run_doc

router = APIRouter()


@router.post("/api/v1/tasks/{name}/trigger", tags=["mutations"], status_code=202,
             response_model=models.RunResponse, responses=errors(409),
             summary="Run the task now (with values for its parameters)")
async def trigger(
    name: TaskName, request: Request, actor: Writer, c: Ctx,
    body: Annotated[models.TriggerRequest | None, Body()] = None,
) -> JSONResponse:
    params = body.params if body is not None else {}
    record = await c.ops.trigger(name, caller(request, actor), params)
    live = c.ops.live_run(name, record.id) is not None
    return json({"run": run_doc(record, live=live), "changed": True}, 202)


@router.post("/api/v1/tasks/{name}/suspend", tags=["mutations"],
             response_model=models.TaskResponse,
             summary="Suspend at run time (idempotent)")
async def suspend(
    name: TaskName, request: Request, actor: Writer, c: Ctx,
    body: Annotated[models.SuspendRequest | None, Body()] = None,
) -> JSONResponse:
    note = body.note if body is not None else None
    row, changed = await c.ops.suspend(name, note, caller(request, actor))
    c.index.upsert(row)
    return json({"task": c.index.summary(name), "changed": changed, "run": None})


@router.post("/api/v1/tasks/{name}/resume", tags=["mutations"],
             response_model=models.TaskResponse, responses=errors(409),
             summary="Resume a task suspended at run time or in git (idempotent)")
async def resume(
    name: TaskName, request: Request, actor: Writer, c: Ctx,
    body: Annotated[models.ResumeRequest | None, Body()] = None,
) -> JSONResponse:
    catch_up = body.catchUp if body is not None else False
    result = await c.ops.resume(name, catch_up, caller(request, actor))
    c.index.upsert(result.task)
    run = result.run
    return json({"task": c.index.summary(name), "changed": result.changed,
                 "run": None if run is None else run_doc(run)})


@router.post("/api/v1/runs/{run_id}/cancel", tags=["mutations"],
             response_model=models.RunResponse,
             responses={202: {"model": models.RunResponse,
                              "description": "Cancel requested: the run is still live and "
                                             "ends shortly (run.live is true)."},
                        **errors(409)},
             summary="Cancel a pending or running run (idempotent)")
async def cancel(run_id: RunId, request: Request, actor: Writer, c: Ctx) -> JSONResponse:
    record, changed = await c.ops.cancel(run_id, caller(request, actor))
    live = live_of(c, record) is not None
    return json({"run": run_doc(record, live=live), "changed": changed},
                202 if live else 200)

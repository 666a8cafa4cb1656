"""One run and its output, followed while the run is live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.responses import StreamingResponse

from reconciler.api import models
from reconciler.api.control import ApiContext, LiveRun
from reconciler.api.deps import Ctx, Read, Reads, RunId, json, live_of
from reconciler.api.errors import ApiError
from reconciler.api.security import OPTIONAL_AUTH, Reader
from reconciler.api.views import RunDetailDoc, run_doc
from reconciler.core.runtime import RunRecord

router = APIRouter()


async def run_or_404(c: ApiContext, read: Reads, run_id: int) -> RunRecord:
    record = await read(c.store.get_run, run_id)
    if record is None:
        raise ApiError(404, f"run {run_id} not found")
    return record


@router.get("/api/v1/runs/{run_id}",
            openapi_extra=OPTIONAL_AUTH, tags=["runs"], response_model=models.RunDetail,
            summary="One run, with the end of its output")
async def get_run(run_id: RunId, _: Reader, c: Ctx, read: Read) -> JSONResponse:
    record = await run_or_404(c, read, run_id)
    live = live_of(c, record)
    tail: str | None
    if live is not None:
        tail, truncated = "".join(live.output), live.output_seq > len(live.output)
    else:
        tail, truncated = record.output_tail, record.output_truncated
    doc: RunDetailDoc = {**run_doc(record, live=live is not None), "outputTail": tail,
                         "outputTruncated": truncated}
    return json(doc)


@router.get("/api/v1/runs/{run_id}/log",
            openapi_extra=OPTIONAL_AUTH, tags=["runs"], response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "The output; streamed while the run is live."}},
            summary="The run's output as text, following it while the run is live")
async def run_log(
    run_id: RunId,
    _: Reader,
    c: Ctx,
    read: Read,
    follow: Annotated[bool, Query(description="Keep streaming until the run ends.")] = True,
) -> Response:
    record = await run_or_404(c, read, run_id)
    live = live_of(c, record)
    headers = {"X-Accel-Buffering": "no"}
    if live is None:
        return PlainTextResponse(record.output_tail or "", headers=headers)
    if not follow:
        return PlainTextResponse("".join(live.output), headers=headers)
    return StreamingResponse(_follow(live, c), headers=headers,
                             media_type="text/plain; charset=utf-8")


async def _follow(live: LiveRun, ctx: ApiContext) -> AsyncIterator[str]:
    """Yield the live output from the oldest chunk still kept, then each new one."""
    position = live.output_seq - len(live.output)
    while True:
        waiter = live.waiter()
        first = live.output_seq - len(live.output)
        if position < first:
            yield f"[... {first - position} chunk(s) of output dropped ...]\n"
            position = first
        if position < live.output_seq:
            yield "".join(live.output[position - first:])
            position = live.output_seq
        if live.done or ctx.events.closed:
            return
        await waiter.wait()


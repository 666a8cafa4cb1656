"""What the route handlers share: the daemon behind the app, reads off the event loop.

The app keeps the daemon's :class:`~reconciler.api.control.ApiContext` in
``app.state.ctx`` (``None`` for an app built only for its OpenAPI document) and the
API's own read threads in ``app.state.read_pool``; handlers get them as the ``Ctx``
and ``Read`` dependencies. Database reads run on those threads: never on the
scheduler's store threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import Depends, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from reconciler.api.control import ApiContext, LiveRun
from reconciler.api.errors import ApiError
from reconciler.core.model import NAME_PATTERN
from reconciler.core.runtime import RunRecord
from reconciler.service.operations import Caller

P = ParamSpec("P")
T = TypeVar("T")
MAX_RUN_ID = 2**63 - 1

TaskName = Annotated[str, PathParam(pattern=NAME_PATTERN, max_length=63,
                                    description="Task name (metadata.name).",
                                    examples=["nightly-report"])]
RunId = Annotated[int, PathParam(ge=1, le=MAX_RUN_ID, description="Run id.", examples=[1])]


async def context(request: Request) -> ApiContext:
    """The daemon behind the app; 503 when there is none."""
    ctx: ApiContext | None = request.app.state.ctx
    if ctx is None:
        raise ApiError(503, "no daemon behind this app")
    return ctx


class Reads:
    """Call a blocking read on the API's read threads and await its result."""

    def __init__(self, pool: Executor) -> None:
        self.pool = pool

    async def __call__(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))


async def reads(request: Request) -> Reads:
    return Reads(request.app.state.read_pool)


Ctx = Annotated[ApiContext, Depends(context)]
Read = Annotated[Reads, Depends(reads)]


def caller(request: Request, actor: str) -> Caller:
    """Who asks, for the operation's audit row and run reasons."""
    return Caller(actor, request.client.host if request.client else None, "API")


def json(doc: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(doc, status_code=status)


def live_of(ctx: ApiContext, record: RunRecord) -> LiveRun | None:
    """The run as it executes in this process, if it does."""
    if record.status.finished:
        return None
    return ctx.ops.live_run(record.task_name, record.id)

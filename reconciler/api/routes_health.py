"""Probes and metrics at the root, where Kubernetes and Prometheus expect them."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from reconciler.api import models
from reconciler.api.deps import Ctx, Read, json
from reconciler.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from reconciler.api.security import OPTIONAL_AUTH, Reader
from reconciler.core.errors import ReconcilerError

DB_CHECK_TIMEOUT_S = 2.0

router = APIRouter()


@router.get("/healthz", tags=["health"], response_model=models.Health,
            summary="The process is alive")
async def healthz() -> JSONResponse:
    return json({"status": "ok"})


@router.get("/readyz", tags=["health"], response_model=models.Readiness,
            summary="Database reachable, ZooKeeper connected (distributed), first reconcile "
                    "done", responses={503: {"model": models.Readiness,
                                             "description": "Not ready."}})
async def readyz(c: Ctx, read: Read) -> JSONResponse:
    checks: dict[str, dict[str, Any]] = {}
    try:
        await asyncio.wait_for(read(c.store.ping), timeout=DB_CHECK_TIMEOUT_S)
        checks["database"] = {"ok": True, "message": "reachable"}
    except TimeoutError:
        checks["database"] = {"ok": False, "message": "no answer within 2s"}
    except ReconcilerError:
        checks["database"] = {"ok": False, "message": "unreachable"}
    for name, (ok, message) in c.ops.ready_checks().items():
        checks[name] = {"ok": ok, "message": message}
    if c.stopping:
        checks["stopping"] = {"ok": False, "message": "the daemon is shutting down"}
    ready = all(check["ok"] for check in checks.values())
    return json({"ready": ready, "checks": checks}, 200 if ready else 503)


@router.get("/metrics",
            openapi_extra=OPTIONAL_AUTH, tags=["health"],
            summary="Prometheus metrics (text format)", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format."}})
async def metrics(_: Reader, c: Ctx, read: Read) -> Response:
    c.ops.refresh()
    c.metrics.set_task_counts(c.index.counts())
    body = await read(c.metrics.render)
    return Response(body, media_type=METRICS_CONTENT_TYPE)

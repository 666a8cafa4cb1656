"""The pending plan, the daemon's status, the audit trail, the event stream, the dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, JSONResponse
from starlette.responses import StreamingResponse

from reconciler import __version__
from reconciler.api import models
from reconciler.api.deps import Ctx, Read, json
from reconciler.api.security import OPTIONAL_AUTH, Reader
from reconciler.api.views import iso, notification_doc
from reconciler.core.outbox import OutboxStatus
from reconciler.core.redaction import redact

STATIC = Path(__file__).resolve().parent / "static"

router = APIRouter()


@router.get("/api/v1/plan",
            openapi_extra=OPTIONAL_AUTH, tags=["status"], response_model=models.PlanResponse,
            summary="The diff between the manifests on disk and the runtime table")
async def get_plan(_: Reader, c: Ctx) -> JSONResponse:
    return json(await c.ops.plan())


@router.get("/api/v1/status",
            openapi_extra=OPTIONAL_AUTH, tags=["status"], response_model=models.Status,
            summary="Replicas, writer, last reconcile, manifest errors")
async def status(_: Reader, c: Ctx, read: Read) -> JSONResponse:
    info = c.ops.status_info()
    replicas = await read(c.store.list_replicas)
    now = c.clock.now()
    docs = []
    writer = info.get("writer")
    for r in replicas:
        st = r.get("status") or {}
        heartbeat = r["heartbeat_at"]
        healthy = (r["stopped_at"] is None and heartbeat is not None
                   and (now - heartbeat).total_seconds() < 60)
        zk = st.get("zookeeper")
        if writer is None and healthy and isinstance(zk, dict) and zk.get("writer") is True:
            writer = r["id"]  # distributed mode: the replica that reports it writes
        docs.append({
            "id": r["id"], "host": r["host"], "pid": r["pid"],
            "startedAt": iso(r["started_at"]), "heartbeatAt": iso(heartbeat),
            "stoppedAt": iso(r["stopped_at"]), "healthy": healthy,
            "writer": False,
            "tasks": _int_or_none(st.get("tasks")),
            "activeRuns": _int_or_none(st.get("active_runs")),
            "lastError": st.get("last_error") if isinstance(st.get("last_error"), str)
            else None,
            "isolation": st.get("isolation") if isinstance(st.get("isolation"), str) else None,
        })
    for doc in docs:
        doc["writer"] = doc["id"] == writer
    counts = c.index.counts()
    ready = all(ok for ok, _ in c.ops.ready_checks().values()) and not c.stopping
    return json({
        "version": __version__,
        "replica": c.ops.replica,
        "mode": info.get("mode", "single"),
        "writer": writer,
        "ready": ready,
        "lastReconcile": info.get("lastReconcile"),
        "manifestErrors": info.get("manifestErrors", []),
        "refusals": info.get("refusals", []),
        "tasks": {"total": len(c.index), **counts},
        "replicas": docs,
    })


@router.get("/api/v1/audit",
            openapi_extra=OPTIONAL_AUTH, tags=["status"], response_model=models.AuditList,
            summary="Operator actions through the API, newest first")
async def get_audit(
    _: Reader,
    c: Ctx,
    read: Read,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    target: Annotated[str | None, Query(max_length=255)] = None,
) -> JSONResponse:
    rows = await read(c.store.list_audit, limit=limit, target=target)
    return json({"items": [{**r, "at": iso(r["at"]), "detail": redact(r["detail"])}
                           for r in rows]})


@router.get("/api/v1/notifications",
            openapi_extra=OPTIONAL_AUTH, tags=["status"], response_model=models.NotificationList,
            summary="Notifications in the outbox (sent, waiting, failed), newest first")
async def get_notifications(
    _: Reader,
    c: Ctx,
    read: Read,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    task: Annotated[str | None, Query(max_length=63)] = None,
) -> JSONResponse:
    rows = await read(c.store.list_notifications, task, limit=limit)
    counts = await read(c.store.notification_counts)
    return json({"items": [notification_doc(r) for r in rows],
                 "backlog": counts.get(OutboxStatus.PENDING.value, 0)})


@router.get("/api/v1/events",
            openapi_extra=OPTIONAL_AUTH, tags=["status"], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "Server-sent events: hello, task, run, "
                                            "reconcile, resync."}},
            summary="Server-sent events for task and run changes")
async def events(_: Reader, c: Ctx) -> StreamingResponse:
    hello = {"replica": c.ops.replica, "version": __version__}
    return StreamingResponse(
        c.events.stream(hello), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


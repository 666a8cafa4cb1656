"""The HTTP API and dashboard: a FastAPI app served by ``reconciler run``.

Everything under ``/api/v1`` is JSON (errors too: ``{"error": {"code", "message"}}``);
``/healthz``, ``/readyz`` and ``/metrics`` sit at the root where probes and Prometheus
expect them; ``/`` is the dashboard (static files, plain JavaScript).

Reads come from the in-memory task index (the task list), or from the database on a
small pool of the API's own threads (never the scheduler's store threads, never the
event loop). Mutations are calls into the daemon (:class:`~reconciler.api.control.
Operations`) after a bearer-token check, and each one leaves an audit row.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

from fastapi import Body, Depends, FastAPI, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconciler import __version__
from reconciler.api import models
from reconciler.api.auth import bearer_token
from reconciler.api.contract import errors
from reconciler.api.contract import install as install_contract
from reconciler.api.control import ApiContext, LiveRun
from reconciler.api.errors import ApiError, error_body, install_handlers
from reconciler.api.head import HeadMiddleware
from reconciler.api.index import STATES
from reconciler.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from reconciler.api.selectors import SelectorError, parse_selector
from reconciler.api.views import (
    iso,
    local_iso,
    override_doc,
    redacted_spec,
    run_doc,
)
from reconciler.core.errors import ReconcilerError, TaskNotFoundError
from reconciler.core.model import NAME_PATTERN
from reconciler.core.protocols import ReadModel
from reconciler.core.redaction import redact
from reconciler.core.runtime import RunRecord, RunStatus
from reconciler.core.schedule import Schedule
from reconciler.service.operations import Caller

log = logging.getLogger("reconciler.api")
STATIC = Path(__file__).resolve().parent / "static"
P = ParamSpec("P")
T = TypeVar("T")

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)
MAX_RUN_ID = 2**63 - 1
DB_CHECK_TIMEOUT_S = 2.0
NEXT_FIRE_COUNT = 5
COUNTS_TTL_S = 5.0  # run counts are cached per task until a run event, at most this long


class SecurityMiddleware:
    """Security headers on every response; request bodies over ``max_body`` get 413.

    Pure ASGI (no per-request task or buffering of responses), so streamed responses
    (events, live logs) pass straight through. A request body is read up front, up to
    the limit, whatever its ``Content-Length`` claims. Every response also says how long
    the app took to produce its headers (``Server-Timing: app;dur=<ms>``), so the time
    spent in the daemon can be told apart from the network and the client.
    """

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                took = (time.perf_counter() - started) * 1000
                headers.append((b"server-timing", b"app;dur=%.3f" % took))
                present = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in SECURITY_HEADERS if k not in present)
                if scope["path"].startswith("/api/") and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        declared = None
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
        if declared is not None and (declared < 0 or declared > self.max_body):
            await self._too_large(send_with_headers, declared < 0)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE") and not declared:
            await self.app(scope, receive, send_with_headers)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body:
                await self._too_large(send_with_headers, False)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_headers)

    async def _too_large(self, send: Send, bad_length: bool) -> None:
        status = 400 if bad_length else 413
        code = "bad_request" if bad_length else "payload_too_large"
        text = ("invalid Content-Length" if bad_length
                else f"request body larger than {self.max_body} bytes")
        response = JSONResponse(error_body(code, text), status_code=status)
        await send({"type": "http.response.start", "status": status,
                    "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback_name(host: str) -> bool:
    """True for ``localhost``, ``*.localhost`` and loopback addresses (127/8, ::1)."""
    host = host.strip().strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """The host part of a ``Host`` header value, lower-cased, without port or final dot."""
    value = header.strip().lower()
    if value.startswith("["):  # [v6] or [v6]:port; an unclosed bracket matches nothing
        inner, closed, _ = value[1:].partition("]")
        return inner if closed else value
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


class HostPolicy:
    """Which ``Host`` header values the API answers (the DNS-rebinding defence).

    A web page on an attacker's domain can make a victim's browser send requests to
    a loopback address by re-pointing its own DNS name there ("DNS rebinding"); the
    browser then treats the API as same-origin with the attacker's page and still
    sends ``Host: attacker.example``. Refusing unknown host names closes that. Always
    allowed: a missing ``Host`` (no browser sends one), IP literals (a page whose
    origin is an IP address was served by that address), ``localhost`` and
    ``*.localhost``. Besides those, ``allowed`` lists exact names and ``*.suffix``
    patterns (``*.example.com`` matches ``api.example.com``, not ``example.com``).
    """

    def __init__(self, allowed: Sequence[str] = ()) -> None:
        self.exact: set[str] = set()
        self.suffixes: list[str] = []
        for raw in allowed:
            name = raw.strip().lower().rstrip(".")
            if not name:
                continue
            if name.startswith("*."):
                self.suffixes.append(name[1:])
            else:
                self.exact.add(host_of(name))

    @classmethod
    def for_listen(cls, listen_host: str, allowed: Sequence[str] | None = None
                   ) -> HostPolicy | None:
        """The policy for a server on ``listen_host``; ``None`` means any Host.

        Default (``allowed`` is None): on a loopback address only the always-allowed
        names; on any other address (``0.0.0.0``, a pod IP behind a Service or an
        ingress) any name, since the names clients use cannot be guessed. A list
        containing ``*`` allows any name.
        """
        if allowed is None:
            allowed = [] if is_loopback_name(listen_host) else ["*"]
        if any(a.strip() == "*" for a in allowed):
            return None
        return cls(allowed)

    def allows(self, header: str | None) -> bool:
        if header is None or not header.strip():
            return True
        host = host_of(header)
        if _is_ip_literal(host) or host == "localhost" or host.endswith(".localhost"):
            return True
        return host in self.exact or any(host.endswith(s) for s in self.suffixes)


class HostGuard:
    """Pure ASGI: refuse (400 ``host_not_allowed``) requests whose Host the policy refuses.

    The refusal carries the security headers itself, so the guard may wrap any app.
    """

    MAX_LOGGED = 64

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy
        self._logged: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header: str | None = None
        for key, value in scope.get("headers", []):
            if key == b"host":
                header = value.decode("latin-1")
                break
        if self.policy.allows(header):
            await self.app(scope, receive, send)
            return
        shown = (header or "")[:100]
        if shown not in self._logged and len(self._logged) < self.MAX_LOGGED:
            self._logged.add(shown)
            log.warning("API: refused a request with Host %r (not a loopback name or an "
                        "allowed host; DNS rebinding protection)", shown)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        response = JSONResponse(
            error_body("host_not_allowed",
                       "this Host is not allowed (DNS rebinding protection); start the daemon "
                       "with the name in its allowed hosts"),
            status_code=400)
        headers = [*response.raw_headers, *SECURITY_HEADERS]
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


#: Reads are open unless the daemon runs with --auth-reads: the bearer token is optional.
OPTIONAL_AUTH: dict[str, Any] = {"security": [{}]}

TaskName = Annotated[str, PathParam(pattern=NAME_PATTERN, max_length=63,
                                    description="Task name (metadata.name).",
                                    examples=["nightly-report"])]
RunId = Annotated[int, PathParam(ge=1, le=MAX_RUN_ID, description="Run id.", examples=[1])]


_bearer = HTTPBearer(auto_error=False,
                     description="A token from RECONCILER_API_TOKEN or --api-token-file.")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="reconciler"'}


def authorize(request: Request, write: bool) -> str | None:
    """The actor (token name) of ``request``; raises 401/403 ``ApiError`` when refused."""
    c: ApiContext | None = request.app.state.ctx
    if c is None:
        raise ApiError(503, "no daemon behind this app")
    if write and not c.tokens.configured:
        raise ApiError(
            403,
            "mutations are disabled: no API token is configured on the daemon "
            "(set RECONCILER_API_TOKEN or start it with --api-token-file)",
            "mutations_disabled",
        )
    if not write and not c.auth_reads:
        return None
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise ApiError(401, "this endpoint needs 'Authorization: Bearer <token>'",
                       "unauthorized", _CHALLENGE)
    verdict = c.tokens.verify(token)
    if verdict.expired_at is not None:  # logged once per token by the token store
        raise ApiError(401, f"the token expired at {verdict.expired_at.isoformat()}; ask for "
                            "a new one", "token_expired",
                       {"WWW-Authenticate": 'Bearer realm="reconciler", error="invalid_token", '
                                            'error_description="The access token expired"'})
    if verdict.name is None:
        client = request.client.host if request.client else "?"
        log.warning("API: rejected a token from %s (%s %s)", client, request.method,
                    request.url.path)
        raise ApiError(401, "invalid, expired or removed token", "unauthorized",
                       {"WWW-Authenticate": 'Bearer realm="reconciler", error="invalid_token"'})
    return verdict.name


async def _reader(
    request: Request,
    _cred: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> str | None:
    return authorize(request, write=False)


async def _writer(
    request: Request,
    _cred: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> str:
    name = authorize(request, write=True)
    assert name is not None
    return name


Reader = Annotated[str | None, Depends(_reader)]
Writer = Annotated[str, Depends(_writer)]


def create_app(ctx: ApiContext | None) -> FastAPI:
    """The app for ``ctx``; ``None`` builds it for its OpenAPI document only."""
    app = FastAPI(
        title="reconciler",
        version=__version__,
        description=(
            "Operate and observe a reconciler daemon: tasks, runs, the pending plan, "
            "trigger/suspend/resume/cancel. Mutations need `Authorization: Bearer <token>`."
        ),
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    install_handlers(app)
    install_contract(app, {_reader: (401, 503), _writer: (401, 403, 503)})
    app.add_middleware(SecurityMiddleware, max_body=ctx.max_body if ctx else 64 * 1024)
    app.add_middleware(HeadMiddleware)
    pool = ThreadPoolExecutor(max_workers=ctx.read_threads if ctx else 1,
                              thread_name_prefix="api-read")
    app.state.read_pool = pool
    app.state.ctx = ctx

    def context() -> ApiContext:
        if ctx is None:
            raise ApiError(503, "no daemon behind this app")
        return ctx

    async def read(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, functools.partial(fn, *args, **kwargs))

    # --------------------------------------------------------------- audit

    def caller(request: Request, actor: str) -> Caller:
        """Who asks, for the operation's audit row and run reasons."""
        return Caller(actor, request.client.host if request.client else None, "API")

    def json(doc: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(doc, status_code=status)

    # ---------------------------------------------------------- health, metrics

    @app.get("/healthz", tags=["health"], response_model=models.Health,
             summary="The process is alive")
    async def healthz() -> JSONResponse:
        return json({"status": "ok"})

    @app.get("/readyz", tags=["health"], response_model=models.Readiness,
             summary="Database reachable, ZooKeeper connected (distributed), first reconcile "
                     "done", responses={503: {"model": models.Readiness,
                                              "description": "Not ready."}})
    async def readyz() -> JSONResponse:
        c = context()
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

    @app.get("/metrics",
             openapi_extra=OPTIONAL_AUTH, tags=["health"],
             summary="Prometheus metrics (text format)", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text exposition format."}})
    async def metrics(_: Reader) -> Response:
        c = context()
        c.ops.refresh()
        c.metrics.set_task_counts(c.index.counts())
        body = await read(c.metrics.render)
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    # -------------------------------------------------------------------- tasks

    @app.get("/api/v1/tasks",
             openapi_extra=OPTIONAL_AUTH, tags=["tasks"], response_model=models.TaskList,
             summary="List tasks")
    async def list_tasks(
        _: Reader,
        selector: Annotated[str | None, Query(
            max_length=4096, description="Label selector, e.g. team=data,tier!=batch")] = None,
        state: Annotated[Literal["active", "suspended", "running", "failing"] | None,
                         Query(description="active (not suspended), suspended, running "
                                           "(a run is live), failing (last run failed)")] = None,
        limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    ) -> Response:
        c = context()
        try:
            parsed = parse_selector(selector) if selector else None
        except SelectorError as exc:
            raise ApiError(400, f"invalid selector: {exc}", "invalid_selector") from None
        assert state is None or state in STATES
        body = await c.index.render_list(parsed, state, limit)
        return Response(body, media_type="application/json")

    @app.get("/api/v1/tasks/{name}",
             openapi_extra=OPTIONAL_AUTH, tags=["tasks"], response_model=models.TaskDetail,
             summary="One task: spec, suspension, next fire times, runs")
    async def get_task(name: TaskName, _: Reader) -> JSONResponse:
        c = context()
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
        active: list[dict[str, Any]] = []
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

    @app.get("/api/v1/tasks/{name}/runs",
             openapi_extra=OPTIONAL_AUTH, tags=["runs"], response_model=models.RunList,
             summary="Runs of a task, newest slot first")
    async def task_runs(
        name: TaskName,
        _: Reader,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        status: Annotated[str | None, Query(
            max_length=256, pattern=r"^[a-z_]+(,[a-z_]+)*$",
            description="Comma-separated statuses, e.g. failed,timed_out")] = None,
    ) -> JSONResponse:
        c = context()
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

    # --------------------------------------------------------------------- runs

    async def run_or_404(run_id: int) -> RunRecord:
        record = await read(context().store.get_run, run_id)
        if record is None:
            raise ApiError(404, f"run {run_id} not found")
        return record

    def live_of(record: RunRecord) -> LiveRun | None:
        if record.status.finished:
            return None
        return context().ops.live_run(record.task_name, record.id)

    @app.get("/api/v1/runs/{run_id}",
             openapi_extra=OPTIONAL_AUTH, tags=["runs"], response_model=models.RunDetail,
             summary="One run, with the end of its output")
    async def get_run(run_id: RunId, _: Reader) -> JSONResponse:
        record = await run_or_404(run_id)
        live = live_of(record)
        doc = run_doc(record, live=live is not None)
        if live is not None:
            first = live.output_seq - len(live.output)
            doc["outputTail"] = "".join(live.output)
            doc["outputTruncated"] = first > 0
        else:
            doc["outputTail"] = record.output_tail
            doc["outputTruncated"] = record.output_truncated
        return json(doc)

    @app.get("/api/v1/runs/{run_id}/log",
             openapi_extra=OPTIONAL_AUTH, tags=["runs"], response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "The output; streamed while the run is live."}},
             summary="The run's output as text, following it while the run is live")
    async def run_log(
        run_id: RunId,
        _: Reader,
        follow: Annotated[bool, Query(description="Keep streaming until the run ends.")] = True,
    ) -> Response:
        record = await run_or_404(run_id)
        live = live_of(record)
        headers = {"X-Accel-Buffering": "no"}
        if live is None:
            return PlainTextResponse(record.output_tail or "", headers=headers)
        if not follow:
            return PlainTextResponse("".join(live.output), headers=headers)
        return StreamingResponse(_follow(live, context()), headers=headers,
                                 media_type="text/plain; charset=utf-8")

    # ---------------------------------------------------------------- mutations

    @app.post("/api/v1/tasks/{name}/trigger", tags=["mutations"], status_code=202,
              response_model=models.RunResponse, responses=errors(409),
              summary="Run the task now")
    async def trigger(name: TaskName, request: Request, actor: Writer) -> JSONResponse:
        c = context()
        record = await c.ops.trigger(name, caller(request, actor))
        live = c.ops.live_run(name, record.id) is not None
        return json({"run": run_doc(record, live=live), "changed": True}, 202)

    @app.post("/api/v1/tasks/{name}/suspend", tags=["mutations"],
              response_model=models.TaskResponse,
              summary="Suspend at run time (idempotent)")
    async def suspend(
        name: TaskName, request: Request, actor: Writer,
        body: Annotated[models.SuspendRequest | None, Body()] = None,
    ) -> JSONResponse:
        c = context()
        note = body.note if body is not None else None
        row, changed = await c.ops.suspend(name, note, caller(request, actor))
        c.index.upsert(row)
        return json({"task": c.index.summary(name), "changed": changed, "run": None})

    @app.post("/api/v1/tasks/{name}/resume", tags=["mutations"],
              response_model=models.TaskResponse, responses=errors(409),
              summary="Resume a task suspended at run time or in git (idempotent)")
    async def resume(
        name: TaskName, request: Request, actor: Writer,
        body: Annotated[models.ResumeRequest | None, Body()] = None,
    ) -> JSONResponse:
        c = context()
        catch_up = body.catchUp if body is not None else False
        result = await c.ops.resume(name, catch_up, caller(request, actor))
        c.index.upsert(result.task)
        run = result.run
        return json({"task": c.index.summary(name), "changed": result.changed,
                     "run": None if run is None else run_doc(run)})

    @app.post("/api/v1/runs/{run_id}/cancel", tags=["mutations"],
              response_model=models.RunResponse,
              responses={202: {"model": models.RunResponse,
                               "description": "Cancel requested: the run is still live and "
                                              "ends shortly (run.live is true)."},
                         **errors(409)},
              summary="Cancel a pending or running run (idempotent)")
    async def cancel(run_id: RunId, request: Request, actor: Writer) -> JSONResponse:
        c = context()
        record, changed = await c.ops.cancel(run_id, caller(request, actor))
        live = live_of(record) is not None
        return json({"run": run_doc(record, live=live), "changed": changed},
                    202 if live else 200)

    # ------------------------------------------------------ plan, status, audit

    @app.get("/api/v1/plan",
             openapi_extra=OPTIONAL_AUTH, tags=["status"], response_model=models.PlanResponse,
             summary="The diff between the manifests on disk and the runtime table")
    async def get_plan(_: Reader) -> JSONResponse:
        return json(await context().ops.plan())

    @app.get("/api/v1/status",
             openapi_extra=OPTIONAL_AUTH, tags=["status"], response_model=models.Status,
             summary="Replicas, writer, last reconcile, manifest errors")
    async def status(_: Reader) -> JSONResponse:
        c = context()
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

    @app.get("/api/v1/audit",
             openapi_extra=OPTIONAL_AUTH, tags=["status"], response_model=models.AuditList,
             summary="Operator actions through the API, newest first")
    async def get_audit(
        _: Reader,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        target: Annotated[str | None, Query(max_length=255)] = None,
    ) -> JSONResponse:
        rows = await read(context().store.list_audit, limit=limit, target=target)
        return json({"items": [{**r, "at": iso(r["at"]), "detail": redact(r["detail"])}
                               for r in rows]})

    @app.get("/api/v1/events",
             openapi_extra=OPTIONAL_AUTH, tags=["status"], response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                              "description": "Server-sent events: hello, task, run, "
                                             "reconcile, resync."}},
             summary="Server-sent events for task and run changes")
    async def events(_: Reader) -> StreamingResponse:
        c = context()
        hello = {"replica": c.ops.replica, "version": __version__}
        return StreamingResponse(
            c.events.stream(hello), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # ---------------------------------------------------------------- dashboard

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _fire_times(row: Any, nxt: Any, now: Any) -> list[dict[str, str]]:
    """The next fire times, from the scheduler's next slot on (an API thread runs this)."""
    times: list[dict[str, str]] = []
    try:
        schedule = Schedule.parse(row.schedule, row.time_zone)
        at = nxt or schedule.next_after(now)
        while at is not None and len(times) < NEXT_FIRE_COUNT:
            times.append({"at": at.isoformat(),
                          "local": local_iso(at, row.time_zone) or at.isoformat()})
            at = schedule.next_after(at)
    except (ReconcilerError, ValueError):
        return []
    return times


def _detail_reads(store: ReadModel, name: str, row: Any, nxt: Any, now: Any, want_counts: bool,
                  want_times: bool) -> tuple[dict[str, int], list[dict[str, str]]]:
    counts: dict[str, int] = store.run_counts(name) if want_counts else {}
    times = _fire_times(row, nxt, now) if want_times else []
    return counts, times


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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


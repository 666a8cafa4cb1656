"""The HTTP API and dashboard: a FastAPI app served by ``reconciler run``.

Everything under ``/api/v1`` is JSON (errors too: ``{"error": {"code", "message"}}``);
``/healthz``, ``/readyz`` and ``/metrics`` sit at the root where probes and Prometheus
expect them; ``/`` is the dashboard (static files, plain JavaScript).

Reads come from the in-memory task index (the task list), or from the database on a
small pool of the API's own threads (never the scheduler's store threads, never the
event loop). Mutations are calls into the daemon (:class:`~reconciler.api.control.
Operations`) after a bearer-token check, and each one leaves an audit row.

The routes live in routers by what they serve (``routes_health``, ``routes_tasks``,
``routes_runs``, ``routes_ops``, ``routes_backfills``, ``routes_status``), the defences in
:mod:`reconciler.api.security`; this module puts them together, in the order of the
OpenAPI document.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from reconciler import __version__
from reconciler.api import (
    routes_backfills,
    routes_health,
    routes_ops,
    routes_runs,
    routes_status,
    routes_tasks,
)
from reconciler.api.contract import install as install_contract
from reconciler.api.control import MAX_BODY, ApiContext
from reconciler.api.errors import install_handlers
from reconciler.api.head import HeadMiddleware
from reconciler.api.routes_status import STATIC
from reconciler.api.security import TOKEN_CHECKS, SecurityMiddleware

ROUTERS = (routes_health, routes_tasks, routes_runs, routes_ops, routes_backfills,
           routes_status)


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
    install_contract(app, TOKEN_CHECKS)
    app.add_middleware(SecurityMiddleware, max_body=ctx.max_body if ctx else MAX_BODY)
    app.add_middleware(HeadMiddleware)
    pool = ThreadPoolExecutor(max_workers=ctx.read_threads if ctx else 1,
                              thread_name_prefix="api-read")
    app.state.read_pool = pool
    app.state.ctx = ctx
    for routes in ROUTERS:  # this order is the order of the OpenAPI document
        app.include_router(routes.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app

"""The daemon's side of the HTTP API: operations, hooks and the server's lifecycle.

:class:`DaemonApi` owns everything API-related of one :class:`~reconciler.daemon.app.
Daemon`: the task index, metrics and event hub (fed by the scheduler through an
:class:`~reconciler.api.observer.ApiObserver`), the tokens, the uvicorn server, and
the :class:`~reconciler.api.control.Operations` the API calls to change anything.

Every mutation runs on the daemon's event loop and goes where the daemon's own
decisions go: a manual trigger is a ``pending`` run row (as ``reconciler trigger``
writes) that the scheduler claims at once; suspend/resume write the override columns
and re-sync the task in the scheduler; cancel sets the live run's cancel event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from reconciler.api import ApiContext, ApiObserver
from reconciler.api.auth import TokenStore
from reconciler.api.limits import Limits, TickGate
from reconciler.api.metrics import ZOOKEEPER_STATES
from reconciler.core.backfill import BackfillRecord
from reconciler.core.clock import Clock
from reconciler.core.errors import ReconcilerError
from reconciler.core.isolation import HostFacts
from reconciler.core.plan import SafetyOptions
from reconciler.core.plan_document import plan_document
from reconciler.core.runtime import ActualTask, RunRecord
from reconciler.daemon.host import SchedulerHost
from reconciler.daemon.scheduler import ActiveRun, Scheduler
from reconciler.daemon.state import Cluster, DaemonState
from reconciler.daemon.worker import StoreWorker
from reconciler.manifests import LoadCache
from reconciler.service.operations import Caller, ResumeResult, TaskOperations
from reconciler.store.sql import DatabaseStore
from reconciler.store.sqlite_guard import FileGuard

if TYPE_CHECKING:
    from reconciler.api.server import ApiServer
    from reconciler.service import ReconcileResult

log = logging.getLogger("reconciler.daemon")
PLAN_CACHE_S = 2.0


@dataclass(frozen=True)
class DaemonParts:
    """What the API side of a daemon reads: given by the composition function."""

    config: DaemonConfigView
    clock: Clock
    store: DatabaseStore
    worker: StoreWorker
    cache: LoadCache
    scheduler: Scheduler
    state: DaemonState
    cluster: Cluster | None = None
    db_guard: FileGuard | None = None


class DaemonConfigView(Protocol):
    """The settings the API side reads (a :class:`~reconciler.daemon.app.DaemonConfig`)."""

    @property
    def replica(self) -> str: ...

    @property
    def manifests(self) -> str: ...

    @property
    def safety(self) -> SafetyOptions: ...

    @property
    def host(self) -> HostFacts: ...


class DaemonOperations:
    """:class:`~reconciler.api.control.Operations` on a running daemon."""

    def __init__(self, parts: DaemonParts, api: DaemonApi) -> None:
        self.d = parts
        self.api = api
        self.replica = parts.config.replica
        self._plan: tuple[float, int, dict[str, Any]] | None = None
        self._plan_lock = asyncio.Lock()
        self.tasks = TaskOperations(
            parts.store, parts.clock, call=parts.worker.call,
            host=SchedulerHost(parts.scheduler, api.observer, self.replica))

    # ------------------------------------------------------------------- reads

    def live_run(self, task: str, run_id: int) -> ActiveRun | None:
        state = self.d.scheduler.tasks.get(task)
        return None if state is None else state.active.get(run_id)

    def _coordinator(self) -> Any:
        """The distributed mode's ZooKeeper coordinator, or None (single replica)."""
        return None if self.d.cluster is None else self.d.cluster.coordinator

    def refresh(self) -> None:
        """Pull-based gauges, before a scrape: writer and ZooKeeper state."""
        coordinator = self._coordinator()
        if coordinator is None:
            return
        try:
            self.api.metrics.set_writer(bool(coordinator.is_writer))
            state = str(coordinator.state)
            if state in ZOOKEEPER_STATES:
                self.api.metrics.set_zookeeper_state(state)
        except Exception:  # a coordinator mid-restart must not break /metrics
            log.debug("could not read the coordinator's state", exc_info=True)

    def ready_checks(self) -> dict[str, tuple[bool, str]]:
        checks: dict[str, tuple[bool, str]] = {}
        state = self.d.state
        if state.last_result is not None:
            checks["reconcile"] = (True, "the manifests were reconciled")
        else:
            checks["reconcile"] = (False, state.last_error or "the first reconcile is not done")
        write_error = self.d.scheduler.write_error
        checks["writes"] = ((True, "the last write to the database succeeded")
                            if write_error is None
                            else (False, f"writes to the database fail: {write_error}"))
        guard = self.d.db_guard
        if guard is not None and guard.problem is not None:
            # replaces /readyz's ping: the unlinked file still answers, or the guard
            # refuses it with this reason
            checks["database"] = (False, guard.problem)
        checks["database-lock"] = ((True, "this daemon holds the database lock")
                                   if state.lock_error is None else (False, state.lock_error))
        coordinator = self._coordinator()
        if coordinator is not None:
            try:
                session = str(coordinator.state)
            except Exception:
                session = "unknown"
            checks["zookeeper"] = (session == "connected", f"ZooKeeper session {session}")
        return checks

    def status_info(self) -> dict[str, Any]:
        result = self.d.state.last_result
        mode: str = "single"
        writer: str | None = self.replica
        coordinator = self._coordinator()
        if coordinator is not None:
            mode = "distributed"
            try:
                writer = self.replica if coordinator.is_writer else None
            except Exception:
                writer = None  # the API then looks for the writer in the replicas' rows
        return {
            "mode": mode,
            "writer": writer,
            "lastReconcile": self.api.last_reconcile,
            "manifestErrors": [e.to_json() for e in result.plan.errors] if result else [],
            "refusals": list(result.plan.refusals) if result else [],
        }

    async def plan(self) -> dict[str, Any]:
        """The pending plan, computed on the bulk store thread; cached for 2 s."""
        from reconciler.manifests.git import detect_revision
        from reconciler.service import make_plan

        async with self._plan_lock:
            reconciles = self.api.observer.reconciles
            cached = self._plan
            if (cached is not None and cached[1] == reconciles
                    and time.monotonic() - cached[0] < PLAN_CACHE_S):
                return cached[2]
            d = self.d
            _, the_plan = await d.worker.bulk(make_plan, d.config.manifests, d.store,
                                              d.config.safety, cache=d.cache,
                                              host=d.config.host)
            revision = None
            if Path(d.config.manifests).exists():
                with contextlib.suppress(ReconcilerError, OSError):
                    rev = await d.worker.bulk(detect_revision, d.config.manifests)
                    revision = str(rev) if rev is not None else None
            doc = {
                "plan": plan_document(the_plan).model_dump(mode="json"),
                "revision": revision,
                "computedAt": d.clock.now().isoformat(),
            }
            self._plan = (time.monotonic(), reconciles, doc)
            return doc

    # --------------------------------------------------------------- mutations
    # Written once in reconciler.service.operations, shared with the CLI.

    async def trigger(self, name: str, caller: Caller,
                      params: Mapping[str, object] | None = None) -> RunRecord:
        return await self.tasks.trigger(name, caller, params)

    async def suspend(self, name: str, note: str | None, caller: Caller
                      ) -> tuple[ActualTask, bool]:
        return await self.tasks.suspend(name, note, caller)

    async def resume(self, name: str, catch_up: bool, caller: Caller) -> ResumeResult:
        return await self.tasks.resume(name, catch_up, caller)

    async def cancel(self, run_id: int, caller: Caller) -> tuple[RunRecord, bool]:
        return await self.tasks.cancel(run_id, caller)

    async def backfill(self, name: str, start: str, end: str, caller: Caller, *,
                       parallel: int, rerun: bool) -> BackfillRecord:
        return await self.tasks.backfill(name, start, end, caller, parallel=parallel,
                                         rerun=rerun)

    async def cancel_backfill(self, backfill_id: int, caller: Caller
                              ) -> tuple[BackfillRecord, bool]:
        return await self.tasks.cancel_backfill(backfill_id, caller)

    async def backfill_slots(self, name: str, start: str, end: str
                             ) -> tuple[ActualTask, datetime, datetime, list[datetime]]:
        return await self.tasks.backfill_slots(name, start, end)


class DaemonApi:
    """API state of one daemon: index, metrics, events, tokens, server, operations."""

    def __init__(
        self,
        parts: DaemonParts,
        observer: ApiObserver,
        *,
        listen: str | None = None,
        api_token: str | None = None,
        token_file: str | None = None,
        auth_reads: bool = False,
        allowed_hosts: Sequence[str] | None = None,
        limits: Limits | None = None,
        gate: TickGate | None = None,
    ) -> None:
        self.parts = parts
        self.limits = limits
        self.gate = gate
        self.listen = listen
        self.allowed_hosts = allowed_hosts
        self.observer = observer
        self.index = observer.index
        self.metrics = observer.metrics
        self.events = observer.events
        self.tokens = TokenStore(api_token, token_file, clock=parts.clock)
        if auth_reads and not self.tokens.configured:
            raise ReconcilerError("--auth-reads needs a token: set RECONCILER_API_TOKEN or "
                                  "--api-token-file")
        self.ops = DaemonOperations(parts, self)
        self.ctx = ApiContext(
            store=parts.store, ops=self.ops, index=self.index, metrics=self.metrics,
            events=self.events, tokens=self.tokens, clock=parts.clock,
            auth_reads=auth_reads,
        )
        self.last_reconcile: dict[str, Any] | None = None
        self.server: ApiServer | None = None
        self._app: Any = None
        self._background: set[asyncio.Task[Any]] = set()

    def app(self) -> Any:
        from reconciler.api.app import create_app

        self._app = create_app(self.ctx)
        return self._app

    # --------------------------------------------------------------- lifecycle

    def bind(self) -> None:
        """Bind the listening socket (before start-up: a port in use fails fast)."""
        if self.listen and self.server is None:
            from reconciler.api.server import ApiServer

            self.server = ApiServer(self.app(), self.listen, self.allowed_hosts, self.limits,
                                   self.gate)

    def serve(self) -> None:
        if self.server is not None:
            self.server.start()

    async def started(self) -> None:
        """After the first reconcile: seed the newest runs, warm the list cache."""
        d = self.parts
        try:
            latest = await d.worker.bulk(d.store.latest_runs)
            executed = await d.worker.bulk(d.store.latest_runs, executed=True)
        except ReconcilerError as exc:
            log.warning("could not read the latest runs for the API: %s", exc)
        else:
            self.index.load_runs(latest, executed)
        self.observer.seeded()
        task = asyncio.get_running_loop().create_task(self.index.warm())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def stopping(self) -> None:
        self.ctx.stopping = True

    async def close(self) -> None:
        self.events.close()
        if self.server is not None:
            await self.server.stop()
        if self._app is not None:
            self._app.state.read_pool.shutdown(wait=False)
        for task in list(self._background):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._background, return_exceptions=True)

    def reload_tokens(self) -> None:
        self.tokens.reload()

    # ------------------------------------------------------------------ hooks

    def reconciled(self, result: ReconcileResult | None, seconds: float, at: datetime,
                   error: str | None = None) -> None:
        revision = None
        if result is not None and result.revision is not None:
            revision = str(result.revision)
        elif self.last_reconcile is not None:
            revision = self.last_reconcile.get("revision")
        self.last_reconcile = {"at": at.isoformat(), "revision": revision,
                               "durationSeconds": round(seconds, 6), "error": error}
        if result is None:
            return
        a = result.applied
        self.observer.reconciled(
            seconds=seconds, at=at, errors=len(result.plan.errors), revision=revision,
            created=a.created if a else 0, updated=a.updated if a else 0,
            deleted=a.deleted if a else 0,
        )

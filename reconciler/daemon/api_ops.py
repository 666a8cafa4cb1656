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
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.api import ApiContext, ApiError, ApiObserver, EventHub, Metrics, TaskIndex
from reconciler.api.auth import TokenStore
from reconciler.api.metrics import ZOOKEEPER_STATES
from reconciler.core.errors import DuplicateRunError, ReconcilerError, TaskNotFoundError
from reconciler.core.model import ConcurrencyPolicy
from reconciler.core.plan_document import plan_document
from reconciler.core.protocols import NewRun
from reconciler.core.runtime import ActualTask, RunRecord, RunStatus, SuspendOverride, Trigger
from reconciler.core.schedule import Schedule
from reconciler.daemon.scheduler import ActiveRun

if TYPE_CHECKING:
    from reconciler.api.server import ApiServer
    from reconciler.daemon.app import Daemon
    from reconciler.service import ReconcileResult

log = logging.getLogger("reconciler.daemon")
PLAN_CACHE_S = 2.0


class DaemonOperations:
    """:class:`~reconciler.api.control.Operations` on a running :class:`Daemon`."""

    def __init__(self, daemon: Daemon, api: DaemonApi) -> None:
        self.d = daemon
        self.api = api
        self.replica = daemon.config.replica
        self._plan: tuple[float, int, dict[str, Any]] | None = None
        self._plan_lock = asyncio.Lock()

    # ------------------------------------------------------------------- reads

    def live_run(self, task: str, run_id: int) -> ActiveRun | None:
        state = self.d.scheduler.tasks.get(task)
        return None if state is None else state.active.get(run_id)

    def _coordinator(self) -> Any:
        """The distributed mode's ZooKeeper coordinator, or None (single replica)."""
        return getattr(self.d, "coordinator", None)

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
        if self.d.last_result is not None:
            checks["reconcile"] = (True, "the manifests were reconciled")
        else:
            checks["reconcile"] = (False, self.d.last_error or "the first reconcile is not done")
        write_error = self.d.scheduler.write_error
        checks["writes"] = ((True, "the last write to the database succeeded")
                            if write_error is None
                            else (False, f"writes to the database fail: {write_error}"))
        coordinator = self._coordinator()
        if coordinator is not None and "zookeeper" not in self.api.ready_checks:
            try:
                state = str(coordinator.state)
            except Exception:
                state = "unknown"
            checks["zookeeper"] = (state == "connected", f"ZooKeeper session {state}")
        for name, check in self.api.ready_checks.items():
            try:
                checks[name] = check()
            except Exception as exc:  # a broken check must not break /readyz
                checks[name] = (False, f"check failed: {exc.__class__.__name__}")
        return checks

    def status_info(self) -> dict[str, Any]:
        result = self.d.last_result
        mode, writer = self.api.mode, self.api.writer
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
                                              d.config.safety, cache=d.cache)
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

    async def _row(self, name: str) -> ActualTask:
        row: ActualTask | None = await self.d.worker.call(self.d.store.get_task, name)
        if row is None:
            raise TaskNotFoundError(name)
        return row

    async def _start_pending(self, name: str, pending: RunRecord, trigger: Trigger
                             ) -> RunRecord:
        """Start a pending row now (or learn what became of it: the poll loop may win)."""
        self.api.observer.run_recorded(pending)
        started = await self.d.scheduler.trigger(name, existing=pending, trigger=trigger)
        if started is not None:
            return started
        current = await self.d.worker.call(self.d.store.get_run, pending.id)
        return current or pending

    async def trigger(self, name: str, actor: str) -> RunRecord:
        d = self.d
        state = d.scheduler.tasks.get(name)
        if state is None:
            await self._row(name)  # 404 when there is no such task
            raise ApiError(409, f"task {name!r} cannot run: its stored spec is not usable "
                                "by this daemon (see the daemon log)")
        if not d.scheduler.accepting:
            raise ApiError(503, "the daemon is shutting down", "shutting_down")
        if state.busy and state.policy.concurrency is ConcurrencyPolicy.FORBID:
            raise ApiError(409, f"{name}: a run is active and concurrencyPolicy is Forbid")
        slot = d.clock.now()
        for _ in range(100):  # two triggers within the same microsecond: the next one
            try:
                pending = await d.worker.call(d.store.insert_run, NewRun(
                    task_name=name, slot=slot, attempt=1, trigger=Trigger.MANUAL,
                    status=RunStatus.PENDING, reason=f"triggered by {actor} (API)",
                    generation=state.policy.generation,
                ))
                break
            except DuplicateRunError:
                slot += timedelta(microseconds=1)
        else:
            raise ApiError(409, f"{name}: too many triggers at {slot.isoformat()}")
        record = await self._start_pending(name, pending, Trigger.MANUAL)
        if record.status is RunStatus.SKIPPED:
            raise ApiError(409, f"{name}: a run is active and concurrencyPolicy is Forbid "
                                f"(run {record.id} recorded as skipped)")
        return record

    async def suspend(self, name: str, note: str | None, actor: str
                      ) -> tuple[ActualTask, bool]:
        d = self.d
        row = await self._row(name)
        if row.suspended:
            return row, False
        row = await d.worker.call(d.store.set_override, name,
                                  SuspendOverride(True, note, actor, d.clock.now()))
        await d.scheduler.sync([row], full=False)
        return row, True

    async def resume(self, name: str, catch_up: bool, actor: str
                     ) -> tuple[ActualTask, bool, RunRecord | None]:
        d = self.d
        before = await self._row(name)
        if not before.suspended:
            return before, False, None
        if before.suspended_in_git:
            override: SuspendOverride | None = SuspendOverride(False, None, actor,
                                                               d.clock.now())
        else:
            override = None
        row = await d.worker.call(d.store.set_override, name, override)
        await d.scheduler.sync([row], full=False)
        run = None
        if catch_up:
            run = await self._catch_up(row, before, actor)
        return row, True, run

    async def _catch_up(self, row: ActualTask, before: ActualTask, actor: str
                        ) -> RunRecord | None:
        d = self.d
        now = d.clock.now()
        try:
            slot = Schedule.parse(row.schedule, row.time_zone).previous_before(now)
        except ReconcilerError:
            return None
        since = before.override.at if before.override and before.override.suspended else None
        if slot is None or (since is not None and slot < since):
            return None  # no slot came while it was suspended
        attempt = await d.worker.call(d.store.next_attempt, row.name, slot)
        pending = await d.worker.call(d.store.insert_run, NewRun(
            task_name=row.name, slot=slot, attempt=attempt, trigger=Trigger.CATCH_UP,
            status=RunStatus.PENDING, reason=f"catch-up on resume by {actor} (API)",
        ))
        return await self._start_pending(row.name, pending, Trigger.CATCH_UP)

    async def cancel(self, run_id: int, actor: str) -> tuple[RunRecord, bool]:
        d = self.d
        record = await d.worker.call(d.store.get_run, run_id)
        if record is None:
            raise ApiError(404, f"run {run_id} not found")
        if record.status.finished:
            if record.status is RunStatus.CANCELLED:
                return record, False
            raise ApiError(409, f"run {run_id} already finished: {record.status}")
        live = self.live_run(record.task_name, run_id)
        if live is not None:
            if live.cancel.is_set():
                return live.record, False
            live.cancel_status = RunStatus.CANCELLED
            live.cancel_reason = f"cancelled by {actor} (API)"
            live.cancel.set()
            return live.record, True
        if record.status is RunStatus.PENDING and record.replica is None:
            ok = await d.worker.call(
                d.store.claim_pending_run, run_id, replica=self.replica, fencing_token=None,
                started_at=d.clock.now(), status=RunStatus.CANCELLED,
                reason=f"cancelled by {actor} (API) before it started",
            )
            current = await d.worker.call(d.store.get_run, run_id)
            if ok and current is not None:
                self.api.observer.run_recorded(current)
                return current, True
            if current is not None and self.live_run(current.task_name, run_id) is not None:
                return await self.cancel(run_id, actor)  # the scheduler took it meanwhile
            if current is not None and current.status.finished:
                return current, False
        where = f"replica {record.replica}" if record.replica else "no replica yet"
        raise ApiError(409, f"run {run_id} is {record.status} on {where}, not on this one "
                            f"({self.replica}); cancel it there")


class DaemonApi:
    """API state of one daemon: index, metrics, events, tokens, server, operations."""

    def __init__(
        self,
        daemon: Daemon,
        *,
        listen: str | None = None,
        api_token: str | None = None,
        token_file: str | None = None,
        auth_reads: bool = False,
        allowed_hosts: Sequence[str] | None = None,
    ) -> None:
        self.daemon = daemon
        self.listen = listen
        self.allowed_hosts = allowed_hosts
        self.index = TaskIndex()
        self.metrics = Metrics()
        self.events = EventHub()
        self.observer = ApiObserver(self.index, self.metrics, self.events)
        self.tokens = TokenStore(api_token, token_file, clock=daemon.clock)
        if auth_reads and not self.tokens.configured:
            raise ReconcilerError("--auth-reads needs a token: set RECONCILER_API_TOKEN or "
                                  "--api-token-file")
        self.ops = DaemonOperations(daemon, self)
        self.ctx = ApiContext(
            store=daemon.store, ops=self.ops, index=self.index, metrics=self.metrics,
            events=self.events, tokens=self.tokens, clock=daemon.clock,
            auth_reads=auth_reads,
        )
        #: For the distributed mode: who fires slots, and extra readiness checks.
        self.mode = "single"
        self.writer: str | None = daemon.config.replica
        self.ready_checks: dict[str, Callable[[], tuple[bool, str]]] = {}
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
            from reconciler.api.limits import Limits
            from reconciler.api.server import ApiServer

            c = self.daemon.config
            limits = Limits.of(c.api_head_timeout.total_seconds(),
                               c.api_max_connections_per_address, c.api_rate_per_address)
            self.server = ApiServer(self.app(), self.listen, self.allowed_hosts, limits)

    def serve(self) -> None:
        if self.server is not None:
            self.server.start()

    async def started(self) -> None:
        """After the first reconcile: seed the newest runs, warm the list cache."""
        d = self.daemon
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

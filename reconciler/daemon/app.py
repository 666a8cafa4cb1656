"""``reconciler run``: the long-running service.

Start-up: upgrade the schema, mark runs left ``running`` by a dead process as
``abandoned`` (retrying them where the policy says so), reconcile the manifests,
load the table into the scheduler and decide the slots missed while it was down.

Then four loops share one event loop:

* the **scheduler** sleeps until the next slot or until woken;
* the **watcher** reconciles on file changes (watchfiles, debounced), on a fixed
  resync interval and on SIGHUP; only the tasks a plan touched are re-read;
* the **poller** picks up, once a second, what the CLI wrote to the database
  (manual triggers, suspend/resume overrides);
* the **heartbeat** refreshes running runs and the replica's status row.

SIGTERM/SIGINT stop firing new slots, let running runs finish for ``--shutdown-grace``,
cancel the rest (recorded ``cancelled``) and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from reconciler.core.clock import Clock, SystemClock
from reconciler.core.errors import ReconcilerError
from reconciler.core.plan import Action, SafetyOptions
from reconciler.core.runtime import RunStatus, Trigger
from reconciler.daemon.claims import InProcessClaimer
from reconciler.daemon.offload import OffloadExecutor
from reconciler.daemon.scheduler import Scheduler, SchedulerConfig
from reconciler.daemon.worker import StoreWorker
from reconciler.executors import DispatchExecutor
from reconciler.manifests import LoadCache
from reconciler.service import ReconcileResult, reconcile

log = logging.getLogger("reconciler.daemon")

IGNORED_SUFFIXES = ("~", ".swp", ".swx", ".tmp")


@dataclass
class DaemonConfig:
    manifests: str
    database: str | None = None
    resync_interval: timedelta = timedelta(seconds=60)
    poll_interval: timedelta = timedelta(seconds=1)
    heartbeat_interval: timedelta = timedelta(seconds=5)
    abandon_after: timedelta = timedelta(seconds=30)
    shutdown_grace: timedelta = timedelta(seconds=30)
    debounce_ms: int = 50
    max_concurrent_runs: int = 16
    output_limit: int = 64 * 1024
    safety: SafetyOptions = field(default_factory=SafetyOptions)
    replica: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )


def _interesting(path: str) -> bool:
    name = os.path.basename(path)
    # A dot-entry can still be git-sync's symlink swap (".worktrees"); the periodic
    # resync covers it.
    return not (name.startswith((".", "#")) or name.endswith(IGNORED_SUFFIXES))


class Daemon:
    def __init__(self, config: DaemonConfig, *, clock: Clock | None = None,
                 store: Any = None) -> None:
        from reconciler.store import create_store

        self.config = config
        self.clock = clock or SystemClock()
        self.store = store or create_store(config.database)
        self.worker = StoreWorker()
        self.cache = LoadCache()
        self.stop = asyncio.Event()
        self.resync_now = asyncio.Event()
        self.last_result: ReconcileResult | None = None
        self.last_error: str | None = None
        self.executor = OffloadExecutor(DispatchExecutor())
        self.scheduler = Scheduler(
            self.store, self.worker, InProcessClaimer(), self.executor, self.clock,
            SchedulerConfig(
                replica=config.replica,
                max_concurrent_runs=config.max_concurrent_runs,
                output_limit=config.output_limit,
            ),
        )
        self._override_marker: Any = None

    # ------------------------------------------------------------------ start-up

    async def start(self) -> None:
        await self.worker.bulk(self.store.upgrade)
        await self._abandon_orphans(all_running=True)
        await self.reconcile_once(initial=True)

    async def _abandon_orphans(self, *, all_running: bool) -> None:
        """Mark runs whose process is gone ``abandoned``; retry them if the policy says so."""
        now = self.clock.now()
        stale_before = None if all_running else now - self.config.abandon_after
        runs = await self.worker.call(
            self.store.abandon_runs,
            replica=self.config.replica,
            stale_before=stale_before,
            now=now,
            reason=(
                "the daemon that ran it stopped (found at start-up)"
                if all_running
                else "its replica stopped heartbeating"
            ),
        )
        for run in runs:
            log.warning("run %d of %s (slot %s) abandoned", run.id, run.task_name,
                        run.slot.isoformat())
            state = self.scheduler.tasks.get(run.task_name)
            if state is not None and run.attempt <= state.policy.retry_limit:
                self.scheduler.timeline.add_retry(
                    run.task_name, now, run.slot, run.attempt + 1, state.policy.generation
                )
        self._pending_abandoned = runs

    async def reconcile_once(self, *, initial: bool = False) -> ReconcileResult | None:
        started = self.clock.monotonic()
        try:
            result = await self.worker.bulk(
                reconcile, self.config.manifests, self.store, self.config.safety,
                actor=f"daemon/{self.config.replica}", clock=self.clock, cache=self.cache,
            )
        except ReconcilerError as exc:
            self.last_error = str(exc)
            log.error("reconcile failed: %s", exc)
            return None
        self.last_result, self.last_error = result, None
        for error in result.plan.errors:
            log.error("manifest error: %s (tasks kept)", error)
        for reason in result.plan.refusals:
            log.error("plan refused: %s", reason)
        changed = {c.name for c in result.plan.changes
                   if c.action in (Action.CREATE, Action.UPDATE, Action.DELETE)}
        if initial:
            rows = await self.worker.bulk(self.store.load_tasks)
            await self.scheduler.sync(rows, full=True, recover=True)
            for run in getattr(self, "_pending_abandoned", []):
                state = self.scheduler.tasks.get(run.task_name)
                if state is not None and run.attempt <= state.policy.retry_limit:
                    self.scheduler.timeline.add_retry(
                        run.task_name, self.clock.now(), run.slot, run.attempt + 1,
                        state.policy.generation,
                    )
        elif changed:
            rows = [
                r for r in await self.worker.bulk(self.store.get_tasks, sorted(changed))
            ]
            for name in changed - {r.name for r in rows}:
                self.scheduler.forget(name)
            await self.scheduler.sync(rows, full=False)
        if result.applied is not None:
            a = result.applied
            log.info("applied%s: %d created, %d updated, %d deleted",
                     f" at {result.revision}" if result.revision else "",
                     a.created, a.updated, a.deleted)
        elapsed = self.clock.monotonic() - started
        log.debug("reconcile took %.1f ms", elapsed * 1000)
        await self._write_status()
        return result

    # ---------------------------------------------------------------------- loops

    async def watch_loop(self) -> None:
        import watchfiles

        root = Path(self.config.manifests)
        watch_path = root.parent if root.is_symlink() or not root.exists() else root
        while not self.stop.is_set():
            try:
                async for changes in watchfiles.awatch(
                    watch_path, stop_event=self.stop, debounce=self.config.debounce_ms,
                    step=10, recursive=True, watch_filter=lambda _c, p: _interesting(p),
                    rust_timeout=1000, yield_on_timeout=False,
                ):
                    log.debug("manifests changed: %d event(s)", len(changes))
                    self.resync_now.set()
            except (OSError, RuntimeError) as exc:
                log.warning("watching %s failed (%s); relying on the resync interval",
                            watch_path, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=5)

    async def resync_loop(self) -> None:
        interval = self.config.resync_interval.total_seconds()
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.resync_now.wait(), timeout=interval)
            if self.stop.is_set():
                break
            self.resync_now.clear()
            await self.reconcile_once()

    async def poll_loop(self) -> None:
        """Pick up what the CLI wrote: manual triggers and suspend/resume overrides."""
        interval = self.config.poll_interval.total_seconds()
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=interval)
            if self.stop.is_set():
                break
            try:
                await self._poll_once()
            except ReconcilerError as exc:
                log.warning("polling the database failed: %s", exc)

    async def _poll_once(self) -> None:
        marker = await self.worker.call(self.store.override_marker)
        if marker != self._override_marker:
            first = self._override_marker is None
            self._override_marker = marker
            if not first:
                rows = await self.worker.bulk(self.store.load_tasks)
                await self.scheduler.sync(rows, full=True)
        pending = await self.worker.call(
            self.store.list_runs, None, limit=100, statuses=[RunStatus.PENDING]
        )
        for run in reversed(pending):
            if run.replica is None:
                await self.scheduler.trigger(run.task_name, existing=run, trigger=run.trigger)

    async def heartbeat_loop(self) -> None:
        interval = self.config.heartbeat_interval.total_seconds()
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=interval)
            if self.stop.is_set():
                break
            await self.scheduler.heartbeat()
            await self._write_status()
            with contextlib.suppress(ReconcilerError):
                await self._abandon_orphans(all_running=False)

    async def _write_status(self) -> None:
        result = self.last_result
        status: dict[str, Any] = {
            "replica": self.config.replica,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "manifests": str(self.config.manifests),
            "tasks": len(self.scheduler.tasks),
            "active_runs": len(self.scheduler.active_runs),
            "last_error": self.last_error,
        }
        if result is not None:
            status["revision"] = str(result.revision) if result.revision else None
            status["manifest_errors"] = [str(e) for e in result.plan.errors]
            status["refusals"] = list(result.plan.refusals)
        with contextlib.suppress(ReconcilerError):
            await self.worker.call(self.store.write_replica_status, self.config.replica,
                                   status, self.clock.now())

    # ------------------------------------------------------------------- lifecycle

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.resync_now.set)
        await self.start()
        log.info("reconciler %s running: %d task(s) from %s", self.config.replica,
                 len(self.scheduler.tasks), self.config.manifests)
        loops = [
            loop.create_task(self.scheduler.run_forever(self.stop)),
            loop.create_task(self.watch_loop()),
            loop.create_task(self.resync_loop()),
            loop.create_task(self.poll_loop()),
            loop.create_task(self.heartbeat_loop()),
        ]
        await self.stop.wait()
        log.info("stopping: waiting up to %ss for %d running run(s)",
                 self.config.shutdown_grace.total_seconds(), len(self.scheduler.active_runs))
        self.resync_now.set()
        await self.scheduler.shutdown(self.config.shutdown_grace)
        for t in loops:
            t.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        with contextlib.suppress(ReconcilerError):
            await self.worker.call(self.store.write_replica_status, self.config.replica,
                                   None, self.clock.now())
        self.worker.close()
        self.executor.close()
        log.info("stopped")
        return 0


def run_daemon(config: DaemonConfig) -> int:
    return asyncio.run(Daemon(config).run())


__all__ = ["Daemon", "DaemonConfig", "Trigger", "run_daemon"]

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
import gc
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from kazoo.exceptions import KazooException

from reconciler.core.calendars import calendars_of_rows
from reconciler.core.clock import Clock
from reconciler.core.errors import ReconcilerError
from reconciler.core.isolation import HostFacts
from reconciler.core.plan import Action, SafetyOptions
from reconciler.core.runtime import ActualTask, RunRecord, RunStatus, Trigger
from reconciler.core.scheduling import decide_retry
from reconciler.daemon.api_ops import DaemonApi
from reconciler.daemon.backfills import BackfillDriver
from reconciler.daemon.notices import PolicyOf, stored_policies
from reconciler.daemon.offload import OffloadExecutor
from reconciler.daemon.scheduler import Scheduler
from reconciler.daemon.sender import NotificationSender
from reconciler.daemon.state import Cluster, DaemonState
from reconciler.daemon.worker import StoreWorker
from reconciler.executors.isolation import current_mode, sweep_run_cgroups
from reconciler.locks import (
    ChangeEvent,
    ConnectionState,
)
from reconciler.manifests import LoadCache
from reconciler.service import ReconcileResult, reconcile
from reconciler.store.instance_lock import InstanceLock
from reconciler.store.sql import DatabaseStore
from reconciler.store.sqlite_guard import FileGuard

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
    listen: str | None = None  # HTTP API + dashboard address ("127.0.0.1:8080"); None: off
    api_token: str | None = None  # "name:token" or "token" (RECONCILER_API_TOKEN)
    api_token_file: str | None = None  # "name:token" lines, re-read on change and SIGHUP
    auth_reads: bool = False  # reads need a token too
    allowed_hosts: tuple[str, ...] | None = None  # Host names answered (docs/security.md)
    # connection limits of the API (docs/security.md); a rate of 0: no rate limit
    api_head_timeout: timedelta = timedelta(seconds=5)
    api_max_connections_per_address: int = 64
    api_rate_per_address: float = 100.0
    # distributed mode (docs/guarantees.md): None = single replica, in-process claims
    zookeeper: str | None = None  # "zk-0:2181,zk-1:2181,zk-2:2181[/chroot]"
    namespace: str = "default"
    max_clock_skew: timedelta = timedelta(seconds=2)
    zookeeper_session_timeout: timedelta = timedelta(seconds=10)
    # a slot claimed by a peer that recorded nothing for this long is recorded missed
    unclaimed_grace: timedelta = timedelta(seconds=30)
    # notifications: one message per channel, task and event per this long (the rest
    # folded into the next); a failed delivery is retried after notify_backoff, doubling
    notify_min_interval: timedelta = timedelta(minutes=5)
    notify_backoff: timedelta = timedelta(seconds=10)
    # the daemon pings this URL every heartbeat_every (healthchecks.io style); None: off
    heartbeat_url: str | None = None
    heartbeat_every: timedelta = timedelta(seconds=60)
    # what this daemon runs as: tasks it cannot run as declared are manifest errors
    host: HostFacts = field(default_factory=lambda: HostFacts(root=os.geteuid() == 0))


def _watch_target(root: Path) -> tuple[Path, tuple[int, int] | None]:
    """What to watch for ``root`` (itself, or its parent when it is missing or a
    symlink that gets swapped) and that path's identity (device, inode)."""
    path = root.parent if root.is_symlink() or not root.is_dir() else root
    try:
        st = path.stat()
    except OSError:
        return path, None
    return path, (st.st_dev, st.st_ino)


def _interesting(path: str) -> bool:
    name = os.path.basename(path)
    # A dot-entry can still be git-sync's symlink swap (".worktrees"); the periodic
    # resync covers it.
    if name == ".reconcilerignore":
        return True
    return not (name.startswith((".", "#")) or name.endswith(IGNORED_SUFFIXES))


class Daemon:
    """The service's loops over parts built by :func:`~reconciler.daemon.compose.
    build_daemon` (the one place that wires them; nothing is set after construction)."""

    def __init__(
        self,
        config: DaemonConfig,
        *,
        clock: Clock,
        store: DatabaseStore,
        worker: StoreWorker,
        cache: LoadCache,
        scheduler: Scheduler,
        executor: OffloadExecutor | None,
        api: DaemonApi,
        state: DaemonState,
        instance_lock: InstanceLock,
        db_guard: FileGuard | None = None,
        cluster: Cluster | None = None,
        sender: NotificationSender | None = None,
        backfills: BackfillDriver | None = None,
        loops: Sequence[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = (),
    ) -> None:
        self.config = config
        #: Carries out stored backfills (None: not here)
        self.backfills = backfills
        #: More loops run until stopped (the deadline watcher, the heartbeat pings)
        self.loops = loops
        #: Delivers the notification outbox on its own thread (None: not here)
        self.sender = sender
        self.clock = clock
        self.store = store
        #: A SQLite file deleted, replaced or truncated under the daemon: not ready
        self.db_guard = db_guard
        self.worker = worker
        self.cache = cache
        self.scheduler = scheduler
        #: The executors' loop (None when a test runs its executor on this loop)
        self.executor = executor
        self.api = api
        self.state = state
        #: One single-replica daemon per database (distributed replicas share it).
        self.instance_lock = instance_lock
        self.cluster = cluster
        self.coordinator = cluster.coordinator if cluster is not None else None
        self.skew_guard = cluster.skew_guard if cluster is not None else None
        self.stop = asyncio.Event()
        self.resync_now = asyncio.Event()
        self._override_marker: Any = None
        self.actual: dict[str, ActualTask] | None = None
        self._calendar_hashes: dict[str, str] | None = None  # as the scheduler has them
        self.full_resync = False
        self.changed_paths: set[str] = set()
        #: Runs abandoned at start-up, retried once the first sync knows their tasks.
        self._pending_abandoned: list[RunRecord] = []
        #: The first sync with recovery of missed slots is done. Until then (the first
        #: reconcile failed: database down, apply refused) every reconcile retries it.
        self._started = False

    def _close_executor(self) -> None:
        if self.executor is not None:  # the executors' own loop and thread
            self.executor.close()

    @property
    def last_result(self) -> ReconcileResult | None:
        return self.state.last_result

    @property
    def last_error(self) -> str | None:
        return self.state.last_error

    # ------------------------------------------------------------------ start-up

    async def start(self) -> None:
        await self.worker.bulk(self.store.upgrade)
        if self.db_guard is not None:
            self.db_guard.remember()
        # With peers, "running" rows may be theirs: only stale ones are abandoned.
        await self._abandon_orphans(all_running=self.coordinator is None)
        if swept := sweep_run_cgroups(current_mode()):
            log.warning("killed the processes of %d run cgroup(s) a dead daemon left", swept)
        await self.reconcile_once()

    async def _check_lock(self) -> None:
        why = await self.worker.call(self.instance_lock.check)
        if why is not None and why != self.state.lock_error:
            log.error("database lock: %s", why)
        elif why is None and self.state.lock_error is not None:
            log.info("database lock held again")
        self.state.lock_error = why

    # ------------------------------------------------------------ distributed mode

    def _on_change(self, event: ChangeEvent) -> None:
        if event.info.get("by") != self.config.replica:
            self.full_resync = True
            self.resync_now.set()

    def _on_writer(self, is_writer: bool) -> None:
        if is_writer:  # reconcile the manifests now rather than at the next resync
            self.full_resync = True
            self.resync_now.set()

    async def _follow_table(self) -> None:
        """Not the writer: schedule from the runtime table the writer maintains."""
        try:
            rows = await self.worker.bulk(self.store.load_tasks)
        except ReconcilerError as exc:
            self.state.last_error = str(exc)
            log.error("reading the runtime table failed: %s", exc)
            return
        self.actual = {r.name: r for r in rows}
        await self._refresh_calendars()  # a changed calendar re-plans its tasks in the sync
        if self._started:
            await self.scheduler.sync(rows, full=True)
        else:
            await self._start_schedule(rows)
        await self._write_status()

    async def _refresh_calendars(self) -> bool:
        """Give the scheduler the calendars of the table; True when they changed."""
        try:
            rows = await self.worker.call(self.store.load_calendars)
        except ReconcilerError as exc:
            log.error("reading the calendars failed: %s", exc)
            return False
        hashes = {r.name: r.hash for r in rows}
        if hashes == self._calendar_hashes:
            return False
        self._calendar_hashes = hashes
        self.scheduler.calendars = calendars_of_rows(rows)
        return True

    async def _start_schedule(self, rows: list[ActualTask]) -> None:
        """The first sync: decide the slots missed while down, then queue the retries
        of the runs abandoned at start-up (before this sync the scheduler knew no
        task). Writer or not: the replica that abandoned a run decides its retry."""
        await self.scheduler.sync(rows, full=True, recover=True)
        pending, self._pending_abandoned = self._pending_abandoned, []
        for run in pending:
            self._queue_retry(run)
        self._started = True

    def _queue_retry(self, run: RunRecord) -> None:
        """Retry an abandoned run now (not after the backoff: the daemon was down), if
        its task's retry policy allows it."""
        state = self.scheduler.tasks.get(run.task_name)
        now = self.clock.now()
        if state is not None and decide_retry(state.policy, RunStatus.ABANDONED,
                                              run.attempt, now) is not None:
            self.scheduler.timeline.add_retry(
                run.task_name, now, run.slot, run.attempt + 1, state.policy.generation,
            )

    async def _abandon_orphans(self, *, all_running: bool) -> None:
        """Mark runs whose process is gone ``abandoned``; retry them if the policy says so."""
        if not all_running and self.skew_guard is not None and self.skew_guard.over_bound():
            return  # "stale" by a clock that is off: a peer's live runs would look dead
        now = self.clock.now()
        stale_before = None if all_running else now - self.config.abandon_after
        policy_of: PolicyOf = self.scheduler.policy_of
        routes = await self.worker.call(self.scheduler.notices.routes)
        if not self._started and routes:  # the scheduler knows no task yet
            policy_of = stored_policies(await self.worker.bulk(self.store.load_tasks))
        runs = await self.worker.call(
            self.scheduler.notices.abandon_runs, policy_of,
            replica=self.config.replica,
            stale_before=stale_before,
            now=now,
            reason=(
                "the daemon that ran it stopped (found at start-up)"
                if all_running
                else "its replica stopped heartbeating"
            ),
        )
        if not self._started:
            self.scheduler.notices.forget_routes()
        for run in runs:
            log.warning("run %d of %s (slot %s) abandoned", run.id, run.task_name,
                        run.slot.isoformat())
            self.api.observer.run_finished(run)
            if self._started:
                self._queue_retry(run)
            else:
                self._pending_abandoned.append(run)  # retried once the tasks are known

    async def reconcile_once(self, *, full: bool = False) -> ReconcileResult | None:
        """Reconcile the manifests into the table and the scheduler.

        The table as last seen is kept in memory (``self.actual``) and planned against,
        so a one-file change costs one file read and a few row writes; ``full`` (start-up
        and the periodic resync) re-reads every row to pick up writes from elsewhere.
        """
        initial = not self._started  # start-up, or every start-up attempt so far failed
        if self.coordinator is not None and not self.coordinator.is_writer:
            await self._follow_table()
            return None
        started = self.clock.monotonic()
        try:
            hint: set[str] | None = None
            if initial or full or self.actual is None:
                rows = await self.worker.bulk(self.store.load_tasks)
                self.actual = {r.name: r for r in rows}
                self.changed_paths.clear()
            elif self.changed_paths:
                hint, self.changed_paths = self.changed_paths, set()
            result = await self.worker.bulk(
                reconcile, self.config.manifests, self.store, self.config.safety,
                actor=f"daemon/{self.config.replica}", clock=self.clock, cache=self.cache,
                actual=list(self.actual.values()), hint=hint, host=self.config.host,
            )
        except ReconcilerError as exc:
            self.state.last_error = str(exc)
            log.error("reconcile failed: %s", exc)
            self.api.reconciled(None, self.clock.monotonic() - started, self.clock.now(),
                                str(exc))
            return None
        self.state.last_result, self.state.last_error = result, None
        for error in result.plan.errors:
            log.error("manifest error: %s (tasks kept)", error)
        for reason in result.plan.refusals:
            log.error("plan refused: %s", reason)
        changed = {c.name for c in result.plan.changes
                   if c.action in (Action.CREATE, Action.UPDATE, Action.DELETE)}
        calendars = any(c.action in (Action.CREATE, Action.UPDATE, Action.DELETE)
                        for c in result.plan.calendars)
        recal = (initial or full or calendars) and await self._refresh_calendars()
        if initial:
            rows = await self.worker.bulk(self.store.load_tasks)
            self.actual = {r.name: r for r in rows}
            await self._start_schedule(rows)
        elif changed:
            rows = await self.worker.bulk(self.store.get_tasks, sorted(changed))
            for name in changed - {r.name for r in rows}:
                self.scheduler.forget(name)
            await self.scheduler.sync(rows, full=False)
        if changed and not initial and self.actual is not None:
            for name in changed:
                self.actual.pop(name, None)
            self.actual.update((r.name, r) for r in rows if r.name in changed)
        if recal and not initial and self.actual is not None:
            # the tasks that name a changed calendar: planned again with it
            await self.scheduler.sync(list(self.actual.values()), full=True)
        if result.applied is not None:
            a = result.applied
            log.info("applied%s: %d created, %d updated, %d deleted",
                     f" at {result.revision}" if result.revision else "",
                     a.created, a.updated, a.deleted)
            if self.coordinator is not None and changed:
                await self.coordinator.notify_change(
                    revision=str(result.revision) if result.revision else None,
                    changed=len(changed))
        elapsed = self.clock.monotonic() - started
        log.debug("reconcile took %.1f ms", elapsed * 1000)
        self.api.reconciled(result, elapsed, self.clock.now())
        await self._write_status()
        return result

    # ---------------------------------------------------------------------- loops

    async def watch_loop(self) -> None:
        """Turn file events into reconciles; follow the directory when it is replaced.

        inotify watches an inode, not a name: after ``rm -rf`` and ``mkdir``, or a new
        tree renamed into place, the old watch sees nothing. Once a second (the
        watcher's timeout) the target is checked by device and inode; when it changed
        (or the directory appeared or vanished, or its own deletion was reported: a new
        directory can reuse the inode), a full reconcile runs and the watch is
        re-armed on what the name points to now. A missing directory is watched
        through its parent.
        """
        import watchfiles

        root = Path(self.config.manifests)
        while not self.stop.is_set():
            target = _watch_target(root)
            watch_path = target[0]
            try:
                async for changes in watchfiles.awatch(
                    watch_path, stop_event=self.stop, debounce=self.config.debounce_ms,
                    step=10, recursive=True, watch_filter=lambda _c, p: _interesting(p),
                    rust_timeout=1000, yield_on_timeout=True,
                ):
                    if changes:
                        log.debug("manifests changed: %d event(s)", len(changes))
                        self.changed_paths.update(path for _, path in changes)
                        self.resync_now.set()
                    # a re-created directory may get the old inode back: its own
                    # "deleted" event says so too
                    gone = any(change == watchfiles.Change.deleted and Path(path) == root
                               for change, path in changes)
                    if gone or _watch_target(root) != target:
                        log.warning("manifests directory %s was replaced, removed or "
                                    "created: reading it again and re-arming the watch",
                                    root)
                        self.full_resync = True
                        self.resync_now.set()
                        break
            except (OSError, RuntimeError) as exc:
                log.warning("watching %s failed (%s); relying on the resync interval",
                            watch_path, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=5)

    async def resync_loop(self) -> None:
        interval = self.config.resync_interval.total_seconds()
        while not self.stop.is_set():
            full = False
            try:
                await asyncio.wait_for(self.resync_now.wait(), timeout=interval)
            except TimeoutError:
                full = True  # the periodic resync re-reads the whole table
            if self.stop.is_set():
                break
            self.resync_now.clear()
            full = full or self.full_resync
            self.full_resync = False
            await self.reconcile_once(full=full)

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
                self.actual = {r.name: r for r in rows}
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
            await self._check_lock()
            if self.db_guard is not None:
                await self.worker.call(self.db_guard.check)
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
            "isolation": current_mode().describe(),
        }
        if self.coordinator is not None and self.skew_guard is not None:
            status["zookeeper"] = self.coordinator.status()
            status["claims"] = self.cluster.claimer.status() if self.cluster else None
            status["clock_skew"] = self.skew_guard.status()
            connected = self.coordinator.state is ConnectionState.CONNECTED
            with contextlib.suppress(KazooException, TimeoutError, RuntimeError):
                members = await self.coordinator.members() if connected else []
                # ZooKeeper's view of the cluster (membership nodes), for `status`
                status["members"] = [m.id for m in members]
        if result is not None:
            status["revision"] = str(result.revision) if result.revision else None
            status["manifest_errors"] = [str(e) for e in result.plan.errors]
            status["refusals"] = list(result.plan.refusals)
        try:
            await self.worker.call(self.store.write_replica_status, self.config.replica,
                                   status, self.clock.now())
        except ReconcilerError as exc:
            self.scheduler.wrote(exc)
        else:  # written every heartbeat: tells when writes work again with nothing due
            self.scheduler.wrote()

    # ------------------------------------------------------------------- lifecycle

    def _on_sighup(self) -> None:
        self.api.reload_tokens()
        self.full_resync = True
        self.resync_now.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self.api.bind()  # before anything else: a port in use is a clean start-up error
        # then refuse to be a second scheduler on the database (before touching its rows)
        try:
            await self.worker.call(self.instance_lock.acquire)
        except ReconcilerError:
            await self.api.close()
            self.worker.close()
            self._close_executor()
            raise
        try:
            return await self._run()
        finally:
            self.instance_lock.release()

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        self.api.serve()  # /healthz answers during start-up; /readyz says when it is done
        if self.coordinator is not None and self.skew_guard is not None:
            await self.coordinator.start()
            self.coordinator.add_change_listener(self._on_change)
            self.coordinator.add_writer_listener(self._on_writer)
            await self.skew_guard.refresh()  # measured before the first claim
            with contextlib.suppress(TimeoutError):  # the first replica leads at once
                await self.coordinator.wait_writer(0.5)
        await self.start()
        if self.sender is not None:
            self.sender.start()
        await self.api.started()
        # Everything loaded so far lives as long as the process: keep it out of the
        # cyclic collector's full passes, whose pauses would otherwise delay slots.
        gc.freeze()
        log.info("reconciler %s running: %d task(s) from %s", self.config.replica,
                 len(self.scheduler.tasks), self.config.manifests)
        loops = [
            loop.create_task(self.scheduler.run_forever(self.stop)),
            loop.create_task(self.watch_loop()),
            loop.create_task(self.resync_loop()),
            loop.create_task(self.poll_loop()),
            loop.create_task(self.heartbeat_loop()),
        ]
        loops.extend(loop.create_task(run_more(self.stop)) for run_more in self.loops)
        if self.skew_guard is not None:
            loops.append(loop.create_task(self.skew_guard.run(self.stop)))
        if self.backfills is not None:
            loops.append(loop.create_task(self.backfills.run_forever(self.stop)))
        await self.stop.wait()
        self.api.stopping()
        log.info("stopping: waiting up to %ss for %d running run(s)",
                 self.config.shutdown_grace.total_seconds(), len(self.scheduler.active_runs))
        self.resync_now.set()
        await self.scheduler.shutdown(self.config.shutdown_grace)
        for t in loops:
            t.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        if self.sender is not None:  # after the last runs' ends (and their rows) are written
            await asyncio.to_thread(self.sender.stop)
        if self.cluster is not None:
            await self.cluster.claimer.close()
            await self.cluster.coordinator.close()  # membership and election node go at once
        with contextlib.suppress(ReconcilerError):
            await self.worker.call(self.store.write_replica_status, self.config.replica,
                                   None, self.clock.now())
        await self.api.close()
        self.worker.close()
        self._close_executor()
        log.info("stopped")
        return 0


__all__ = ["Daemon", "DaemonConfig", "Trigger"]

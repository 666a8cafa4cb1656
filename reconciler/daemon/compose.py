"""The one composition function: every part of a daemon built once, in order, and
handed to what uses it through its constructor (nothing is set after construction).

    store, worker, cache, executor          (adapters)
    cluster: coordinator, claimer, skew guard   (--zookeeper only)
    observer (the API's index, metrics, events: it watches the scheduler)
    sender (the notification outbox's, on its own thread), notices(store, sender.wake)
    deadlines (the deadline watcher), pinger (spec.ping, --heartbeat-url): listeners of
              the scheduler, each with a loop
    scheduler(store, worker, claimer, executor, clock, listener=observer + deadlines
              + pinger,
              clock_refusal, notices)
    backfills(store, worker, scheduler, clock, may_drive: one replica, or the writer)
    api(parts, observer)
    daemon(everything above)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from reconciler.api import ApiObserver, EventHub, Metrics, TaskIndex
from reconciler.api.limits import Limits, TickGate
from reconciler.core.clock import Clock, SystemClock
from reconciler.core.protocols import Claimer, Executor
from reconciler.core.scheduling import TaskPolicy
from reconciler.daemon.api_ops import DaemonApi, DaemonParts
from reconciler.daemon.app import Daemon, DaemonConfig
from reconciler.daemon.backfills import BackfillDriver
from reconciler.daemon.claims import InProcessClaimer
from reconciler.daemon.deadlines import DeadlineWatcher
from reconciler.daemon.notices import Notices
from reconciler.daemon.offload import OffloadExecutor
from reconciler.daemon.pings import Pinger
from reconciler.daemon.runs import Listeners
from reconciler.daemon.scheduler import Scheduler, SchedulerConfig
from reconciler.daemon.sender import NotificationSender, SenderConfig
from reconciler.daemon.state import Cluster, DaemonState
from reconciler.daemon.worker import StoreWorker
from reconciler.executors import DispatchExecutor
from reconciler.locks import (
    SkewGuard,
    SkewGuardedClaimer,
    ZooKeeperClaim,
    ZooKeeperClaimer,
    ZooKeeperCoordinator,
)
from reconciler.manifests import LoadCache
from reconciler.store.instance_lock import InstanceLock
from reconciler.store.sql import DatabaseStore, SQLStore
from reconciler.store.sqlite_guard import FileGuard


def build_daemon(config: DaemonConfig, *, clock: Clock | None = None,
                 store: DatabaseStore | None = None,
                 executor: Executor | None = None) -> Daemon:
    """A daemon for ``config``. ``clock``, ``store`` and ``executor`` replace the real
    ones (tests: a fake clock, a fake executor run on the daemon's own loop)."""
    clock = clock or SystemClock()
    store = store or SQLStore(config.database)
    worker = StoreWorker()
    offload: OffloadExecutor | None = None
    if executor is None:  # the real executors, on a loop and thread of their own
        offload = OffloadExecutor(DispatchExecutor())
        executor = offload
    scheduler: Scheduler | None = None

    def claim_lost(claim: ZooKeeperClaim) -> None:  # on the loop, once everything is built
        if scheduler is not None:
            scheduler.claim_lost(claim)

    cluster = _cluster(config, clock, store, claim_lost)
    claimer: Claimer = (InProcessClaimer() if cluster is None
                        else SkewGuardedClaimer(cluster.claimer, cluster.skew_guard))
    metrics = Metrics()
    observer = ApiObserver(TaskIndex(), metrics, EventHub())
    sender = NotificationSender(
        store, clock,
        SenderConfig(replica=config.replica, min_interval=config.notify_min_interval,
                     backoff=config.notify_backoff, takeover_at_start=cluster is None),
        on_result=metrics.notification_result, on_backlog=metrics.set_notification_backlog,
    )
    notices = Notices(store, clock, channels=store.load_channels, wake=sender.wake)
    def policy_of(name: str) -> TaskPolicy | None:  # the scheduler's, once it is built
        return scheduler.policy_of(name) if scheduler is not None else None

    deadlines = DeadlineWatcher(
        store, worker, clock, notices, policy_of,
        is_writer=(lambda: cluster.coordinator.is_writer) if cluster is not None else _always,
    )
    pinger = Pinger(sender.ping, policy_of, heartbeat_url=config.heartbeat_url,
                    heartbeat_every=config.heartbeat_every)
    gate = TickGate()  # the API thread holds back while the scheduler starts a second's runs
    scheduler = Scheduler(
        store, worker, claimer, executor, clock,
        SchedulerConfig(
            replica=config.replica,
            max_concurrent_runs=config.max_concurrent_runs,
            output_limit=config.output_limit,
            skip_covered_slots=cluster is not None,
            unclaimed_grace=config.unclaimed_grace,
        ),
        listener=Listeners(observer, deadlines, pinger),
        # a clock off the bound decides nothing
        clock_refusal=cluster.skew_guard.over_bound if cluster is not None else None,
        on_tick=gate.busy,
        notices=notices,
    )
    coordinator = cluster.coordinator if cluster is not None else None
    backfills = BackfillDriver(
        store, worker, scheduler, clock, replica=config.replica,
        may_drive=lambda: coordinator is None or bool(coordinator.is_writer))
    state = DaemonState()
    cache = LoadCache()
    db_guard = FileGuard.attach(store.engine)
    parts = DaemonParts(config=config, clock=clock, store=store, worker=worker, cache=cache,
                        scheduler=scheduler, state=state, cluster=cluster, db_guard=db_guard)
    api = DaemonApi(parts, observer, listen=config.listen, api_token=config.api_token,
                    token_file=config.api_token_file, auth_reads=config.auth_reads,
                    allowed_hosts=config.allowed_hosts,
                    limits=Limits.of(config.api_head_timeout.total_seconds(),
                                     config.api_max_connections_per_address,
                                     config.api_rate_per_address),
                    gate=gate)
    lock = InstanceLock(store.engine, config.replica, shared=cluster is not None,
                        describe_holder=lambda: _lock_holder(store, config.replica))
    return Daemon(config, clock=clock, store=store, worker=worker, cache=cache,
                  scheduler=scheduler, executor=offload, api=api, state=state,
                  instance_lock=lock, db_guard=db_guard, cluster=cluster, sender=sender,
                  backfills=backfills, loops=(deadlines.run, pinger.heartbeat))


def _always() -> bool:
    return True


def run_daemon(config: DaemonConfig) -> int:
    """Build the daemon for ``config`` and run it until SIGTERM/SIGINT."""
    return asyncio.run(build_daemon(config).run())


def _cluster(config: DaemonConfig, clock: Clock, store: DatabaseStore,
             claim_lost: Callable[[ZooKeeperClaim], None]) -> Cluster | None:
    if not config.zookeeper:
        return None
    coordinator = ZooKeeperCoordinator(
        config.zookeeper, namespace=config.namespace, replica=config.replica,
        session_timeout=config.zookeeper_session_timeout.total_seconds(),
    )
    claimer = ZooKeeperClaimer(coordinator, on_lost=claim_lost)
    guard = SkewGuard.for_engine(store.engine, clock, bound=config.max_clock_skew)
    return Cluster(coordinator, claimer, guard)


def _lock_holder(store: DatabaseStore, replica: str) -> str | None:
    """Who holds the database lock, from the replicas' status rows (servers)."""
    from reconciler.core.errors import ReconcilerError

    try:
        rows = store.list_replicas(include_stopped=False)
    except ReconcilerError:
        return None
    others = [r for r in rows if r["id"] != replica and r["heartbeat_at"]]
    if not others:
        return None
    r = max(others, key=lambda r: r["heartbeat_at"])
    return (f"replica {r['id']}, pid {r['pid']} on {r['host']}, last heartbeat "
            f"{r['heartbeat_at'].isoformat()}")

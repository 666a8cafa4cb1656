"""Distributed mode, end to end: real daemons, real ZooKeeper, a real PostgreSQL.

* a replica stalled (SIGSTOP) past its session timeout while it holds a Forbid run:
  the peer starts the task only after the stalled lock is gone, and the stalled run
  is recorded ``cancelled`` with reason "lock lost" as soon as it runs again;
* one replica's ZooKeeper session expires (its connection is cut by a proxy for longer
  than the session timeout): it survives, gets a new session and claims again;
* the PostgreSQL server is restarted under the replicas: nothing crashes, runs go on,
  and every slot of the outage has a row (a run, or ``missed`` with its reason);
* a replica whose clock is 5 s off refuses to claim (and to record or abandon anything
  by its clock), says why in its status, while a healthy replica runs everything;
  ``reconciler status`` shows the replicas and the writer;
* a regression test of the claimer: a lock node left by a release lost in a
  disconnect must not block its task once the connection is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.core.runtime import RunRecord, RunStatus
from tests.e2e.cluster import (
    EXECUTED,
    Cluster,
    Figures,
    Replica,
    analyze,
    server_database,
    task_manifest,
    utcnow,
)
from tests.e2e.conftest import wait_until
from tests.services.ci import unavailable
from tests.services.zookeeper import (
    ZooKeeperServer,
    proxy_to,
    require_zookeeper,
    running_coordinator,
    shared_standalone,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SESSION = 3.0  # --zookeeper-session-timeout of these tests, seconds
UNCLAIMED_GRACE = 30  # SchedulerConfig.unclaimed_grace


@pytest.fixture
def zk() -> ZooKeeperServer:
    require_zookeeper()
    return shared_standalone()


@pytest.fixture
def cluster(tmp_path: Path, zk: ZooKeeperServer) -> Iterator[Cluster]:
    with server_database("postgresql") as url:
        c = Cluster(tmp_path, url, zk.address, session_timeout=f"{SESSION:g}s")
        with c.checked(80):
            yield c


def executed(runs: list[RunRecord], replica: Replica | None = None) -> list[RunRecord]:
    return [r for r in runs if r.status in EXECUTED
            and (replica is None or r.replica == replica.id)]


def _refusing(replica: Replica) -> bool:
    """The replica says in its status row that the skew guard refuses its clock."""
    skew = status_of(replica).get("clock_skew")
    return isinstance(skew, dict) and bool(skew.get("refusing"))


def status_of(replica: Replica) -> dict[str, object]:
    row = replica.status_row()
    assert row is not None and row["status"], f"no status row for {replica.id}"
    return dict(row["status"])


def settle(cluster: Cluster, names: list[str], start: datetime, end: datetime,
           grace: float = UNCLAIMED_GRACE + 10) -> Figures:
    """The figures once every slot has a row and no run is left running, or after
    ``grace`` seconds (slots whose lock a lost replica held get their missed row only
    after the scheduler's unclaimed grace)."""
    deadline = time.monotonic() + grace
    while True:
        figures = analyze(cluster.runs(), names, start, end)
        done = figures.unexplained_misses == 0 and figures.still_running == 0
        if done or time.monotonic() > deadline:
            return figures
        time.sleep(1)


# -------------------------------------------------------------------- (a) SIGSTOP


def test_a_stalled_holder_loses_its_lock_and_cancels_its_run(cluster: Cluster) -> None:
    cluster.write("slow.yaml", task_manifest("slow", "@every 1s", "command: [sleep, '60']"))
    # abandoning after 60 s: the stalled run must be ended by its own replica (lock lost)
    a, b = cluster.start(2, "--abandon-after", "60s")
    first = wait_until(lambda: next(iter(executed(cluster.runs())), None),
                       what="the first run of slow")
    holder, peer = (a, b) if first.replica == a.id else (b, a)
    assert first.replica == holder.id and first.status is RunStatus.RUNNING
    time.sleep(1.5)  # meanwhile the peer finds the lock taken: nothing of it runs
    assert executed(cluster.runs(), peer) == []

    stopped_at = utcnow()
    holder.stop_group()
    try:
        # the peer gets the lock once the stalled session expired, not before
        peer_run = wait_until(lambda: next(iter(executed(cluster.runs(), peer)), None),
                              timeout=4 * SESSION, what="the peer to start slow")
        time.sleep(1.0)
    finally:
        holder.cont_group()
    resumed_at = utcnow()

    lost = wait_until(lambda: (r := cluster.store.get_run(first.id)) is not None
                      and r.status is not RunStatus.RUNNING and r,
                      timeout=10, what="the stalled run to end")
    assert lost.status is RunStatus.CANCELLED, lost
    assert lost.reason == "lock lost"
    assert lost.finished_at is not None and lost.finished_at >= resumed_at - timedelta(
        seconds=0.2)
    assert lost.finished_at - resumed_at < timedelta(seconds=5)
    assert peer_run.started_at is not None
    # The lock was a lease: the peer may start only after the stalled session's lease
    # ran out (0.75 T after its last answered request, which was at most T/4 before the
    # stop; the server expires the session T after its last contact).
    assert peer_run.started_at - stopped_at >= timedelta(seconds=0.5 * SESSION), (
        peer_run.started_at, stopped_at)
    assert "lock of slow lost" in holder.log_text()
    assert holder.alive() and peer.alive()

    # No overlap apart from the one the lost lease allows: every other pair of runs of
    # slow is disjoint, and the stalled run overlaps only runs started after the stop.
    runs = cluster.runs()
    others = [r for r in runs if r.id != lost.id]
    figures = analyze(others, ["slow"], first.slot, utcnow())
    assert figures.overlaps == 0, figures.overlap_examples
    assert figures.duplicates == 0 and figures.duplicate_keys == 0
    for r in executed(others):
        assert r.started_at is not None
        if r.started_at < lost.finished_at:
            assert r.started_at - stopped_at >= timedelta(seconds=0.5 * SESSION), r
    # The holder is back with a new session (the old one expired) and keeps following.
    wait_until(lambda: (z := status_of(holder).get("zookeeper")) and isinstance(z, dict)
               and z["state"] == "connected" and z["session_generation"] >= 2,
               timeout=10, what="the stalled replica's new session")


def test_a_long_stalled_replica_does_not_rerun_pruned_slots(cluster: Cluster) -> None:
    """History pruning removes the rows that the unique key relies on: a replica that
    stalls for longer than a task keeps history, then works through the slots it
    missed, must not find those slots free and run them again."""
    record = cluster.root / "executions.txt"
    cluster.write("tick.yaml", task_manifest(
        "tick", "@every 1s", f"shell: 'echo $RECONCILER_SLOT >> {record}'",
        history="{successful: 2, failed: 2}"))
    a, b = cluster.start(2)
    wait_until(lambda: executed(cluster.runs(), a) and executed(cluster.runs(), b),
               timeout=20, what="runs on both replicas")
    b.stop_group()
    try:
        time.sleep(15)  # a runs every slot and prunes the rows of the older ones
    finally:
        b.cont_group()
    resumed = utcnow()
    # b works through the slots it missed: done once it runs a slot due after the stall
    wait_until(lambda: [r for r in executed(cluster.runs(), b) if r.slot >= resumed],
               timeout=20, what="b to run a slot after the stall")
    assert a.alive() and b.alive()
    slots = record.read_text().split()
    twice = sorted({s for s in slots if slots.count(s) > 1})
    assert twice == [], f"slots run twice after the stall: {twice}"
    assert len(slots) >= 15


# ------------------------------------------------------------- (b) session expiry


def test_an_expired_session_reconnects_and_claims_again(cluster: Cluster,
                                                        zk: ZooKeeperServer) -> None:
    names = [f"tick-{i}" for i in range(6)]
    for n in names:
        cluster.write(f"{n}.yaml", task_manifest(n, "@every 1s", "command: ['true']"))
    a = cluster.add().start()
    wait_until(lambda: len(cluster.store.load_tasks()) == len(names), what="the apply")
    with proxy_to(zk) as proxy:
        b = cluster.add(env={"RECONCILER_ZOOKEEPER": proxy.address}).start()
        wait_until(lambda: executed(cluster.runs(), b), what="b's first run")
        cut = utcnow()
        proxy.block()  # b's connection is cut: its session expires at the server
        time.sleep(2 * SESSION + 1)
        proxy.unblock()
        healed = utcnow()
        later = wait_until(
            lambda: [r for r in executed(cluster.runs(), b)
                     if r.started_at is not None and r.started_at > healed],
            timeout=20, what="b to claim again after its new session")
        assert later
        assert a.alive() and b.alive()
        assert "ZooKeeper lost" in b.log_text(), "b's session did not expire"
        wait_until(lambda: (z := status_of(b).get("zookeeper")) and isinstance(z, dict)
                   and z["state"] == "connected" and z["session_generation"] >= 2,
                   timeout=10, what="b's status to show its new session")
    # The locks b held when it was cut off stay until its session expires: their slots
    # find them taken everywhere and are recorded missed after the unclaimed grace.
    start, end = cut - timedelta(seconds=2), utcnow() - timedelta(seconds=1)
    figures = settle(cluster, names, start, end)
    print(f"\nsession expiry: {figures.summary()}")
    # while b was cut off, a ran the other slots: nothing missing, nothing twice
    assert figures.duplicates == 0 and figures.duplicate_keys == 0
    assert figures.overlaps == 0, figures.overlap_examples
    assert figures.unexplained_misses == 0, figures.holes
    assert figures.reasonless == 0


# ----------------------------------------------------------- (c) database restart


def _pg_cluster() -> tuple[str, str] | None:
    conf = Path("/etc/postgresql")
    if shutil.which("pg_ctlcluster") is None or not conf.is_dir():
        return None
    versions = sorted(p.name for p in conf.iterdir() if (p / "main").is_dir())
    return (versions[-1], "main") if versions else None


def _pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"],
                          check=False).returncode == 0


def _pg_ctl(action: str) -> None:
    found = _pg_cluster()
    assert found is not None
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *found, action,
                    *(["--mode", "fast"] if action == "stop" else [])],
                   check=True, capture_output=True, timeout=60)


def restart_postgresql(down: float) -> None:
    """Stop the PostgreSQL cluster of this machine for ``down`` seconds; whatever
    happens, it is started again (other test sessions share it)."""
    try:
        _pg_ctl("stop")
        time.sleep(down)
    finally:
        for _ in range(3):
            if _pg_ready():
                break
            with contextlib.suppress(subprocess.SubprocessError):
                _pg_ctl("start")
            with contextlib.suppress(AssertionError):
                wait_until(_pg_ready, timeout=20, what="PostgreSQL to accept connections")
        assert _pg_ready(), "PostgreSQL did not come back"


def test_database_restart(cluster: Cluster) -> None:
    if _pg_cluster() is None or os.geteuid() != 0:
        unavailable("cannot restart PostgreSQL here (needs pg_ctlcluster, run as root)")
    names = [f"beat-{i}" for i in range(5)]
    for n in names:
        cluster.write(f"{n}.yaml", task_manifest(n, "@every 1s", "command: ['true']"))
    replicas = cluster.start(2)
    wait_until(lambda: len(executed(cluster.runs())) >= 10, what="runs before the outage")
    down = utcnow()
    restart_postgresql(3.0)
    up = utcnow()
    # runs go on once the database is back
    wait_until(lambda: len([r for r in executed(cluster.runs())
                            if r.started_at is not None and r.started_at > up]) >= len(names),
               timeout=20, what="runs after the restart")
    for r in replicas:
        assert r.alive(), f"replica {r.index} died:\n{r.tail()}"
    figures = settle(cluster, names, down - timedelta(seconds=2), up + timedelta(seconds=3))
    print(f"\ndatabase restart ({(up - down).total_seconds():.1f}s down): {figures.summary()}")
    assert figures.duplicates == 0 and figures.duplicate_keys == 0
    assert figures.overlaps == 0, figures.overlap_examples
    assert figures.unexplained_misses == 0, figures.holes
    assert figures.reasonless == 0
    # runs that ended during the outage have their end recorded once it is back (left
    # "running", a peer would have marked them abandoned)
    assert figures.still_running == 0 and figures.abandoned == 0, figures.summary()
    outage = [r for r in cluster.runs() if r.status is RunStatus.MISSED
              and down - timedelta(seconds=1) <= r.slot <= up]
    assert all(r.reason for r in outage)
    assert any((r.reason or "").startswith("database unavailable") for r in outage), (
        figures.summary())


# --------------------------------------------------------------- (d) clock skew


def test_a_skewed_replica_refuses_to_claim(cluster: Cluster) -> None:
    names = [f"tick-{i}" for i in range(4)]
    for n in names:
        cluster.write(f"{n}.yaml", task_manifest(n, "@every 1s", "command: ['true']"))
    # a run that outlives the skewed replica's idea of "stale" (it must not abandon it)
    cluster.write("slow.yaml", task_manifest("slow", "@every 1s", "command: [sleep, '3']"))
    healthy = cluster.add().start()
    wait_until(lambda: len(cluster.store.load_tasks()) == len(names) + 1, what="the apply")
    skewed = cluster.add(env={"RECONCILER_CLOCK_OFFSET": "5s"}).start()
    start = utcnow().replace(microsecond=0) + timedelta(seconds=1)
    # a window of at least 6 slots in which the skewed replica had every chance to claim
    wait_until(lambda: _refusing(skewed)
               and len({r.slot for r in cluster.runs() if r.slot >= start}) >= 6,
               timeout=30, what="six slots run while the skewed replica refuses")
    end = utcnow().replace(microsecond=0) - timedelta(seconds=1)

    st = status_of(skewed)
    skew = st["clock_skew"]
    assert isinstance(skew, dict)
    assert skew["refusing"] and "over the bound of 2s" in skew["refusing"], skew
    assert skew["offset_ms"] is not None and skew["offset_ms"] < -4000
    claims = st["claims"]
    assert isinstance(claims, dict) and claims["granted"] == 0
    runs = cluster.runs()
    assert [r for r in runs if r.replica == skewed.id] == [], "the skewed replica wrote rows"
    assert [r for r in runs if r.status is RunStatus.ABANDONED] == []
    figures = analyze(runs, names, start, end)
    print(f"\nclock skew: {figures.summary()}")
    assert figures.unexplained_misses == 0, figures.holes
    assert figures.duplicates == 0 and figures.overlaps == 0
    assert figures.runs == figures.window_slots  # the healthy replica ran every slot
    assert healthy.alive() and skewed.alive()

    # reconciler status: both replicas, the writer marked, and why one is not claiming
    res = healthy.cli("status")
    assert f"{healthy.id} *" in res.stdout, res.stdout
    assert skewed.id in res.stdout and f"{skewed.id} *" not in res.stdout
    assert f"{skewed.id} is not claiming: clock skew" in res.stdout, res.stdout
    data = json.loads(healthy.cli("status", "-o", "json").stdout)
    live = {r["id"]: r for r in data["replicas"] if not r["stopped_at"]}
    assert set(live) == {healthy.id, skewed.id}
    assert live[healthy.id]["status"]["zookeeper"]["writer"] is True
    assert live[skewed.id]["status"]["zookeeper"]["writer"] is False
    assert sorted(live[healthy.id]["status"]["members"]) == sorted([healthy.id, skewed.id])
    # the HTTP API of either replica names the same writer
    remote = skewed.cli("status", "--server", skewed.url)
    assert f"mode: distributed, writer: {healthy.id}" in remote.stdout, (
        remote.stdout + remote.stderr)


# ---------------------------------------------------- claimer regression (orphans)


def test_a_lost_release_does_not_block_the_task_after_the_sweep(zk: ZooKeeperServer) -> None:
    """A release whose delete was lost in a disconnect leaves our node behind. The sweep
    after the reconnect skips tasks whose claim is in flight; it used to clear every
    "uncertain" mark anyway, so that claim found NodeExists, took the node for a peer's,
    and the task stayed blocked for every replica as long as the session lived (seen
    in the chaos test after a ZooKeeper leader kill)."""
    from reconciler.locks import ZooKeeperClaimer

    slot = datetime(2026, 1, 1, tzinfo=UTC)

    async def scenario() -> None:
        ns = f"orphan-{os.getpid()}-{time.monotonic_ns()}"
        async with running_coordinator(zk.address, ns, elect=False) as c:
            claimer = ZooKeeperClaimer(c)
            claim = await claimer.claim("t", slot, 1)
            assert claim is not None
            # what _release does when its delete is lost: forget the claim, mark the task
            held = claimer._held.pop("t")
            held.claims.clear()
            claimer._uncertain.add("t")
            # the sweep runs while a claim of "t" is in flight
            in_flight: asyncio.Future[None] = c.loop.create_future()
            claimer._pending["t"] = in_flight
            assert await claimer.cleanup_orphans() == 0
            del claimer._pending["t"]
            in_flight.set_result(None)
            again = await claimer.claim("t", slot + timedelta(seconds=1), 1)
            assert again is not None, "the task stays blocked by our own orphan"
            await again.release()
            await claimer.close()

    asyncio.run(scenario())

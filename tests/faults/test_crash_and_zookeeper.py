"""The daemon crashes, ZooKeeper goes away: nothing lost, nothing doubled.

The unit tests prove the scheduler's decisions with a fake clock; these prove that the
promises survive the two faults an operator meets first, with the real ``reconciler run``
process on the real PostgreSQL / MariaDB of this machine and a private ZooKeeper:

* **kill -9 of the daemon in the middle of a run**, then a restart. The run's row was
  written ``running`` before its process started, so the crash cannot lose it: the
  restarted daemon marks it ``abandoned`` with its reason, and the task's policy alone
  decides what follows (no retry with ``retries.limit: 0``; with a retry allowed, the
  retry is attempt 2 of the same slot, run at once - or, under ``Forbid``, recorded
  ``skipped`` when the catch-up run of the downtime holds the task). Afterwards the
  table is consistent: one row per (task, slot, attempt), every slot of the window with
  a row and a reason, no ``running`` row without a live process of a live daemon, and
  the schedule goes on. The crashed run's own process must not outlive the crash
  either: a run marked ``abandoned`` whose process still runs is a second, untracked
  run of the task (the retry would overlap it).
* **ZooKeeper stopped for 12 s** (a standalone server, cleanly), and **the whole
  3-node ensemble killed** for 12 s, under two replicas running ``@every 1s`` tasks.
  docs/guarantees.md: "without a quorum no claims are granted ... nothing runs until a
  quorum is back", and every slot gets a row - the outage's slots ``missed`` with the
  reason "no replica recorded this slot" once the unclaimed grace has passed. The
  replicas survive, recover on their own when ZooKeeper is back, and the ``runs`` table
  shows zero duplicates, zero overlaps and zero unexplained misses (``analyze``).

Every program a task runs carries a marker in its command line and writes its run id
and pid to a journal, so the tests can tie each ``running`` row to a live process and
find anything a crash left behind. ``pytest -s`` prints the figures.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from reconciler.core.runtime import RunRecord, RunStatus, Trigger
from reconciler.store import SQLStore
from tests.e2e.cluster import (
    EXECUTED,
    Cluster,
    Replica,
    analyze,
    server_database,
    task_manifest,
    utcnow,
)
from tests.e2e.conftest import DaemonProcess, wait_until
from tests.services.aio import wait_until as wait_every
from tests.services.zookeeper import (
    ZooKeeperEnsemble,
    ZooKeeperServer,
    require_zookeeper,
    start_ensemble,
    start_standalone,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.faults]

#: The task program: journals "<run id> <pid> <attempt>", then holds while the hold
#: file exists (30 s at most) and exits 0.
PROGRAM = """\
import os, sys, time
marker, journal, hold = sys.argv[1:4]
with open(journal, "a") as f:
    f.write(f"{os.environ['RECONCILER_RUN_ID']} {os.getpid()} "
            f"{os.environ['RECONCILER_ATTEMPT']}\\n")
deadline = time.monotonic() + 30
while os.path.exists(hold) and time.monotonic() < deadline:
    time.sleep(0.05)
"""
ABANDONED_AT_START = "the daemon that ran it stopped (found at start-up)"
UNCLAIMED = "no replica recorded this slot"
OUTAGE = 12.0  # seconds ZooKeeper is down
SESSION = "3s"  # --zookeeper-session-timeout of the replicas (as in test_distributed)
GRACE = 8  # --unclaimed-grace of the replicas, seconds (default 30: too slow here)


# ----------------------------------------------------------------------------- helpers


class Held:
    """A task whose runs hold until :meth:`release`, each journalled and marked."""

    def __init__(self, root: Path) -> None:
        self.marker = f"crash-{uuid.uuid4().hex[:12]}"
        self.program = root / "held.py"
        self.program.write_text(PROGRAM)
        self.journal = root / "journal.txt"
        self.journal.touch()
        self.hold = root / "hold"
        self.hold.touch()

    def command(self) -> str:
        argv = [sys.executable, str(self.program), self.marker, str(self.journal),
                str(self.hold)]
        return f"command: {json.dumps(argv)}"

    def release(self) -> None:
        self.hold.unlink(missing_ok=True)

    def pids(self) -> dict[int, int]:
        """Run id -> pid of every run whose process started."""
        out = {}
        for line in self.journal.read_text().splitlines():
            run_id, pid, _ = line.split()
            out[int(run_id)] = int(pid)
        return out

    def alive(self, pid: int) -> bool:
        """``pid`` is a live (not zombie) process of this task."""
        try:
            proc = psutil.Process(pid)
            return (proc.status() != psutil.STATUS_ZOMBIE
                    and self.marker in " ".join(proc.cmdline()))
        except psutil.Error:
            return False

    def alive_all(self) -> list[int]:
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(
                    self.marker in part for part in proc.info["cmdline"] or ()):
                found.append(proc.pid)
        return found

    def kill_leftovers(self) -> None:
        self.release()
        for pid in self.alive_all():
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


class ServerDaemon(DaemonProcess):
    """The e2e daemon launcher on a server database, one log file per start."""

    def __init__(self, root: Path, url: str) -> None:
        super().__init__(root)
        self.store.close()
        self.db_url = url
        self.store = SQLStore(url)
        self.starts = 0

    def start(self, *extra: str) -> ServerDaemon:
        self.starts += 1
        self.log = self.root / f"daemon-{self.starts}.log"
        super().start(*extra)
        return self

    def replica_id(self) -> str:
        for line in self.log.read_text(errors="replace").splitlines():
            if " running: " in line and "reconciler " in line:
                return line.split("reconciler ", 1)[1].split(" running:", 1)[0]
        raise AssertionError(f"no start-up line in {self.log}")

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait()

    def all_runs(self) -> list[RunRecord]:
        return sorted(self.store.list_runs(None, limit=100_000), key=lambda r: (r.slot, r.attempt))


def one_row_per_key(rows: list[RunRecord]) -> None:
    keys = Counter((r.task_name, r.slot, r.attempt) for r in rows)
    assert [k for k, n in keys.items() if n > 1] == []


# -------------------------------------------------------------------- kill -9 + restart


@dataclass(frozen=True)
class Case:
    backend: str
    policy: str
    limit: int
    catch_up: str
    retry: str | None  # what attempt 2 of an abandoned run becomes: None, "runs", "skipped"


CASES = [
    # no retry allowed: the abandoned run stays the slot's only row
    Case("postgresql", "Forbid", 0, "Latest", None),
    # a retry allowed and nothing else active: attempt 2 of the same slot runs at once,
    # and the slots after it are skipped while it holds the task
    Case("postgresql", "Forbid", 1, "None", "runs"),
    # Allow: the retry runs alongside the runs of the next slots
    Case("postgresql", "Allow", 1, "Latest", "runs"),
    # Forbid: the catch-up run of the downtime's newest slot starts first and holds the
    # task, so the retry is recorded skipped ("previous run active")
    Case("mariadb", "Forbid", 1, "Latest", "skipped"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.backend}-{c.policy}-"
                         f"retries{c.limit}-catchUp{c.catch_up}")
def test_kill_9_mid_run_abandons_and_the_policy_decides_the_retry(
        case: Case, tmp_path: Path) -> None:
    """A run in flight when the daemon is killed with SIGKILL is recorded ``abandoned``
    ("the daemon that ran it stopped") by the next start; attempt 2 of its slot exists
    exactly when ``retries.limit`` allows it, and is run or skipped as the concurrency
    policy says; one row per (task, slot, attempt), every slot has a row with a reason,
    every ``running`` row belongs to a live process of the live daemon, the schedule goes
    on, and a clean stop leaves nothing ``running`` and no task process."""
    held = Held(tmp_path)
    with server_database(case.backend) as url:
        daemon = ServerDaemon(tmp_path, url)
        try:
            _kill_9_case(case, daemon, held)
        finally:
            daemon.stop()
            held.kill_leftovers()


def _kill_9_case(case: Case, daemon: ServerDaemon, held: Held) -> None:
    daemon.write("crash.yaml", task_manifest(
        "crash", "@every 1s", held.command(), policy=case.policy,
        extra=f"  catchUp: {case.catch_up}\n"
              f"  retries: {{limit: {case.limit}, backoff: 1s}}\n"))
    daemon.start()
    first = wait_until(
        lambda: next((r for r in daemon.all_runs() if r.status is RunStatus.RUNNING
                      and r.id in held.pids()), None),
        what="the first run's process")
    first_replica = daemon.replica_id()

    daemon.kill9()
    killed_at = utcnow()
    in_flight = [r for r in daemon.all_runs() if r.status is RunStatus.RUNNING]
    assert first.id in {r.id for r in in_flight}  # nobody was left to record their end
    assert all(r.replica == first_replica and r.attempt == 1 for r in in_flight)

    # stay down past the next slot, so the downtime has at least one slot to decide
    # (a restart within the same second would have none)
    next_slot = killed_at.replace(microsecond=0) + timedelta(seconds=1)
    wait_until(lambda: utcnow() >= next_slot + timedelta(seconds=0.2), what="downtime")
    daemon.start()
    restarted_at = utcnow()
    replica = daemon.replica_id()
    assert replica != first_replica
    # the crashed runs: abandoned at start-up, with the reason
    for old in in_flight:
        row = wait_until(lambda old=old: (r := daemon.store.get_run(old.id)) is not None
                         and r.status is not RunStatus.RUNNING and r,
                         what=f"run {old.id} to be abandoned")
        assert row.status is RunStatus.ABANDONED, row
        assert row.reason == ABANDONED_AT_START
        assert row.finished_at is not None and row.finished_at >= killed_at - timedelta(
            seconds=1)

    # attempt 2 of each crashed slot, as the policy says. The retries are queued at
    # start-up, before the first slot after it: once such a slot has a row, any retry
    # has its row too.
    wait_until(lambda: any(r.slot > restarted_at and r.attempt == 1
                           for r in daemon.all_runs()),
               what="a slot after the restart to be decided")
    if case.retry == "runs":
        wait_until(lambda: all(r.id in held.pids() for r in daemon.all_runs()
                               if r.attempt == 2), what="the retries' processes")
    rows = daemon.all_runs()
    crashed = {r.slot for r in in_flight}
    retries = [r for r in rows if r.attempt > 1]
    assert all(r.attempt == 2 and r.trigger is Trigger.RETRY for r in retries), retries
    assert sorted(r.slot for r in retries) == (sorted(crashed) if case.retry else []), (
        retries)
    for r in retries:
        if case.retry == "runs":
            assert r.status in EXECUTED and r.status is not RunStatus.ABANDONED, r
            assert r.replica == replica and r.started_at is not None
            assert r.started_at >= restarted_at - timedelta(seconds=5)
        else:
            assert r.status is RunStatus.SKIPPED and r.reason == "previous run active", r

    # every running row is a live process of the live daemon
    def owned() -> bool:
        pids = held.pids()
        running = [r for r in daemon.all_runs() if r.status is RunStatus.RUNNING]
        return all(r.replica == replica and r.id in pids and held.alive(pids[r.id])
                   for r in running)

    wait_until(owned, what="every running row to have a live process of the live daemon")

    # the schedule goes on: runs of slots after the restart succeed once released
    held.release()
    wait_until(lambda: sum(1 for r in daemon.all_runs() if r.slot > restarted_at
                           and r.status is RunStatus.SUCCEEDED) >= 3,
               timeout=40, what="runs of the next slots to succeed")
    end = utcnow().replace(microsecond=0)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0

    rows = daemon.all_runs()
    one_row_per_key(rows)
    assert [r for r in rows if r.status in (RunStatus.RUNNING, RunStatus.PENDING)] == []
    figures = analyze(rows, ["crash"], first.slot, end, forbid=case.policy == "Forbid")
    retried = len(crashed) if case.retry == "runs" else 0
    print(f"\nkill -9 {case}: {len(in_flight)} run(s) in flight abandoned, "
          f"{len(retries)} retry row(s); {figures.summary()}")
    assert figures.unexplained_misses == 0, figures.holes
    assert figures.reasonless == 0 and figures.still_running == 0
    assert figures.duplicate_keys == 0
    # a slot runs twice only as the retry of its abandoned attempt
    assert figures.duplicates == retried, figures.summary()
    assert figures.overlaps == 0, figures.overlap_examples
    assert figures.abandoned == len(in_flight)
    # the downtime's slots: missed with the catch-up reason (one runs with catchUp Latest)
    downtime = [r for r in rows if r.status is RunStatus.MISSED]
    assert downtime or case.catch_up == "Latest", figures.summary()
    assert all((r.reason or "").startswith("downtime") for r in downtime), downtime
    assert all(killed_at - timedelta(seconds=2) <= r.slot <= restarted_at for r in downtime)
    catch_up = [r for r in rows if r.trigger is Trigger.CATCH_UP and r.status in EXECUTED]
    assert len(catch_up) == (1 if case.catch_up == "Latest" else 0), catch_up
    wait_until(lambda: not held.alive_all(), timeout=10, what="no task process left")
    assert "Traceback" not in daemon.log.read_text(errors="replace")


@pytest.mark.timeout(90)
def test_kill_9_leaves_no_process_of_the_abandoned_run(tmp_path: Path) -> None:
    """The process of a run the daemon was running when it was killed with SIGKILL must
    not outlive it: once the restarted daemon has recorded the run ``abandoned``, a live
    process of it is a run nobody tracks, holds or can cancel, and it overlaps the retry
    of its slot. (With ``retries.limit: 0`` and no retry, the check is the process
    alone.)"""
    held = Held(tmp_path)
    with server_database("postgresql") as url:
        daemon = ServerDaemon(tmp_path, url)
        try:
            daemon.write("crash.yaml", task_manifest("crash", "@every 1s", held.command()))
            daemon.start()
            first = wait_until(
                lambda: next((r for r in daemon.all_runs() if r.status is RunStatus.RUNNING
                              and r.id in held.pids()), None),
                what="the first run's process")
            pid = held.pids()[first.id]
            daemon.kill9()
            daemon.start()
            wait_until(lambda: (r := daemon.store.get_run(first.id)) is not None
                       and r.status is RunStatus.ABANDONED, what="the run to be abandoned")
            with contextlib.suppress(AssertionError):
                wait_until(lambda: not held.alive(pid), timeout=5,
                           what="the abandoned run's process to end")
            left = held.alive(pid)
            print(f"\nkill -9: process {pid} of abandoned run {first.id} "
                  f"{'still running' if left else 'gone'} after the restart")
            assert not left, (
                f"process {pid} of run {first.id} still runs after the daemon was killed, "
                "restarted and recorded the run abandoned")
        finally:
            daemon.stop()
            held.kill_leftovers()


# ------------------------------------------------------------------ ZooKeeper outages


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[ZooKeeperServer]:
    """A private server: this test stops it (the shared one must stay up)."""
    require_zookeeper()
    server = start_standalone(tmp_path / "zk")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def ensemble(tmp_path: Path) -> Iterator[ZooKeeperEnsemble]:
    require_zookeeper()
    ens = start_ensemble(tmp_path / "zk")
    try:
        yield ens
    finally:
        ens.close()


def zookeeper_status(replica: Replica) -> dict[str, Any]:
    """The ``zookeeper`` part of a replica's last status row ({} before the first)."""
    row = replica.status_row()
    status = (row or {}).get("status") or {}
    return dict(status.get("zookeeper") or {})


def zookeeper_state(replica: Replica) -> str | None:
    return zookeeper_status(replica).get("state")


def _zookeeper_outage(tmp_path: Path, hosts: str, stop: Callable[[], object],
                      start: Callable[[], object], label: str) -> None:
    """Two replicas, 5 tasks ``@every 1s``; ``stop()`` ZooKeeper for ``OUTAGE`` seconds,
    ``start()`` it again; print the figures and check the promises."""
    names = [f"beat-{i}" for i in range(5)]
    with server_database("postgresql") as url:
        cluster = Cluster(tmp_path, url, hosts, session_timeout=SESSION)
        for n in names:
            cluster.write(f"{n}.yaml", task_manifest(n, "@every 1s", "command: ['true']"))
        with cluster.checked(80):
            replicas = cluster.start(2, "--unclaimed-grace", f"{GRACE}s")
            wait_until(lambda: sum(1 for r in cluster.runs() if r.status in EXECUTED) >= 10,
                       what="runs before the outage")
            # from the tasks' first slot at the earliest (the apply's second is none)
            window_start = max(min(r.slot for r in cluster.runs()),
                               utcnow().replace(microsecond=0) - timedelta(seconds=2))

            down_at = utcnow()
            stop()
            # the replicas notice at once (the connection closes), then wait it out
            wait_until(lambda: all(zookeeper_state(r) not in (None, "connected")
                                   for r in replicas),
                       timeout=5, what="the replicas to report ZooKeeper disconnected")
            time.sleep(max(0.0, OUTAGE - (utcnow() - down_at).total_seconds()))
            restart_at = utcnow()
            start()  # returns once it serves (a client may reconnect a little earlier)
            up_at = utcnow()

            def first_after() -> RunRecord | None:
                later = [r for r in cluster.runs() if r.status in EXECUTED
                         and r.started_at is not None and r.started_at > restart_at]
                return min(later, key=lambda r: r.started_at or up_at) if later else None

            first = wait_until(first_after, timeout=30, what="a run after ZooKeeper is back")
            assert first.started_at is not None
            recovery = (first.started_at - restart_at).total_seconds()
            # every task runs again, and both replicas are back to claiming
            wait_until(lambda: {r.task_name for r in cluster.runs()
                                if r.status is RunStatus.SUCCEEDED and r.started_at
                                and r.started_at > up_at} == set(names),
                       timeout=30, what="every task to run again")
            wait_until(lambda: all(zookeeper_state(r) == "connected" for r in replicas),
                       timeout=15, what="both replicas connected again")
            window_end = utcnow().replace(microsecond=0) + timedelta(seconds=3)
            for r in replicas:
                assert r.alive(), f"replica {r.index} exited:\n{r.tail()}"

            # slots nobody could claim get their missed row after the unclaimed grace
            def settled() -> bool:
                f = analyze(cluster.runs(), names, window_start, window_end)
                return f.unexplained_misses == 0 and f.still_running == 0

            with contextlib.suppress(AssertionError):  # the checks below say what is left
                wait_every(settled, timeout=GRACE + 25, what="every slot to have a row",
                           interval=0.5)
            codes = [r.stop() for r in replicas]
            rows = cluster.runs()
            figures = analyze(rows, names, window_start, window_end)
            in_outage = [r for r in rows if down_at <= r.slot <= restart_at]
            outage_missed = Counter((r.reason or "").split(":", 1)[0] for r in in_outage
                                    if r.status is RunStatus.MISSED)
            sessions = {r.index: zookeeper_status(r).get("session_generation")
                        for r in replicas}
            serving = (up_at - restart_at).total_seconds()
            print(f"\n{label}: down {(restart_at - down_at).total_seconds():.1f}s; started "
                  f"again, serving after {serving:.1f}s; first run {recovery:.2f}s after the "
                  f"start ({recovery - serving:+.2f}s from serving); session generations "
                  f"{sessions}"
                  f"\n  {figures.summary()}\n  outage slots: {len(in_outage)} rows, "
                  f"missed {dict(outage_missed)}, holes {figures.holes}")

            assert codes == [0, 0], codes
            assert figures.duplicate_keys == 0 and figures.duplicates == 0
            assert figures.overlaps == 0, figures.overlap_examples
            assert figures.unexplained_misses == 0, figures.holes
            assert figures.reasonless == 0 and figures.still_running == 0
            # nothing runs without ZooKeeper: no run started after the claims in flight
            # at the stop and before it served again
            during = [r for r in rows if r.started_at is not None
                      and down_at + timedelta(seconds=1) < r.started_at < restart_at]
            assert during == [], during
            # the outage's slots are recorded missed, with the unclaimed-slot reason
            outage_rows = [r for r in rows if down_at + timedelta(seconds=2) <= r.slot
                           <= restart_at - timedelta(seconds=2)]
            assert outage_rows and all(r.status is RunStatus.MISSED
                                       and (r.reason or "").startswith(UNCLAIMED)
                                       for r in outage_rows), Counter(
                (r.status.value, r.reason) for r in outage_rows)


@pytest.mark.timeout(120)
def test_standalone_zookeeper_stopped_and_restarted(tmp_path: Path,
                                                    standalone: ZooKeeperServer) -> None:
    """ZooKeeper (standalone) stopped for 12 s under two replicas: no replica exits,
    nothing runs while it is down, the outage's slots are recorded ``missed`` ("no replica
    recorded this slot"), the replicas claim again on their own once it serves, and the
    table has zero duplicates, overlaps and unexplained misses."""
    _zookeeper_outage(tmp_path, standalone.address, standalone.stop, standalone.start,
                      "standalone ZooKeeper stopped")


@pytest.mark.timeout(150)
def test_whole_ensemble_killed_and_restarted(tmp_path: Path,
                                             ensemble: ZooKeeperEnsemble) -> None:
    """Every node of the 3-node ensemble killed at once for 12 s, then all started again:
    the same promises as for a standalone server - the quorum is gone and comes back,
    the replicas follow on their own, nothing lost, nothing doubled."""

    def kill_all() -> None:
        for s in ensemble.servers:
            s.kill()

    _zookeeper_outage(tmp_path, ensemble.hosts, kill_all, ensemble.restore,
                      "3-node ensemble killed")

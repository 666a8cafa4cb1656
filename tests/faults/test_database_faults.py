"""The database breaks under a running daemon: nothing lost, nothing doubled, no crash.

A scheduler's promise is only as good as its behaviour when its database goes away. Each
test here runs the real ``reconciler run`` process with four ``@every 1s`` Forbid tasks
(three ``true``, one ``sleep 5`` so that a run is always in flight), breaks its database
just after a ``sleep 5`` run started, keeps it broken while six API clients read the run
history twice a second (as an open dashboard does), repairs it, and reads the ``runs``
table:

* **PostgreSQL stopped for 30 s** (``pg_ctlcluster stop``, then ``start``) on a cluster
  of the test's own (the machine's main cluster serves other test sessions);
* **SQLite file made read-only for 10 s**: the immutable attribute on the file and its
  write-ahead log, on ext4 in a loop file. ``chmod`` does not stop root, ``mount -o
  remount,ro`` is refused (EBUSY) while the daemon holds the file open for writing, and
  tmpfs ignores the immutable attribute for descriptors already open;
* **SQLite disk full for 10 s**: a size-limited tmpfs filled by a filler file, which is
  then deleted. (The fault comes in the daemon's first seconds, while SQLite's
  write-ahead log still grows: once checkpointed, the log reuses its own space and a
  full disk would only show at the next checkpoint.)

What every test asserts, over the slots from 3 s before the fault to 6 s after it:

* the daemon never exits, logs the database's error during the fault (a few lines a
  second, no traceback), and exits 0 on SIGTERM afterwards;
* **nothing lost**: every slot of every task has a row (a run, or ``skipped`` /
  ``missed`` with a reason; the fault's slots say "database unavailable: ...");
* **nothing doubled**: no (task, slot) has two runs that started a process, no unique
  key is taken twice, no two runs of a task overlap;
* **recovery on its own**: every task runs again within 20 s of the repair, and from
  2 s after it every slot of the ``true`` tasks runs (measured: under a second);
* the ``sleep 5`` run in flight has a terminal record (its end, which came during the
  fault, is recorded late), nothing is left ``running`` or marked ``abandoned``;
* **clear status**: while the fault lasts ``/readyz`` answers 503 with a failing check
  that names the database, and it is ready again after the repair.

``pytest tests/faults/test_database_faults.py -s`` prints the figures of each run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.runtime import RunRecord, RunStatus
from reconciler.store import SQLStore
from tests.e2e.cluster import EXECUTED, Figures, analyze, task_manifest, utcnow
from tests.e2e.conftest import DaemonProcess, wait_until
from tests.faults import _dbfaults as faults

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.faults]

BEATS = [f"beat-{i}" for i in range(3)]
SLOW = "slow"
TASKS = [*BEATS, SLOW]
MARGIN = timedelta(seconds=3)  # slots analysed before the fault
SETTLE = timedelta(seconds=2)  # after the repair: slots that may still meet the fault
STEADY = timedelta(seconds=4)  # then: every slot of the `true` tasks must run
RECOVERY_BOUND = 20.0  # seconds from the repair to a run of every task, at most


# ----------------------------------------------------------------------------- fixtures


def daemon_on(root: Path, url: str) -> DaemonProcess:
    d = DaemonProcess(root)
    d.store.close()
    d.db_url, d.store = url, SQLStore(url)
    for name in BEATS:
        d.write(f"{name}.yaml", task_manifest(name, "@every 1s", "command: ['true']"))
    d.write(f"{SLOW}.yaml", task_manifest(SLOW, "@every 1s", "command: [sleep, '5']"))
    return d


@pytest.fixture
def pg_daemon(tmp_path: Path) -> Iterator[tuple[DaemonProcess, faults.PrivatePostgres]]:
    with faults.private_postgres() as pg:
        d = daemon_on(tmp_path, pg.url)
        try:
            yield d, pg
        finally:
            d.stop()


@pytest.fixture
def readonly_daemon(tmp_path: Path) -> Iterator[tuple[DaemonProcess, Path]]:
    with faults.ext4_image(64) as mnt:
        d = daemon_on(tmp_path, f"sqlite:///{mnt / 'state.db'}")
        try:
            yield d, mnt
        finally:
            d.stop()  # before the file system goes: the daemon holds files on it


@pytest.fixture
def full_daemon(tmp_path: Path) -> Iterator[tuple[DaemonProcess, Path]]:
    # room for the database and SQLite's write-ahead log, which grows to ~4 MiB before
    # its first checkpoint: the disk is full only when the filler makes it so
    with faults.tmpfs("24m") as mnt:
        d = daemon_on(tmp_path, f"sqlite:///{mnt / 'state.db'}")
        try:
            yield d, mnt
        finally:
            d.stop()


# ------------------------------------------------------------------------------ probes


@dataclass
class Sample:
    at: float  # seconds since the fault began
    code: int  # HTTP status of /readyz, 0 when it did not answer
    body: dict[str, Any]


def readyz(d: DaemonProcess) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{d.port}/readyz", timeout=8) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (OSError, ValueError) as exc:
        return 0, {"error": str(exc)}


def api_reads(d: DaemonProcess, clients: int = 6) -> list[int]:
    """``clients`` concurrent reads of the run history, as an open dashboard and a few
    CLI users make them; the HTTP statuses."""
    def one(name: str) -> int:
        url = f"http://127.0.0.1:{d.port}/api/v1/tasks/{name}/runs?limit=5"
        try:
            with urllib.request.urlopen(url, timeout=8) as r:
                r.read()
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, [TASKS[i % len(TASKS)] for i in range(clients)]))


def watch(d: DaemonProcess, seconds: float, began: float) -> list[Sample]:
    """The fault's duration: probe /readyz about twice a second, read the history through
    the API as a few clients would, and check that the daemon is alive, until ``seconds``
    have passed since ``began`` (monotonic)."""
    samples: list[Sample] = []
    while (left := began + seconds - time.monotonic()) > 0:
        assert not d.exited(), f"the daemon exited during the fault:\n{tail(d)}"
        api_reads(d)
        code, body = readyz(d)
        samples.append(Sample(time.monotonic() - began, code, body))
        time.sleep(min(0.5, max(0.0, left)))  # the sampling rate, not a wait for a state
    assert not d.exited(), f"the daemon exited during the fault:\n{tail(d)}"
    return samples


def tail(d: DaemonProcess, lines: int = 60) -> str:
    return "\n".join(d.log.read_text(errors="replace").splitlines()[-lines:])


def all_runs(d: DaemonProcess) -> list[RunRecord]:
    return [r for name in TASKS for r in d.runs(name)]


def started_after(d: DaemonProcess, name: str, at: datetime) -> RunRecord | None:
    return next((r for r in d.runs(name) if r.status in EXECUTED
                 and r.started_at is not None and r.started_at > at), None)


# ---------------------------------------------------------------------------- scenario


@dataclass
class Outcome:
    figures: Figures  # every task, from MARGIN before the fault to the end of STEADY
    steady: Figures  # the `true` tasks over STEADY, which starts SETTLE after the repair
    fault_began: datetime
    repaired: datetime
    recovery: float  # seconds from the repair to the first run of every `true` task
    samples: list[Sample]
    fault_log: list[str]  # the daemon's log lines written during the fault
    in_flight: RunRecord  # the sleep-5 run started just before the fault, as recorded
    outage_missed: list[RunRecord]  # missed rows of the fault's slots
    db_modes: Counter[str] | None  # SQLite: how the daemon holds the file after the repair

    @property
    def fault_seconds(self) -> float:
        return (self.repaired - self.fault_began).total_seconds()

    def problems_logged(self, *, requests: bool = False) -> list[str]:
        """Warnings and errors of the daemon's loops during the fault; ``requests``: those
        of API requests instead (one per request answered 503, as the clients call)."""
        return [line for line in self.fault_log
                if (" WARNING " in line or " ERROR " in line)
                and (" reconciler.api: " in line) is requests]

    def report(self, title: str) -> str:
        codes = Counter(s.code for s in self.samples)
        failing = Counter(f"{name}: {check.get('message')}" for s in self.samples
                          for name, check in (s.body.get("checks") or {}).items()
                          if not check.get("ok"))
        reasons = Counter((r.reason or "").split(":", 1)[0] for r in self.outage_missed)
        steady = self.steady
        return (
            f"\n{title}: {self.fault_seconds:.1f}s of fault, recovery {self.recovery:.2f}s\n"
            f"  window: {self.figures.summary()}\n"
            f"  missed rows of the fault's slots: {len(self.outage_missed)} {dict(reasons)}\n"
            f"  after the repair (+{SETTLE.seconds}s, {STEADY.seconds}s): "
            f"{steady.window_slots} slots, {steady.runs} runs, {steady.missed} missed\n"
            f"  /readyz during the fault: {dict(codes)}; failing checks: {dict(failing)}\n"
            f"  log during the fault: {len(self.fault_log)} lines, "
            f"{len(self.problems_logged())} warnings/errors of the daemon's loops, "
            f"{len(self.problems_logged(requests=True))} of API requests, "
            f"{sum('Traceback' in line for line in self.fault_log)} tracebacks\n"
            f"  in-flight run {self.in_flight.id}: {self.in_flight.status.value} "
            f"{self.in_flight.started_at:%H:%M:%S.%f} -> "
            f"{self.in_flight.finished_at and f'{self.in_flight.finished_at:%H:%M:%S.%f}'}"
            + (f"\n  database file held open by the daemon after the repair: "
               f"{dict(self.db_modes)}" if self.db_modes is not None else "")
        )


def exercise(d: DaemonProcess, fault: Callable[[], AbstractContextManager[Any]],
             hold: float, db_file: Path | None = None) -> Outcome:
    """Run the daemon, break the database for ``hold`` seconds, repair it, analyse."""
    d.start()
    wait_until(lambda: all(len([r for r in d.runs(n) if r.status in EXECUTED]) >= 2
                           for n in BEATS), timeout=30, what="runs before the fault")

    def fresh_slow_run() -> RunRecord | None:
        now = utcnow()
        return next((r for r in d.runs(SLOW) if r.status is RunStatus.RUNNING
                     and r.started_at is not None
                     and now - r.started_at < timedelta(seconds=1.5)), None)

    # the fault begins just after a sleep-5 run started: the run ends during the fault
    in_flight = wait_until(fresh_slow_run, timeout=20, what="a sleep-5 run to start")
    log_from = d.log.stat().st_size
    began, began_mono = utcnow(), time.monotonic()
    with fault():
        samples = watch(d, hold, began_mono)
        log_to = d.log.stat().st_size
    repaired = utcnow()
    with open(d.log, "rb") as f:
        f.seek(log_from)
        fault_log = f.read(log_to - log_from).decode(errors="replace").splitlines()

    # recovery on its own: every task runs again, the daemon says it is ready again
    # (the sleep-5 task may be busy with a run started at the repair: it only has to
    # have run again since the fault began)
    firsts = [wait_until(functools.partial(started_after, d, n, repaired),
                         timeout=RECOVERY_BOUND + 10, what=f"{n} to run again after the repair")
              for n in BEATS]
    wait_until(lambda: started_after(d, SLOW, began), timeout=RECOVERY_BOUND + 10,
               what=f"{SLOW} to run again after the repair")
    recovery = max((r.started_at - repaired).total_seconds() for r in firsts
                   if r.started_at is not None)
    wait_until(lambda: readyz(d)[0] == 200, timeout=20, what="/readyz to be ready again")

    # from MARGIN before the fault (or the first slot every task had: the daemon starts
    # at a slot) to the end of STEADY
    first = max(min(r.slot for r in d.runs(n)) for n in TASKS)
    start, end = max(began - MARGIN, first), repaired + SETTLE + STEADY

    def settled() -> Figures | None:
        if utcnow() < end + timedelta(seconds=1):
            return None
        figures = analyze(all_runs(d), TASKS, start, end)
        return figures if figures.unexplained_misses == 0 and figures.still_running == 0 \
            else None

    with contextlib.suppress(AssertionError):  # the assertions in check() say what is wrong
        wait_until(settled, timeout=20, what="every slot of the window to have a row")
    assert not d.exited(), f"the daemon exited after the fault:\n{tail(d)}"
    assert d.proc is not None
    db_modes = faults.open_modes(d.proc.pid, db_file) if db_file is not None else None
    runs = all_runs(d)
    record = next(r for r in runs if r.id == in_flight.id)
    outage_missed = [r for r in runs if r.status is RunStatus.MISSED
                     and began - timedelta(seconds=1) <= r.slot <= repaired]
    return Outcome(
        figures=analyze(runs, TASKS, start, end),
        steady=analyze(runs, BEATS, repaired + SETTLE, end),
        fault_began=began, repaired=repaired, recovery=recovery, samples=samples,
        fault_log=fault_log, in_flight=record, outage_missed=outage_missed, db_modes=db_modes,
    )


def check(d: DaemonProcess, out: Outcome, *problem: str) -> None:
    """The promises common to every database fault; ``problem``: the driver's error
    that the log must show (any of these, lower case)."""
    f = out.figures
    # nothing doubled: no slot started twice, no unique key taken twice
    assert f.duplicates == 0 and f.duplicate_keys == 0, f.summary()
    # nothing lost: every slot has a row, every row that did not run says why
    assert f.unexplained_misses == 0, f"slots without a row: {f.holes}\n{f.summary()}"
    assert f.reasonless == 0, f.summary()
    assert out.outage_missed, f"no slot of the fault was recorded missed\n{f.summary()}"
    for r in out.outage_missed:
        assert (r.reason or "").startswith("database unavailable: "), (r.task_name, r.reason)
    # recovery on its own: runs within a bound, then every slot runs again
    assert out.recovery < RECOVERY_BOUND, out.recovery
    steady = out.steady
    assert steady.runs == steady.window_slots and steady.missed == 0, (
        f"slots after the repair that did not run: {steady.summary()}\n"
        + "\n".join(line for line in tail(d, 400).splitlines()
                    if " ERROR " in line or " WARNING " in line)[-3000:])
    # the run in flight has its end (which came during the fault); nothing is stuck
    # "running" (a run whose end is not recorded would also look like an overlap)
    assert out.in_flight.status is RunStatus.SUCCEEDED, out.in_flight
    assert out.in_flight.finished_at is not None
    assert out.in_flight.finished_at < out.repaired, out.in_flight
    assert f.still_running == 0 and f.abandoned == 0, f.summary()
    assert f.overlaps == 0, f.overlap_examples
    # the log names the database's error during the fault, a few lines a second at most
    # (one per loop that touches the database, not one per task or slot; API requests
    # answered 503 log one line each on top), no traceback
    assert "Traceback" not in d.log.read_text(errors="replace"), tail(d, 120)
    logged = out.problems_logged()
    assert any(p in line.lower() for line in logged for p in problem), (
        f"the log never names {problem!r} during the fault:\n" + "\n".join(logged[-20:]))
    assert len(logged) <= 8 * out.fault_seconds, f"{len(logged)} warnings/errors"
    # the daemon stops cleanly
    d.signal(signal.SIGTERM)
    assert d.wait(30) == 0, tail(d)


def check_status(out: Outcome) -> None:
    """While the fault lasts /readyz answers 503 with a failing check that names the
    database; asserted last, so that a wrong status does not hide the figures."""
    assert out.samples and all(s.code != 0 for s in out.samples), [
        (round(s.at, 1), s.body) for s in out.samples if s.code == 0]

    def says_database(s: Sample) -> bool:
        return any(not c.get("ok") and ("database" in name or "database" in
                                        str(c.get("message", "")).lower())
                   for name, c in (s.body.get("checks") or {}).items())

    during = [s for s in out.samples if s.at > 2.0]  # the first probes may come before
    assert during and all(s.code == 503 and says_database(s) for s in during), (
        "/readyz during the fault: "
        + "; ".join(f"+{s.at:.1f}s {s.code} {s.body.get('checks')}" for s in during[:3]))


# ------------------------------------------------------------------------------- tests


def test_postgresql_stopped_for_30s(pg_daemon: tuple[DaemonProcess, faults.PrivatePostgres]
                                    ) -> None:
    """PostgreSQL stopped for 30 s with ``pg_ctlcluster`` and started again: the daemon
    stays up and says the database is unreachable, runs again on its own once it is
    back, and every slot of the outage has exactly one row (``missed``, "database
    unavailable: ..."), none a second run; the run in flight gets its end recorded."""
    d, pg = pg_daemon

    @contextlib.contextmanager
    def outage() -> Iterator[None]:
        pg.stop()
        try:
            yield
        finally:
            pg.start()

    out = exercise(d, outage, hold=30.0)
    print(out.report("PostgreSQL stopped"))
    check(d, out, "connection refused")
    check_status(out)


def test_sqlite_file_read_only_for_10s(readonly_daemon: tuple[DaemonProcess, Path]) -> None:
    """The SQLite file (and its write-ahead log) read-only for 10 s, then writable
    again: no crash, the status says so, runs resume on their own, and every slot
    has one row and at most one run."""
    d, mnt = readonly_daemon
    db = mnt / "state.db"

    def locked() -> AbstractContextManager[None]:
        # not the -shm index: it is a memory map, and a write to an immutable map is
        # SIGBUS in any SQLite program (the shared-memory lock file, not the data)
        wal = db.with_name("state.db-wal")
        assert wal.exists(), "the daemon's database is not in WAL mode"
        return faults.read_only(db, wal)

    out = exercise(d, locked, hold=10.0, db_file=db)
    print(out.report("SQLite read-only"))
    # EPERM on write: "disk I/O error"; a connection opened meanwhile is read-only
    check(d, out, "disk i/o error", "attempt to write a readonly database")
    check_status(out)


def test_sqlite_disk_full_for_10s(full_daemon: tuple[DaemonProcess, Path]) -> None:
    """The file system of the SQLite file full for 10 s (a filler file), then space
    freed: no crash, the status says so, runs resume on their own, and every slot has
    one row and at most one run."""
    d, mnt = full_daemon
    out = exercise(d, lambda: faults.fill(mnt), hold=10.0, db_file=mnt / "state.db")
    print(out.report("SQLite disk full"))
    check(d, out, "database or disk is full")
    check_status(out)

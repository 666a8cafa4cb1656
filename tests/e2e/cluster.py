"""Run N real daemons (``reconciler run --zookeeper``) against one database and ZooKeeper.

Used by ``test_chaos.py`` and ``test_distributed.py``:

* :func:`server_database` - a brand-new database on the PostgreSQL or MariaDB of this
  machine (dropped afterwards); skipped when the server is unreachable, a failure with
  ``CI=true`` (the same rule as ``tests/integration/conftest.py``);
* :class:`Cluster` / :class:`Replica` - daemon subprocesses sharing one manifests
  directory, database and ZooKeeper namespace. Each replica runs in its own process
  group (``SIGSTOP`` of the group stalls the daemon; its task processes have their own
  sessions and keep running, as on a real host), listens on its own HTTP port and logs
  to its own file;
* :func:`analyze` - the exactly-once figures over the ``runs`` table: duplicates,
  overlapping Forbid runs, slots without a row ("unexplained misses"), rows without a
  reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from reconciler.core.runtime import RunRecord, RunStatus
from reconciler.store import SQLStore, normalize_url, safe_url
from tests.e2e.conftest import free_port, wait_until
from tests.services.ci import unavailable

SERVER_URLS = {
    "postgresql": os.environ.get(
        "RECONCILER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get("RECONCILER_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test"),
}
ROOT = Path(__file__).resolve().parents[2]
#: statuses of a row whose task process was (or may have been) started
EXECUTED = frozenset({RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.FAILED,
                      RunStatus.TIMED_OUT, RunStatus.CANCELLED, RunStatus.ABANDONED})


@contextlib.contextmanager
def server_database(backend: str) -> Iterator[str]:
    """A fresh, upgraded database on ``backend``; yields its URL; dropped at the end."""
    admin_url = normalize_url(SERVER_URLS[backend])
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT",
                          connect_args={"connect_timeout": 3})
    name = f"reconciler_e2e_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    except SQLAlchemyError as exc:
        admin.dispose()
        cause = getattr(exc, "orig", None) or exc
        unavailable(f"{backend} at {safe_url(admin_url)} is unreachable: {cause}")
    url: URL = admin_url.set(database=name)
    store = SQLStore(url)
    try:
        store.upgrade()
    finally:
        store.close()
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with contextlib.suppress(SQLAlchemyError):
            # the server may just have been restarted by a test: retry a few times
            for attempt in range(20):
                try:
                    with admin.connect() as conn:
                        if backend == "postgresql":
                            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                        else:
                            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
                    break
                except SQLAlchemyError:
                    if attempt == 19:
                        raise
                    time.sleep(0.5)
        admin.dispose()


def task_manifest(name: str, schedule: str, run: str, *, policy: str = "Forbid",
                  history: str = "{successful: 100000, failed: 100000}",
                  extra: str = "") -> str:
    """A Task that keeps its whole history (the checks read every row) by default."""
    return (
        "apiVersion: reconciler/v1\nkind: Task\n"
        f"metadata:\n  name: {name}\n"
        f"spec:\n  schedule: \"{schedule}\"\n  run:\n    {run}\n"
        f"  concurrencyPolicy: {policy}\n"
        f"  history: {history}\n"
        f"{extra}"
    )


# ----------------------------------------------------------------------------- replicas


class Replica:
    """One ``reconciler run`` process of a :class:`Cluster`."""

    def __init__(self, cluster: Cluster, index: int, args: tuple[str, ...],
                 env: dict[str, str]) -> None:
        self.cluster = cluster
        self.index = index
        self.args = args
        self.extra_env = env
        self.port = free_port()
        self.log = cluster.root / f"replica-{index}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.id: str | None = None
        self.generation = 0  # restarts

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def env(self) -> dict[str, str]:
        c = self.cluster
        env = dict(os.environ)
        env.update(
            RECONCILER_DATABASE_URL=c.database_url,
            RECONCILER_ZOOKEEPER=c.zookeeper,
            RECONCILER_NAMESPACE=c.namespace,
            RECONCILER_LISTEN=f"127.0.0.1:{self.port}",
            RECONCILER_ZOOKEEPER_SESSION_TIMEOUT=c.session_timeout,
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        if "RECONCILER_CLOCK_OFFSET" not in self.extra_env:
            env.pop("RECONCILER_CLOCK_OFFSET", None)
        return env

    def launch(self) -> Replica:
        """Start the process without waiting for it to be up."""
        args = [sys.executable, "-m", "reconciler", "run",
                "--manifests", str(self.cluster.manifests),
                "--heartbeat-interval", "1s", "--resync-interval", "30s",
                "--abandon-after", "5s", "--shutdown-grace", "2s",
                "--log-level", "debug", *self.args]
        self.generation += 1
        self.port = free_port()  # a restarted replica cannot rely on the old port yet
        with open(self.log, "ab") as log:
            log.write(f"==== start {self.generation}: {' '.join(args)}\n".encode())
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env(), cwd=self.cluster.root,
                                         start_new_session=True)
        self.id = None
        return self

    def wait_up(self, timeout: float = 30.0) -> Replica:
        def up() -> str | None:
            if self.exited():
                raise AssertionError(f"replica {self.index} exited:\n{self.tail()}")
            for line in self._this_start_lines():
                if " running: " in line and "reconciler " in line:
                    return line.split("reconciler ", 1)[1].split(" running:", 1)[0]
            return None

        self.id = wait_until(up, timeout=timeout, what=f"replica {self.index} to start")
        return self

    def start(self, timeout: float = 30.0) -> Replica:
        return self.launch().wait_up(timeout)

    def _this_start_lines(self) -> list[str]:
        text = self.log.read_text(errors="replace")
        part = text.rsplit(f"==== start {self.generation}:", 1)[-1]
        return part.splitlines()

    def log_text(self) -> str:
        """This start's log."""
        return "\n".join(self._this_start_lines())

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL the daemon only (its task processes are left, as after a crash)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop_group(self) -> None:
        """SIGSTOP the daemon's process group: it stalls with its sockets open."""
        os.killpg(self.pid, signal.SIGSTOP)

    def cont_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGCONT)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout``. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.cont_group()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reconciler", *args], env=self.env(),
                              cwd=self.cluster.root, capture_output=True, text=True,
                              timeout=timeout)

    def status_row(self) -> dict[str, Any] | None:
        """This replica's row of the ``replicas`` table (its last status)."""
        for row in self.cluster.store.list_replicas():
            if row["id"] == self.id:
                return row
        return None


@dataclass
class Cluster:
    root: Path
    database_url: str
    zookeeper: str
    namespace: str = field(default_factory=lambda: f"e2e-{uuid.uuid4().hex[:8]}")
    session_timeout: str = "10s"
    replicas: list[Replica] = field(default_factory=list)
    _store: SQLStore | None = None

    def __post_init__(self) -> None:
        self.manifests = self.root / "manifests"
        self.manifests.mkdir(parents=True, exist_ok=True)

    @property
    def store(self) -> SQLStore:
        if self._store is None:
            self._store = SQLStore(self.database_url)
        return self._store

    def write(self, name: str, text: str) -> None:
        target = self.manifests / name
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        tmp.rename(target)

    def add(self, *args: str, env: dict[str, str] | None = None) -> Replica:
        replica = Replica(self, len(self.replicas), args, env or {})
        self.replicas.append(replica)
        return replica

    def start(self, count: int, *args: str, timeout: float = 40.0) -> list[Replica]:
        """Start ``count`` replicas; the first one alone (it becomes the writer and
        applies the manifests), the others together."""
        new = [self.add(*args) for _ in range(count)]
        new[0].start(timeout)
        wait_until(lambda: len(self.store.load_tasks()) > 0 or not list(
            self.manifests.glob("*.yaml")), timeout=timeout, what="the first apply")
        for r in new[1:]:
            r.launch()
        for r in new[1:]:
            r.wait_up(timeout)
        return new

    def runs(self) -> list[RunRecord]:
        return self.store.list_runs(None, limit=1_000_000)

    def close(self) -> None:
        for r in self.replicas:
            with contextlib.suppress(Exception):
                r.stop()
        if self._store is not None:
            self._store.close()
            self._store = None

    @contextlib.contextmanager
    def checked(self, log_lines: int = 60) -> Iterator[Cluster]:
        """Run the body, then require that no replica logged a traceback; close the
        cluster in any case, and print the replicas' logs when something failed."""
        ok = False
        try:
            yield self
            for r in self.replicas:  # nothing may have crashed or logged a stray exception
                assert "Traceback" not in r.log.read_text(errors="replace"), r.tail(80)
            ok = True
        finally:
            self.close()
            if not ok:
                print(self.dump_logs(log_lines))

    def dump_logs(self, lines: int = 60) -> str:
        return "\n".join(f"----- replica {r.index} ({r.id}) {r.log}\n{r.tail(lines)}"
                         for r in self.replicas)


# ----------------------------------------------------------------------------- analysis


def every_second(start: datetime, end: datetime) -> list[datetime]:
    """The ``@every 1s`` slots in ``[start, end)``."""
    first = start.replace(microsecond=0)
    if first < start:
        first += timedelta(seconds=1)
    out = []
    t = first
    while t < end:
        out.append(t)
        t += timedelta(seconds=1)
    return out


@dataclass
class Figures:
    tasks: int
    window_slots: int  # tasks x slots in the window
    rows: int  # rows in the window
    runs: int  # rows whose task process was started
    succeeded: int
    missed: int
    skipped: int
    abandoned: int
    cancelled: int
    duplicates: int  # (task, slot) with more than one started run
    duplicate_keys: int  # (task, slot, attempt) with more than one row (unique key)
    overlaps: int  # pairs of runs of one Forbid task overlapping in time
    unexplained_misses: int  # slots without any row
    reasonless: int  # missed / skipped / abandoned / cancelled rows without a reason
    still_running: int
    missed_reasons: Counter[str] = field(default_factory=Counter)
    skipped_reasons: Counter[str] = field(default_factory=Counter)
    by_replica: Counter[str] = field(default_factory=Counter)
    missed_at: Counter[int] = field(default_factory=Counter)  # second of the window -> rows
    skipped_at: Counter[int] = field(default_factory=Counter)
    holes: list[tuple[str, str]] = field(default_factory=list)
    overlap_examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        reasons = "; ".join(f"{n}x {r[:90]}" for r, n in self.missed_reasons.most_common(4))
        skipped = "; ".join(f"{n}x {r[:60]}" for r, n in self.skipped_reasons.most_common(2))
        return (
            f"tasks={self.tasks} slots={self.window_slots} rows={self.rows} runs={self.runs} "
            f"(succeeded {self.succeeded}, abandoned {self.abandoned}, cancelled "
            f"{self.cancelled}) missed={self.missed} skipped={self.skipped} "
            f"duplicates={self.duplicates} overlaps={self.overlaps} "
            f"unexplained_misses={self.unexplained_misses} reasonless={self.reasonless} "
            f"running={self.still_running} per-replica={dict(self.by_replica)}"
            + (f"\n  missed reasons: {reasons}" if reasons else "")
            + (f"\n  skipped reasons: {skipped}" if skipped else "")
            + (f"\n  missed at second: {_seconds(self.missed_at)}" if self.missed_at else "")
            + (f"\n  skipped at second: {_seconds(self.skipped_at)}"
               if self.skipped_at else "")
        )

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in self.__dict__.items()
                           if k not in ("holes", "overlap_examples")}, default=str)


def _seconds(counts: Counter[int], limit: int = 12) -> str:
    items = sorted(counts.items())
    text = ", ".join(f"+{k}s: {v}" for k, v in items[:limit])
    return text + (f", ... ({len(items) - limit} more seconds)" if len(items) > limit else "")


def _short(reason: str | None) -> str:
    # "database unavailable: <driver message>" differ per row: keep the head only
    return (reason or "").split(":", 1)[0] if reason and reason.startswith(
        "database unavailable") else (reason or "")


def _end(r: RunRecord) -> datetime:
    return r.finished_at or datetime.max.replace(tzinfo=UTC)


def analyze(rows: Iterable[RunRecord], tasks: Iterable[str], start: datetime,
            end: datetime, *, forbid: bool = True) -> Figures:
    """Exactly-once figures for ``@every 1s`` tasks over the slots in ``[start, end)``."""
    names = sorted(tasks)
    slots = every_second(start, end)
    by_task: dict[str, list[RunRecord]] = defaultdict(list)
    for r in rows:
        by_task[r.task_name].append(r)
    window = [r for n in names for r in by_task[n] if start <= r.slot < end]
    keys = Counter((r.task_name, r.slot, r.attempt) for r in window)
    started = Counter((r.task_name, r.slot) for r in window if r.status in EXECUTED)
    have = {(r.task_name, r.slot) for r in window}
    holes = [(n, s.isoformat()) for n in names for s in slots if (n, s) not in have]
    overlaps = 0
    examples: list[str] = []
    if forbid:
        for n in names:
            # every started run of the task, whenever its slot (a run of the slot before
            # the window may still overlap the first one in it)
            spans = sorted(
                (r for r in by_task[n]
                 if r.status in EXECUTED and r.started_at is not None
                 and r.status is not RunStatus.ABANDONED),
                key=lambda r: (r.started_at, r.id),
            )
            latest: RunRecord | None = None  # the run ending last among those started
            for b in spans:
                if latest is not None and b.started_at is not None and b.started_at < _end(latest):
                    overlaps += 1
                    if len(examples) < 5:
                        examples.append(f"{n}: run {latest.id} ({latest.replica}, "
                                        f"{latest.started_at}-{latest.finished_at}) and run "
                                        f"{b.id} ({b.replica}, {b.started_at}-{b.finished_at})")
                if latest is None or _end(b) > _end(latest):
                    latest = b
    explained = (RunStatus.MISSED, RunStatus.SKIPPED, RunStatus.ABANDONED, RunStatus.CANCELLED)
    return Figures(
        tasks=len(names),
        window_slots=len(names) * len(slots),
        rows=len(window),
        runs=sum(1 for r in window if r.status in EXECUTED),
        succeeded=sum(1 for r in window if r.status is RunStatus.SUCCEEDED),
        missed=sum(1 for r in window if r.status is RunStatus.MISSED),
        skipped=sum(1 for r in window if r.status is RunStatus.SKIPPED),
        abandoned=sum(1 for r in window if r.status is RunStatus.ABANDONED),
        cancelled=sum(1 for r in window if r.status is RunStatus.CANCELLED),
        duplicates=sum(1 for n in started.values() if n > 1),
        duplicate_keys=sum(1 for n in keys.values() if n > 1),
        overlaps=overlaps,
        unexplained_misses=len(holes),
        reasonless=sum(1 for r in window if r.status in explained and not r.reason),
        still_running=sum(1 for r in window if r.status is RunStatus.RUNNING),
        missed_reasons=Counter(_short(r.reason) for r in window
                               if r.status is RunStatus.MISSED),
        skipped_reasons=Counter(r.reason or "" for r in window
                                if r.status is RunStatus.SKIPPED),
        by_replica=Counter((r.replica or "-").rsplit("-", 1)[0] for r in window
                           if r.status in EXECUTED),
        missed_at=Counter(int((r.slot - start).total_seconds()) for r in window
                          if r.status is RunStatus.MISSED),
        skipped_at=Counter(int((r.slot - start).total_seconds()) for r in window
                           if r.status is RunStatus.SKIPPED),
        holes=holes[:20],
        overlap_examples=examples,
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def sleep_until(at: datetime) -> None:
    delay = (at - utcnow()).total_seconds()
    if delay > 0:
        time.sleep(delay)

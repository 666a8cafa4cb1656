"""One single-replica daemon per database.

Without ZooKeeper a daemon takes itself for the only one: at start-up it marks every
run left ``running`` as ``abandoned`` and retries it, and it claims slots in process.
A second such daemon on the same database would abandon the first one's live runs and
run their slots again. So a daemon holds a lock on the database for its whole life,
released by the operating system or the server when the process dies (``kill -9``
included), so a crashed daemon never blocks its successor:

* **SQLite**: ``flock`` on ``<database file>.lock`` (a file of its own, so SQLite's own
  locks are untouched), which also holds the holder's identity for the message;
* **PostgreSQL**: a session advisory lock (per database) on a connection of its own;
* **MariaDB / MySQL**: ``GET_LOCK`` on a connection of its own, named after the
  database (named locks are server-wide).

A single-replica daemon takes the lock exclusively. Distributed daemons (``--zookeeper``)
take it shared where the database has shared locks (SQLite, PostgreSQL), so a single
daemon refuses to start beside a cluster and a cluster member beside a single daemon;
MariaDB has no shared named locks, so there distributed daemons take none.

A server connection can drop (a database restart); :meth:`InstanceLock.check`, called
on every heartbeat, takes the lock again and says so when another daemon took it
meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from reconciler.core.errors import ReconcilerError
from reconciler.store.engine import make_engine, safe_url

log = logging.getLogger("reconciler.store")

#: The advisory lock key of PostgreSQL (any fixed 64-bit number; the lock is per database).
PG_KEY = 0x7265636F6E63696C  # "reconcil"
HOW_TO_RUN_SEVERAL = (
    "Stop it first, or run several replicas on one database with --zookeeper "
    "(docs/guarantees.md, distributed mode)."
)


class DatabaseInUseError(ReconcilerError):
    """Another daemon holds the database."""


class InstanceLock:
    """The daemon's lock on its database (see the module's docstring)."""

    def __init__(self, engine: Engine, replica: str, *, shared: bool,
                 describe_holder: Any = None) -> None:
        self.engine = engine
        self.replica = replica
        self.shared = shared
        #: () -> str | None: who holds the lock, from the replicas' status rows
        self._describe_holder = describe_holder
        self._file: int | None = None
        self._conn: Connection | None = None
        self.dialect = engine.dialect.name
        self._server: Engine | None = None  # unpooled: closing a connection ends its session

    # ------------------------------------------------------------------ public

    def acquire(self) -> None:
        """Take the lock or raise :class:`DatabaseInUseError` naming the holder."""
        if self.dialect == "sqlite":
            self._acquire_file()
        elif self.dialect == "postgresql" or (self.dialect in ("mysql", "mariadb")
                                              and not self.shared):
            self._acquire_server()

    def check(self) -> str | None:
        """Whether the lock is still held (a server connection can drop): take it again
        if needed; return why this daemon no longer holds it, or None."""
        if self._conn is None:
            return None
        try:
            self._conn.execute(text("SELECT 1"))
            return None
        except Exception:  # the connection broke: the server released the lock
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        try:
            self._acquire_server()
        except DatabaseInUseError as exc:
            return str(exc)
        except Exception as exc:  # the database is still down: try at the next heartbeat
            self._conn = None
            return f"could not take the database lock again: {str(exc).splitlines()[0]}"
        log.info("took the database lock again after its connection broke")
        return None

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
                os.close(self._file)
            self._file = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()  # the session ends: the server drops its locks
            self._conn = None
        if self._server is not None:
            self._server.dispose()
            self._server = None

    # ---------------------------------------------------------------- SQLite

    def _acquire_file(self) -> None:
        database = self.engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return  # an in-memory database is private to this process
        path = f"{database}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ReconcilerError(f"cannot open the daemon lock file {path}: "
                                  f"{exc.strerror}") from None
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DatabaseInUseError(self._refusal(holder)) from None
        if not self.shared:
            identity = json.dumps({"replica": self.replica, "pid": os.getpid(),
                                   "host": os.uname().nodename})
            os.ftruncate(fd, 0)
            os.pwrite(fd, identity.encode(), 0)
        self._file = fd

    # ---------------------------------------------------------------- servers

    def _acquire_server(self) -> None:
        if self._server is None:
            self._server = make_engine(self.engine.url, poolclass=NullPool)
        conn = self._server.connect()
        try:
            if self.dialect == "postgresql":
                fn = "pg_try_advisory_lock_shared" if self.shared else "pg_try_advisory_lock"
                got = conn.execute(text(f"SELECT {fn}(:k)"), {"k": PG_KEY}).scalar()
            else:
                name = _mysql_lock_name(conn)
                got = conn.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar()
            conn.commit()  # end the transaction; the session (and its lock) stays
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            holder = self._describe_holder() if self._describe_holder is not None else None
            raise DatabaseInUseError(self._refusal(holder))
        self._conn = conn

    def _refusal(self, holder: str | None) -> str:
        mode = ("a single-replica daemon" if self.shared
                else "another daemon (single-replica or distributed)")
        who = f" ({holder})" if holder else ""
        return (f"{mode}{who} uses the database {safe_url(self.engine.url)}; refusing to "
                f"start a second scheduler on it, which would run slots twice. "
                f"{HOW_TO_RUN_SEVERAL}")


def _read_holder(fd: int) -> str | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "replica" not in data:
        return None
    return f"replica {data['replica']}, pid {data.get('pid')} on {data.get('host')}"


def _mysql_lock_name(conn: Connection) -> str:
    database = str(conn.execute(text("SELECT DATABASE()")).scalar() or "")
    return "reconciler:" + hashlib.sha256(database.encode()).hexdigest()[:40]

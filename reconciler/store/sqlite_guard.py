"""A SQLite database file that vanishes under a running daemon, or was never there.

SQLite works on the file it *opened*, not on the name: after ``rm state.db`` or a new
file renamed over it, every open connection keeps reading and writing the old, unlinked
file (and its write-ahead log), and all of that is gone at the next start. After
``truncate -s 0 state.db`` the connections write into a file whose pages are zeros.
Nothing fails, so nothing tells.

:class:`FileGuard` watches the file of one engine:

* :meth:`FileGuard.remember` records the file's identity (device, inode) once the
  database is open (the daemon: after the schema upgrade at start-up);
* every connection checkout compares the path's identity and size with it (one
  ``stat``): a missing file, another inode or a file shorter than SQLite's 100-byte
  header trips the guard;
* :meth:`FileGuard.check` (the daemon's heartbeat) does the same and probes the schema:
  ``alembic_version`` and ``tasks`` exist and ``tasks`` is readable. It is also what
  finds a deleted or replaced file back (connections are refused until then).

While the file is deleted, replaced or truncated, the engine refuses every
connection (checkout and connect raise ``OperationalError`` naming the reason), so no
run is started or recorded into a file that is gone, and no new empty file is created
at the path. A deleted or replaced file counts as back when the path names the
remembered file again; a truncated one stays refused until the daemon is restarted (its
content is gone). The reason is :attr:`FileGuard.problem`, logged once
at level error when it appears.

:func:`require_file` is for commands that only read: a SQLite path that does not exist
is a typo, not a database to create.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from reconciler.core.errors import StoreError
from reconciler.store.engine import safe_url, sqlite_file

log = logging.getLogger("reconciler.store")

HEADER_SIZE = 100  # bytes of a database file's header: a shorter file holds no database
SCHEMA_TABLES = ("alembic_version", "tasks")

Identity = tuple[int, int]  # (st_dev, st_ino)


def file_problem(path: str, identity: Identity) -> str | None:
    """Why the file at ``path`` is no longer the database file ``identity`` names; None
    when it still is (or when it cannot be told: a ``stat`` refused for permissions).

    One ``stat``, never an ``open``: closing any descriptor of the database file drops
    every POSIX lock the process holds on it, SQLite's included, and another process
    could then take itself for the last user and delete the write-ahead log.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"the database file was deleted: {path} does not exist any more"
    except OSError:
        return None
    if (st.st_dev, st.st_ino) != identity:
        return (f"the database file was replaced: {path} is not the file opened at "
                "start-up any more")
    if st.st_size < HEADER_SIZE:
        return f"the database file was truncated: {path} is {st.st_size} bytes long"
    return None


def schema_problem(connection: Any) -> str | None:
    """Why the schema on ``connection`` (a SQLAlchemy connection) is unusable, or None.

    A database that is merely busy or locked is not a problem of the file: None.
    """
    try:
        found = {row[0] for row in connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = [name for name in SCHEMA_TABLES if name not in found]
        if missing:
            return f"the database schema is gone: no table {', '.join(missing)}"
        connection.exec_driver_sql("SELECT name FROM tasks LIMIT 1").all()
    except DBAPIError as exc:
        message = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
        if "locked" in message or "busy" in message:
            return None
        return f"the database file is unreadable: {message}"
    return None


def _sticky(problem: str) -> bool:
    """Truncated: the content is gone even if a checkpoint makes the file grow again."""
    return problem.startswith("the database file was truncated")


class FileGuard:
    """Refuses connections to a SQLite file that vanished (see the module docstring)."""

    def __init__(self, engine: Engine, path: str) -> None:
        self.engine = engine
        self.path = path
        self.identity: Identity | None = None
        #: Why the file is not the database any more (connections refused), or None.
        self.file_error: str | None = None
        #: Why the schema is unusable (reported, connections still allowed), or None.
        self.schema_error: str | None = None
        self._lock = threading.Lock()
        event.listen(engine, "do_connect", self._on_connect)
        event.listen(engine, "checkout", self._on_checkout)

    @classmethod
    def attach(cls, engine: Engine) -> FileGuard | None:
        """A guard for ``engine``'s SQLite file; None for other databases and ``:memory:``."""
        path = sqlite_file(engine.url)
        return None if path is None else cls(engine, path)

    @property
    def problem(self) -> str | None:
        """Why the database is not usable, for readiness; None while it is."""
        return self.file_error or self.schema_error

    def remember(self) -> None:
        """The file at the path now is the database (call once it was opened)."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise StoreError(f"cannot read the database file {self.path}: "
                             f"{exc.strerror or exc}") from None
        with self._lock:
            self.identity = (st.st_dev, st.st_ino)
            self.file_error = self.schema_error = None

    def check(self) -> str | None:
        """Identity, size and schema of the file; the problem, or None."""
        if self.identity is None:
            return None
        if self.file_error is None or not _sticky(self.file_error):
            self._set_file_error(file_problem(self.path, self.identity))
        if self.file_error is not None:
            return self.file_error
        try:
            with self.engine.connect() as conn:
                schema = schema_problem(conn)
        except DBAPIError:
            schema = None  # no answer: the ``writes`` and ping checks report that
        if schema is not None and schema != self.schema_error:
            log.error("%s: the daemon is not ready until it is repaired", schema)
        self.schema_error = schema
        return self.problem

    # ------------------------------------------------------------ engine events

    def _set_file_error(self, problem: str | None) -> None:
        with self._lock:
            before, self.file_error = self.file_error, problem
        if problem is not None and before is None:
            log.error("%s: the daemon is not ready and starts and records no run until "
                      "the file is back or the daemon is restarted", problem)
        elif problem is None and before is not None:
            log.warning("the database file %s is back; using it again", self.path)

    def _refusal(self) -> str | None:
        if self.identity is None:
            return None
        if self.file_error is None:
            self._set_file_error(file_problem(self.path, self.identity))
        return self.file_error

    def _on_checkout(self, _dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        problem = self._refusal()
        if problem is not None:
            raise sqlite3.OperationalError(problem)

    def _on_connect(self, _dialect: Any, _record: Any, _cargs: Any, _cparams: Any) -> None:
        # SQLite creates a missing file: refuse before it does
        problem = self._refusal()
        if problem is not None:
            raise sqlite3.OperationalError(problem)


def require_file(url: str | URL) -> None:
    """Raise ``StoreError`` when ``url`` names a SQLite file that does not exist.

    For commands that only read: opening a missing file would create an empty database
    and show an empty table. ``:memory:``, ``file:`` URIs and server URLs pass.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return  # the engine reports an invalid URL
    path = sqlite_file(parsed)
    if path is not None and not os.path.exists(path):
        raise StoreError(f"database {safe_url(parsed)} does not exist "
                         "(apply, run or db upgrade create it)")

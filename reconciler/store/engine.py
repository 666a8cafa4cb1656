"""Database URLs and engines.

* ``RECONCILER_DATABASE_URL`` picks the database; without it the store is a SQLite file
  at ``.reconciler/state.db`` under the current directory, so ``reconciler apply``
  works on a laptop with nothing else installed.
* People write ``postgresql://`` and ``mysql://`` URLs; SQLAlchemy would pick psycopg2
  and MySQLdb for those, which we do not ship. :func:`normalize_url` maps them to the
  drivers we depend on: psycopg 3 and PyMySQL.
* Passwords never reach a message or a log line: everything user-visible goes through
  :func:`safe_url` (``render_as_string(hide_password=True)``), and engines are created
  with ``hide_parameters=True`` so SQL errors do not echo bound values either.
* SQLite connections get WAL (readers do not block the writer), a busy timeout (a
  second process waits for the write lock instead of failing at once) and foreign keys.
* SQLite opens a file it cannot write *read-only*, silently, and such a connection
  stays read-only after the file is writable again ("attempt to write a readonly
  database" forever). A connection opened while the file was not writable is marked,
  and replaced at checkout once the file is writable, so the daemon recovers by
  itself from a read-only or full file system.
* The default folder ``.reconciler/`` is created ``0700``: the database holds run
  output, which is nobody else's business on a shared host.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError

from reconciler.core.errors import StoreError
from reconciler.store.types import dumps_json

ENV_VAR = "RECONCILER_DATABASE_URL"
DEFAULT_SQLITE_PATH = Path(".reconciler") / "state.db"
SQLITE_BUSY_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_S = 10

_DRIVER_FOR = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}


def default_database_url(*, create_folder: bool = True) -> str:
    """``$RECONCILER_DATABASE_URL``, else SQLite at ``./.reconciler/state.db`` (folder
    created unless ``create_folder`` is false)."""
    url = os.environ.get(ENV_VAR, "").strip()
    if url:
        return url
    path = Path.cwd() / DEFAULT_SQLITE_PATH
    if create_folder:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and pick our drivers for plain ``postgresql://`` / ``mysql://`` URLs."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        # The message of make_url() is generic; do not echo the URL, it may hold a password.
        raise StoreError(
            f"invalid database URL (set {ENV_VAR} to e.g. "
            "postgresql://user@host/db, mysql://user@host/db or sqlite:///path/state.db)"
        ) from None
    driver = _DRIVER_FOR.get(parsed.drivername)
    if driver is not None:
        parsed = parsed.set(drivername=driver)
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def safe_url(url: str | URL | Engine) -> str:
    """The URL with any password replaced by ``***``, for messages and logs."""
    if isinstance(url, Engine):
        url = url.url
    if isinstance(url, str):
        try:
            url = make_url(url)
        except ArgumentError:
            return "<invalid database URL>"
    return url.render_as_string(hide_password=True)


def make_engine(url: str | URL, **options: Any) -> Engine:
    """An engine for ``url`` with the connection settings the store relies on."""
    parsed = normalize_url(url)
    kwargs: dict[str, Any] = {
        "pool_pre_ping": True,
        "hide_parameters": True,
        "json_serializer": dumps_json,
    }
    backend = parsed.get_backend_name()
    if backend in ("mysql", "mariadb"):
        kwargs["pool_recycle"] = 3600  # servers close idle connections after wait_timeout
    if backend == "postgresql" and "connect_timeout" not in parsed.query:
        # libpq waits forever for a black-holed host; PyMySQL already defaults to 10 s
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    kwargs.update(options)
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise StoreError(f"cannot use database {safe_url(parsed)}: {exc}") from None
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        path = sqlite_file(parsed)
        if path is not None:
            _replace_read_only_connections(engine, path)
    return engine


def sqlite_file(url: URL) -> str | None:
    """The file of a SQLite URL; None for ``:memory:``, ``file:`` URIs and other databases."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


def _replace_read_only_connections(engine: Engine, path: str) -> None:
    def not_writable() -> bool:
        return os.path.exists(path) and not os.access(path, os.W_OK)

    def on_connect(_dbapi_connection: Any, record: Any) -> None:
        if not_writable():
            record.info["read_only_at_open"] = True

    def on_checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if record.info.get("read_only_at_open") and not not_writable():
            # the pool discards this connection and opens a fresh, writable one
            raise DisconnectionError("SQLite connection was opened read-only")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "checkout", on_checkout)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _set_wal(cursor)
        # With WAL, NORMAL never corrupts; a power cut may lose the last commits only.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _set_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds a lock.

    SQLite answers this pragma with "database is locked" at once, without calling the
    busy handler, when another connection is switching a fresh database to WAL or holds
    its write lock (e.g. a concurrent schema upgrade). Retry for up to the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.002
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            message = str(exc).lower()
            if ("locked" not in message and "busy" not in message) or (
                time.monotonic() + delay > deadline
            ):
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)

"""Fixtures that run the store contract suite on memory, SQLite, PostgreSQL and MariaDB.

The in-memory store
    ``memory`` is :class:`~reconciler.store.MemoryStore`: the ``store`` fixture gives a
    fresh one per test. Tests of what only a database has (migrations, the schema, raw
    SQL, driver events) are not collected for it: those that use ``database_url`` or
    ``empty_database_url``, and those marked ``sql_only``.

Which servers are used
    ``RECONCILER_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
    and ``RECONCILER_TEST_MARIADB_URL`` (default ``mysql://root@127.0.0.1:3306/test``)
    name an *admin* connection; the tests never touch that database's tables. Instead
    each test module gets its own freshly created database (``reconciler_t_<random>``),
    upgraded once, and the ``store`` fixture empties its tables before every test
    (``TRUNCATE`` on PostgreSQL, ``DELETE`` elsewhere: far cheaper than re-creating the
    schema). Tests that need a database *without* a schema (``empty_database_url``) get
    another brand-new one. Everything created is dropped at the end of the module.

Unreachable servers
    The test is skipped, unless ``CI=true``: then it fails, so a broken CI service can
    never turn the contract suite into a silent no-op.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from reconciler.core.protocols import Store
from reconciler.store import MemoryStore, SQLStore, normalize_url, safe_url
from reconciler.store.schema import (
    applies,
    backfill_runs,
    backfills,
    calendars,
    channels,
    notifications,
    replicas,
    runs,
    tasks,
)
from tests.services.ci import unavailable

BACKENDS = ("memory", "sqlite", "postgresql", "mariadb")
#: Fixtures only a database has; tests using them do not run on ``memory``.
SQL_FIXTURES = frozenset({"database_url", "empty_database_url"})
SERVER_URLS = {
    "postgresql": os.environ.get(
        "RECONCILER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get("RECONCILER_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test"),
}
CONNECT_TIMEOUT = {"postgresql": {"connect_timeout": 3}, "mariadb": {"connect_timeout": 3}}
_unreachable: dict[str, str] = {}  # backend -> reason, so a dead server is probed once


@dataclass
class Backend:
    """Creates and drops throw-away databases on one backend."""

    name: str
    tmp: Path
    created: list[str] = field(default_factory=list)
    _admin: Engine | None = None

    def admin(self) -> Engine:
        if self._admin is None:
            url = normalize_url(SERVER_URLS[self.name])
            self._admin = create_engine(
                url,
                isolation_level="AUTOCOMMIT",
                connect_args=CONNECT_TIMEOUT[self.name],
            )
        return self._admin

    def check(self) -> None:
        if self.name in ("memory", "sqlite"):
            return
        if self.name in _unreachable:
            unavailable(_unreachable[self.name])
        try:
            with self.admin().connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            reason = f"{self.name} at {safe_url(SERVER_URLS[self.name])} is unreachable: {cause}"
            _unreachable[self.name] = reason
            unavailable(reason)

    def new_database(self) -> URL:
        """A brand-new, empty database; returns its URL."""
        name = f"reconciler_t_{uuid.uuid4().hex[:12]}"
        if self.name == "sqlite":
            return URL.create("sqlite", database=str(self.tmp / f"{name}.db"))
        with self.admin().connect() as conn:
            if self.name == "postgresql":
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        self.created.append(name)
        return normalize_url(SERVER_URLS[self.name]).set(database=name)

    def drop_all(self) -> None:
        if self._admin is None:
            return
        with self._admin.connect() as conn:
            for name in self.created:
                if self.name == "postgresql":
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                else:
                    conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        self.created.clear()
        self._admin.dispose()
        self._admin = None


@pytest.fixture(scope="module", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path_factory.mktemp(request.param))
    b.check()
    try:
        yield b
    finally:
        b.drop_all()


@pytest.fixture(scope="module")
def database_url(backend: Backend) -> Iterator[URL]:
    """One database per module and backend, upgraded to the newest schema."""
    url = backend.new_database()
    store = SQLStore(url)
    try:
        store.upgrade()
    finally:
        store.close()
    yield url


def wipe(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("TRUNCATE tasks, runs, applies, replicas, channels, calendars, "
                              "notifications, backfills, backfill_runs RESTART IDENTITY"))
        else:
            for table in (runs, applies, tasks, replicas, channels, calendars, notifications,
                          backfills, backfill_runs):
                conn.execute(table.delete())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sql_only: a store test of what only SQL has")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave SQL-only tests out of the ``memory`` backend (not collected, not skipped)."""
    kept, left_out = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_memory = callspec is not None and callspec.params.get("backend") == "memory"
        sql = item.get_closest_marker("sql_only") is not None or bool(
            SQL_FIXTURES & set(getattr(item, "fixturenames", ()))
        )
        (left_out if on_memory and sql else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


@pytest.fixture
def store(backend: Backend, request: pytest.FixtureRequest) -> Iterator[Store]:
    """An upgraded store with empty tables (a fresh ``MemoryStore`` on ``memory``)."""
    if backend.name == "memory":
        yield MemoryStore()
        return
    s = SQLStore(request.getfixturevalue("database_url"))
    wipe(s.engine)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def empty_database_url(backend: Backend) -> URL:
    """A database with no tables at all (for migration tests)."""
    return backend.new_database()


@pytest.fixture(scope="module")
def zk() -> object:
    """A standalone ZooKeeper shared by the session (started on first use)."""
    from tests.services.zookeeper import require_zookeeper, shared_standalone

    require_zookeeper()
    return shared_standalone()


@pytest.fixture
def ns() -> str:
    """A fresh ZooKeeper namespace per test."""
    return f"t-{uuid.uuid4().hex[:10]}"

"""Run the packaged Alembic migrations on an engine, without an ``alembic.ini``.

The migration scripts ship inside the package (``reconciler/store/migrations``), so an
installed wheel can create and upgrade its own schema: :func:`upgrade` builds the Alembic
``Config`` in code, points ``script_location`` at that folder and passes the open
connection through ``config.attributes`` (``env.py`` picks it up).

Two processes may start at once (the daemon and a CLI ``apply``), so the upgrade runs
under a lock: a transaction-scoped advisory lock on PostgreSQL, ``GET_LOCK`` on
MariaDB, and ``BEGIN IMMEDIATE`` (the database write lock) on SQLite. The loser waits,
then finds the schema already at head and does nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from reconciler.core.errors import StoreError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
LOCK_NAME = "reconciler_schema_migration"
PG_LOCK_KEY = 0x7265636F6E63  # "reconc" as an int: any constant unique to this project
LOCK_TIMEOUT_S = 120


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.connect() as conn, _migration_lock(conn):
        command.upgrade(alembic_config(conn), revision)
        conn.commit()


@contextmanager
def _migration_lock(conn: Connection) -> Iterator[None]:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        yield
    elif dialect in ("mysql", "mariadb"):
        got = conn.execute(
            text("SELECT GET_LOCK(:name, :timeout)"), {"name": LOCK_NAME, "timeout": LOCK_TIMEOUT_S}
        ).scalar()
        if got != 1:
            raise StoreError(f"timed out after {LOCK_TIMEOUT_S}s waiting for the migration lock")
        try:
            yield
        finally:
            conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": LOCK_NAME})
    elif dialect == "sqlite":
        # pysqlite only opens a transaction before DML; take the write lock explicitly so
        # the DDL and the alembic_version row commit (or roll back) together.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield
    else:
        yield

"""The SQLite file guard: a database file deleted, replaced or truncated under an engine.

``file_problem`` and ``schema_problem`` are checked on real files; ``FileGuard`` on a
real engine and store, where a vanished file must refuse every connection (no write into
an unlinked file, no new empty file at the path) with the reason, and a file renamed
back must be used again.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from reconciler.core.errors import StoreError
from reconciler.store import SQLStore
from reconciler.store.sqlite_guard import (
    FileGuard,
    Identity,
    file_problem,
    require_file,
    schema_problem,
)


def identity(path: Path) -> Identity:
    st = path.stat()
    return st.st_dev, st.st_ino


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLStore]:
    s = SQLStore(f"sqlite:///{tmp_path / 'state.db'}")
    s.upgrade()
    yield s
    s.close()


@pytest.fixture
def guarded(store: SQLStore) -> FileGuard:
    guard = FileGuard.attach(store.engine)
    assert guard is not None
    guard.remember()
    return guard


def test_the_file_opened_is_fine(store: SQLStore, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    assert file_problem(str(db), identity(db)) is None


def test_a_deleted_file(store: SQLStore, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    ident = identity(db)
    db.unlink()
    problem = file_problem(str(db), ident)
    assert problem is not None and problem.startswith("the database file was deleted: ")
    assert str(db) in problem


def test_a_file_replaced_by_rename(store: SQLStore, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    ident = identity(db)
    (tmp_path / "copy.db").write_bytes(db.read_bytes())
    (tmp_path / "copy.db").rename(db)
    problem = file_problem(str(db), ident)
    assert problem is not None and problem.startswith("the database file was replaced: ")


@pytest.mark.parametrize("size", [0, 99])
def test_a_truncated_file(store: SQLStore, tmp_path: Path, size: int) -> None:
    db = tmp_path / "state.db"
    os.truncate(db, size)
    problem = file_problem(str(db), identity(db))
    assert problem == f"the database file was truncated: {db} is {size} bytes long"


def test_schema_probe(store: SQLStore, tmp_path: Path) -> None:
    with store.engine.connect() as conn:
        assert schema_problem(conn) is None
    empty = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with empty.connect() as conn:
        assert schema_problem(conn) == ("the database schema is gone: "
                                        "no table alembic_version, tasks")
        conn.execute(text("CREATE TABLE alembic_version (version_num TEXT)"))
        assert schema_problem(conn) == "the database schema is gone: no table tasks"
    empty.dispose()


def test_no_guard_for_memory_or_servers() -> None:
    assert FileGuard.attach(create_engine("sqlite:///:memory:")) is None
    assert FileGuard.attach(create_engine("sqlite://")) is None


def test_a_deleted_file_refuses_connections_and_creates_none(
    store: SQLStore, guarded: FileGuard, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "state.db"
    store.ping()  # a pooled connection on the file
    db.rename(tmp_path / "aside.db")
    with caplog.at_level(logging.ERROR, "reconciler.store"):
        for _ in range(3):
            with pytest.raises(StoreError, match="the database file was deleted"):
                store.load_tasks()
        assert guarded.check() is not None
    assert guarded.problem is not None and "was deleted" in guarded.problem
    assert not db.exists()  # no new, empty database at the path
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "was deleted" in errors[0].getMessage()  # logged once
    store.engine.dispose()  # a fresh connection is refused too
    with pytest.raises(StoreError, match="was deleted"):
        store.ping()
    assert not db.exists()
    (tmp_path / "aside.db").rename(db)  # the same file is back: used again
    assert guarded.check() is None and guarded.problem is None
    assert store.load_tasks() == []


def test_a_truncated_file_stays_refused(store: SQLStore, guarded: FileGuard,
                                        tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    content = db.read_bytes()
    os.truncate(db, 0)
    with pytest.raises(StoreError, match="was truncated"):
        store.ping()
    db.write_bytes(content)  # same inode, a header again: the content was still lost
    assert guarded.check() is not None
    with pytest.raises(StoreError, match="was truncated"):
        store.ping()


def test_the_heartbeat_check_finds_a_replaced_file_and_a_dropped_schema(
    store: SQLStore, guarded: FileGuard, tmp_path: Path
) -> None:
    db = tmp_path / "state.db"
    assert guarded.check() is None
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    assert guarded.check() == "the database schema is gone: no table alembic_version"
    assert guarded.file_error is None  # reported, but the file is still used
    (tmp_path / "new.db").write_bytes(b"")
    (tmp_path / "new.db").rename(db)
    problem = guarded.check()
    assert problem is not None and problem.startswith("the database file was replaced")


def test_the_checks_keep_sqlite_s_locks(store: SQLStore, guarded: FileGuard,
                                        tmp_path: Path) -> None:
    """Closing any descriptor of the file drops the process's POSIX locks, SQLite's
    too: another process closing its connection would then delete the write-ahead log
    under this one. The checks must never open the file."""
    db = tmp_path / "state.db"
    store.ping()
    assert guarded.check() is None
    store.ping()  # a checkout: the other check
    other = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
             "c.execute('SELECT count(*) FROM tasks').fetchall(); c.close()")
    subprocess.run([sys.executable, "-c", other, str(db)], check=True, timeout=30)
    assert (tmp_path / "state.db-wal").exists()


def test_require_file(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    with pytest.raises(StoreError) as info:
        require_file(f"sqlite:///{missing}")
    assert str(info.value) == (f"database sqlite:///{missing} does not exist "
                               "(apply, run or db upgrade create it)")
    assert not missing.exists()
    for url in ("sqlite:///:memory:", "sqlite://", "postgresql://u:pw@db/x",
                f"sqlite:///file:{missing}?mode=memory&uri=true"):
        require_file(url)
    missing.write_bytes(b"")
    require_file(f"sqlite:///{missing}")


def test_remember_a_missing_file_is_a_store_error(tmp_path: Path) -> None:
    guard = FileGuard.attach(create_engine(f"sqlite:///{tmp_path / 'gone.db'}"))
    assert guard is not None
    with pytest.raises(StoreError, match=r"cannot read the database file .*gone\.db"):
        guard.remember()

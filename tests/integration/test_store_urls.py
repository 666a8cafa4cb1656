"""Database URLs, the default location and error messages (no database server needed)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.core.errors import StoreError
from reconciler.store import SQLStore, create_store, default_database_url, normalize_url, safe_url

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u:pw@db/x", "postgresql+psycopg"),
        ("postgres://u:pw@db/x", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db/x", "postgresql+psycopg"),
        ("mysql://u:pw@db/x", "mysql+pymysql"),
        ("mariadb://u:pw@db/x", "mysql+pymysql"),
        ("sqlite:///state.db", "sqlite"),
    ],
)
def test_plain_urls_get_our_drivers(given: str, driver: str) -> None:
    url = normalize_url(given)
    assert url.drivername == driver
    if driver == "mysql+pymysql":
        assert url.query["charset"] == "utf8mb4"


def test_passwords_are_hidden() -> None:
    assert "s3cret" not in safe_url("postgresql://user:s3cret@db/x")
    assert safe_url("postgresql://user:s3cret@db/x") == "postgresql://user:***@db/x"
    with pytest.raises(StoreError) as info:
        normalize_url("::not a url s3cret::")
    assert "s3cret" not in str(info.value)


def test_unreachable_server_is_a_store_error_without_the_password() -> None:
    store = SQLStore("postgresql://user:s3cret@127.0.0.1:1/nothing?connect_timeout=2")
    with pytest.raises(StoreError) as info:
        store.load_tasks()
    message = str(info.value)
    assert "s3cret" not in message
    assert "postgresql+psycopg://user:***@127.0.0.1:1/nothing" in message
    assert "s3cret" not in repr(store)


def test_default_url_is_a_sqlite_file_under_the_cwd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RECONCILER_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    url = default_database_url()
    assert url == f"sqlite:///{tmp_path / '.reconciler' / 'state.db'}"
    assert (tmp_path / ".reconciler").is_dir()
    assert (tmp_path / ".reconciler").stat().st_mode & 0o777 == 0o700  # run output is private

    store = create_store()
    store.upgrade()
    assert store.load_tasks() == []
    mode = sqlite3.connect(tmp_path / ".reconciler" / "state.db").execute("PRAGMA journal_mode")
    assert mode.fetchone() == ("wal",)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    store.close()

    monkeypatch.setenv("RECONCILER_DATABASE_URL", "postgresql://x@db/y")
    assert default_database_url() == "postgresql://x@db/y"


def test_upgrade_of_a_sqlite_file_in_a_missing_folder_is_a_store_error(tmp_path: Path) -> None:
    store = SQLStore(f"sqlite:///{tmp_path}/missing/dir/state.db")
    with pytest.raises(StoreError, match="cannot upgrade the schema: database sqlite:///"):
        store.upgrade()
    with pytest.raises(StoreError):
        store.set_schedule_state({"a": {"next_fire_at": datetime.now(UTC)}})

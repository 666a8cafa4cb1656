"""The runtime store: task definitions, run records and the apply audit log in SQL.

``SQLStore`` implements the ``TaskStore`` and ``RunStore`` protocols of
:mod:`reconciler.core.protocols` on SQLite (the default, a file under ``.reconciler/``),
PostgreSQL (psycopg 3) or MariaDB/MySQL (PyMySQL). The schema is managed by the Alembic
migrations shipped in ``reconciler/store/migrations``; call ``SQLStore.upgrade()``
before first use.
"""

from __future__ import annotations

from reconciler.store.engine import default_database_url, normalize_url, safe_url
from reconciler.store.sql import SQLStore
from reconciler.store.sqlite_guard import require_file

__all__ = ["SQLStore", "create_store", "default_database_url", "normalize_url", "safe_url"]


def create_store(url: str | None = None, *, must_exist: bool = False) -> SQLStore:
    """A store for ``url``, or for :func:`default_database_url` when ``url`` is ``None``.

    The schema is not touched; call :meth:`SQLStore.upgrade` to create or migrate it.
    ``must_exist``: a SQLite file that does not exist is a ``StoreError`` rather than a
    new, empty database (for commands that only read).
    """
    if url is None:
        url = default_database_url(create_folder=not must_exist)
    if must_exist:
        require_file(url)
    return SQLStore(url)

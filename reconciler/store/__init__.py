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

__all__ = ["SQLStore", "create_store", "default_database_url", "normalize_url", "safe_url"]


def create_store(url: str | None = None) -> SQLStore:
    """A store for ``url``, or for :func:`default_database_url` when ``url`` is ``None``.

    The schema is not touched; call :meth:`SQLStore.upgrade` to create or migrate it.
    """
    return SQLStore(url if url is not None else default_database_url())

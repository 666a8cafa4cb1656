"""The runtime store: task definitions, run records and the apply audit log.

``SQLStore`` implements every store port of :mod:`reconciler.core.protocols` on SQLite
(the default, a file under ``.reconciler/``), PostgreSQL (psycopg 3) or MariaDB/MySQL
(PyMySQL). The schema is managed by the Alembic migrations shipped in
``reconciler/store/migrations``; call ``SQLStore.upgrade()`` before first use.

``MemoryStore`` implements the same ports in process memory, for tests and embedding:
it keeps nothing across restarts (``create_store("memory://")``).
"""

from __future__ import annotations

from reconciler.core.protocols import Store
from reconciler.store.engine import default_database_url, normalize_url, safe_url
from reconciler.store.memory import MEMORY_URL, MemoryStore
from reconciler.store.sql import DatabaseStore, SQLStore
from reconciler.store.sqlite_guard import require_file

__all__ = [
    "MEMORY_URL",
    "DatabaseStore",
    "MemoryStore",
    "SQLStore",
    "create_store",
    "default_database_url",
    "normalize_url",
    "safe_url",
]


def create_store(url: str | None = None, *, must_exist: bool = False) -> Store:
    """A store for ``url``, or for :func:`default_database_url` when ``url`` is ``None``.

    ``memory://`` gives a :class:`MemoryStore` (nothing kept across restarts); any other
    URL an :class:`SQLStore`. The schema is not touched; call ``upgrade()`` to create or
    migrate it. ``must_exist``: a SQLite file that does not exist is a ``StoreError``
    rather than a new, empty database (for commands that only read).
    """
    if url == MEMORY_URL:
        return MemoryStore()
    if url is None:
        url = default_database_url(create_folder=not must_exist)
    if must_exist:
        require_file(url)
    return SQLStore(url)

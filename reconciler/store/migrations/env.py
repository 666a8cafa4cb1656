"""Alembic environment for the reconciler store.

The store runs migrations itself (``SQLStore.upgrade()``), so there is no
``alembic.ini`` at run time: :mod:`reconciler.store.migrate` builds the ``Config`` in
code and hands over an open connection in ``config.attributes["connection"]``.

For ad-hoc use of the ``alembic`` command (e.g. ``alembic revision``), a config without
a connection falls back to ``sqlalchemy.url`` or ``$RECONCILER_DATABASE_URL``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from reconciler.store.engine import default_database_url, make_engine, normalize_url
from reconciler.store.schema import metadata

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or default_database_url()
    context.configure(
        url=normalize_url(url),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url") or default_database_url()
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()

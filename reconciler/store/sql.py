"""``SQLStore``: the runtime table and run records in SQLite, PostgreSQL or MariaDB.

It implements every store port of :mod:`reconciler.core.protocols` with SQLAlchemy
Core, one module per port: ``sql_tasks`` (``TaskStore``), ``sql_runs`` (``RunStore``),
``sql_reads`` (``ReadModel``), ``sql_audit`` (``AuditStore`` and ``ReplicaStore``),
``sql_outbox`` (``NotificationStore``: the notification outbox), ``sql_backfills``
(``BackfillStore``: backfills and their ledger), all
on the shared engine and error mapping of ``sql_base``.

Applying a plan
    ``apply_plan`` writes all creates, updates and deletes of a plan plus its ``applies``
    audit row in one transaction: either the whole plan lands or nothing does.

    A plan is computed from a snapshot of the table (``load_tasks``) and applied later,
    maybe after another ``apply`` (a second CLI, the daemon) changed the same rows.
    Rather than lock the table between planning and applying, every UPDATE and DELETE
    is *guarded* by the generation the plan saw::

        UPDATE tasks SET ... WHERE name = :n AND generation = :seen AND deleted_at IS NULL

    If any guarded statement matches no row, the task moved on since the plan was made
    and the whole apply is rolled back with ``StoreError("... plan again")``. This is
    optimistic concurrency: no locks are held while a person reads a diff, and a stale
    plan can never overwrite a newer definition. A CREATE that meets a live row of the
    same name fails on the unique name for the same reason.

Tombstones and resurrection
    DELETE sets ``deleted_at``; the row stays so the task's run history still has a
    definition. Creating the name again resurrects that row: ``deleted_at`` cleared,
    ``generation`` = old + 1 (so run rows of the old life stay distinguishable), and the
    state of the old life reset: ``created_at`` = now, the scheduler columns
    ``next_fire_at``/``last_slot_at`` and any runtime suspend override are cleared.
    ``last_success_at`` is kept; it describes run rows that are still there.

Runtime overrides
    ``override_*`` (suspend/resume from the CLI/API) belong to operators, not to git:
    ``apply_plan`` never writes them on create-of-a-new-row, update or delete.

Runs
    ``insert_run`` relies on the unique ``(task_name, slot, attempt)`` key to let only one
    replica claim a slot; the loser gets ``DuplicateRunError``. ``update_run`` with a
    ``fencing_token`` is one conditional UPDATE (``fencing_token IS NULL OR
    fencing_token <= :token``) that also records the token, so a lock holder that lost
    its lock cannot overwrite what the newer holder wrote.

Daemon support
    ``abandon_runs`` marks runs whose process is gone ``abandoned`` and
    ``claim_pending_run`` turns a ``pending`` row (a manual trigger written by the CLI)
    into a started one; both are conditional UPDATEs that re-check the row's status, so
    a run finished (or claimed) concurrently is never overwritten. ``override_marker``
    is a one-query fingerprint of all suspend overrides that the daemon polls; for it,
    ``set_override`` always stamps ``override_at``, also when it clears an override.
    The ``replicas`` table holds one status row per daemon (``write_replica_status``).

API support
    ``latest_runs`` (the newest run, or newest executed one, of every task in one query),
    ``run_counts`` (runs per status of one task), ``ping`` (readiness) and the ``audit``
    table (``add_audit``/``list_audit``: one row per operator action through the API).

Retention (``prune_runs``)
    Only finished runs are pruned; ``pending`` and ``running`` rows are never deleted.
    ``succeeded`` runs count against ``successful``; every other finished status
    (``failed``, ``timed_out``, ``cancelled``, ``abandoned``, ``missed``, ``skipped``)
    counts against ``failed``. "Newest" means by slot, then attempt, then id.

Errors
    Driver errors (server down, lock timeouts, ...) become :class:`StoreError` naming the
    database URL with its password hidden. A naive ``datetime`` passed in is refused with
    ``ValueError`` before anything is written.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.engine import Engine

from reconciler.core.protocols import Store
from reconciler.store.sql_audit import SQLAudit, SQLReplicas
from reconciler.store.sql_backfills import SQLBackfills
from reconciler.store.sql_channels import SQLChannels
from reconciler.store.sql_outbox import SQLOutbox
from reconciler.store.sql_reads import SQLReads
from reconciler.store.sql_runs import RUN_UPDATE_COLUMNS, SQLRuns
from reconciler.store.sql_tasks import SCHEDULE_COLUMNS, SQLTasks

__all__ = ["RUN_UPDATE_COLUMNS", "SCHEDULE_COLUMNS", "DatabaseStore", "SQLStore"]


class SQLStore(SQLTasks, SQLChannels, SQLRuns, SQLReads, SQLAudit, SQLReplicas, SQLOutbox,
               SQLBackfills):
    """The runtime store on a SQLAlchemy engine (see the module docstring).

    ``SQLStore(url)`` connects lazily (nothing happens until the first call); ``url``
    defaults to :func:`~reconciler.store.engine.default_database_url`. Pass ``engine``
    to reuse an existing engine, and ``clock`` to control ``runs.created_at``.
    Call :meth:`upgrade` once before use. Safe to share between threads.
    """


class DatabaseStore(Store, Protocol):
    """Every store port on an SQL database, whose engine the daemon also uses.

    The daemon's single-instance lock and its clock-skew probe talk to the database
    itself, so a daemon needs this, not just :class:`~reconciler.core.protocols.Store`.
    """

    @property
    def engine(self) -> Engine: ...

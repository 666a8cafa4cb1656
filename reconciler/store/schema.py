"""The tables of the runtime store, as SQLAlchemy Core ``Table`` objects.

Core rather than ORM on purpose: the store moves rows in bulk (ten thousand task
creates in one ``executemany``, ten thousand tasks loaded at daemon start) and maps
them to the frozen dataclasses of :mod:`reconciler.core.runtime` itself, so ORM
identity maps and unit-of-work bookkeeping would only cost time.

* ``tasks``: one row per task name, ever. Deleting a task sets ``deleted_at`` (a
  tombstone) instead of removing the row, so the run history of a deleted task keeps a
  definition to point at; creating the name again resurrects the row with the next
  generation. ``generation`` counts spec changes and is the optimistic-concurrency
  token that ``apply_plan`` checks. The ``override_*`` columns hold a runtime
  suspend/resume set outside git; apply never touches them.
* ``runs``: one row per attempt of a slot; ``(task_name, slot, attempt)`` is unique so
  two replicas that race for the same slot cannot both insert it.
* ``applies``: an audit row per successful apply.
* ``replicas``: one row per daemon process (id = its replica name): when it started,
  its last heartbeat, when it stopped, and the status document it last reported.
* ``channels``: one row per live ``kind: Channel`` (where notifications go); apply
  writes them with the tasks, in the same transaction; a deleted channel's row is
  removed (nothing points at it).
* ``calendars``: one row per live ``kind: Calendar`` (when the tasks that name it do
  not run); written like ``channels``, read by the daemon to build the tasks' slots.
* ``notifications``: the outbox. One row per (channel, event) of a run's outcome,
  written in the transaction of the run's final status (or of a missed slot); the
  sender claims rows (``claimed_by``, ``lease_until``), delivers them and records every
  attempt (``attempt_log``) until ``sent`` or, after 24 hours, ``failed``; a row folded
  into another's message is ``grouped`` (``grouped_into``). One row per (channel,
  ``event_id``): a second write of the same event is skipped.
* ``backfills``: one row per backfill (``reconciler backfill``): its task and range,
  ``parallel``, ``rerun``, its state and progress (``done`` of ``total`` slots).
  ``backfill_runs`` is its ledger: one row per slot it started, keyed by (backfill,
  slot), written with the run row in one transaction.
* ``audit``: one row per operator action through the HTTP API (trigger, suspend,
  resume, cancel): who (the token's name), when, on what, with which outcome.

The Alembic migrations in ``migrations/versions`` create exactly these tables; a test
compares the two on every backend. Change both together.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from reconciler.store.types import UTCDateTime, json_type, long_text

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# utf8mb4 with a binary collation: names compare exactly as on PostgreSQL and SQLite.
MYSQL_TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# BigInteger on the servers; SQLite only auto-increments a column declared INTEGER.
RunId = BigInteger().with_variant(Integer(), "sqlite")

tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("document", json_type(), nullable=False),
    Column("spec_hash", String(64), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("source_file", String(1024), nullable=False),
    Column("source_revision", String(64), nullable=True),
    Column("source_dirty", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime, nullable=True),
    Column("next_fire_at", UTCDateTime, nullable=True),
    Column("last_slot_at", UTCDateTime, nullable=True),
    Column("last_success_at", UTCDateTime, nullable=True),
    Column("override_suspended", Boolean, nullable=True),
    Column("override_note", Text, nullable=True),
    Column("override_actor", String(255), nullable=True),
    Column("override_at", UTCDateTime, nullable=True),
    **MYSQL_TABLE_OPTIONS,
)

runs = Table(
    "runs",
    metadata,
    Column("id", RunId, primary_key=True, autoincrement=True),
    Column("task_name", String(63), nullable=False, index=True),
    Column("slot", UTCDateTime, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("replica", String(255), nullable=True),
    Column("fencing_token", BigInteger, nullable=True),
    Column("generation", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("heartbeat_at", UTCDateTime, nullable=True),
    Column("exit_code", Integer, nullable=True),
    # MEDIUMTEXT on MariaDB: a long traceback must not make the final status update fail
    Column("error", long_text(), nullable=True),
    Column("reason", long_text(), nullable=True),
    Column("output_tail", long_text(), nullable=True),
    Column("output_truncated", Boolean, nullable=True),  # NULL: written before 0004
    Column("progress_percent", Double, nullable=True),  # MariaDB FLOAT is single precision
    Column("progress_message", Text, nullable=True),
    Column("params", json_type(), nullable=True),  # spec.params values; NULL: none declared
    UniqueConstraint("task_name", "slot", "attempt"),
    Index("ix_runs_task_name_slot", "task_name", "slot"),
    Index("ix_runs_status", "status"),
    **MYSQL_TABLE_OPTIONS,
)

applies = Table(
    "applies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("applied_at", UTCDateTime, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("revision", String(64), nullable=True),
    Column("dirty", Boolean, nullable=False),
    Column("created", Integer, nullable=False),
    Column("updated", Integer, nullable=False),
    Column("deleted", Integer, nullable=False),
    Column("unchanged", Integer, nullable=False),
    Column("kept", Integer, nullable=False),
    Column("summary", json_type(), nullable=False),
    **MYSQL_TABLE_OPTIONS,
)

replicas = Table(
    "replicas",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("host", String(255), nullable=True),
    Column("pid", Integer, nullable=True),
    Column("version", String(64), nullable=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime, nullable=True),
    Column("status", json_type(), nullable=True),
    **MYSQL_TABLE_OPTIONS,
)

audit = Table(
    "audit",
    metadata,
    Column("id", RunId, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target", String(255), nullable=True),
    Column("outcome", String(32), nullable=False),
    Column("client", String(255), nullable=True),
    Column("detail", json_type(), nullable=True),
    Index("ix_audit_at", "at"),
    Index("ix_audit_target", "target"),
    **MYSQL_TABLE_OPTIONS,
)


def _object_table(name: str) -> Table:
    """A table of the documents of one kind other than Task, by name."""
    return Table(
        name,
        metadata,
        Column("name", String(63), primary_key=True),
        Column("document", json_type(), nullable=False),
        Column("spec_hash", String(64), nullable=False),
        Column("generation", Integer, nullable=False),
        Column("source_file", String(1024), nullable=False),
        Column("source_revision", String(64), nullable=True),
        Column("updated_at", UTCDateTime, nullable=False),
        **MYSQL_TABLE_OPTIONS,
    )


channels = _object_table("channels")
calendars = _object_table("calendars")

notifications = Table(
    "notifications",
    metadata,
    Column("id", RunId, primary_key=True, autoincrement=True),
    Column("channel", String(63), nullable=False),
    Column("task_name", String(63), nullable=False),
    Column("event", String(16), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("run_id", BigInteger, nullable=True),
    Column("body", json_type(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("repeats", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("claimed_by", String(255), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("grouped_into", BigInteger, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("attempt_log", json_type(), nullable=True),
    Index("ix_notifications_status_next_attempt_at", "status", "next_attempt_at"),
    Index("ix_notifications_channel_task_name_event", "channel", "task_name", "event"),
    Index("ix_notifications_task_name", "task_name"),
    Index("uq_notifications_channel_event_id", "channel", "event_id", unique=True),
    **MYSQL_TABLE_OPTIONS,
)

backfills = Table(
    "backfills",
    metadata,
    Column("id", RunId, primary_key=True, autoincrement=True),
    Column("task_name", String(63), nullable=False),
    Column("range_start", UTCDateTime, nullable=False),
    Column("range_end", UTCDateTime, nullable=False),
    Column("parallel", Integer, nullable=False),
    Column("rerun", Boolean, nullable=False),
    Column("state", String(16), nullable=False),
    Column("total", Integer, nullable=False),
    Column("done", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("reason", Text, nullable=True),
    Index("ix_backfills_state", "state"),
    Index("ix_backfills_task_name", "task_name"),
    **MYSQL_TABLE_OPTIONS,
)

backfill_runs = Table(
    "backfill_runs",
    metadata,
    Column("backfill_id", BigInteger, primary_key=True),
    Column("slot", UTCDateTime, primary_key=True),
    Column("attempt", Integer, nullable=False),
    Column("run_id", BigInteger, nullable=False),
    **MYSQL_TABLE_OPTIONS,
)

"""Initial schema: tasks, runs, applies.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Written by hand against reconciler/store/schema.py; the models-vs-migrations test in
tests/integration/test_store.py checks that the two agree on every backend.

The column types are spelled out here instead of imported from the package on purpose:
a migration describes the schema *as of this revision* and must not change when the
models change later. The timestamps are naive UTC (see reconciler/store/types.py),
microsecond precision everywhere (``DATETIME(6)`` on MariaDB).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL = ("mysql", "mariadb")
TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def _utc() -> sa.types.TypeEngine[Any]:
    return sa.DateTime(timezone=False).with_variant(mysql.DATETIME(fsp=6), *MYSQL)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _long_text() -> sa.types.TypeEngine[Any]:
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), *MYSQL)


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("document", _json(), nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("source_file", sa.String(1024), nullable=False),
        sa.Column("source_revision", sa.String(64), nullable=True),
        sa.Column("source_dirty", sa.Boolean(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("deleted_at", _utc(), nullable=True),
        sa.Column("next_fire_at", _utc(), nullable=True),
        sa.Column("last_slot_at", _utc(), nullable=True),
        sa.Column("last_success_at", _utc(), nullable=True),
        sa.Column("override_suspended", sa.Boolean(), nullable=True),
        sa.Column("override_note", sa.Text(), nullable=True),
        sa.Column("override_actor", sa.String(255), nullable=True),
        sa.Column("override_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.UniqueConstraint("name", name="uq_tasks_name"),
        **TABLE_OPTIONS,
    )

    op.create_table(
        "runs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("task_name", sa.String(63), nullable=False),
        sa.Column("slot", _utc(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("replica", sa.String(255), nullable=True),
        sa.Column("fencing_token", sa.BigInteger(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("started_at", _utc(), nullable=True),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.Column("heartbeat_at", _utc(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error", _long_text(), nullable=True),
        sa.Column("reason", _long_text(), nullable=True),
        sa.Column("output_tail", _long_text(), nullable=True),
        sa.Column("progress_percent", sa.Double(), nullable=True),
        sa.Column("progress_message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.UniqueConstraint("task_name", "slot", "attempt", name="uq_runs_task_name_slot_attempt"),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_runs_task_name", "runs", ["task_name"])
    op.create_index("ix_runs_task_name_slot", "runs", ["task_name", "slot"])
    op.create_index("ix_runs_status", "runs", ["status"])

    op.create_table(
        "applies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("applied_at", _utc(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("revision", sa.String(64), nullable=True),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("kept", sa.Integer(), nullable=False),
        sa.Column("summary", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_applies"),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("applies")
    op.drop_index("ix_runs_status", table_name="runs")
    op.drop_index("ix_runs_task_name_slot", table_name="runs")
    op.drop_index("ix_runs_task_name", table_name="runs")
    op.drop_table("runs")
    op.drop_table("tasks")

"""Backfills: the ``backfills`` table and its ledger ``backfill_runs``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-18

Everything of this revision is in this one file (other revisions may be numbered
around it when branches are merged). Written by hand against
reconciler/store/schema.py; the models-vs-migrations test in
tests/integration/test_store.py checks that the two agree on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
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


def upgrade() -> None:
    op.create_table(
        "backfills",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("task_name", sa.String(63), nullable=False),
        sa.Column("range_start", _utc(), nullable=False),
        sa.Column("range_end", _utc(), nullable=False),
        sa.Column("parallel", sa.Integer(), nullable=False),
        sa.Column("rerun", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=True),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backfills")),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_backfills_state", "backfills", ["state"])
    op.create_index("ix_backfills_task_name", "backfills", ["task_name"])
    op.create_table(
        "backfill_runs",
        sa.Column("backfill_id", sa.BigInteger(), nullable=False),
        sa.Column("slot", _utc(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("backfill_id", "slot", name=op.f("pk_backfill_runs")),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("backfill_runs")
    op.drop_index("ix_backfills_task_name", table_name="backfills")
    op.drop_index("ix_backfills_state", table_name="backfills")
    op.drop_table("backfills")

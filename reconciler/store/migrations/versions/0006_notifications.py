"""Notifications: the outbox of notification deliveries.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-11

Written by hand against reconciler/store/schema.py; the models-vs-migrations test in
tests/integration/test_store.py checks that the two agree on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
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


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(63), nullable=False),
        sa.Column("task_name", sa.String(63), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("body", _json(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("next_attempt_at", _utc(), nullable=False),
        sa.Column("claimed_by", sa.String(255), nullable=True),
        sa.Column("lease_until", _utc(), nullable=True),
        sa.Column("sent_at", _utc(), nullable=True),
        sa.Column("grouped_into", sa.BigInteger(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("attempt_log", _json(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_notifications_status_next_attempt_at", "notifications",
                    ["status", "next_attempt_at"])
    op.create_index("ix_notifications_channel_task_name_event", "notifications",
                    ["channel", "task_name", "event"])
    op.create_index("ix_notifications_task_name", "notifications", ["task_name"])


def downgrade() -> None:
    op.drop_index("ix_notifications_task_name", table_name="notifications")
    op.drop_index("ix_notifications_channel_task_name_event", table_name="notifications")
    op.drop_index("ix_notifications_status_next_attempt_at", table_name="notifications")
    op.drop_table("notifications")

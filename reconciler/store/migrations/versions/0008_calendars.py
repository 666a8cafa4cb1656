"""Calendars: the ``kind: Calendar`` manifests (when the tasks that name them do not run).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-20

Self-contained (its own column helpers): the revision may be renumbered when another
0007 lands first; only ``revision``/``down_revision`` would change.

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
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
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
        "calendars",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("document", _json(), nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("source_file", sa.String(1024), nullable=False),
        sa.Column("source_revision", sa.String(64), nullable=True),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_calendars")),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("calendars")

"""Runs: the values of the run's parameters (spec.params).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-12

Written by hand against reconciler/store/schema.py; the models-vs-migrations test in
tests/integration/test_store.py checks that the two agree on every backend. Rows written
before this revision, and runs of tasks that declare no parameters, have NULL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("runs", sa.Column("params", _json(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("params")

"""Notifications: one row per (channel, event id).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-12

The outbox keeps one row per channel and stable event id (``task/slot/attempt/event``):
a ``late`` event decided by two replicas, or again by a daemon that restarted, is
written once (the second insert is skipped). Written by hand against
reconciler/store/schema.py; the models-vs-migrations test in
tests/integration/test_store.py checks that the two agree on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("uq_notifications_channel_event_id", "notifications",
                    ["channel", "event_id"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_notifications_channel_event_id", table_name="notifications")

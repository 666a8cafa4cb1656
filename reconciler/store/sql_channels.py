"""The channel table of ``SQLStore`` (``kind: Channel``): loaded for a plan, written by
``apply_plan`` in the transaction that writes the tasks.

Each write is guarded like a task's: an update or delete matches the generation the
plan saw, a create fails on an existing name; any miss is a conflict ("changed since
the plan was made").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from reconciler.core.plan import Action, ChannelChange
from reconciler.core.runtime import ActualChannel
from reconciler.store.schema import channels
from reconciler.store.sql_base import SQLBase


class ChannelConflict(Exception):
    """Internal: a guarded channel write matched no row."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(", ".join(names))
        self.names = list(names)


class SQLChannels(SQLBase):
    """``load_channels`` of :class:`~reconciler.core.protocols.TaskStore`."""

    def load_channels(self) -> list[ActualChannel]:
        stmt = select(channels).order_by(channels.c.name)
        with self._errors("load channels"), self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        out = [
            ActualChannel(r.name, r.document, r.spec_hash, r.generation, r.source_file,
                          r.source_revision, r.updated_at)
            for r in rows
        ]
        out.sort(key=lambda c: c.name)  # Python order, whatever the server's collation
        return out


def write_channels(
    conn: Connection, changes: Sequence[ChannelChange], sha: str | None, now: datetime
) -> None:
    """Write a plan's channel creates, updates and deletes (inside the apply's
    transaction); raise :class:`ChannelConflict` when a row changed since the plan."""
    for change in changes:
        if change.action is Action.CREATE:
            want = change.desired
            assert want is not None
            try:
                conn.execute(insert(channels), {
                    "name": want.name, "document": want.document, "spec_hash": want.hash,
                    "generation": 1, "source_file": want.source_file,
                    "source_revision": sha, "updated_at": now,
                })
            except IntegrityError:
                raise ChannelConflict([change.name]) from None
            continue
        have = change.actual
        if change.action not in (Action.UPDATE, Action.DELETE) or have is None:
            continue
        guard = (channels.c.name == change.name, channels.c.generation == have.generation)
        if change.action is Action.DELETE:
            matched = conn.execute(delete(channels).where(*guard)).rowcount
        else:
            want = change.desired
            assert want is not None
            bump = 1 if want.hash != have.hash else 0
            matched = conn.execute(update(channels).where(*guard).values(
                document=want.document, spec_hash=want.hash,
                generation=have.generation + bump, source_file=want.source_file,
                source_revision=sha, updated_at=now,
            )).rowcount
        if matched != 1:
            raise ChannelConflict([change.name])

"""The channel and calendar tables of ``SQLStore`` (``kind: Channel``, ``kind:
Calendar``): loaded for a plan, written by ``apply_plan`` in the transaction that
writes the tasks.

Each write is guarded like a task's: an update or delete matches the generation the
plan saw, a create fails on an existing name; any miss is a conflict ("changed since
the plan was made").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Connection, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from reconciler.core.plan import Action, ObjectChange
from reconciler.core.runtime import ActualCalendar, ActualChannel, ActualObject
from reconciler.store.schema import calendars, channels
from reconciler.store.sql_base import SQLBase

_Row = TypeVar("_Row", bound=ActualObject)


class ChannelConflict(Exception):
    """Internal: a guarded channel or calendar write matched no row."""

    def __init__(self, names: Sequence[str], kind: str = "channel") -> None:
        super().__init__(", ".join(names))
        self.names = list(names)
        self.kind = kind


class SQLChannels(SQLBase):
    """``load_channels`` and ``load_calendars`` of
    :class:`~reconciler.core.protocols.TaskStore`."""

    def load_channels(self) -> list[ActualChannel]:
        return self._load_objects(channels, ActualChannel)

    def load_calendars(self) -> list[ActualCalendar]:
        return self._load_objects(calendars, ActualCalendar)

    def _load_objects(self, table: Table, row_type: type[_Row]) -> list[_Row]:
        stmt = select(table).order_by(table.c.name)
        with self._errors(f"load {table.name}"), self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        out = [
            row_type(r.name, r.document, r.spec_hash, r.generation, r.source_file,
                     r.source_revision, r.updated_at)
            for r in rows
        ]
        out.sort(key=lambda c: c.name)  # Python order, whatever the server's collation
        return out


def write_channels(
    conn: Connection, changes: Sequence[ObjectChange], sha: str | None, now: datetime,
    table: Table = channels,
) -> None:
    """Write a plan's channel (or, with ``table``, calendar) creates, updates and
    deletes (inside the apply's transaction); raise :class:`ChannelConflict` when a row
    changed since the plan."""
    kind = "calendar" if table is calendars else "channel"
    for change in changes:
        if change.action is Action.CREATE:
            want = change.desired
            assert want is not None
            try:
                conn.execute(insert(table), {
                    "name": want.name, "document": want.document, "spec_hash": want.hash,
                    "generation": 1, "source_file": want.source_file,
                    "source_revision": sha, "updated_at": now,
                })
            except IntegrityError:
                raise ChannelConflict([change.name], kind) from None
            continue
        have = change.actual
        if change.action not in (Action.UPDATE, Action.DELETE) or have is None:
            continue
        guard = (table.c.name == change.name, table.c.generation == have.generation)
        if change.action is Action.DELETE:
            matched = conn.execute(delete(table).where(*guard)).rowcount
        else:
            want = change.desired
            assert want is not None
            bump = 1 if want.hash != have.hash else 0
            matched = conn.execute(update(table).where(*guard).values(
                document=want.document, spec_hash=want.hash,
                generation=have.generation + bump, source_file=want.source_file,
                source_revision=sha, updated_at=now,
            )).rowcount
        if matched != 1:
            raise ChannelConflict([change.name], kind)

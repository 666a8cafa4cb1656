"""Aggregate reads of ``SQLStore`` for the API, the dashboard and ``status``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from sqlalchemy import (
    func,
    literal,
    select,
)

from reconciler.core.runtime import (
    ApplyRecord,
    RunRecord,
    RunStatus,
)
from reconciler.store.schema import applies, runs
from reconciler.store.sql_base import (
    SQLBase,
    chunks,
    run_record,
)

EXECUTED_STATUSES: Final = tuple(
    s.value
    for s in (
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.TIMED_OUT,
        RunStatus.CANCELLED,
        RunStatus.ABANDONED,
    )
)


class SQLReads(SQLBase):
    """:class:`~reconciler.core.protocols.ReadModel`."""

    def ping(self) -> None:
        """One trivial query: raises ``StoreError`` when the database is unreachable."""
        with self._errors("reach the database"), self.engine.connect() as conn:
            conn.execute(select(literal(1))).scalar()

    def latest_runs(
        self, names: Sequence[str] | None = None, *, executed: bool = False
    ) -> dict[str, RunRecord]:
        """The newest run row (highest id) per task, for every task or for ``names``.

        With ``executed``, only runs that ran and finished count (``succeeded``,
        ``failed``, ``timed_out``, ``cancelled``, ``abandoned``; not ``missed`` or
        ``skipped``): what "the last result" of a task means on the dashboard.
        """
        if isinstance(names, str):
            raise TypeError("latest_runs expects a sequence of names, not a single str")
        out: dict[str, RunRecord] = {}
        groups: Iterable[Sequence[str] | None] = (
            [None] if names is None else chunks(sorted(set(names)))
        )
        with self._errors("read the latest runs"), self.engine.connect() as conn:
            for chunk in groups:
                newest = select(func.max(runs.c.id).label("id")).group_by(runs.c.task_name)
                if chunk is not None:
                    newest = newest.where(runs.c.task_name.in_(chunk))
                if executed:
                    newest = newest.where(runs.c.status.in_(EXECUTED_STATUSES))
                ids = newest.subquery()
                stmt = select(runs).join(ids, runs.c.id == ids.c.id)
                for row in conn.execute(stmt):
                    out[row.task_name] = run_record(row)
        return out

    def run_counts(self, task_name: str) -> dict[str, int]:
        """How many run rows of ``task_name`` exist per status (statuses with none left out)."""
        stmt = (
            select(runs.c.status, func.count())
            .where(runs.c.task_name == task_name)
            .group_by(runs.c.status)
        )
        with self._errors(f"count the runs of {task_name}"), self.engine.connect() as conn:
            return {str(status): int(n) for status, n in conn.execute(stmt)}

    def count_runs(self, task_name: str | None = None) -> int:
        stmt = select(func.count()).select_from(runs)
        if task_name is not None:
            stmt = stmt.where(runs.c.task_name == task_name)
        with self._errors("count runs"), self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def list_applies(self, limit: int = 20) -> list[ApplyRecord]:
        stmt = select(applies).order_by(applies.c.id.desc()).limit(limit)
        with self._errors("list applies"), self.engine.connect() as conn:
            return [
                ApplyRecord(
                    id=row.id,
                    applied_at=row.applied_at,
                    actor=row.actor,
                    revision=row.revision,
                    dirty=bool(row.dirty),
                    created=row.created,
                    updated=row.updated,
                    deleted=row.deleted,
                    unchanged=row.unchanged,
                    kept=row.kept,
                )
                for row in conn.execute(stmt)
            ]

    def apply_summary(self, apply_id: int) -> dict[str, Any] | None:
        """The JSON summary of one apply: task names per action."""
        stmt = select(applies.c.summary).where(applies.c.id == apply_id)
        with self._errors("read an apply"), self.engine.connect() as conn:
            value = conn.execute(stmt).scalar()
        return None if value is None else dict(value)

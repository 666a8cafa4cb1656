"""Backfills of ``SQLStore``: the ``backfills`` rows and their ledger ``backfill_runs``
(:class:`~reconciler.core.protocols.BackfillStore`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from reconciler.core.backfill import BackfillRecord, BackfillState, NewBackfill
from reconciler.core.protocols import NewRun
from reconciler.core.runtime import RunRecord
from reconciler.store.schema import backfill_runs, backfills, runs
from reconciler.store.sql_base import SQLBase, as_utc, check_aware, new_id, run_record
from reconciler.store.sql_runs import new_run_record, run_values

_UNFINISHED = [s.value for s in BackfillState if not s.finished]


def backfill_record(row: Any) -> BackfillRecord:
    start, end, created = as_utc(row.range_start), as_utc(row.range_end), as_utc(row.created_at)
    assert start is not None and end is not None and created is not None
    return BackfillRecord(
        id=int(row.id), task_name=row.task_name, start=start, end=end,
        parallel=int(row.parallel), rerun=bool(row.rerun), state=BackfillState(row.state),
        total=int(row.total), done=int(row.done), failed=int(row.failed),
        created_by=row.created_by, created_at=created, updated_at=as_utc(row.updated_at),
        finished_at=as_utc(row.finished_at), reason=row.reason,
    )


class SQLBackfills(SQLBase):
    """:class:`~reconciler.core.protocols.BackfillStore`."""

    def add_backfill(self, backfill: NewBackfill) -> BackfillRecord:
        check_aware(start=backfill.start, end=backfill.end, created_at=backfill.created_at)
        values = {
            "task_name": backfill.task_name, "range_start": backfill.start,
            "range_end": backfill.end, "parallel": backfill.parallel,
            "rerun": backfill.rerun, "state": BackfillState.PENDING.value,
            "total": backfill.total, "done": 0, "failed": 0,
            "created_by": backfill.created_by[:255], "created_at": backfill.created_at,
        }
        with self._errors("store a backfill"), self.engine.begin() as conn:
            backfill_id = new_id(conn.execute(insert(backfills), values))
            row = conn.execute(select(backfills).where(backfills.c.id == backfill_id)).one()
        return backfill_record(row)

    def get_backfill(self, backfill_id: int) -> BackfillRecord | None:
        with self._errors(f"read backfill {backfill_id}"), self.engine.connect() as conn:
            row = conn.execute(select(backfills).where(backfills.c.id == backfill_id)).first()
        return None if row is None else backfill_record(row)

    def list_backfills(
        self, *, task_name: str | None = None, states: Sequence[BackfillState] = (),
        limit: int = 50,
    ) -> list[BackfillRecord]:
        stmt = select(backfills).order_by(backfills.c.id.desc()).limit(max(0, limit))
        if task_name is not None:
            stmt = stmt.where(backfills.c.task_name == task_name)
        if states:
            stmt = stmt.where(backfills.c.state.in_([BackfillState(s).value for s in states]))
        with self._errors("list backfills"), self.engine.connect() as conn:
            return [backfill_record(row) for row in conn.execute(stmt)]

    def update_backfill(
        self, backfill_id: int, *, state: BackfillState, done: int, failed: int,
        now: datetime, reason: str | None = None,
    ) -> bool:
        check_aware(now=now)
        state = BackfillState(state)
        values: dict[str, Any] = {"state": state.value, "done": done, "failed": failed,
                                  "updated_at": now}
        if state.finished:
            values["finished_at"] = now
        if reason is not None:
            values["reason"] = reason
        stmt = (update(backfills)
                .where(backfills.c.id == backfill_id, backfills.c.state.in_(_UNFINISHED))
                .values(**values))
        with self._errors(f"update backfill {backfill_id}"), self.engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def insert_backfill_run(self, backfill_id: int, run: NewRun) -> RunRecord | None:
        created_at = self.clock.now()
        with self._errors(f"start slot {run.slot.isoformat()} of backfill {backfill_id}"):
            try:
                with self.engine.begin() as conn:
                    run_id = new_id(conn.execute(insert(runs), run_values(run, created_at)))
                    conn.execute(insert(backfill_runs), {
                        "backfill_id": backfill_id, "slot": run.slot,
                        "attempt": run.attempt, "run_id": run_id})
            except IntegrityError:  # the ledger's slot or the run's key is taken
                return None  # (both rolled back)
        return new_run_record(run, run_id, created_at)

    def backfill_ledger(self, backfill_id: int) -> dict[datetime, int]:
        stmt = select(backfill_runs.c.slot, backfill_runs.c.attempt).where(
            backfill_runs.c.backfill_id == backfill_id)
        with self._errors(f"read backfill {backfill_id}"), self.engine.connect() as conn:
            return {row.slot.astimezone(UTC): int(row.attempt) for row in conn.execute(stmt)}

    def runs_between(self, task_name: str, start: datetime, end: datetime) -> list[RunRecord]:
        check_aware(start=start, end=end)
        stmt = (select(runs)
                .where(runs.c.task_name == task_name, runs.c.slot >= start, runs.c.slot < end)
                .order_by(runs.c.slot, runs.c.attempt, runs.c.id))
        with self._errors(f"read the runs of {task_name}"), self.engine.connect() as conn:
            return [run_record(row) for row in conn.execute(stmt)]

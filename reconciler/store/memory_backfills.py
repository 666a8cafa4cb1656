"""Backfills of ``MemoryStore``, with the rules of :mod:`reconciler.store.sql_backfills`
(the contract suite runs over both)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from reconciler.core.backfill import BackfillRecord, BackfillState, NewBackfill
from reconciler.core.clock import Clock
from reconciler.core.protocols import NewRun
from reconciler.core.runtime import RunRecord
from reconciler.store.sql_base import check_aware


class MemoryBackfills:
    """:class:`~reconciler.core.protocols.BackfillStore` in memory."""

    _lock: threading.RLock
    _runs: dict[int, RunRecord]
    clock: Clock

    def __init__(self) -> None:
        self._backfills: dict[int, BackfillRecord] = {}
        self._ledger: dict[int, dict[datetime, int]] = {}

    def _insert(self, run: NewRun, created_at: datetime) -> RunRecord | None:
        raise NotImplementedError  # MemoryStore's

    def add_backfill(self, backfill: NewBackfill) -> BackfillRecord:
        check_aware(start=backfill.start, end=backfill.end, created_at=backfill.created_at)
        with self._lock:
            record = BackfillRecord(
                id=len(self._backfills) + 1, task_name=backfill.task_name,
                start=backfill.start.astimezone(UTC), end=backfill.end.astimezone(UTC),
                parallel=backfill.parallel, rerun=backfill.rerun, state=BackfillState.PENDING,
                total=backfill.total, done=0, failed=0, created_by=backfill.created_by[:255],
                created_at=backfill.created_at.astimezone(UTC),
            )
            self._backfills[record.id] = record
            return record

    def get_backfill(self, backfill_id: int) -> BackfillRecord | None:
        with self._lock:
            return self._backfills.get(backfill_id)

    def list_backfills(
        self, *, task_name: str | None = None, states: Sequence[BackfillState] = (),
        limit: int = 50,
    ) -> list[BackfillRecord]:
        wanted = {BackfillState(s) for s in states}
        with self._lock:
            rows = [b for b in self._backfills.values()
                    if (task_name is None or b.task_name == task_name)
                    and (not wanted or b.state in wanted)]
        return sorted(rows, key=lambda b: b.id, reverse=True)[: max(0, limit)]

    def update_backfill(
        self, backfill_id: int, *, state: BackfillState, done: int, failed: int,
        now: datetime, reason: str | None = None,
    ) -> bool:
        check_aware(now=now)
        state = BackfillState(state)
        with self._lock:
            record = self._backfills.get(backfill_id)
            if record is None or record.state.finished:
                return False
            at = now.astimezone(UTC)
            self._backfills[backfill_id] = replace(
                record, state=state, done=done, failed=failed, updated_at=at,
                finished_at=at if state.finished else record.finished_at,
                reason=record.reason if reason is None else reason,
            )
            return True

    def insert_backfill_run(self, backfill_id: int, run: NewRun) -> RunRecord | None:
        check_aware(slot=run.slot, started_at=run.started_at, finished_at=run.finished_at)
        slot = run.slot.astimezone(UTC)
        with self._lock:
            ledger = self._ledger.setdefault(backfill_id, {})
            if slot in ledger:
                return None
            record = self._insert(run, self.clock.now())
            if record is not None:
                ledger[slot] = run.attempt
            return record

    def backfill_ledger(self, backfill_id: int) -> dict[datetime, int]:
        with self._lock:
            return dict(self._ledger.get(backfill_id, {}))

    def runs_between(self, task_name: str, start: datetime, end: datetime) -> list[RunRecord]:
        check_aware(start=start, end=end)
        with self._lock:
            rows = [r for r in self._runs.values()
                    if r.task_name == task_name and start <= r.slot < end]
        return sorted(rows, key=lambda r: (r.slot, r.attempt, r.id))

"""insert_runs: one transaction, duplicates skipped per row, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.core.protocols import NewRun
from reconciler.core.runtime import RunStatus, Trigger

pytestmark = pytest.mark.integration

SLOT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def new(task: str, slot: datetime, attempt: int = 1) -> NewRun:
    return NewRun(task_name=task, slot=slot, attempt=attempt, trigger=Trigger.SCHEDULE,
                  status=RunStatus.RUNNING, replica="r1", fencing_token=7, started_at=slot)


def test_insert_runs_skips_taken_keys_only(store: Any) -> None:
    store.insert_run(new("a", SLOT))
    batch = [new("a", SLOT), new("b", SLOT), new("a", SLOT, 2), new("b", SLOT)]
    out = store.insert_runs(batch)
    assert out[0] is None and out[3] is None
    assert out[1] is not None and out[1].task_name == "b" and out[1].fencing_token == 7
    assert out[2] is not None and out[2].attempt == 2
    assert {r.id for r in out if r} == {r.id for r in store.list_runs(limit=10)} - {
        store.list_runs("a", limit=10)[-1].id}
    got = store.get_run(out[1].id)
    assert got.slot == SLOT and got.status is RunStatus.RUNNING


def test_insert_runs_many_and_empty(store: Any) -> None:
    assert store.insert_runs([]) == []
    out = store.insert_runs([new(f"t{i}", SLOT + timedelta(seconds=i)) for i in range(300)])
    assert all(r is not None for r in out)
    assert len({r.id for r in out if r}) == 300

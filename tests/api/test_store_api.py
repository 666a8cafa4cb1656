"""The store methods the API adds (audit, latest runs, run counts) on every backend.

Uses the integration fixtures: SQLite always, PostgreSQL and MariaDB when reachable
(skipped otherwise, failed under CI=true).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.core.protocols import NewRun
from reconciler.core.runtime import RunStatus, Trigger
from reconciler.store import SQLStore
from tests.integration.conftest import backend, database_url, store

__all__ = ["backend", "database_url", "store"]  # fixtures, imported for pytest
pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_audit_rows_round_trip(store: SQLStore) -> None:
    first = store.add_audit(at=T0, actor="alice", action="suspend", target="audit-a",
                            outcome="ok", client="127.0.0.1",
                            detail={"note": "ünïcødé ✓ <b>", "n": 1})
    second = store.add_audit(at=T0 + timedelta(seconds=1), actor="bob", action="trigger",
                             target="audit-a", outcome="conflict")
    store.add_audit(at=T0, actor="x" * 300, action="resume", target="audit-b", outcome="ok")
    rows = store.list_audit(target="audit-a")
    assert [r["id"] for r in rows] == [second, first]
    assert rows[1]["detail"] == {"note": "ünïcødé ✓ <b>", "n": 1}
    assert rows[1]["at"] == T0 and rows[1]["client"] == "127.0.0.1"
    assert rows[0]["detail"] is None and rows[0]["outcome"] == "conflict"
    assert store.list_audit(target="audit-a", before_id=second)[0]["id"] == first
    assert len(store.list_audit(target="audit-b")[0]["actor"]) == 255
    with pytest.raises(ValueError):
        store.add_audit(at=datetime(2026, 1, 1), actor="a", action="x", target=None,
                        outcome="ok")


def test_latest_runs_and_counts(store: SQLStore) -> None:
    def run(task: str, minute: int, status: RunStatus) -> int:
        finished = T0 if status.finished else None
        return store.insert_run(NewRun(
            task_name=task, slot=T0 + timedelta(minutes=minute), attempt=1,
            trigger=Trigger.SCHEDULE, status=status, started_at=T0, finished_at=finished,
        )).id

    run("a", 0, RunStatus.SUCCEEDED)
    failed = run("a", 1, RunStatus.FAILED)
    missed = run("a", 2, RunStatus.MISSED)
    running_b = run("b", 0, RunStatus.RUNNING)
    latest = store.latest_runs()
    assert {k: v.id for k, v in latest.items()} == {"a": missed, "b": running_b}
    executed = store.latest_runs(executed=True)
    assert {k: v.id for k, v in executed.items()} == {"a": failed}
    assert set(store.latest_runs(["b", "nope"])) == {"b"}
    assert store.run_counts("a") == {"succeeded": 1, "failed": 1, "missed": 1}
    assert store.run_counts("nope") == {}
    store.ping()
    with pytest.raises(TypeError):
        store.latest_runs("a")

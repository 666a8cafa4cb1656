"""TaskOperations (trigger, suspend, resume, cancel) on the in-memory store, with and
without a daemon at hand: the rules every door shares (the CLI on the database, the API)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.core.clock import FakeClock
from reconciler.core.errors import OperationRefused, TaskNotFoundError
from reconciler.core.model import ConcurrencyPolicy, DesiredState, TaskDef
from reconciler.core.plan import plan
from reconciler.core.protocols import NewRun
from reconciler.core.runtime import ActualTask, RunRecord, RunStatus, SuspendOverride, Trigger
from reconciler.service.operations import Caller, TaskOperations
from reconciler.store import MemoryStore

T0 = datetime(2026, 3, 2, 12, 0, 30, tzinfo=UTC)
CLI = Caller("alice@host", "cli", "CLI")


def store_with(concurrency: str = "Forbid", schedule: str = "*/10 * * * *") -> MemoryStore:
    store = MemoryStore(clock=FakeClock(T0))
    doc = {"apiVersion": "reconciler/v1", "kind": "Task", "metadata": {"name": "t"},
           "spec": {"schedule": schedule, "run": {"command": ["true"]},
                    "concurrencyPolicy": concurrency}}
    desired = DesiredState(tasks=(TaskDef.from_document(doc, "t.yaml"),))
    store.apply_plan(plan(desired, store.load_tasks()), actor="test", revision=None, now=T0)
    return store


def ops(store: MemoryStore, host: Any = None) -> TaskOperations:
    return TaskOperations(store, FakeClock(T0), host=host)


def running(store: MemoryStore) -> RunRecord:
    return store.insert_run(NewRun(task_name="t", slot=T0 - timedelta(minutes=1), attempt=1,
                                   trigger=Trigger.SCHEDULE, status=RunStatus.RUNNING,
                                   replica="r1", started_at=T0))


def outcomes(store: MemoryStore) -> list[tuple[str, str]]:
    return [(r["action"], r["outcome"]) for r in reversed(store.list_audit())]


@pytest.mark.parametrize("concurrency", ["Forbid", "Replace", "Allow"])
def test_trigger_without_a_daemon_reads_the_active_runs(concurrency: str) -> None:
    store = store_with(concurrency)
    running(store)
    if concurrency == "Forbid":
        with pytest.raises(OperationRefused, match="concurrencyPolicy is Forbid") as exc:
            asyncio.run(ops(store).trigger("t", CLI))
        assert exc.value.status == 409
        assert store.list_runs("t", statuses=[RunStatus.PENDING]) == []
        assert outcomes(store) == [("trigger", "conflict")]
    else:
        run = asyncio.run(ops(store).trigger("t", CLI))
        assert run.status is RunStatus.PENDING and run.reason == "triggered by alice@host (CLI)"
        assert outcomes(store) == [("trigger", "ok")]


def test_two_triggers_in_one_microsecond_get_two_rows() -> None:
    store = store_with("Allow")
    o = ops(store)
    first, second = asyncio.run(o.trigger("t", CLI)), asyncio.run(o.trigger("t", CLI))
    assert second.slot == first.slot + timedelta(microseconds=1)


def test_unknown_task() -> None:
    with pytest.raises(TaskNotFoundError):
        asyncio.run(ops(store_with()).trigger("nope", CLI))


def test_suspend_and_resume_are_idempotent() -> None:
    store = store_with()
    o = ops(store)
    row, changed = asyncio.run(o.suspend("t", "disk swap", CLI))
    assert changed and row.suspended
    _, again = asyncio.run(o.suspend("t", "again", CLI))
    assert not again
    result = asyncio.run(o.resume("t", True, CLI))
    assert result.changed and not result.task.suspended
    none = asyncio.run(o.resume("t", True, CLI))  # not suspended: nothing, no run
    assert not none.changed and none.run is None
    assert outcomes(store) == [("suspend", "ok"), ("suspend", "unchanged"),
                               ("resume", "ok"), ("resume", "unchanged")]
    assert store.list_runs("t") == []  # no slot came while it was suspended


def test_resume_catch_up_runs_the_slot_that_came_while_suspended() -> None:
    store = store_with()
    store.set_override("t", SuspendOverride(True, "n", "bob", T0 - timedelta(minutes=25)))
    result = asyncio.run(ops(store).resume("t", True, CLI))
    assert result.run is not None and result.run.trigger is Trigger.CATCH_UP
    assert result.run.slot == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert result.run.status is RunStatus.PENDING


class Host:
    """A daemon at hand: a scheduler that knows the task and its active runs."""

    replica = "here"

    def __init__(self, busy: int = 0, policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID,
                 store: MemoryStore | None = None) -> None:
        self._busy, self._policy, self.store = busy, policy, store
        self.started: list[int] = []
        self.synced_rows: list[ActualTask] = []
        self.live: dict[int, RunRecord] = {}

    def accepting(self) -> bool:
        return True

    def policy(self, task: str) -> ConcurrencyPolicy | None:
        return self._policy

    def busy(self, task: str) -> int:
        return self._busy

    async def start_pending(self, task: str, pending: RunRecord) -> RunRecord | None:
        assert self.store is not None
        self.store.claim_pending_run(pending.id, replica=self.replica, fencing_token=1,
                                     started_at=T0)
        self.started.append(pending.id)
        return self.store.get_run(pending.id)

    async def synced(self, row: ActualTask) -> None:
        self.synced_rows.append(row)

    def cancel_live(self, task: str, run_id: int, reason: str) -> tuple[RunRecord, bool] | None:
        record = self.live.get(run_id)
        return None if record is None else (record, True)

    def recorded(self, record: RunRecord) -> None:
        pass


def test_with_a_daemon_the_run_starts_at_once_and_the_scheduler_is_told() -> None:
    store = store_with()
    host = Host(store=store)
    o = ops(store, host)
    run = asyncio.run(o.trigger("t", Caller("ops", "10.0.0.1", "API")))
    assert host.started == [run.id] and run.status is RunStatus.RUNNING
    asyncio.run(o.suspend("t", None, CLI))
    assert [r.suspended for r in host.synced_rows] == [True]
    with pytest.raises(OperationRefused):
        asyncio.run(ops(store, Host(busy=1, store=store)).trigger("t", CLI))


def test_cancel() -> None:
    store = store_with("Allow")
    o = ops(store)
    pending = asyncio.run(o.trigger("t", CLI))
    record, changed = asyncio.run(o.cancel(pending.id, CLI))
    assert changed and record.status is RunStatus.CANCELLED
    assert record.reason == "cancelled by alice@host (CLI) before it started"
    assert asyncio.run(o.cancel(pending.id, CLI)) == (record, False)  # idempotent
    elsewhere = running(store)
    with pytest.raises(OperationRefused, match="on replica r1"):
        asyncio.run(o.cancel(elsewhere.id, CLI))
    host = Host(store=store)
    host.live[elsewhere.id] = elsewhere
    assert asyncio.run(ops(store, host).cancel(elsewhere.id, CLI)) == (elsewhere, True)
    with pytest.raises(OperationRefused) as missing:
        asyncio.run(o.cancel(9999, CLI))
    assert missing.value.status == 404

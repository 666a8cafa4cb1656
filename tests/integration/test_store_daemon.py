"""Contract tests of the ``SQLStore`` methods the daemon uses, on all three backends.

Abandoning orphaned runs, claiming pending runs, attempts, the override marker, the
``replicas`` table and its migration (0001 -> 0002). Fixtures: see conftest.py.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, inspect, select
from sqlalchemy.engine import URL

from reconciler.core.clock import FakeClock
from reconciler.core.model import DesiredState, TaskDef
from reconciler.core.plan import SafetyOptions, plan
from reconciler.core.protocols import NewRun
from reconciler.core.runtime import RunStatus, SuspendOverride, Trigger
from reconciler.store import SQLStore, migrate
from reconciler.store.schema import metadata, tasks

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
REASON = "the daemon that ran it stopped (found at start-up)"


def task(name: str, schedule: str = "* * * * *") -> TaskDef:
    document = {
        "apiVersion": "reconciler/v1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"schedule": schedule, "run": {"command": ["echo", name]}},
    }
    return TaskDef.from_document(document, f"tasks/{name}.yaml")


def apply(store: SQLStore, *defs: TaskDef, now: datetime = T0) -> None:
    p = plan(DesiredState(tasks=tuple(defs)), store.load_tasks(), SafetyOptions())
    store.apply_plan(p, actor="test", revision=None, now=now)


def new_run(name: str = "a", slot: datetime = T0, attempt: int = 1, **kw: Any) -> NewRun:
    kw.setdefault("trigger", Trigger.SCHEDULE)
    kw.setdefault("status", RunStatus.RUNNING)
    return NewRun(task_name=name, slot=slot, attempt=attempt, **kw)


def status_of(store: SQLStore, run_id: int) -> RunStatus:
    run = store.get_run(run_id)
    assert run is not None
    return run.status


# -------------------------------------------------------------------------- get_tasks


def test_get_tasks_returns_live_tasks_among_names(store: SQLStore) -> None:
    apply(store, task("a"), task("b"), task("c"))
    apply(store, task("a"), task("b"), now=T0 + timedelta(minutes=1))  # c: tombstone
    got = store.get_tasks(["c", "b", "nope", "a", "b"])
    assert [t.name for t in got] == ["a", "b"]
    loaded = {t.name: t for t in store.load_tasks()}
    assert got == [loaded["a"], loaded["b"]]
    assert got[0].document == loaded["a"].document
    assert store.get_tasks([]) == []
    assert store.get_tasks(()) == []
    with pytest.raises(TypeError):
        store.get_tasks("abc")


def test_get_tasks_chunks_long_name_lists(store: SQLStore) -> None:
    apply(store, task("a"), task("m"), task("z"))
    names = [f"missing-{i:04d}" for i in range(1200)] + ["z", "a", "m"]
    assert [t.name for t in store.get_tasks(names)] == ["a", "m", "z"]


# ------------------------------------------------------------------------ abandon_runs


def test_abandon_at_start_up_takes_every_running_and_taken_pending_run(store: SQLStore) -> None:
    running = store.insert_run(new_run(attempt=1, replica="old", started_at=T0))
    taken = store.insert_run(new_run(attempt=2, status=RunStatus.PENDING, replica="old"))
    waiting = store.insert_run(new_run(attempt=3, status=RunStatus.PENDING))  # manual trigger
    done = store.insert_run(new_run(attempt=4, status=RunStatus.SUCCEEDED, finished_at=T0))
    mine = store.insert_run(new_run("b", replica="me", started_at=T0))
    now = T0 + timedelta(hours=1, microseconds=5)

    got = store.abandon_runs(replica="me", stale_before=None, now=now, reason=REASON)

    assert [r.id for r in got] == [running.id, taken.id, mine.id]
    for r in got:
        assert r.status is RunStatus.ABANDONED
        assert r.finished_at == now and r.reason == REASON
        assert store.get_run(r.id) == r
    assert got[0].started_at == T0 and got[0].replica == "old"
    assert status_of(store, waiting.id) is RunStatus.PENDING
    assert store.get_run(done.id) == done
    assert store.abandon_runs(replica="me", stale_before=None, now=now, reason=REASON) == []


def test_abandon_stale_runs_of_other_replicas(store: SQLStore) -> None:
    store.clock = FakeClock(T0 - timedelta(hours=1))  # created_at of the rows below
    s = store
    cutoff = T0
    old, fresh = T0 - timedelta(seconds=31), T0 + timedelta(seconds=1)
    stale_hb = s.insert_run(new_run(attempt=1, replica="other", started_at=old))
    s.update_run(stale_hb.id, heartbeat_at=old)
    live_hb = s.insert_run(new_run(attempt=2, replica="other", started_at=old))
    s.update_run(live_hb.id, heartbeat_at=fresh)  # heartbeat wins over started_at
    no_hb = s.insert_run(new_run(attempt=3, replica="other", started_at=old))
    just_started = s.insert_run(new_run(attempt=4, replica="other", started_at=fresh))
    never_started = s.insert_run(new_run(attempt=5, replica="other"))  # created an hour ago
    no_replica = s.insert_run(new_run(attempt=6, started_at=old))
    own = s.insert_run(new_run(attempt=7, replica="me", started_at=old))
    pending = s.insert_run(new_run(attempt=8, status=RunStatus.PENDING, replica="other"))
    exactly = s.insert_run(new_run(attempt=9, replica="other", started_at=cutoff))
    now = T0 + timedelta(seconds=2)

    got = s.abandon_runs(replica="me", stale_before=cutoff, now=now, reason="gone")

    assert [r.id for r in got] == [stale_hb.id, no_hb.id, never_started.id, no_replica.id]
    assert all(r.status is RunStatus.ABANDONED and r.finished_at == now for r in got)
    assert all(r.reason == "gone" for r in got)
    for kept in (live_hb, just_started, own, exactly):
        assert status_of(s, kept.id) is RunStatus.RUNNING
    assert status_of(s, pending.id) is RunStatus.PENDING
    assert s.abandon_runs(replica="me", stale_before=cutoff, now=now, reason="gone") == []


def test_abandon_leaves_a_run_finished_concurrently(store: SQLStore, database_url: URL) -> None:
    first = store.insert_run(new_run(attempt=1, replica="old", started_at=T0))
    second = store.insert_run(new_run(attempt=2, replica="old", started_at=T0))
    finisher = SQLStore(database_url)
    fired: list[str] = []

    def finish_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # Between abandon_runs' SELECT of candidates and its first UPDATE, the process
        # that ran `first` records its end through another connection.
        if statement.lstrip().upper().startswith("UPDATE RUNS") and not fired:
            fired.append(statement)
            assert finisher.update_run(
                first.id, status=RunStatus.SUCCEEDED, finished_at=T0, exit_code=0
            )

    event.listen(store.engine, "before_cursor_execute", finish_first)
    try:
        got = store.abandon_runs(replica="me", stale_before=None, now=T0, reason=REASON)
    finally:
        event.remove(store.engine, "before_cursor_execute", finish_first)
        finisher.close()
    assert fired
    assert [r.id for r in got] == [second.id]
    first_now = store.get_run(first.id)
    assert first_now is not None and first_now.status is RunStatus.SUCCEEDED
    assert first_now.reason is None and first_now.exit_code == 0


def test_abandon_refuses_naive_datetimes(store: SQLStore) -> None:
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError, match="naive datetime"):
        store.abandon_runs(replica="me", stale_before=None, now=naive, reason="x")
    with pytest.raises(ValueError, match="naive datetime"):
        store.abandon_runs(replica="me", stale_before=naive, now=T0, reason="x")


# ------------------------------------------------------------------- claim_pending_run


def test_claim_pending_run(store: SQLStore) -> None:
    manual = store.insert_run(
        new_run(status=RunStatus.PENDING, trigger=Trigger.MANUAL, reason="by alice")
    )
    started = T0 + timedelta(seconds=1, microseconds=1)
    assert store.claim_pending_run(manual.id, replica="r1", fencing_token=9, started_at=started)
    got = store.get_run(manual.id)
    assert got is not None
    assert got.status is RunStatus.RUNNING and got.replica == "r1" and got.fencing_token == 9
    assert got.started_at == started and got.finished_at is None
    assert got.reason == "by alice"  # kept when no new reason is given
    assert got.trigger is Trigger.MANUAL

    # already taken: a second claimer gets nothing and changes nothing
    assert not store.claim_pending_run(manual.id, replica="r2", fencing_token=10, started_at=T0)
    assert store.get_run(manual.id) == got
    assert not store.claim_pending_run(10**9, replica="r1", fencing_token=1, started_at=T0)


def test_claim_pending_run_as_skipped_finishes_it(store: SQLStore) -> None:
    run = store.insert_run(new_run(status=RunStatus.PENDING, trigger=Trigger.MANUAL))
    assert store.claim_pending_run(
        run.id,
        replica="r1",
        fencing_token=None,
        started_at=T0,
        status=RunStatus.SKIPPED,
        reason="previous run active",
    )
    got = store.get_run(run.id)
    assert got is not None and got.status is RunStatus.SKIPPED
    assert got.started_at == got.finished_at == T0
    assert got.reason == "previous run active" and got.fencing_token is None
    with pytest.raises(ValueError, match="pending"):
        store.claim_pending_run(
            run.id, replica="r1", fencing_token=None, started_at=T0, status=RunStatus.PENDING
        )


def test_concurrent_claims_of_a_pending_run_have_one_winner(store: SQLStore) -> None:
    run = store.insert_run(new_run(status=RunStatus.PENDING, trigger=Trigger.MANUAL))
    outcomes: list[bool] = []
    barrier = threading.Barrier(4)

    def claim(i: int) -> None:
        barrier.wait()
        outcomes.append(
            store.claim_pending_run(run.id, replica=f"r{i}", fencing_token=i, started_at=T0)
        )

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False, False, False, True]
    assert status_of(store, run.id) is RunStatus.RUNNING


# ------------------------------------------------------------------------ next_attempt


def test_next_attempt(store: SQLStore) -> None:
    assert store.next_attempt("a", T0) == 1
    store.insert_run(new_run("a", T0, 1))
    store.insert_run(new_run("a", T0, 3, status=RunStatus.FAILED))
    store.insert_run(new_run("a", T0 + timedelta(minutes=1), 7))
    store.insert_run(new_run("b", T0, 5))
    assert store.next_attempt("a", T0) == 4
    assert store.next_attempt("a", T0.astimezone(timezone(timedelta(hours=3)))) == 4
    assert store.next_attempt("a", T0 + timedelta(minutes=1)) == 8
    assert store.next_attempt("a", T0 + timedelta(microseconds=1)) == 1
    assert store.next_attempt("c", T0) == 1


# --------------------------------------------------------------------- override marker


def test_override_marker_changes_on_every_set_and_clear(store: SQLStore) -> None:
    apply(store, task("a"), task("b"))
    seen = [store.override_marker()]
    assert seen[0] == (None, 0, 0)

    def step() -> Any:
        marker = store.override_marker()
        assert marker not in seen
        seen.append(marker)
        return marker

    store.set_override("a", SuspendOverride(True, note="incident", actor="bob"))
    assert step()[1:] == (1, 1)
    store.set_override("a", SuspendOverride(True, note="incident", actor="bob"))  # same again
    step()
    store.set_override("b", SuspendOverride(False))
    assert step()[1:] == (2, 1)
    store.set_override("a", None)
    assert step()[1:] == (1, 0)
    store.set_override("a", None)  # clearing twice is still a change
    step()

    # polling does not change it, and apply never touches overrides
    marker = store.override_marker()
    assert store.override_marker() == marker
    apply(store, task("a", "5 * * * *"), task("b"), now=T0 + timedelta(hours=1))
    assert store.override_marker() == marker


def test_cleared_override_reads_as_none_but_keeps_its_time(store: SQLStore) -> None:
    apply(store, task("a"))
    set_at = store.set_override("a", SuspendOverride(True)).override
    assert set_at is not None and set_at.at is not None and set_at.at.tzinfo is UTC
    cleared = store.set_override("a", None)
    assert cleared.override is None and not cleared.suspended
    loaded = store.get_task("a")
    assert loaded is not None and loaded.override is None
    assert store.get_tasks(["a"])[0].override is None
    stamp = store.override_marker()[0]
    assert stamp is not None and stamp > set_at.at
    if isinstance(store, SQLStore):  # the time is in the row itself
        with store.engine.connect() as conn:
            row = conn.execute(select(tasks.c.override_at).where(tasks.c.name == "a")).scalar()
        assert row == stamp


def test_override_marker_with_a_clock_that_does_not_move(store: SQLStore) -> None:
    store.clock = FakeClock(T0)
    s = store
    apply(s, task("a"), task("b"))
    first = s.set_override("a", SuspendOverride(True)).override
    assert first is not None and first.at == T0
    m1 = s.override_marker()
    second = s.set_override("a", SuspendOverride(True)).override
    assert second is not None and second.at == T0 + timedelta(microseconds=1)
    m2 = s.override_marker()
    s.set_override("b", None)
    m3 = s.override_marker()
    assert len({m1, m2, m3}) == 3


def test_override_marker_sees_a_flip_with_an_old_explicit_time(store: SQLStore) -> None:
    apply(store, task("a"), task("b"))
    store.set_override("b", SuspendOverride(True, at=T0 + timedelta(days=1)))
    store.set_override("a", SuspendOverride(True, at=T0))
    before = store.override_marker()
    flipped = store.set_override("a", SuspendOverride(False, at=T0 - timedelta(days=1)))
    assert flipped.override is not None and flipped.override.at == T0 - timedelta(days=1)
    assert store.override_marker() != before


# ---------------------------------------------------------------------------- replicas


def test_replica_status_lifecycle(store: SQLStore) -> None:
    t1, t2, t3, t4 = (T0 + timedelta(seconds=s, microseconds=s) for s in (1, 2, 3, 4))
    assert store.list_replicas() == []
    status: dict[str, Any] = {
        "replica": "r1",
        "host": "node-1",
        "pid": 42,
        "tasks": 3,
        "version": "1.2.3",
        "revision": None,
        "refusals": ["x"],
    }
    store.write_replica_status("r1", status, t1)
    assert store.list_replicas() == [
        {
            "id": "r1",
            "host": "node-1",
            "pid": 42,
            "version": "1.2.3",
            "started_at": t1,
            "heartbeat_at": t1,
            "stopped_at": None,
            "status": status,
        }
    ]
    row = store.list_replicas()[0]
    assert row["started_at"].tzinfo is UTC and row["heartbeat_at"].tzinfo is UTC

    # a heartbeat: new status, started_at kept; host/pid/version kept when absent
    store.write_replica_status("r1", {"tasks": 4}, t2)
    row = store.list_replicas()[0]
    assert (row["started_at"], row["heartbeat_at"], row["stopped_at"]) == (t1, t2, None)
    assert row["status"] == {"tasks": 4}
    assert (row["host"], row["pid"], row["version"]) == ("node-1", 42, "1.2.3")

    # the same write twice (same instant, same values) is fine
    store.write_replica_status("r1", {"tasks": 4}, t2)
    assert len(store.list_replicas()) == 1

    # stop: stopped_at set, the last status kept
    store.write_replica_status("r1", None, t3)
    row = store.list_replicas()[0]
    assert (row["started_at"], row["heartbeat_at"], row["stopped_at"]) == (t1, t3, t3)
    assert row["status"] == {"tasks": 4}
    assert store.list_replicas(include_stopped=False) == []

    # the same id again (e.g. a StatefulSet pod restarted): a new life
    store.write_replica_status("r1", {"pid": 77}, t4)
    row = store.list_replicas(include_stopped=False)[0]
    assert (row["started_at"], row["heartbeat_at"], row["stopped_at"]) == (t4, t4, None)
    assert row["pid"] == 77


def test_several_replicas_and_stale_cleanup(store: SQLStore) -> None:
    store.write_replica_status("b", {"host": "h"}, T0)
    store.write_replica_status("a", {"host": "h"}, T0 + timedelta(minutes=10))
    store.write_replica_status("c", {"host": "h"}, T0)
    store.write_replica_status("c", None, T0 + timedelta(minutes=5))
    store.write_replica_status("d", None, T0)  # a stop without a prior row still records it
    assert [r["id"] for r in store.list_replicas()] == ["a", "b", "c", "d"]
    assert [r["id"] for r in store.list_replicas(include_stopped=False)] == ["a", "b"]
    d = store.list_replicas()[3]
    assert d["stopped_at"] == d["started_at"] == T0 and d["status"] is None

    assert store.delete_stale_replicas(T0) == 0
    assert store.delete_stale_replicas(T0 + timedelta(minutes=1)) == 2  # b (heartbeat), d
    assert [r["id"] for r in store.list_replicas()] == ["a", "c"]
    assert store.delete_stale_replicas(T0 + timedelta(minutes=6)) == 1  # c (stopped)
    assert [r["id"] for r in store.list_replicas()] == ["a"]


def test_replica_identity_columns_are_taken_from_the_status(store: SQLStore) -> None:
    long_host = "h" * 300
    store.write_replica_status("r", {"host": long_host, "pid": "123", "version": 2}, T0)
    row = store.list_replicas()[0]
    assert row["host"] == long_host[:255] and row["pid"] == 123 and row["version"] == "2"
    assert row["status"] == {"host": long_host, "pid": "123", "version": 2}
    store.write_replica_status("r", {"pid": True, "version": None}, T0)  # not a pid
    row = store.list_replicas()[0]
    assert row["pid"] == 123 and row["version"] == "2"
    with pytest.raises(ValueError, match="naive datetime"):
        store.write_replica_status("r", {}, datetime(2026, 1, 1))


def test_concurrent_first_writes_of_one_replica(store: SQLStore) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def write(i: int) -> None:
        barrier.wait()
        try:
            store.write_replica_status("r", {"n": i}, T0 + timedelta(seconds=i))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list_replicas()) == 1


# --------------------------------------------------------------------------- migration


def test_upgrade_from_0001_keeps_the_data(empty_database_url: URL) -> None:
    with SQLStore(empty_database_url) as s:
        migrate.upgrade(s.engine, "0001")
        assert s.schema_revision() == "0001"
        assert "replicas" not in inspect(s.engine).get_table_names()
        apply(s, task("a"))
        s.set_override("a", SuspendOverride(True, note="n", actor="bob", at=T0))
        run = s.insert_run(new_run())

        s.upgrade()

        assert s.schema_revision() == SQLStore.head_revision() == "0010"
        with s.engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), metadata
            )
        assert diff == []
        loaded = s.get_task("a")
        assert loaded is not None and loaded.override == SuspendOverride(True, "n", "bob", T0)
        assert s.get_run(run.id) == run
        s.write_replica_status("r1", {"host": "h"}, T0)
        assert [r["id"] for r in s.list_replicas()] == ["r1"]


def test_downgrade_to_0001_and_back(empty_database_url: URL) -> None:
    with SQLStore(empty_database_url) as s:
        s.upgrade()
        s.write_replica_status("r1", {"host": "h"}, T0)
        with s.engine.connect() as conn:
            command.downgrade(migrate.alembic_config(conn), "0001")
            conn.commit()
        assert s.schema_revision() == "0001"
        assert "replicas" not in inspect(s.engine).get_table_names()
        s.upgrade()
        assert s.schema_revision() == SQLStore.head_revision()
        assert s.list_replicas() == []

"""Contract tests of the store ports, run on memory, SQLite, PostgreSQL and MariaDB.

See conftest.py for which tests run on SQL backends only.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import URL

from reconciler.core.errors import (
    DuplicateRunError,
    PlanRefusedError,
    StoreError,
    TaskNotFoundError,
)
from reconciler.core.model import DesiredState, TaskDef
from reconciler.core.plan import Action, Plan, SafetyOptions, plan
from reconciler.core.protocols import STORE_PORTS, NewRun, RunStore, Store, TaskStore
from reconciler.core.runtime import GitRevision, RunStatus, SuspendOverride, Trigger
from reconciler.store import SQLStore
from reconciler.store.schema import metadata, runs, tasks

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
REV1 = GitRevision("a" * 40)
REV2 = GitRevision("b" * 40, dirty=True)


# ----------------------------------------------------------------------------- helpers


def task(name: str, schedule: str = "* * * * *", source: str | None = None, **spec: Any) -> TaskDef:
    document = {
        "apiVersion": "reconciler/v1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"schedule": schedule, "run": {"command": ["echo", name]}, **spec},
    }
    return TaskDef.from_document(document, source or f"tasks/{name}.yaml")


def plan_for(store: SQLStore, *defs: TaskDef, **options: Any) -> Plan:
    return plan(DesiredState(tasks=tuple(defs)), store.load_tasks(), SafetyOptions(**options))


def apply(store: SQLStore, *defs: TaskDef, now: datetime = T0, **options: Any) -> Plan:
    p = plan_for(store, *defs, **options)
    store.apply_plan(p, actor="test", revision=REV1, now=now)
    return p


def by_name(store: SQLStore) -> dict[str, Any]:
    return {t.name: t for t in store.load_tasks()}


def new_run(name: str = "a", slot: datetime = T0, attempt: int = 1, **kw: Any) -> NewRun:
    kw.setdefault("trigger", Trigger.SCHEDULE)
    kw.setdefault("status", RunStatus.PENDING)
    return NewRun(task_name=name, slot=slot, attempt=attempt, **kw)


def test_implements_the_protocols(store: Store) -> None:
    task_store: TaskStore = store  # checked by mypy
    run_store: RunStore = store
    assert task_store is run_store
    for protocol in STORE_PORTS:
        for name in dir(protocol):
            if not name.startswith("_"):
                assert callable(getattr(store, name)), f"{type(store).__name__}.{name}"


# ---------------------------------------------------------------------------- schema


def test_upgrade_from_empty_database(empty_database_url: URL) -> None:
    with SQLStore(empty_database_url) as s:
        assert s.schema_revision() is None
        s.upgrade()
        assert s.schema_revision() == SQLStore.head_revision() == "0010"
        names = set(inspect(s.engine).get_table_names())
        assert {"tasks", "runs", "applies", "replicas", "audit", "channels", "notifications",
                "backfills", "backfill_runs", "alembic_version"} <= names
        assert s.load_tasks() == []


def test_concurrent_upgrades_of_an_empty_database(empty_database_url: URL) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def upgrade() -> None:
        with SQLStore(empty_database_url) as s:
            barrier.wait()
            try:
                s.upgrade()
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with SQLStore(empty_database_url) as s:
        assert s.schema_revision() == SQLStore.head_revision()


def test_unknown_schema_revision_is_a_store_error(empty_database_url: URL) -> None:
    with SQLStore(empty_database_url) as s:
        s.upgrade()
        with s.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(StoreError, match="9999"):
            s.upgrade()


@pytest.mark.sql_only  # a schema revision
def test_upgrade_is_idempotent(store: SQLStore) -> None:
    apply(store, task("a"))
    store.upgrade()
    store.upgrade()
    assert store.schema_revision() == SQLStore.head_revision()
    assert [t.name for t in store.load_tasks()] == ["a"]


def test_models_match_the_migration(database_url: URL) -> None:
    with SQLStore(database_url) as s, s.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_output_tail_holds_more_than_64k(store: SQLStore) -> None:
    run = store.insert_run(new_run())
    big = "x" * (200 * 1024) + "ünïcødé ✓"
    assert store.update_run(run.id, output_tail=big, error=big, progress_percent=33.3)
    got = store.get_run(run.id)
    assert got is not None and got.output_tail == big and got.error == big
    assert got.progress_percent == 33.3  # double precision everywhere


# ----------------------------------------------------------------------------- apply


def test_apply_creates_tasks(store: SQLStore) -> None:
    p = plan_for(store, task("a"), task("b", "*/5 * * * *"))
    record = store.apply_plan(p, actor="alice", revision=REV2, now=T0)
    assert (record.created, record.updated, record.deleted, record.unchanged, record.kept) == (
        2,
        0,
        0,
        0,
        0,
    )
    assert record.actor == "alice" and record.revision == REV2.sha and record.dirty
    assert record.applied_at == T0

    loaded = by_name(store)
    assert sorted(loaded) == ["a", "b"]
    a = loaded["a"]
    assert a.generation == 1
    assert a.document == task("a").document
    assert a.hash == task("a").hash
    assert a.source_file == "tasks/a.yaml"
    assert a.source_revision == REV2.sha
    assert a.created_at == a.updated_at == T0
    assert a.override is None and a.next_fire_at is None
    assert loaded["b"].schedule == "*/5 * * * *"

    assert store.list_applies() == [record]
    summary = store.apply_summary(record.id)
    assert summary is not None and summary["create"] == ["a", "b"]


def test_update_bumps_generation_only_when_the_spec_changes(store: SQLStore) -> None:
    apply(store, task("a"), task("b"))
    later = T0 + timedelta(minutes=1)
    p = plan_for(store, task("a", "0 * * * *"), task("b", source="moved/b.yaml"))
    assert [c.action for c in p.changes] == [Action.UPDATE, Action.UPDATE]
    record = store.apply_plan(p, actor="test", revision=REV2, now=later)
    assert record.updated == 2

    loaded = by_name(store)
    assert loaded["a"].generation == 2
    assert loaded["a"].schedule == "0 * * * *"
    assert loaded["a"].updated_at == later and loaded["a"].created_at == T0
    assert loaded["b"].generation == 1  # only the file moved: same spec, same generation
    assert loaded["b"].source_file == "moved/b.yaml"
    assert loaded["b"].source_revision == REV2.sha

    again = plan_for(store, task("a", "0 * * * *"), task("b", source="moved/b.yaml"))
    assert [c.action for c in again.changes] == [Action.UNCHANGED, Action.UNCHANGED]
    record = store.apply_plan(again, actor="test", revision=REV2, now=later)
    assert record.unchanged == 2 and record.updated == 0
    assert by_name(store)["a"].generation == 2


def test_delete_leaves_a_tombstone_and_create_resurrects_it(store: SQLStore) -> None:
    apply(store, task("a"), task("b"))
    apply(store, task("a", "5 * * * *"), task("b"))  # a: generation 2
    store.set_override("a", SuspendOverride(True, note="old life", actor="bob", at=T0))
    store.set_schedule_state({"a": {"next_fire_at": T0, "last_slot_at": T0, "last_success_at": T0}})
    run = store.insert_run(new_run("a", status=RunStatus.SUCCEEDED))

    p = apply(store, task("b"), now=T0 + timedelta(hours=1))
    assert [c.action for c in p.changes] == [Action.DELETE, Action.UNCHANGED]
    assert sorted(by_name(store)) == ["b"]
    assert store.get_task("a") is None
    tomb = store.get_task("a", include_deleted=True)
    assert tomb is not None and tomb.generation == 2
    assert store.get_run(run.id) is not None  # history stays readable
    with pytest.raises(TaskNotFoundError):
        store.set_override("a", None)

    later = T0 + timedelta(hours=2)
    p = apply(store, task("a", "7 * * * *"), task("b"), now=later)
    assert [c.action for c in p.changes] == [Action.CREATE, Action.UNCHANGED]
    a = by_name(store)["a"]
    assert a.generation == 3  # old + 1: runs of the old life stay distinguishable
    assert a.schedule == "7 * * * *"
    assert a.created_at == later
    assert a.override is None  # state of the old life is gone ...
    assert a.next_fire_at is None and a.last_slot_at is None
    assert a.last_success_at == T0  # ... except facts about runs that still exist
    assert store.list_runs("a")[0].id == run.id


def test_stale_plan_is_refused_and_nothing_is_written(store: SQLStore) -> None:
    apply(store, task("a"), task("b"))
    stale = plan_for(store, task("a", "1 * * * *"), task("b"), task("c"))
    apply(store, task("a", "2 * * * *"), task("b"))  # someone else bumped a to generation 2
    applies_before = store.list_applies()

    with pytest.raises(StoreError, match=r"task a changed since the plan was made; plan again"):
        store.apply_plan(stale, actor="test", revision=REV1, now=T0)

    loaded = by_name(store)
    assert sorted(loaded) == ["a", "b"]  # c was not created either: one transaction
    assert loaded["a"].schedule == "2 * * * *" and loaded["a"].generation == 2
    assert store.list_applies() == applies_before


def test_stale_delete_and_stale_create_are_refused(store: SQLStore) -> None:
    apply(store, task("a"), task("b"))
    delete_a = plan_for(store, task("b"))
    create_c = plan_for(store, task("a"), task("b"), task("c"))
    apply(store, task("a", "3 * * * *"), task("b"), task("c"))

    with pytest.raises(StoreError, match="task a changed since the plan was made"):
        store.apply_plan(delete_a, actor="test", revision=None, now=T0)
    with pytest.raises(StoreError, match="task c changed since the plan was made"):
        store.apply_plan(create_c, actor="test", revision=None, now=T0)
    assert sorted(by_name(store)) == ["a", "b", "c"]
    assert store.get_task("a") is not None


def test_refused_plan_writes_nothing(store: SQLStore) -> None:
    apply(store, task("a"), task("b"))
    p = plan_for(store, task("c"), max_delete=1)
    assert p.refused
    with pytest.raises(PlanRefusedError) as info:
        store.apply_plan(p, actor="test", revision=REV1, now=T0)
    assert info.value.reasons == list(p.refusals)
    assert sorted(by_name(store)) == ["a", "b"]
    assert len(store.list_applies()) == 1


def test_kept_tasks_are_counted_and_left_alone(store: SQLStore) -> None:
    apply(store, task("a"), task("b"))
    desired = DesiredState(tasks=(task("b"),), failed_files=frozenset({"tasks/a.yaml"}))
    p = plan(desired, store.load_tasks())
    assert [c.action for c in p.changes] == [Action.KEEP, Action.UNCHANGED]
    record = store.apply_plan(p, actor="test", revision=REV1, now=T0)
    assert (record.kept, record.unchanged, record.deleted) == (1, 1, 0)
    assert sorted(by_name(store)) == ["a", "b"]


def test_overrides_survive_apply(store: SQLStore) -> None:
    apply(store, task("a"))
    at = datetime(2026, 3, 2, 8, 30, 1, 654321, tzinfo=timezone(timedelta(hours=2)))
    updated = store.set_override("a", SuspendOverride(True, note="incident 42", actor="bob", at=at))
    assert updated.suspended and updated.override is not None
    assert updated.override.at == at and updated.override.at.tzinfo is UTC

    p = apply(store, task("a", "*/2 * * * *"))
    assert p.drift and p.drift[0].name == "a"
    a = by_name(store)["a"]
    assert a.generation == 2
    assert a.override == SuspendOverride(True, note="incident 42", actor="bob", at=at)

    cleared = store.set_override("a", None)
    assert cleared.override is None and not cleared.suspended
    assert store.set_override("a", None).override is None  # no-op writes still find the row
    with pytest.raises(TaskNotFoundError):
        store.set_override("nope", SuspendOverride(False))


def test_set_schedule_state(store: SQLStore) -> None:
    apply(store, task("a"), task("b"))
    fire = T0 + timedelta(minutes=1, microseconds=7)
    store.set_schedule_state(
        {
            "a": {"next_fire_at": fire, "last_slot_at": T0},
            "b": {"next_fire_at": fire},
            "gone": {"next_fire_at": fire},  # unknown names are ignored
        }
    )
    loaded = by_name(store)
    assert loaded["a"].next_fire_at == fire and loaded["a"].last_slot_at == T0
    assert loaded["b"].next_fire_at == fire and loaded["b"].last_slot_at is None
    store.set_schedule_state({"a": {"last_slot_at": None}})
    assert by_name(store)["a"].last_slot_at is None
    with pytest.raises(ValueError, match="unknown column"):
        store.set_schedule_state({"a": {"generation": fire}})


# ------------------------------------------------------------------------------- time


def test_timestamps_round_trip_as_aware_utc_with_microseconds(store: SQLStore) -> None:
    zone = timezone(timedelta(hours=-5, minutes=-30))
    slot = datetime(2026, 7, 4, 23, 59, 59, 999999, tzinfo=zone)
    started = datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    run = store.insert_run(new_run(slot=slot, started_at=started))
    got = store.get_run(run.id)
    assert got is not None
    assert got.slot == slot and got.slot.tzinfo is UTC
    assert got.slot == datetime(2026, 7, 5, 5, 29, 59, 999999, tzinfo=UTC)
    assert got.started_at == started and got.started_at is not None
    assert got.started_at.microsecond == 1
    assert got.created_at is not None and got.created_at.tzinfo is UTC
    assert run == got

    # the same instant written in another zone is the same slot
    with pytest.raises(DuplicateRunError):
        store.insert_run(new_run(slot=slot.astimezone(UTC)))

    apply(store, task("a"), now=slot)
    assert by_name(store)["a"].created_at == slot


def test_naive_datetimes_are_refused(store: SQLStore) -> None:
    naive = datetime(2026, 1, 1, 12, 0, 0)
    with pytest.raises(ValueError, match="naive datetime"):
        store.insert_run(new_run(slot=naive))
    with pytest.raises(ValueError, match="naive datetime"):
        store.apply_plan(plan_for(store, task("a")), actor="t", revision=None, now=naive)
    assert store.load_tasks() == []  # nothing half-written
    apply(store, task("a"))
    with pytest.raises(ValueError, match="naive datetime"):
        store.set_schedule_state({"a": {"next_fire_at": naive}})
    run = store.insert_run(new_run())
    with pytest.raises(ValueError, match="naive datetime"):
        store.update_run(run.id, heartbeat_at=naive)
    assert store.list_runs() == [run]  # and the store still works


# ------------------------------------------------------------------------------- runs


def test_duplicate_run_raises_and_the_store_stays_usable(store: SQLStore) -> None:
    first = store.insert_run(new_run(replica="r1", fencing_token=3, generation=1))
    assert first.id > 0 and first.replica == "r1" and first.trigger is Trigger.SCHEDULE
    with pytest.raises(DuplicateRunError):
        store.insert_run(new_run(replica="r2"))
    with pytest.raises(DuplicateRunError):
        store.insert_run(new_run(replica="r3"))
    second = store.insert_run(new_run(attempt=2, trigger=Trigger.RETRY))
    assert second.id != first.id
    assert [r.replica for r in store.list_runs("a")] == [None, "r1"]
    assert store.get_run(first.id) == first


def test_concurrent_claims_of_one_slot_have_one_winner(store: SQLStore) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def claim(replica: str) -> None:
        barrier.wait()
        try:
            store.insert_run(new_run(replica=replica))
            outcomes.append("won")
        except DuplicateRunError:
            outcomes.append("lost")

    threads = [threading.Thread(target=claim, args=(f"r{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost", "lost", "lost", "won"]
    assert len(store.list_runs()) == 1


def test_update_run_and_fencing_tokens(store: SQLStore) -> None:
    run = store.insert_run(new_run(fencing_token=5))
    assert not store.update_run(run.id, fencing_token=4, status=RunStatus.RUNNING)
    assert store.get_run(run.id).status is RunStatus.PENDING  # type: ignore[union-attr]

    assert store.update_run(run.id, fencing_token=5, status=RunStatus.RUNNING, started_at=T0)
    assert store.update_run(run.id, fencing_token=7, heartbeat_at=T0, progress_percent=50.5)
    got = store.get_run(run.id)
    assert got is not None and got.fencing_token == 7  # the row remembers the newest holder
    assert got.progress_percent == 50.5 and got.heartbeat_at == T0

    assert not store.update_run(run.id, fencing_token=6, status=RunStatus.FAILED)
    assert store.update_run(
        run.id,
        status="succeeded",
        finished_at=T0 + timedelta(seconds=3),
        exit_code=0,
        progress_message="done",
    )
    got = store.get_run(run.id)
    assert got is not None and got.status is RunStatus.SUCCEEDED and got.exit_code == 0
    assert got.lateness_seconds == 0.0

    unfenced = store.insert_run(new_run(attempt=2))
    assert store.update_run(unfenced.id, fencing_token=1, replica="r9")
    assert store.get_run(unfenced.id).fencing_token == 1  # type: ignore[union-attr]

    assert not store.update_run(999_999, status=RunStatus.FAILED)
    with pytest.raises(ValueError, match="cannot be updated"):
        store.update_run(run.id, task_name="other")
    with pytest.raises(ValueError):
        store.update_run(run.id, status="exploded")


def test_list_runs_newest_first_with_filters(store: SQLStore) -> None:
    made = []
    for minute, attempt, status in [
        (0, 1, RunStatus.SUCCEEDED),
        (2, 1, RunStatus.FAILED),
        (2, 2, RunStatus.RUNNING),
        (1, 1, RunStatus.SUCCEEDED),
    ]:
        slot = T0 + timedelta(minutes=minute)
        made.append(store.insert_run(new_run(slot=slot, attempt=attempt, status=status)))
    store.insert_run(new_run("b", status=RunStatus.FAILED))

    order = [(r.slot.minute, r.attempt) for r in store.list_runs("a")]
    assert order == [(2, 2), (2, 1), (1, 1), (0, 1)]
    assert len(store.list_runs()) == 5
    assert len(store.list_runs("a", limit=2)) == 2
    failed = store.list_runs(statuses=[RunStatus.FAILED])
    assert sorted(r.task_name for r in failed) == ["a", "b"]
    assert store.list_runs("a", statuses=[RunStatus.SUCCEEDED, RunStatus.RUNNING])[0] == made[2]
    assert store.count_runs("a") == 4


def test_prune_runs_keeps_newest_per_outcome_and_never_active(store: SQLStore) -> None:
    statuses = [
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.SUCCEEDED,
        RunStatus.TIMED_OUT,
        RunStatus.SUCCEEDED,
        RunStatus.SKIPPED,
        RunStatus.RUNNING,
        RunStatus.PENDING,
        RunStatus.MISSED,
        RunStatus.SUCCEEDED,
    ]
    for minute, status in enumerate(statuses):
        store.insert_run(new_run(slot=T0 + timedelta(minutes=minute), status=status))
    store.insert_run(new_run("b", status=RunStatus.FAILED))

    deleted = store.prune_runs("a", successful=2, failed=1)
    assert deleted == 2 + 3
    left = [(r.slot.minute, r.status) for r in store.list_runs("a")]
    assert left == [
        (9, RunStatus.SUCCEEDED),
        (8, RunStatus.MISSED),
        (7, RunStatus.PENDING),
        (6, RunStatus.RUNNING),
        (4, RunStatus.SUCCEEDED),
    ]
    assert store.prune_runs("a", successful=0, failed=0) == 3
    assert {r.status for r in store.list_runs("a")} == {RunStatus.PENDING, RunStatus.RUNNING}
    assert len(store.list_runs("b")) == 1
    with pytest.raises(ValueError):
        store.prune_runs("a", successful=-1, failed=0)


# ------------------------------------------------------------------------------ scale


def test_bulk_apply_of_10000_tasks_on_sqlite(tmp_path: Path) -> None:
    store = SQLStore(f"sqlite:///{tmp_path / 'bulk.db'}")
    store.upgrade()
    defs = [task(f"task-{i:05d}", f"{i % 60} * * * *") for i in range(10_000)]
    p = plan_for(store, *defs)
    started = time.perf_counter()
    record = store.apply_plan(p, actor="bulk", revision=REV1, now=T0)
    apply_s = time.perf_counter() - started
    started = time.perf_counter()
    loaded = store.load_tasks()
    load_s = time.perf_counter() - started
    print(f"\nSQLite: apply of 10,000 creates {apply_s:.3f}s, load_tasks {load_s:.3f}s")

    assert record.created == 10_000 and record.updated == record.deleted == 0
    assert len(loaded) == 10_000
    assert loaded[1234].name == "task-01234" and loaded[1234].schedule == "34 * * * *"
    assert loaded[1234].created_at == T0 and loaded[1234].generation == 1
    # generous bounds: the targets (~0.1 s each) are for an idle machine
    assert apply_s < 2.0 and load_s < 2.0

    with store.engine.connect() as conn:
        count = conn.execute(select(tasks.c.id).where(tasks.c.deleted_at.is_(None))).all()
    assert len(count) == 10_000

    # a second apply with every task unchanged and one spec changed
    defs[5] = task("task-00005", "59 * * * *")
    again = plan_for(store, *defs)
    record = store.apply_plan(again, actor="bulk", revision=REV1, now=T0)
    assert (record.updated, record.unchanged) == (1, 9_999)
    assert store.get_task("task-00005").generation == 2  # type: ignore[union-attr]

    # delete all (forced), then resurrect all: generation old + 1 in bulk
    gone = plan_for(store, allow_empty=True, force=True)
    assert store.apply_plan(gone, actor="bulk", revision=None, now=T0).deleted == 10_000
    back = plan_for(store, *defs)
    assert store.apply_plan(back, actor="bulk", revision=None, now=T0).created == 10_000
    generations = {t.name: t.generation for t in store.load_tasks()}
    assert generations["task-00005"] == 3 and generations["task-00006"] == 2
    store.close()


def test_runs_table_uses_autoincrementing_ids(store: SQLStore) -> None:
    ids = [store.insert_run(new_run(attempt=n)).id for n in range(1, 4)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert runs.c.id.autoincrement is True


def test_run_params_round_trip(store: SQLStore) -> None:
    """A run's parameter values (migration 0007) keep their JSON types on every backend,
    through every read (get, list, latest) and every later write to the row."""
    values = {"region": "eu-west", "dryRun": False, "count": 3, "ratio": 0.25,
              "label": "café ✓", "token": "***"}
    pending = store.insert_run(new_run(status=RunStatus.PENDING, trigger=Trigger.MANUAL,
                                       params=values))
    assert pending.params == values
    (batched, duplicate) = store.insert_runs([
        new_run("b", params={"n": 1}), new_run("a", status=RunStatus.PENDING)])
    assert duplicate is None and batched is not None and batched.params == {"n": 1}
    plain = store.insert_run(new_run("c"))
    assert store.claim_pending_run(pending.id, replica="r1", fencing_token=None,
                                   started_at=T0)
    store.update_run(pending.id, status=RunStatus.SUCCEEDED, finished_at=T0, exit_code=0)
    got = store.get_run(pending.id)
    assert got is not None and got.params == values and got.status is RunStatus.SUCCEEDED
    assert type(got.params["dryRun"]) is bool and type(got.params["count"]) is int
    assert store.list_runs("a")[0].params == values
    latest = store.latest_runs(["a", "b", "c"])
    assert latest["a"].params == values and latest["b"].params == {"n": 1}
    assert latest["c"].params is None and store.get_run(plain.id).params is None  # type: ignore[union-attr]

"""Apply re-checks the plan's safety rules, and records exactly what it wrote.

``plan`` decides what is refused (tests/unit/test_plan.py); these tests hold the two
places that write a plan to that decision: ``reconciler.service.reconcile.apply`` /
``reconcile`` and ``SQLStore.apply_plan`` itself, on a real SQLite file. A refused plan
must write nothing at all: no task row, no ``applies`` audit row.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.clock import FakeClock
from reconciler.core.errors import PlanRefusedError, StoreError
from reconciler.core.model import DesiredState, ManifestError, TaskDef
from reconciler.core.plan import Plan, SafetyOptions, plan
from reconciler.core.runtime import ActualTask, GitRevision, SuspendOverride
from reconciler.service.reconcile import apply, make_plan, reconcile
from reconciler.store import SQLStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def doc(name: str, schedule: str = "*/5 * * * *") -> dict[str, Any]:
    return {
        "apiVersion": "reconciler/v1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"schedule": schedule, "run": {"command": ["true"]}},
    }


def task(name: str, file: str = "a.yaml", schedule: str = "*/5 * * * *") -> TaskDef:
    return TaskDef.from_document(doc(name, schedule), file)


def manifest(directory: Path, *names: str) -> None:
    directory.mkdir(exist_ok=True)
    for old in directory.glob("*.yaml"):
        old.unlink()
    for name in names:
        (directory / f"{name}.yaml").write_text(
            f"apiVersion: reconciler/v1\nkind: Task\nmetadata: {{name: {name}}}\n"
            "spec: {schedule: '*/5 * * * *', run: {command: ['true']}}\n"
        )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLStore]:
    s = SQLStore(f"sqlite:///{tmp_path / 'state.db'}")
    s.upgrade()
    yield s
    s.engine.dispose()


def snapshot(store: SQLStore) -> list[tuple[str, str, int, str]]:
    return [(t.name, t.hash, t.generation, t.source_file) for t in store.load_tasks()]


def seed(store: SQLStore, count: int) -> None:
    p = plan(DesiredState(tasks=tuple(task(f"t{i:02}") for i in range(count))), [])
    store.apply_plan(p, actor="seed", revision=None, now=T0)


def refused_plan(store: SQLStore) -> Plan:
    """Deletes 11 of 12 tasks: more than the default --max-delete 10."""
    p = plan(DesiredState(tasks=(task("t00"),)), store.load_tasks())
    assert p.refused and len(p.deletes) == 11
    return p


def test_the_store_refuses_a_refused_plan_and_writes_nothing(store: SQLStore) -> None:
    seed(store, 12)
    before, applies = snapshot(store), store.list_applies()
    with pytest.raises(PlanRefusedError) as info:
        store.apply_plan(refused_plan(store), actor="t", revision=None, now=T0)
    assert "more than --max-delete 10" in str(info.value)
    assert snapshot(store) == before
    assert store.list_applies() == applies


class RecordingStore:
    """Passes reads to the real store and records every ``apply_plan`` call."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store
        self.applied: list[Plan] = []

    def load_tasks(self) -> list[ActualTask]:
        return self.store.load_tasks()

    def apply_plan(self, p: Plan, **kw: Any) -> Any:
        self.applied.append(p)
        return self.store.apply_plan(p, **kw)


def test_the_service_refuses_before_it_reaches_the_store(store: SQLStore) -> None:
    seed(store, 12)
    before = snapshot(store)
    p = refused_plan(store)
    recording = RecordingStore(store)
    with pytest.raises(PlanRefusedError) as info:
        apply(p, recording, actor="t", revision=None, clock=FakeClock(T0))  # type: ignore[arg-type]
    assert info.value.reasons == list(p.refusals)
    assert recording.applied == []
    assert snapshot(store) == before and len(store.list_applies()) == 1
    # A plan that no rule refuses goes through, stamped with the injected clock.
    ok = plan(DesiredState(tasks=tuple(task(f"t{i:02}") for i in range(13))), store.load_tasks())
    record = apply(ok, recording, actor="t", revision=None, clock=FakeClock(T0))  # type: ignore[arg-type]
    assert recording.applied == [ok] and record.created == 1 and record.applied_at == T0


def test_reconcile_applies_nothing_when_a_rule_refuses(store: SQLStore, tmp_path: Path) -> None:
    seed(store, 12)
    before = snapshot(store)
    manifests = tmp_path / "manifests"
    manifest(manifests, "t00")
    result = reconcile(manifests, store, actor="t", clock=FakeClock(T0))
    assert result.plan.refused and result.applied is None and result.revision is None
    assert snapshot(store) == before and len(store.list_applies()) == 1
    # --force lifts the rule: the same directory now deletes the 11 others.
    forced = reconcile(manifests, store, SafetyOptions(force=True), actor="t",
                       clock=FakeClock(T0))
    assert forced.applied is not None and forced.applied.deleted == 11
    assert [name for name, *_ in snapshot(store)] == ["t00"]


def test_reconcile_with_nothing_to_do_writes_no_audit_row(
    store: SQLStore, tmp_path: Path
) -> None:
    manifests = tmp_path / "manifests"
    manifest(manifests, "a", "b")
    first = reconcile(manifests, store, actor="alice", clock=FakeClock(T0))
    assert first.applied is not None and first.applied.created == 2
    assert first.applied.actor == "alice" and first.applied.applied_at == T0
    again = reconcile(manifests, store, actor="alice", clock=FakeClock(T0))
    assert not again.plan.has_changes and again.applied is None
    assert len(store.list_applies()) == 1


def test_the_audit_row_counts_and_names_every_action(store: SQLStore) -> None:
    at = datetime(2026, 2, 1, tzinfo=UTC)
    p = plan(DesiredState(tasks=(task("upd"), task("same"), task("held"), task("gone"),
                                 task("odd", "c.yaml"))), [])
    store.apply_plan(p, actor="seed", revision=None, now=T0)
    store.set_override("same", SuspendOverride(True, "maintenance", "bob", at))
    err = ManifestError("c.yaml", "boom")
    desired = DesiredState(
        tasks=(task("new"), task("upd", schedule="0 * * * *"), task("same"), task("held")),
        errors=(err,),
        failed_files=frozenset({"c.yaml"}),
    )
    p = plan(desired, store.load_tasks())
    record = store.apply_plan(p, actor="alice", revision=GitRevision("abc123", dirty=True),
                              now=T0)
    assert (record.created, record.updated, record.deleted, record.unchanged, record.kept) == (
        1, 1, 1, 2, 1,
    )
    assert (record.actor, record.revision, record.dirty) == ("alice", "abc123", True)
    assert store.list_applies(limit=1) == [record]
    assert store.apply_summary(record.id) == {
        "create": ["new"],
        "update": ["upd"],
        "delete": ["gone"],
        "keep": ["odd"],
        "unchanged": 2,
        "drift": ["same"],
        "errors": 1,
    }
    (row,) = [t for t in store.load_tasks() if t.name == "upd"]
    assert isinstance(row, ActualTask) and row.generation == 2


def git_repo(directory: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(directory), *args], check=True,
                              capture_output=True, text=True).stdout.strip()
    if not (directory / ".git").exists():
        git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "tasks")
    return git("rev-parse", "HEAD")


def test_the_git_revision_reaches_the_rows_and_the_audit_row(
    store: SQLStore, tmp_path: Path
) -> None:
    manifests = tmp_path / "manifests"
    manifest(manifests, "a")
    sha = git_repo(manifests)
    result = reconcile(manifests, store, actor="t", clock=FakeClock(T0))
    assert result.revision == GitRevision(sha, dirty=False)
    assert [t.name for t in result.desired.tasks] == ["a"]
    assert result.applied is not None and result.applied.revision == sha
    assert [t.source_revision for t in store.load_tasks()] == [sha]
    manifest(manifests, "a", "b")  # b is not committed: the tree is dirty
    again = reconcile(manifests, store, actor="t", clock=FakeClock(T0))
    assert again.revision == GitRevision(sha, dirty=True)
    assert again.applied is not None and again.applied.dirty
    # An update records the revision it came from too.
    (manifests / "a.yaml").write_text((manifests / "a.yaml").read_text().replace("*/5", "*/7"))
    sha2 = git_repo(manifests)
    reconcile(manifests, store, actor="t", clock=FakeClock(T0))
    assert {t.name: t.source_revision for t in store.load_tasks()} == {"a": sha2, "b": sha}


def test_a_stale_plan_is_refused_by_name(store: SQLStore, tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifest(manifests, "a")
    reconcile(manifests, store, actor="t", clock=FakeClock(T0))
    # The caller's snapshot (`actual`) is empty: the plan creates `a`, which exists.
    _, stale = make_plan(manifests, store, actual=[])
    assert [c.name for c in stale.creates] == ["a"]
    with pytest.raises(StoreError, match=r"^task a changed since the plan was made; plan again$"):
        reconcile(manifests, store, actor="t", clock=FakeClock(T0), actual=[])


def test_the_audit_row_is_stamped_in_utc_and_clean_without_a_revision(store: SQLStore) -> None:
    plus2 = timezone(timedelta(hours=2))
    p = plan(DesiredState(tasks=(task("a"),)), [])
    record = store.apply_plan(p, actor="t", revision=None,
                              now=datetime(2026, 3, 1, 14, 0, tzinfo=plus2))
    assert record.applied_at == T0 and record.applied_at.tzinfo is UTC
    assert record.revision is None and record.dirty is False

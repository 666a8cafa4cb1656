"""The plan and its GitOps safety rules, one test per rule."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from reconciler.core.model import DesiredState, ManifestError, TaskDef
from reconciler.core.plan import UNSET, Action, SafetyOptions, plan
from reconciler.core.plan_document import plan_document
from reconciler.core.runtime import ActualTask, SuspendOverride


def doc(name: str, schedule: str = "*/5 * * * *", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "reconciler/v1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"schedule": schedule, "run": {"command": ["true"]}, **spec},
    }


def want(name: str, file: str = "a.yaml", **kw: Any) -> TaskDef:
    return TaskDef.from_document(doc(name, **kw), file)


def have(name: str, file: str = "a.yaml", generation: int = 1, **kw: Any) -> ActualTask:
    t = want(name, file, **kw)
    return ActualTask(t.name, t.document, t.hash, generation, file)


def actions(p: Any) -> dict[str, Action]:
    return {c.name: c.action for c in p.changes}


def test_create_update_delete_unchanged() -> None:
    desired = DesiredState(tasks=(want("new"), want("same"), want("changed", schedule="0 * * * *")))
    actual = [have("same"), have("changed"), have("gone")]
    p = plan(desired, actual)
    assert actions(p) == {
        "new": Action.CREATE,
        "same": Action.UNCHANGED,
        "changed": Action.UPDATE,
        "gone": Action.DELETE,
    }
    (upd,) = p.updates
    assert [(f.path, f.old, f.new) for f in upd.changes] == [
        ("spec.schedule", "*/5 * * * *", "0 * * * *")
    ]
    assert upd.spec_changed
    assert p.has_changes and not p.refused


def test_equivalent_spellings_are_not_changes() -> None:
    # 90s and 1m30s are the same duration; an explicit default is not a change.
    a = TaskDef.from_document(doc("t", timeout="90s", suspend=False), "a.yaml")
    b = have("t", timeout="1m30s")
    p = plan(DesiredState(tasks=(a,)), [b])
    assert actions(p) == {"t": Action.UNCHANGED}
    assert not p.has_changes


def test_field_paths_show_defaults_as_effective_values() -> None:
    p = plan(DesiredState(tasks=(want("t", timeout="5m"),)), [have("t")])
    (upd,) = p.updates
    assert [(f.path, f.old, f.new) for f in upd.changes] == [("spec.timeout", None, "5m")]


def test_moving_a_task_to_another_file_is_an_update_without_spec_change() -> None:
    p = plan(DesiredState(tasks=(want("t", "b.yaml"),)), [have("t", "a.yaml")])
    (upd,) = p.updates
    assert [(f.path, f.old, f.new) for f in upd.changes] == [("source.file", "a.yaml", "b.yaml")]
    assert not upd.spec_changed


def test_tasks_of_a_file_that_fails_to_load_are_kept() -> None:
    err = ManifestError("a.yaml", "mapping values are not allowed here", 3, 7)
    desired = DesiredState(tasks=(), errors=(err,), failed_files=frozenset({"a.yaml"}))
    p = plan(desired, [have("t1"), have("t2"), have("other", "b.yaml")])
    # b.yaml is absent from the desired state and loaded fine: its task is deleted.
    assert actions(p) == {"t1": Action.KEEP, "t2": Action.KEEP, "other": Action.DELETE}
    assert "a.yaml failed to load" in (p.kept[0].reason or "")
    assert p.errors == (err,)


def test_a_changed_task_in_a_failing_file_is_not_updated() -> None:
    desired = DesiredState(
        tasks=(want("t", schedule="0 0 * * *"),),
        errors=(ManifestError("a.yaml", "boom"),),
        failed_files=frozenset({"a.yaml"}),
    )
    assert actions(plan(desired, [have("t")])) == {"t": Action.KEEP}


def test_duplicate_names_freeze_both_definitions() -> None:
    desired = DesiredState(
        tasks=(want("dup", "a.yaml"), want("dup", "b.yaml", schedule="1 * * * *")),
        errors=(ManifestError("b.yaml", "duplicate name dup, first in a.yaml:4"),),
        frozen_names=frozenset({"dup"}),
    )
    assert actions(plan(desired, [have("dup")])) == {"dup": Action.KEEP}
    # Not created either when it does not exist yet.
    assert actions(plan(desired, [])) == {}


@pytest.mark.parametrize("missing", [False, True])
def test_empty_or_missing_directory_never_deletes_everything(missing: bool) -> None:
    desired = DesiredState(tasks=(), directory_missing=missing)
    p = plan(desired, [have("a"), have("b")])
    assert actions(p) == {"a": Action.KEEP, "b": Action.KEEP}
    assert not p.has_changes
    assert "--allow-empty" in (p.kept[0].reason or "")
    p = plan(desired, [have("a"), have("b")], SafetyOptions(allow_empty=True))
    assert actions(p) == {"a": Action.DELETE, "b": Action.DELETE}


def test_max_delete_refuses_unless_forced() -> None:
    actual = [have(f"t{i}") for i in range(12)]
    desired = DesiredState(tasks=(want("t0"),))
    p = plan(desired, actual)
    assert p.refused and "more than --max-delete 10" in p.refusals[0]
    assert not plan(desired, actual, SafetyOptions(force=True)).refused
    assert not plan(desired, actual, SafetyOptions(max_delete=11)).refused
    assert plan(desired, actual[:11]).refused is False  # exactly 10 deletes is allowed


def test_strict_refuses_any_error() -> None:
    desired = DesiredState(
        tasks=(want("ok", "b.yaml"),),
        errors=(ManifestError("a.yaml", "boom"),),
        failed_files=frozenset({"a.yaml"}),
    )
    assert not plan(desired, []).refused
    p = plan(desired, [], SafetyOptions(strict=True))
    assert p.refused and "--strict" in p.refusals[0]


def test_runtime_override_is_drift_not_undone() -> None:
    at = datetime(2026, 1, 2, tzinfo=UTC)
    actual = have("t")
    actual = ActualTask(
        actual.name, actual.document, actual.hash, 1, "a.yaml",
        override=SuspendOverride(True, "db migration", "alice", at),
    )
    p = plan(DesiredState(tasks=(want("t"),)), [actual])
    assert actions(p) == {"t": Action.UNCHANGED}
    (d,) = p.drift
    assert d.name == "t" and "suspended at run time by alice: db migration" in d.message
    # When git also says suspend: true, the override agrees with git: no drift.
    p = plan(DesiredState(tasks=(want("t", suspend=True),)), [actual])
    assert p.drift == ()


def test_plan_is_deterministic_and_sorted() -> None:
    desired = DesiredState(tasks=tuple(want(n) for n in ["c", "a", "b"]))
    p = plan(desired, [])
    assert [c.name for c in p.changes] == ["a", "b", "c"]
    assert p == plan(desired, [])


def test_plan_document_matches_counts() -> None:
    desired = DesiredState(
        tasks=(want("new"), want("upd", schedule="0 1 * * *"), want("same")),
        errors=(ManifestError("x.yaml", "bad", 1, 1, "x", "spec"),),
        failed_files=frozenset({"x.yaml"}),
    )
    p = plan(desired, [have("upd"), have("same"), have("del", "z.yaml"), have("x", "x.yaml")])
    d = plan_document(p)
    assert d.summary.model_dump() == {
        "create": 1, "update": 1, "delete": 1, "unchanged": 1, "keep": 1, "errors": 1,
    }
    assert {c.name: c.action for c in d.changes} == {
        "new": "create", "upd": "update", "del": "delete", "x": "keep",
    }
    assert d.errors[0].file == "x.yaml"
    assert UNSET is None


@pytest.mark.parametrize(
    ("failed", "inside", "outside"),
    [("team", "team/a.yaml", "teamwork.yaml"),
     ("team/sub", "team/sub/deep/a.yaml", "team/other.yaml")],
)
def test_tasks_under_a_failed_directory_are_kept(failed: str, inside: str, outside: str) -> None:
    desired = DesiredState(
        tasks=(),
        errors=(ManifestError(failed, "cannot list directory: permission denied"),),
        failed_files=frozenset({failed}),
    )
    p = plan(desired, [have("a", inside), have("b", outside)])
    assert actions(p) == {"a": Action.KEEP, "b": Action.DELETE}

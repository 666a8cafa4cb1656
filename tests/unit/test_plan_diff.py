"""What ``diff`` shows: field changes, the exact reasons, and drift.

tests/unit/test_plan.py has one test per safety rule; these pin the details that a
person reads in ``reconciler diff`` (field paths, old and new values, added and removed
keys, defaults shown as their effective value, a stored row the model no longer
accepts), the exact reasons a refusal or a kept task gives, and drift.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from test_plan import actions, doc, have, want

from reconciler.core.model import DesiredState, TaskDef
from reconciler.core.plan import UNSET, Action, SafetyOptions, TaskChange, plan
from reconciler.core.runtime import ActualTask, SuspendOverride


def fields(p: Any) -> list[tuple[str, Any, Any]]:
    (upd,) = p.updates
    return [(f.path, f.old, f.new) for f in upd.changes]


def labelled(name: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    d = doc(name, **spec)
    d["metadata"]["labels"] = labels
    return d


def test_added_and_removed_keys_are_shown_with_unset_on_the_missing_side() -> None:
    old = labelled("t", {"team": "ops", "tier": "1"})
    new = labelled("t", {"tier": "2", "zone": "eu"})
    stored = TaskDef.from_document(old, "a.yaml")
    actual = ActualTask("t", stored.document, stored.hash, 1, "a.yaml")
    p = plan(DesiredState(tasks=(TaskDef.from_document(new, "a.yaml"),)), [actual])
    assert fields(p) == [
        ("metadata.labels.team", "ops", UNSET),
        ("metadata.labels.tier", "1", "2"),
        ("metadata.labels.zone", UNSET, "eu"),
    ]


def test_a_default_is_shown_as_its_effective_value() -> None:
    # The stored row has no `suspend`; its effective value is false, not "absent".
    assert fields(plan(DesiredState(tasks=(want("t", suspend=True),)), [have("t")])) == [
        ("spec.suspend", False, True)
    ]


def test_a_value_that_becomes_a_mapping_is_one_change() -> None:
    http = {"url": "https://example.com/hook"}
    p = plan(DesiredState(tasks=(want("t", run={"http": http}),)), [have("t")])
    changes = fields(p)
    assert ("spec.run.command", ["true"], None) in changes
    (target,) = [c for c in changes if c[0] == "spec.run.http"]
    assert target[1] is None and target[2]["url"] == http["url"]


def test_a_stored_row_the_model_no_longer_accepts_is_diffed_as_stored() -> None:
    legacy = doc("t")
    legacy["spec"]["legacyField"] = 1  # unknown to the model: validation fails
    actual = ActualTask("t", legacy, "old-hash", 1, "a.yaml")
    changes = fields(plan(DesiredState(tasks=(want("t"),)), [actual]))
    assert ("spec.legacyField", 1, UNSET) in changes
    # Stored as is: no defaults were filled in on the old side.
    assert ("spec.suspend", UNSET, False) in changes


def test_a_drifted_task_that_git_deletes_is_deleted_and_its_drift_reported() -> None:
    at = datetime(2026, 1, 2, tzinfo=UTC)
    base = have("gone")
    actual = ActualTask(base.name, base.document, base.hash, 1, "a.yaml",
                        override=SuspendOverride(True, None, "alice", at))
    p = plan(DesiredState(tasks=(want("kept"),)), [actual])
    assert actions(p) == {"gone": Action.DELETE, "kept": Action.CREATE}
    (d,) = p.drift
    assert d.name == "gone" and d.message == "suspended at run time by alice"


def test_the_reasons_a_person_reads_are_exact() -> None:
    missing = plan(DesiredState(tasks=(), directory_missing=True), [have("a")],
                   SafetyOptions(strict=True))
    assert missing.refusals == (
        "manifests directory is missing; refusing to delete every task (use --allow-empty)",
        "0 manifest error(s) and --strict is set; nothing is applied",
    )
    empty = plan(DesiredState(tasks=()), [have("a")])
    assert empty.kept[0].reason == (
        "manifests directory has no tasks; refusing to delete every task (use --allow-empty)"
    )
    many = plan(DesiredState(tasks=(want("x"),)), [have(f"t{i}") for i in range(11)])
    assert many.refusals == (
        "plan deletes 11 tasks, more than --max-delete 10; use --force to apply it",
    )
    dup = DesiredState(tasks=(want("d"), want("d", "b.yaml")), frozen_names=frozenset({"d"}))
    assert plan(dup, [have("d")]).kept[0].reason == (
        "name declared more than once; fix the duplicate to apply changes"
    )


def test_a_task_moving_into_a_failing_file_is_kept() -> None:
    desired = DesiredState(tasks=(want("t", "b.yaml"),), failed_files=frozenset({"b.yaml"}))
    row = have("t", "a.yaml")
    (kept,) = plan(desired, [row]).changes
    assert kept == TaskChange("t", Action.KEEP, desired.tasks[0], row,
                              reason="source file b.yaml has errors")


def test_kept_and_unchanged_changes_carry_both_sides() -> None:
    a, b = want("a"), want("b")
    rows = [have("a"), have("b"), have("c")]
    desired = DesiredState(tasks=(a, b), frozen_names=frozenset({"a"}))
    assert plan(desired, rows, SafetyOptions(allow_empty=True)).changes == (
        TaskChange("a", Action.KEEP, None, rows[0],
                   reason="name declared more than once; fix the duplicate to apply changes"),
        TaskChange("b", Action.UNCHANGED, b, rows[1]),
        TaskChange("c", Action.DELETE, actual=rows[2]),
    )
    failed = DesiredState(tasks=(), failed_files=frozenset({"x.yaml"}))
    empty = plan(DesiredState(tasks=()), rows[:1])
    assert empty.changes[0].actual == rows[0]
    kept = plan(failed, [have("k", "x.yaml")]).changes[0]
    assert kept.desired is None and kept.actual is not None


def test_an_override_that_resumes_against_git_is_drift() -> None:
    at = datetime(2026, 1, 2, tzinfo=UTC)
    base = have("t", suspend=True)
    actual = ActualTask(base.name, base.document, base.hash, 1, "a.yaml",
                        override=SuspendOverride(False, None, None, at))
    (d,) = plan(DesiredState(tasks=(want("t", suspend=True),)), [actual]).drift
    assert d.message == "resumed at run time" and d.override is actual.override

"""``reconciler diff -o json``: every field of the plan document, for every kind of entry.

tests/unit/test_plan.py checks the document's counts; this pins the whole document of a
plan that has an update with a masked secret, a kept task with its reason, a deletion
and a drifted task, so a field that goes missing or swaps its value shows up here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from test_plan import have, want

from reconciler.core.model import DesiredState
from reconciler.core.plan import plan
from reconciler.core.plan_document import plan_document
from reconciler.core.redaction import MASK
from reconciler.core.runtime import ActualTask, SuspendOverride

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_every_field_of_the_plan_document() -> None:
    env = {"env": {"DB_PASSWORD": "new-secret", "MODE": "fast"}}
    old = have("upd", run={"command": ["true"], "env": {"DB_PASSWORD": "old", "MODE": "fast"}})
    drifted = have("drift", timeZone="Europe/Paris")
    drifted = ActualTask(drifted.name, drifted.document, drifted.hash, 1, "a.yaml",
                         override=SuspendOverride(True, "db migration", "alice", AT))
    quiet = have("drift2", timeZone="Europe/Paris")
    quiet = ActualTask(quiet.name, quiet.document, quiet.hash, 1, "a.yaml",
                       override=SuspendOverride(True, None, None, None))
    desired = DesiredState(tasks=(
        want("upd", "b.yaml", run={"command": ["true"], **env}),
        want("drift", timeZone="Europe/Paris"),
        want("drift2", timeZone="Europe/Paris"),
    ))
    p = plan(desired, [old, drifted, quiet, have("gone", "z.yaml", schedule="@daily")])
    doc = plan_document(p).model_dump(mode="json")
    assert doc["changes"] == [
        {
            "name": "gone", "action": "delete", "sourceFile": "z.yaml", "schedule": "@daily",
            "timeZone": "UTC", "reason": None, "fields": [], "slots": None,
        },
        {
            "name": "upd", "action": "update", "sourceFile": "b.yaml",
            "schedule": "*/5 * * * *", "timeZone": "UTC", "reason": None,
            "fields": [
                {"path": "spec.run.env.DB_PASSWORD", "old": MASK, "new": MASK, "masked": True},
                {"path": "source.file", "old": "a.yaml", "new": "b.yaml", "masked": False},
            ],
            "slots": None,
        },
    ]
    assert doc["load"] is None  # apply's plan: the load is diff's
    assert doc["drift"] == [
        {
            "name": "drift", "message": "suspended at run time by alice: db migration",
            "suspended": True, "note": "db migration", "actor": "alice",
            "at": "2026-01-02T03:04:05+00:00",
        },
        {
            "name": "drift2", "message": "suspended at run time", "suspended": True,
            "note": None, "actor": None, "at": None,
        },
    ]


def test_a_kept_task_carries_its_reason() -> None:
    p = plan(DesiredState(tasks=()), [have("a")])
    (change,) = plan_document(p).model_dump(mode="json")["changes"]
    assert change["action"] == "keep"
    assert change["reason"] == p.kept[0].reason and "--allow-empty" in change["reason"]

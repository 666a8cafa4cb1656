"""The calendar table (``kind: Calendar``) through ``apply_plan`` and ``load_calendars``,
on memory, SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.core.calendars import CalendarManifest, calendar_def
from reconciler.core.errors import PlanRefusedError, StoreError
from reconciler.core.model import DesiredState, NamedDef, TaskDef
from reconciler.core.plan import Action, plan
from reconciler.core.protocols import Store
from reconciler.core.runtime import ActualCalendar, GitRevision

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REV = GitRevision("d" * 40)


def calendar(name: str, *exclude: Any) -> NamedDef:
    manifest = CalendarManifest.model_validate({
        "apiVersion": "reconciler/v1", "kind": "Calendar", "metadata": {"name": name},
        "spec": {"timeZone": "Europe/Berlin", "exclude": list(exclude) or ["12-25"]},
    })
    return calendar_def(manifest, f"calendars/{name}.yaml")


def task(name: str, *calendars: str) -> TaskDef:
    return TaskDef.from_document({
        "apiVersion": "reconciler/v1", "kind": "Task", "metadata": {"name": name},
        "spec": {"schedule": "@daily", "run": {"shell": "true"}, "calendars": list(calendars)},
    }, f"tasks/{name}.yaml")


def apply(store: Store, tasks: tuple[TaskDef, ...], calendars: tuple[NamedDef, ...],
          now: datetime = T0) -> None:
    p = plan(DesiredState(tasks=tasks, calendars=calendars), store.load_tasks(),
             calendars=store.load_calendars())
    store.apply_plan(p, actor="test", revision=REV, now=now)


def test_calendars_are_created_updated_and_deleted_with_the_plan(store: Store) -> None:
    apply(store, (task("a", "holidays"),), (calendar("holidays"), calendar("weekends")))
    rows = store.load_calendars()
    assert [c.name for c in rows] == ["holidays", "weekends"]
    assert all(isinstance(c, ActualCalendar) for c in rows)
    assert store.load_channels() == []  # a calendar is not a channel
    holidays = rows[0]
    assert holidays.generation == 1 and holidays.source_revision == REV.sha
    assert holidays.document["spec"]["exclude"] == ["12-25"]
    assert holidays.hash == calendar("holidays").hash

    later = T0 + timedelta(minutes=1)
    range_ = {"from": "2026-12-24", "to": "2026-12-26"}
    apply(store, (task("a", "holidays"),), (calendar("holidays", range_),), now=later)
    (holidays,) = store.load_calendars()
    assert holidays.generation == 2 and holidays.updated_at == later
    assert holidays.document["spec"]["exclude"] == [range_]
    summary = store.apply_summary(store.list_applies(1)[0].id)
    assert summary is not None and summary["calendars"] == {
        "create": [], "update": ["holidays"], "delete": ["weekends"]}


def test_deleting_a_calendar_a_task_still_uses_is_refused(store: Store) -> None:
    apply(store, (task("a", "holidays"), task("b", "holidays")), (calendar("holidays"),))
    desired = DesiredState(tasks=(), failed_files=frozenset({"tasks/a.yaml", "tasks/b.yaml"}))
    p = plan(desired, store.load_tasks(), calendars=store.load_calendars())
    assert [c.action for c in p.calendars] == [Action.DELETE]
    assert p.refusals == ('plan deletes calendar "holidays" but task(s) a, b still use it; '
                          "remove it from their spec.calendars first",)
    with pytest.raises(PlanRefusedError):
        store.apply_plan(p, actor="test", revision=REV, now=T0)
    assert [c.name for c in store.load_calendars()] == ["holidays"]


def test_a_calendar_changed_since_the_plan_is_a_conflict(store: Store) -> None:
    apply(store, (), (calendar("holidays"),))
    stale = plan(DesiredState(tasks=(), calendars=(calendar("holidays", "01-01"),)), [],
                 calendars=store.load_calendars())
    apply(store, (), (calendar("holidays", "05-01"),))
    with pytest.raises(StoreError, match="calendar"):
        store.apply_plan(stale, actor="test", revision=REV, now=T0)
    (holidays,) = store.load_calendars()
    assert holidays.document["spec"]["exclude"] == ["05-01"]
    apply(store, (), ())
    assert store.load_calendars() == []

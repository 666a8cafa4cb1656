"""The scheduler with calendars, driven by a fake clock (the harness of
test_scheduler.py): an excluded slot on a DST day neither runs nor is recorded, nor
caught up after downtime, and a changed calendar re-plans the tasks that use it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from test_scheduler import Harness, doc

from reconciler.core.calendars import CalendarManifest, calendar_def, calendars_of_rows
from reconciler.core.model import DesiredState, TaskDef
from reconciler.core.plan import plan


def U(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def apply(h: Harness, task: dict[str, Any], *exclude: Any, zone: str = "Europe/Berlin") -> None:
    """Apply the task and a calendar ``holidays``, and give the scheduler the table's
    calendars as the daemon does before a sync."""
    cal = calendar_def(CalendarManifest.model_validate({
        "apiVersion": "reconciler/v1", "kind": "Calendar", "metadata": {"name": "holidays"},
        "spec": {"timeZone": zone, "exclude": list(exclude)}}), "c.yaml")
    desired = DesiredState(tasks=(TaskDef.from_document(task, "t.yaml"),), calendars=(cal,))
    p = plan(desired, h.store.load_tasks(), calendars=h.store.load_calendars())
    h.store.apply_plan(p, actor="test", revision=None, now=h.clock.now())
    h.sched.calendars = calendars_of_rows(h.store.load_calendars())


TASK = doc("report", "30 2 * * *", timeZone="Europe/Berlin", calendars=["holidays"])


def test_the_excluded_dst_day_slot_does_not_run_and_is_not_recorded(tmp_path: Path) -> None:
    h = Harness(tmp_path, U(2026, 3, 28, 12))

    async def go() -> None:
        apply(h, TASK, "2026-03-29")  # Berlin's spring day: 02:30 would run at 03:00 CEST
        await h.sync()
        task = h.store.get_task("report")
        assert task is not None and task.next_fire_at == U(2026, 3, 30, 0, 30)
        await h.advance_to(U(2026, 3, 31, 12))
    asyncio.run(go())
    h.worker.close()
    assert [r.slot for r in h.runs("report")] == [U(2026, 3, 30, 0, 30), U(2026, 3, 31, 0, 30)]


def test_a_calendar_in_another_zone_reads_the_slot_there(tmp_path: Path) -> None:
    h = Harness(tmp_path, U(2026, 3, 28, 12))

    async def go() -> None:
        # 03:00 CEST on 03-29 is 21:00 EDT on 03-28 in New York
        apply(h, TASK, "2026-03-28", zone="America/New_York")
        await h.sync()
        await h.advance_to(U(2026, 3, 30, 12))
    asyncio.run(go())
    h.worker.close()
    assert [r.slot for r in h.runs("report")] == [U(2026, 3, 30, 0, 30)]


def test_an_excluded_slot_missed_while_down_is_not_caught_up(tmp_path: Path) -> None:
    h = Harness(tmp_path, U(2026, 3, 29, 12))

    async def go() -> None:
        apply(h, TASK, "2026-03-29")
        h.store.set_schedule_state({"report": {"last_slot_at": U(2026, 3, 28, 1, 30)}})
        await h.sync(recover=True)  # down over 03-29 03:00 CEST, which is excluded
    asyncio.run(go())
    h.worker.close()
    assert h.runs("report") == []


def test_a_changed_calendar_re_plans_the_tasks_that_use_it(tmp_path: Path) -> None:
    h = Harness(tmp_path, U(2026, 3, 28, 12))

    async def go() -> None:
        apply(h, TASK, "2026-12-25")
        await h.sync()
        task = h.store.get_task("report")
        assert task is not None and task.next_fire_at == U(2026, 3, 29, 1)
        apply(h, TASK, "2026-03-29")  # the task's row is unchanged; its calendar is not
        await h.sync()
        task = h.store.get_task("report")
        assert task is not None and task.next_fire_at == U(2026, 3, 30, 0, 30)
        await h.advance_to(U(2026, 3, 30, 12))
    asyncio.run(go())
    h.worker.close()
    assert [r.slot for r in h.runs("report")] == [U(2026, 3, 30, 0, 30)]

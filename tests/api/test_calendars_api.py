"""The daemon with calendars (FakeClock, SQLite): it reads the table's calendars when it
builds a task's slots, a changed calendar re-plans the tasks that use it, and the
API's next fire times leave excluded slots out."""

from __future__ import annotations

from pathlib import Path

from reconciler.core.runtime import RunStatus
from tests.api.conftest import AUTH, harness, run

CALENDAR = """\
apiVersion: reconciler/v1
kind: Calendar
metadata: {name: holidays}
spec:
  timeZone: Europe/Berlin
  exclude: [%s]
"""
TASK = """\
apiVersion: reconciler/v1
kind: Task
metadata: {name: noon}
spec:
  schedule: "0 13 * * *"
  timeZone: Europe/Berlin
  calendars: [holidays]
  run: {command: ["true"]}
"""


def test_a_calendar_change_re_plans_its_tasks_and_the_api_shows_it(tmp_path: Path) -> None:
    # the clock starts at 2026-03-02 11:59:58 UTC (a Monday), 2 s before 13:00 CET
    manifests = {"c.yaml": CALENDAR % "2026-03-03", "t.yaml": TASK}

    async def scenario() -> None:
        async with harness(tmp_path, manifests=manifests) as h:
            async def fire_times() -> list[str]:
                doc = (await h.client.get("/api/v1/tasks/noon", headers=AUTH)).json()
                return [t["at"] for t in doc["nextFireTimes"][:3]]

            assert await fire_times() == ["2026-03-02T12:00:00+00:00",
                                          "2026-03-04T12:00:00+00:00",
                                          "2026-03-05T12:00:00+00:00"]
            (h.manifests / "c.yaml").write_text(CALENDAR % "2026-03-02, 2026-03-04")
            result = await h.daemon.reconcile_once()
            assert result is not None and [c.name for c in result.plan.calendars] == [
                "holidays"]
            assert await fire_times() == ["2026-03-03T12:00:00+00:00",
                                          "2026-03-05T12:00:00+00:00",
                                          "2026-03-06T12:00:00+00:00"]
            await h.advance(5)  # past 13:00 CET today: excluded, nothing runs
            await h.settle()
            assert await h.daemon.worker.bulk(h.store.list_runs, "noon") == []
            await h.advance(86_400)
            await h.settle()
            (ran,) = await h.daemon.worker.bulk(h.store.list_runs, "noon")
            assert ran.status is RunStatus.SUCCEEDED and ran.slot.isoformat() == \
                "2026-03-03T12:00:00+00:00"

    run(scenario)

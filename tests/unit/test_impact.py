"""What a plan does to the timeline (``reconciler.core.impact``): slots added and removed
per changed schedule, and the load (most starts in one minute) before and after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from test_plan import have, want

from reconciler.cli.output import load_line, render_plan
from reconciler.core.impact import LoadPeak, plan_impact
from reconciler.core.model import DesiredState
from reconciler.core.plan import plan
from reconciler.core.plan_document import plan_document
from reconciler.core.runtime import ActualTask, SuspendOverride
from reconciler.core.schedule import normalize

NOW = datetime(2026, 6, 3, 9, 30, 12, tzinfo=UTC)  # a Wednesday
SUNDAY_2AM = datetime(2026, 6, 7, 2, 0, tzinfo=UTC)


def test_the_issue_example_a_herd_on_sunday_night() -> None:
    actual = [have(f"t{i:03d}", schedule="H H * * *") for i in range(240)]
    actual += [have(f"weekly-{i}", schedule="0 2 * * 0") for i in range(12)]
    desired = DesiredState(tasks=tuple(
        [want(f"t{i:03d}", schedule="0 2 * * 0") for i in range(240)]
        + [want(f"weekly-{i}", schedule="0 2 * * 0") for i in range(12)]))
    impact = plan_impact(plan(desired, actual), NOW)
    assert impact.after == LoadPeak(252, SUNDAY_2AM)
    # before: H spreads the 240 over the day; the 12 weekly ones share Sunday 02:00
    at_two = sum(normalize("H H * * *", f"t{i:03d}") == "0 2 * * *" for i in range(240))
    assert impact.before == LoadPeak(12 + at_two, SUNDAY_2AM)
    assert load_line(impact, 16) == (
        f"Load: peak 252 starts at Sun 02:00 UTC (was {impact.before.starts}); "
        "--max-concurrent-runs is 16")
    # each moved task: 30 daily slots out, 4 or 5 Sunday slots in
    delta = impact.deltas["t000"]
    assert delta.removed == 30 and delta.added in (4, 5)
    assert "weekly-0" not in impact.deltas  # unchanged


def test_what_counts_before_and_after() -> None:
    override = SuspendOverride(True, "paused", "alice", NOW)
    paused = have("paused", schedule="0 2 * * 0")
    paused = ActualTask(paused.name, paused.document, paused.hash, 1, "a.yaml",
                        override=override)
    actual = [have("gone", schedule="0 2 * * 0"), have("stays", schedule="0 2 * * 0"),
              paused, have("suspending", schedule="0 2 * * 0")]
    desired = DesiredState(tasks=(
        want("stays", schedule="0 2 * * 0"),
        want("new", schedule="0 2 * * 0"), want("new-suspended", schedule="0 2 * * 0",
                                                 suspend=True),
        want("paused", schedule="0 2 * * 0", timeout="5m"),  # the override stays: not counted
        want("suspending", schedule="0 2 * * 0", suspend=True),
    ))
    impact = plan_impact(plan(desired, actual), NOW)
    assert impact.before == LoadPeak(3, SUNDAY_2AM)  # gone, stays, suspending
    assert impact.after == LoadPeak(2, SUNDAY_2AM)  # stays, new
    assert impact.deltas == {}  # no update changed when a task runs


def test_jitter_and_a_window_change_the_load() -> None:
    actual = [have(f"j{i}", schedule="0 2 * * 0") for i in range(50)]
    desired = DesiredState(tasks=tuple(
        want(f"j{i}", schedule="0 2 * * 0", jitter="1h") for i in range(50)))
    impact = plan_impact(plan(desired, actual), NOW)
    assert impact.before == LoadPeak(50, SUNDAY_2AM)
    assert impact.after.starts <= 5  # spread over the hour after 02:00
    assert impact.deltas == {}  # jitter moves starts, not slots
    window = DesiredState(tasks=tuple(
        want(f"j{i}", schedule="0 2 * * 0", activeFrom="2026-06-08") for i in range(50)))
    impact = plan_impact(plan(window, actual), NOW)
    assert impact.after == LoadPeak(0, None)
    assert impact.deltas["j0"].removed == 1 and impact.deltas["j0"].added == 0  # 06-07 only


def test_text_and_json_carry_the_counts() -> None:
    p = plan(DesiredState(tasks=(want("a", schedule="0 * * * *"),)),
             [have("a", schedule="30 * * * *")])  # the window starts at 09:31
    impact = plan_impact(p, NOW)
    text = render_plan(p, impact, 8)
    assert "    slots in the next 30 days: +720 -720" in text
    assert text.splitlines()[-1] == (
        "Load: peak 1 starts at Wed 10:00 UTC (was 1); --max-concurrent-runs is 8")
    doc = plan_document(p, impact, 8).model_dump(mode="json")
    assert doc["changes"][0]["slots"] == {"added": 720, "removed": 720, "days": 30}
    assert doc["load"] == {
        "days": 7, "maxConcurrentRuns": 8,
        "before": {"starts": 1, "at": "2026-06-03T10:30:00+00:00", "text": "Wed 10:30 UTC"},
        "after": {"starts": 1, "at": "2026-06-03T10:00:00+00:00", "text": "Wed 10:00 UTC"}}
    empty = plan_impact(plan(DesiredState(tasks=()), []), NOW)
    assert load_line(empty, 16) == (
        "Load: no slot starts in the next 7 days (was 0); --max-concurrent-runs is 16")


def test_the_window_starts_at_the_next_whole_minute() -> None:
    p = plan(DesiredState(tasks=(want("m", schedule="* * * * *"),)), [])
    impact = plan_impact(p, NOW)
    assert impact.start == NOW.replace(second=0) + timedelta(minutes=1)
    assert impact.after == LoadPeak(1, impact.start)


def test_tasks_share_a_count_only_when_their_slots_are_the_same() -> None:
    same = [want(f"u{i}", schedule="0 2 * * 0") for i in range(3)]
    zoned = [want("berlin", schedule="0 2 * * 0", timeZone="Europe/Berlin"),
             want("until", schedule="0 2 * * 0", activeUntil="2026-06-06")]
    impact = plan_impact(plan(DesiredState(tasks=(*same, *zoned)), []), NOW)
    assert impact.after == LoadPeak(3, SUNDAY_2AM)  # Berlin's 02:00 is 00:00Z; "until" ended


def test_a_zone_or_window_change_counts_its_slots() -> None:
    moved = plan(DesiredState(tasks=(want("z", schedule="0 2 * * *", timeZone="Asia/Tokyo"),
                                     want("w", schedule="0 2 * * *", activeUntil="2026-06-10"),
                                     want("t", schedule="0 2 * * *", timeout="5m"))),
                 [have("z", schedule="0 2 * * *"), have("w", schedule="0 2 * * *"),
                  have("t", schedule="0 2 * * *")])
    deltas = plan_impact(moved, NOW).deltas
    assert deltas["z"].added == deltas["z"].removed == 30  # 02:00 JST is 17:00Z
    assert deltas["w"].added == 0 and deltas["w"].removed == 23  # 06-11 .. 07-03
    assert "t" not in deltas  # a timeout does not move a slot

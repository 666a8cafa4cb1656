"""``kind: Calendar`` and ``spec.calendars``: the exclusions on DST days (New York,
Berlin, Lord Howe) through the pure functions, validation with file/line/field, the
plan (a calendar still in use is not deleted), and the CLI (``validate``,
``next --show-excluded``, ``diff``). The scheduler's side is in
test_scheduler_calendars.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli import main as cli
from reconciler.core.calendars import Calendar, CalendarManifest
from reconciler.core.plan import Action, plan
from reconciler.core.schedule_set import ScheduleSet
from reconciler.core.scheduling import TaskPolicy, TaskSlots
from reconciler.manifests import load_directory, parse_file


def U(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def calendar(zone: str, *items: Any, name: str = "holidays") -> Calendar:
    return Calendar.of(CalendarManifest.model_validate({
        "apiVersion": "reconciler/v1", "kind": "Calendar", "metadata": {"name": name},
        "spec": {"timeZone": zone, "exclude": list(items)}}))


def candidates(expressions: list[str], zone: str, rule: Calendar, start: datetime,
               end: datetime) -> list[tuple[str, str | None]]:
    slots = TaskSlots("t", ScheduleSet.parse(expressions, zone, "t"), exclusions=(rule,))
    out = []
    for slot, by in slots.candidates(start):
        if slot >= end:
            break
        out.append((slot.strftime("%m-%d %H:%M"), by))
    return out


# ------------------------------------------------------------------ golden DST days


def test_new_york_fall_a_sunday_window_removes_both_passes_of_the_repeated_hour() -> None:
    rule = calendar("America/New_York", {"days": ["Sun"], "from": "01:00", "to": "01:59"})
    assert candidates(["0,30 * * * *"], "America/New_York", rule, U(2026, 11, 1, 3, 59),
                      U(2026, 11, 1, 8)) == [
        ("11-01 04:00", None), ("11-01 04:30", None),           # 00:00, 00:30 EDT
        ("11-01 05:00", "holidays"), ("11-01 05:30", "holidays"),  # 01:00, 01:30 EDT
        ("11-01 06:00", "holidays"), ("11-01 06:30", "holidays"),  # 01:00, 01:30 EST
        ("11-01 07:00", None), ("11-01 07:30", None)]           # 02:00, 02:30 EST


def test_berlin_spring_slot_is_read_in_the_calendars_zone() -> None:
    # 02:30 Berlin does not exist on 03-29 and runs at 03:00 CEST (01:00Z), which is
    # still 03-28 (21:00 EDT) in New York: a New York calendar excluding 03-28 removes it
    rule = calendar("America/New_York", "2026-03-28")
    assert candidates(["30 2 * * *"], "Europe/Berlin", rule, U(2026, 3, 27, 12),
                      U(2026, 3, 31)) == [
        ("03-28 01:30", None),          # 02:30 CET, 03-27 21:30 EDT
        ("03-29 01:00", "holidays"),    # 03:00 CEST, 03-28 21:00 EDT
        ("03-30 00:30", None)]
    berlin = calendar("Europe/Berlin", "2026-03-29")
    slots = TaskSlots("t", ScheduleSet.parse(["30 2 * * *"], "Europe/Berlin", "t"),
                      exclusions=(berlin,))
    assert slots.next_after(U(2026, 3, 28, 12)) == U(2026, 3, 30, 0, 30)
    assert slots.previous_before(U(2026, 3, 30)) == U(2026, 3, 28, 1, 30)
    assert slots.slot_seconds(U(2026, 3, 28), U(2026, 3, 31)) == [
        int(U(2026, 3, 28, 1, 30).timestamp()), int(U(2026, 3, 30, 0, 30).timestamp())]


def test_lord_howe_end_of_summer_time_a_window_takes_one_slot_of_each_pass() -> None:
    # 2026-04-05 02:00 +11 becomes 01:30 +10:30: 01:30-01:59 happens twice
    rule = calendar("Australia/Lord_Howe", {"days": ["Sun"], "from": "01:30", "to": "01:44"})
    assert candidates(["*/15 * * * *"], "Australia/Lord_Howe", rule, U(2026, 4, 4, 14, 14),
                      U(2026, 4, 4, 15, 31)) == [
        ("04-04 14:15", None),
        ("04-04 14:30", "holidays"), ("04-04 14:45", None),   # 01:30, 01:45 +11
        ("04-04 15:00", "holidays"), ("04-04 15:15", None),   # 01:30, 01:45 +10:30
        ("04-04 15:30", None)]


def test_each_kind_of_item() -> None:
    rule = calendar("UTC", "2026-07-01", {"from": "2026-12-24", "to": "2026-12-26"},
                    "02-29", {"days": ["sat", "Sun"]},
                    {"days": ["Fri"], "from": "18:00", "to": "23:59"})
    assert rule.excludes(U(2026, 7, 1, 23, 59, 59)) and not rule.excludes(U(2026, 7, 2))
    assert rule.excludes(U(2026, 12, 24)) and rule.excludes(U(2026, 12, 26, 23))
    assert not rule.excludes(U(2026, 12, 23, 23, 59)) and not rule.excludes(U(2026, 12, 28))
    assert rule.excludes(U(2028, 2, 29, 12)) and not rule.excludes(U(2028, 3, 1, 12))
    assert rule.excludes(U(2026, 7, 4, 12)) and rule.excludes(U(2026, 7, 5, 0))  # Sat, Sun
    friday = U(2026, 7, 3)
    assert not rule.excludes(friday.replace(hour=17, minute=59))
    assert rule.excludes(friday.replace(hour=18)) and rule.excludes(
        friday.replace(hour=23, minute=59, second=30))  # "to" includes its whole minute


def test_a_policy_differs_when_its_calendar_changes() -> None:
    doc = {"apiVersion": "reconciler/v1", "kind": "Task", "metadata": {"name": "t"},
           "spec": {"schedule": "@daily", "calendars": ["holidays"],
                    "run": {"command": ["true"]}}}
    before = {"holidays": calendar("UTC", "2026-12-25")}
    after = {"holidays": calendar("UTC", "2026-12-26")}
    policy = TaskPolicy.from_document("t", 1, doc, False, before)
    assert policy.current(1, False, before)
    assert not policy.current(1, False, after) and not policy.current(1, False, {})
    assert policy.schedule.next_after(U(2026, 12, 24, 1)) == U(2026, 12, 26)


# ----------------------------------------------------------------------- validation

CALENDAR = """\
apiVersion: reconciler/v1
kind: Calendar
metadata:
  name: holidays
spec:
  timeZone: Europe/Berlin
  exclude:
"""
TASK = """\
apiVersion: reconciler/v1
kind: Task
metadata: {name: nightly}
spec:
  schedule: "30 2 * * *"
  timeZone: Europe/Berlin
  run: {command: ["true"]}
"""


def errors_of(text: str) -> list[str]:
    return [str(e) for e in parse_file(text.encode(), label="m.yaml").errors]


@pytest.mark.parametrize(("items", "expected"), [
    ("    - {from: 2026-12-26, to: 2026-12-24}\n",
     "m.yaml:8:30: holidays: spec.exclude[0].to: range ends (2026-12-24) before it starts"),
    ("    - {from: 2026-12-20, to: 2026-12-24}\n    - 2026-12-01\n"
     "    - {from: 2026-12-24, to: 2026-12-26}\n",
     "m.yaml:10:7: holidays: spec.exclude[2]: overlaps spec.exclude[0]"),
    ("    - {from: 2026-12-20, to: 2026-12-24}\n    - 2026-12-22\n",
     "m.yaml:9:7: holidays: spec.exclude[1]: overlaps spec.exclude[0]"),
    ("    - {days: [Sat, Funday]}\n",
     "m.yaml:8:20: holidays: spec.exclude[0].days[1]: unknown day 'Funday'"),
    ("    - {days: [Fri], from: \"18:00\", to: \"24:00\"}\n",
     "m.yaml:8:40: holidays: spec.exclude[0].to: expected a time of day HH:MM"),
    ("    - {days: [Fri], from: \"20:00\", to: \"06:00\"}\n",
     "m.yaml:8:40: holidays: spec.exclude[0].to: window ends (06:00) before it starts"),
    ("    - 13-01\n", "m.yaml:8:7: holidays: spec.exclude[0]: '13-01' is not a day of the year"),
    ("    - '2026-02-30'\n", "m.yaml:8:7: holidays: spec.exclude[0]: expected a date"),
    ("    - {days: [Sat, Sat]}\n", "m.yaml:8:14: holidays: spec.exclude[0].days: a day is "
                                   "listed twice"),
])
def test_a_bad_exclusion_names_file_line_and_field(items: str, expected: str) -> None:
    (error,) = errors_of(CALENDAR + items)
    assert error.startswith(expected), error


def test_an_unknown_calendar_fails_the_task_file(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CALENDAR + "    - 12-25\n")
    (tmp_path / "t.yaml").write_text(TASK + "  calendars: [holidays, holydays]\n")
    desired = load_directory(tmp_path)
    (error,) = desired.errors
    assert str(error).startswith(
        't.yaml:8:25: nightly: spec.calendars[1]: unknown calendar "holydays" (no kind: '
        "Calendar manifest declares it; declared: holidays)")
    assert desired.failed_files == {"t.yaml"} and desired.tasks == ()
    assert [c.name for c in desired.calendars] == ["holidays"]
    assert errors_of(TASK + "  calendars: [a, a]\n")[0].startswith(
        "m.yaml:8:14: nightly: spec.calendars: a calendar is named twice")


def test_the_plan_refuses_to_delete_a_calendar_in_use(tmp_path: Path) -> None:
    from reconciler.service import actual_from_desired, calendars_from_desired

    (tmp_path / "c.yaml").write_text(CALENDAR + "    - 12-25\n")
    (tmp_path / "t.yaml").write_text(TASK + "  calendars: [holidays]\n")
    (tmp_path / "u.yaml").write_text(TASK.replace("nightly", "weekly")
                                     + "  calendars: [holidays]\n")
    first = load_directory(tmp_path)
    tasks, calendars = list(actual_from_desired(first)), list(calendars_from_desired(first))
    (tmp_path / "c.yaml").unlink()
    p = plan(load_directory(tmp_path), tasks, calendars=calendars)
    assert [(c.name, c.action) for c in p.calendars] == [("holidays", Action.DELETE)]
    assert p.refusals == ('plan deletes calendar "holidays" but task(s) nightly, weekly still '
                          "use it; remove it from their spec.calendars first",)
    (tmp_path / "t.yaml").write_text(TASK)
    (tmp_path / "u.yaml").unlink()
    p = plan(load_directory(tmp_path), tasks, calendars=calendars)
    assert not p.refused and p.calendars_of(Action.DELETE)


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def berlin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Berlin task on 02:30 and a New York calendar excluding 2026-03-28."""
    monkeypatch.setenv("RECONCILER_DATABASE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    monkeypatch.delenv("RECONCILER_SERVER", raising=False)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "c.yaml").write_text(CALENDAR.replace("Europe/Berlin", "America/New_York")
                                   + "    - 2026-03-28\n")
    (folder / "t.yaml").write_text(TASK + "  calendars: [holidays]\n")
    return folder


def test_validate_counts_calendars_and_names_a_bad_one(
        berlin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(berlin)]) == 0
    assert capsys.readouterr().out == "1 task(s), 1 calendar(s) in 2 file(s): valid\n"
    (berlin / "c.yaml").write_text(CALENDAR + "    - {days: [Fri], from: '20:00', to: '06'}\n")
    assert cli.main(["validate", str(berlin), "-o", "json"]) == 1
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert [(Path(e["file"]).name, e["line"], e["field"]) for e in errors] == [
        ("c.yaml", 8, "spec.exclude[0].to")]


def test_next_show_excluded_lists_the_removed_slot_with_its_calendar(
        berlin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["next", "--task", "nightly", "--manifests", str(berlin),
            "--from", "2026-03-27T12:00:00Z", "--count", "2"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.splitlines() == [
        "2026-03-28T02:30:00+01:00  (2026-03-28T01:30:00+00:00)",
        "2026-03-30T02:30:00+02:00  (2026-03-30T00:30:00+00:00)"]
    assert cli.main([*argv, "--show-excluded"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "2026-03-28T02:30:00+01:00  (2026-03-28T01:30:00+00:00)",
        "2026-03-29T03:00:00+02:00  (2026-03-29T01:00:00+00:00)  excluded by calendar holidays",
        "2026-03-30T02:30:00+02:00  (2026-03-30T00:30:00+00:00)"]
    assert cli.main([*argv, "--show-excluded", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["calendars"] == ["holidays"]
    assert [(t["utc"], t["excludedBy"]) for t in doc["times"]] == [
        ("2026-03-28T01:30:00+00:00", None), ("2026-03-29T01:00:00+00:00", "holidays"),
        ("2026-03-30T00:30:00+00:00", None)]


class _Frozen(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> _Frozen:
        return cls(2026, 3, 27, 12, tzinfo=UTC)


def test_diff_shows_calendar_lines_and_the_slots_they_change(
        berlin: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import reconciler.cli.commands as commands

    monkeypatch.setattr(commands, "datetime", _Frozen)
    text = (berlin / "c.yaml").read_text()
    (berlin / "c.yaml").write_text(text.replace("2026-03-28", "2020-01-01"))
    assert cli.main(["apply", "--manifests", str(berlin)]) == 0
    capsys.readouterr()
    (berlin / "c.yaml").write_text(text)  # the calendar now excludes the DST-day slot
    assert cli.main(["diff", "--manifests", str(berlin)]) == 2
    out = capsys.readouterr().out
    assert ("~ calendar holidays\n"
            '    ~ spec.exclude: ["2020-01-01"] -> ["2026-03-28"]\n'
            "    slots in the next 30 days of the tasks using it: +0 -1\n") in out
    assert "Plan: 0 to create, 0 to update, 0 to delete, 1 unchanged. Calendars: 1 updated." \
        in out
    assert cli.main(["diff", "--manifests", str(berlin), "-o", "json"]) == 2
    (change,) = json.loads(capsys.readouterr().out)["calendars"]
    assert change["action"] == "update" and change["timeZone"] == "America/New_York"
    assert change["slots"] == {"added": 0, "removed": 1, "days": 30}
    (berlin / "c.yaml").write_text(text.replace("holidays", "closed"))
    (berlin / "t.yaml").write_text(TASK + "  calendars: [closed]\n")
    assert cli.main(["diff", "--manifests", str(berlin)]) == 2
    out = capsys.readouterr().out
    assert "+ calendar closed  1 exclusion(s) in America/New_York  from c.yaml\n" \
           "    slots in the next 30 days of the tasks using it: +0 -1\n" in out
    assert "- calendar holidays  (was in c.yaml)\n" in out
    assert ("~ nightly\n    ~ spec.calendars: [\"holidays\"] -> [\"closed\"]\n"
            "    slots in the next 30 days: +0 -1\n") in out

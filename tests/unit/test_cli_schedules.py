"""The CLI's side of schedules: ``next --task`` (from the manifests, no database),
``next --schedule ... --name`` (``H``), and ``diff``'s slot counts and load line.

Bad manifests (``H`` where it makes no sense, jitter over the shortest interval, a
reversed window) go through ``validate`` in tests/hostile (the corpus, text and JSON).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from reconciler.cli import main as cli
from reconciler.core.schedule import normalize

TASK = """\
apiVersion: reconciler/v1
kind: Task
metadata:
  name: {name}
spec:
  schedule: {schedule}
  timeZone: {zone}
  run: {{command: ["true"]}}
{extra}"""


def write(folder: Path, name: str, schedule: str, zone: str = "UTC", extra: str = "") -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(TASK.format(name=name, schedule=schedule, zone=zone,
                                                     extra=extra))


@pytest.fixture
def no_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No database anywhere: ``next --task`` must not need one."""
    monkeypatch.setenv("RECONCILER_DATABASE_URL", f"sqlite:///{tmp_path / 'absent' / 'x.db'}")
    monkeypatch.delenv("RECONCILER_SERVER", raising=False)


def test_next_task_reads_the_manifests_and_shows_the_start(
        tmp_path: Path, no_db: None, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "m"
    write(folder, "nightly-report", '["30 2 * * *", "0 12 * * 0,6"]', "Europe/Berlin",
          "  jitter: 10m\n  activeUntil: 2026-03-29\n")
    argv = ["next", "--task", "nightly-report", "--manifests", str(folder),
            "--from", "2026-03-28T12:00:00Z", "--count", "5"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    # 03-28 noon (Saturday) has started already; 02:30 of the spring day is 03:00 CEST
    assert out == [
        "2026-03-29T03:00:00+02:00  (2026-03-29T01:00:00+00:00)  "
        "starts 2026-03-29T03:01:35+02:00 (+1m35s)",
        "2026-03-29T12:00:00+02:00  (2026-03-29T10:00:00+00:00)  "
        "starts 2026-03-29T12:09:06+02:00 (+9m6s)",
    ]  # activeUntil 2026-03-29 (a date) includes that day, and nothing after
    assert not (tmp_path / "absent").exists()
    assert cli.main([*argv, "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["task"] == "nightly-report" and doc["jitter"] == "10m"
    assert doc["schedules"] == ["30 2 * * *", "0 12 * * 0,6"]
    assert doc["window"] == {"start": None, "end": "2026-03-29T22:00:00+00:00"}
    assert doc["times"][0] == {
        "local": "2026-03-29T03:00:00+02:00", "utc": "2026-03-29T01:00:00+00:00",
        "start": "2026-03-29T01:01:35+00:00", "startLocal": "2026-03-29T03:01:35+02:00",
        "delay": "1m35s", "excludedBy": None}


def test_next_task_names_what_is_wrong(tmp_path: Path, no_db: None) -> None:
    folder = tmp_path / "m"
    write(folder, "fine", '"0 3 * * *"')
    write(folder, "broken", '"0 3 * * *"', extra="  jitter: 2d\n")
    with pytest.raises(SystemExit, match="is not declared in"):
        cli.main(["next", "--task", "missing", "--manifests", str(folder)])
    with pytest.raises(SystemExit, match=r"broken\.yaml:9:11: broken: spec\.jitter: jitter 2d"):
        cli.main(["next", "--task", "broken", "--manifests", str(folder)])


def test_next_schedule_resolves_h_with_a_name(
        tmp_path: Path, no_db: None, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["next", "--schedule", "H 2 * * *", "--from", "2026-03-28", "--count", "2"]
    assert cli.main([*argv, "--name", "backup-db", "--tz", "Europe/Berlin"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "2026-03-28T02:42:00+01:00  (2026-03-28T01:42:00+00:00)",
        "2026-03-29T03:00:00+02:00  (2026-03-29T01:00:00+00:00)",  # 02:42 is skipped
    ]
    with pytest.raises(SystemExit, match=r"uses H.*\(give --name NAME\)"):
        cli.main(argv)
    with pytest.raises(SystemExit, match="--name goes with --schedule"):
        cli.main(["next", "--task", "x", "--name", "y"])
    with pytest.raises(SystemExit, match="give one of"):
        cli.main(["next", "--task", "x", "--schedule", "@daily"])


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("RECONCILER_DATABASE_URL", url)
    monkeypatch.delenv("RECONCILER_SERVER", raising=False)
    return url


def test_diff_counts_slots_and_shows_the_load(
        tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "m"
    names = [f"hourly-{i:02d}" for i in range(30)]
    for name in names:
        write(folder, name, '"@hourly"')
    assert cli.main(["apply", "--manifests", str(folder)]) == 0
    spread = names[:20]
    for name in spread:
        write(folder, name, '"H * * * *"')
    capsys.readouterr()
    assert cli.main(["diff", "--manifests", str(folder), "--max-concurrent-runs", "4"]) == 2
    out = capsys.readouterr().out
    minutes = {n: normalize("H * * * *", n).split()[0] for n in spread}
    at_zero = sum(m == "0" for m in minutes.values())
    for name in spread:  # 720 hours in 30 days: each moved one is 720 in, 720 out
        moved = minutes[name] != "0"
        assert f"~ {name}\n    ~ spec.schedule: \"@hourly\" -> \"H * * * *\"\n    slots in " \
               f"the next 30 days: +{720 * moved} -{720 * moved}\n" in out
    peak = max(10 + at_zero, *Counter(minutes.values()).values())
    line = out.splitlines()[-1]
    assert re.fullmatch(rf"Load: peak {peak} starts at \w\w\w \d\d:\d\d UTC \(was 30\); "
                        r"--max-concurrent-runs is 4", line), line
    assert cli.main(["diff", "--manifests", str(folder), "-o", "json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["load"]["before"]["starts"] == 30 and doc["load"]["after"]["starts"] == peak
    assert doc["load"]["days"] == 7 and doc["load"]["maxConcurrentRuns"] == 16
    assert doc["load"]["before"]["at"].endswith(":00:00+00:00")
    slots = {c["name"]: c["slots"] for c in doc["changes"]}
    assert slots[spread[0]] == {"added": 720 * (minutes[spread[0]] != "0"),
                                "removed": 720 * (minutes[spread[0]] != "0"), "days": 30}

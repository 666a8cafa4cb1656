"""``reconciler import``: real crontabs, CronJobs and systemd timers -> manifests + report.

The golden reports live in ``tests/data/importers/golden/``; after a deliberate change
regenerate them with ``UPDATE_GOLDEN=1`` and read the diff.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from reconciler.cli.main import main as reconciler_main
from reconciler.core._cron import _MACROS
from reconciler.core.model import NAME_PATTERN
from reconciler.importers.cli import add_parser, cmd_import, import_sources
from reconciler.importers.crontab import MACROS
from reconciler.importers.systemd import CalendarError, calendar_to_cron
from reconciler.manifests import load_directory

ROOT = Path(__file__).resolve().parents[2]
DATA = "tests/data/importers"
GOLDEN = ROOT / DATA / "golden"

CASES = {
    "crontab-etc": ("crontab", [f"{DATA}/etc/crontab", f"{DATA}/etc/cron.d/e2scrub_all"]),
    "crontab-5-example": ("crontab", [f"{DATA}/crontab/crontab.5-example"]),
    "crontab-5-rules": ("crontab", [f"{DATA}/crontab/crontab.5-rules"]),
    "cronjob-hello": ("cronjob", [f"{DATA}/cronjob/hello.yaml"]),
    "cronjob-every-field": ("cronjob", [f"{DATA}/cronjob/every-field.yaml"]),
    "systemd-debian": (
        "systemd",
        sorted(str(p.relative_to(ROOT)) for p in (ROOT / DATA / "systemd").glob("*.timer")),
    ),
    "systemd-without-service": (
        "systemd",
        [f"{DATA}/systemd/without-service/apt-daily-upgrade.timer"],
    ),
}


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the report names sources as typed: relative to the root


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="reconciler")
    add_parser(parser.add_subparsers(dest="command"), parents=[])
    return parser.parse_args(argv)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cmd_import(_parse(["import", *argv]))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", sorted(CASES))
def test_real_sources_give_valid_manifests_and_the_golden_report(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kind, sources = CASES[case]
    code, report, err = _run([kind, *sources, "--out", str(tmp_path)], capsys)
    assert code == 0, err
    golden = GOLDEN / f"{case}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(report)
    assert report == golden.read_text()
    # Every written manifest passes the loader, and `reconciler validate` says so.
    desired = load_directory(tmp_path)
    assert desired.ok, [str(e) for e in desired.errors]
    imported = re.findall(r"^  task (\S+)(?: \(line \d+\))?$", report, re.M)
    assert sorted(t.name for t in desired.tasks) == sorted(imported)
    assert reconciler_main(["validate", str(tmp_path)]) == 0
    assert "valid" in capsys.readouterr().out


def test_names_are_dns_labels_unique_and_stable(capsys: pytest.CaptureFixture[str]) -> None:
    sources = [f"{DATA}/etc/crontab", f"{DATA}/etc/crontab", f"{DATA}/crontab/crontab.5-rules"]
    first = import_sources("crontab", sources, prefix="ops-")
    names = [t.name for s in first for t in s.tasks]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(NAME_PATTERN, n) and len(n) <= 63 for n in names)
    assert all(n.startswith("ops-") for n in names)
    # The same file twice: the second copy gets -2 names and a -2 file, never a clash.
    assert [s.file_name for s in first] == ["ops-crontab.yaml", "ops-crontab-2.yaml",
                                            "ops-crontab-5-rules.yaml"]
    again = import_sources("crontab", sources, prefix="ops-")
    assert names == [t.name for s in again for t in s.tasks]
    code1, out1, _ = _run(["crontab", *sources], capsys)
    code2, out2, _ = _run(["crontab", *sources], capsys)
    assert (code1, out1) == (code2, out2) == (0, out1)


def test_vixie_day_rule_is_reported_exact_for_or_and_for_star_and() -> None:
    [source] = import_sources("crontab", [f"{DATA}/crontab/crontab.5-rules"])
    notes = {t.name: t.notes for t in source.tasks}
    or_note = [n for n in notes["crontab-5-rules-fortnightly"]
               if n.subject == "day-of-month and day-of-week"]
    assert [(n.level, "OR" in n.detail) for n in or_note] == [("exact", True)]
    and_note = [n for n in notes["crontab-5-rules-odd-mondays"]
                if n.subject == "day-of-month and day-of-week"]
    assert [(n.level, "AND" in n.detail) for n in and_note] == [("exact", True)]


def test_percent_becomes_the_commands_stdin_byte_for_byte(tmp_path: Path) -> None:
    crontab = tmp_path / "tab"
    crontab.write_text(
        "0 0 * * * cat; echo '100\\%'%Joe,%%Where are your kids?%\n"
        "0 1 * * * cat; echo done%no newline at the end \\% here\n"
    )
    [source] = import_sources("crontab", [str(crontab)])
    outputs = []
    for task in source.tasks:
        assert task.spec is not None
        script = task.spec["run"]["shell"]
        done = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                              check=True, stdin=subprocess.DEVNULL, timeout=30)
        outputs.append(done.stdout)
    assert outputs == [
        "Joe,\n\nWhere are your kids?\n100%\n",
        "no newline at the end % heredone\n",
    ]
    levels = [[n.level for n in t.notes if "'%'" in n.subject] for t in source.tasks]
    assert levels == [["exact"], ["approximate"]]


def test_reboot_is_not_mapped_and_mailto_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report, _ = _run([
        "crontab", f"{DATA}/crontab/crontab.5-rules", f"{DATA}/crontab/crontab.5-example",
        "--out", str(tmp_path),
    ], capsys)
    assert code == 0
    assert "task crontab-5-rules-on-boot (line 5) [not imported]" in report
    assert "not mapped   @reboot:" in report
    assert "not mapped   MAILTO=paul:" in report
    written = (tmp_path / "crontab-5-rules.yaml").read_text()
    assert "on-boot" not in written


def test_cron_macros_are_the_reconcilers() -> None:
    assert MACROS == _MACROS


@pytest.mark.parametrize(
    ("calendar", "cron"),
    [
        ("daily", "0 0 * * *"),
        ("weekly", "0 0 * * MON"),
        ("hourly", "0 * * * *"),
        ("monthly", "0 0 1 * *"),
        ("quarterly", "0 0 1 1,4,7,10 *"),
        ("*-*-* 6,18:00", "0 6,18 * * *"),
        ("*:00/10", "0/10 * * * *"),
        ("*:0/10:30", "30 0/10 * * * *"),
        ("Mon..Fri 09:00", "0 9 * * MON-FRI"),
        ("Sat,Sun 10:30", "30 10 * * SAT,SUN"),
        ("Sun *-*-* 03:10:00", "10 3 * * SUN"),
        ("Mon *-*-1..7 00:00", "0 0 * * MON#1"),
        ("*-*-01..05 12:00", "0 12 1-5 * *"),
    ],
)
def test_calendar_forms_cron_can_express(calendar: str, cron: str) -> None:
    assert calendar_to_cron(calendar) == (cron, None)


def test_calendar_time_zone_is_kept() -> None:
    assert calendar_to_cron("*-*-* 02:30 Europe/Berlin") == ("30 2 * * *", "Europe/Berlin")


@pytest.mark.parametrize(
    ("calendar", "why"),
    [
        ("2025-*-* 00:00", "year"),
        ("Mon *-*-1..15 00:00", "AND"),
        ("*-*-~1 00:00", "'~'"),
        ("*-*-* 00:00:00.5", "fractions"),
    ],
)
def test_calendar_forms_cron_cannot_express(calendar: str, why: str) -> None:
    with pytest.raises(CalendarError, match=re.escape(why)):
        calendar_to_cron(calendar)


def test_monotonic_timer_is_not_mapped_and_missing_service_uses_systemctl() -> None:
    tmpfiles, alone = import_sources("systemd", [
        f"{DATA}/systemd/systemd-tmpfiles-clean.timer",
        f"{DATA}/systemd/without-service/apt-daily-upgrade.timer",
    ])
    assert not tmpfiles.mapped
    assert {n.subject for n in tmpfiles.notes} == {"OnBootSec=15min", "OnUnitActiveSec=1d"}
    [task] = alone.mapped
    assert task.spec is not None
    assert task.spec["run"] == {"command": ["systemctl", "start", "apt-daily-upgrade.service"]}
    assert task.spec["catchUp"] == "Latest"  # Persistent=true
    assert any(n.subject == "RandomizedDelaySec=60m" and n.level == "not mapped"
               for n in task.notes)


def test_cronjob_secret_becomes_a_from_env_placeholder_and_stepped_days_or() -> None:
    [source] = import_sources("cronjob", [f"{DATA}/cronjob/every-field.yaml"])
    task = source.mapped[0]
    assert task.spec is not None
    assert task.spec["run"]["env"]["DATABASE_PASSWORD"] == {"fromEnv": "DATABASE_PASSWORD"}
    # robfig/cron ORs a stepped day-of-month with the weekday; "1/2" keeps that meaning.
    assert task.spec["schedule"] == "30 2 1/2 * MON"
    assert task.spec["retries"]["limit"] == 3 and task.spec["timeout"] == "3600s"


def test_json_output_holds_manifests_and_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["cronjob", f"{DATA}/cronjob/hello.yaml", "-o", "json"], capsys)
    assert (code, err) == (0, "")
    document = json.loads(out)
    [task] = document["sources"][0]["tasks"]
    assert task["manifest"]["spec"]["run"]["command"][0] == "/bin/sh"
    assert document["summary"]["tasks"] == 1


def test_printed_yaml_is_the_manifests_and_the_report_goes_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _run(["systemd", f"{DATA}/systemd/fstrim.timer", "--prefix", "host-"],
                          capsys)
    assert code == 0
    [doc] = list(yaml.safe_load_all(out))
    assert doc["metadata"]["name"] == "host-fstrim"
    assert doc["spec"]["schedule"] == "0 0 * * MON"
    assert err.startswith("systemd tests/data/importers/systemd/fstrim.timer -> host-fstrim")


def test_existing_files_are_not_overwritten_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "hello.yaml").write_text("# mine\n")
    code, _, err = _run(["cronjob", f"{DATA}/cronjob/hello.yaml", "--out", str(tmp_path)],
                        capsys)
    assert code == 1 and "hello.yaml: exists with other content (use --force)" in err
    assert (tmp_path / "hello.yaml").read_text() == "# mine\n"
    assert _run(["cronjob", f"{DATA}/cronjob/hello.yaml", "--out", str(tmp_path),
                 "--force"], capsys)[0] == 0


def test_bad_input_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    code, _, err = _run(["cronjob", str(broken)], capsys)
    assert code == 1 and str(broken) in err and "not valid YAML" in err
    code, _, err = _run(["crontab", str(tmp_path / "missing")], capsys)
    assert code == 1 and "missing: cannot read" in err
    code, _, err = _run(["crontab", f"{DATA}/etc/crontab", "--time-zone", "Mars/Olympus"],
                        capsys)
    assert code == 1 and "Mars/Olympus" in err

"""Control characters from manifests, run errors and task output never reach a terminal.

A pull-request author writes ``metadata.name``; a task writes its output and, through
its exit, the run's error. Printed raw, ``"\\x1b]0;HACKED\\x07"`` retitles the terminal
and ``"\\x1b[2J"`` clears it. Every CLI command shows such characters as escapes;
``reconciler logs --raw`` alone writes a run's output byte for byte (for pipes).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.cli import main as cli
from reconciler.cli.output import visible
from reconciler.core.protocols import NewRun
from reconciler.core.runtime import RunStatus, Trigger
from reconciler.store import SQLStore
from tests.e2e.conftest import task_yaml

HOSTILE = "x\x1b]0;HACKED\x07\x1b[2Jy"
SHOWN = "x\\x1b]0;HACKED\\x07\\x1b[2Jy"


def manifest(name: str) -> str:
    return task_yaml(name, "0 3 * * *", 'command: ["true"]')


def no_controls(text: str) -> None:
    text = text.replace("\r\n", "\n")
    bad = [c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F]
    assert not bad, f"raw control characters {bad!r} in {text!r}"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("RECONCILER_DATABASE_URL", url)
    monkeypatch.delenv("RECONCILER_SERVER", raising=False)
    assert cli.main(["db", "upgrade"]) == 0  # read-only commands need an existing database
    return url


def hostile_manifest(tmp_path: Path, name: str = HOSTILE) -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    name = json.dumps(name)  # a YAML double-quoted string: "x\u001b]0;...y"
    (folder / "bad.yaml").write_text(manifest(name))
    return folder


def test_visible_escapes_controls_but_keeps_newline_tab_and_crlf() -> None:
    assert visible(HOSTILE) == SHOWN
    assert visible("a\tb\nc\r\nd") == "a\tb\nc\r\nd"
    assert visible("50%\r60%") == "50%\\x0d60%"
    assert visible("\x00\x7f\x9b\u00e9") == "\\x00\\u007f\\u009b\u00e9"


@pytest.mark.parametrize("command", ["validate", "diff"])
def test_validate_and_diff_show_a_hostile_name_escaped(
    command: str, tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = hostile_manifest(tmp_path)
    argv = [command, str(folder)] if command == "validate" else [command, "--manifests",
                                                                 str(folder)]
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    no_controls(out + err)
    assert SHOWN in out + err  # the error names the bad name, escaped


@pytest.mark.parametrize("command", ["validate", "diff"])
def test_json_output_stays_valid_and_means_the_same(
    command: str, tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = hostile_manifest(tmp_path, HOSTILE + "\x9b\x7f")  # C1 and DEL: not escaped
    argv = [command, str(folder)] if command == "validate" else [command, "--manifests",
                                                                 str(folder)]
    cli.main([*argv, "-o", "json"])
    out, _ = capsys.readouterr()
    no_controls(out)
    document = json.loads(out)
    assert document["errors"][0]["task"] == HOSTILE + "\x9b\x7f"


def record_run(url: str, tmp_path: Path, output: str, error: str) -> int:
    folder = tmp_path / "ok"
    folder.mkdir()
    (folder / "nightly.yaml").write_text(manifest("nightly"))
    assert cli.main(["apply", "--manifests", str(folder)]) == 0
    store = SQLStore(url)
    try:
        run = store.insert_run(NewRun(task_name="nightly", slot=datetime.now(UTC), attempt=1,
                                      trigger=Trigger.MANUAL, status=RunStatus.PENDING))
        store.update_run(run.id, status=RunStatus.FAILED, output_tail=output, error=error,
                         started_at=datetime.now(UTC), finished_at=datetime.now(UTC))
    finally:
        store.close()
    return run.id


def test_runs_shows_a_run_error_escaped(
    tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    record_run(db, tmp_path, "", HOSTILE)
    capsys.readouterr()
    assert cli.main(["runs", "nightly"]) == 0
    out, err = capsys.readouterr()
    no_controls(out + err)
    assert SHOWN in out


def test_status_shows_a_replica_error_escaped(
    tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SQLStore(db)
    try:
        store.upgrade()
        store.write_replica_status(
            "r1", {"last_error": HOSTILE, "manifest_errors": [f"bad.yaml: {HOSTILE}"]},
            datetime.now(UTC),
        )
    finally:
        store.close()
    cli.main(["status"])
    out, err = capsys.readouterr()
    no_controls(out + err)
    assert out.count(SHOWN) == 2


def test_logs_escapes_by_default_and_raw_keeps_the_bytes(
    tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    output = f"step 1\r\nprogress 50%\r{HOSTILE}\tdone\n"
    run_id = record_run(db, tmp_path, output, f"exited: {HOSTILE}")
    capsys.readouterr()
    assert cli.main(["logs", str(run_id)]) == 0
    out, err = capsys.readouterr()
    no_controls(out + err)
    assert out == f"step 1\r\nprogress 50%\\x0d{SHOWN}\tdone\n"
    assert SHOWN in err

    assert cli.main(["logs", "--raw", str(run_id)]) == 0
    out, err = capsys.readouterr()
    assert out == output
    no_controls(err)  # --raw is about the output only; the error line is still escaped

"""CLI mutations in database mode leave the same audit rows as the HTTP API.

An operator who suspends a task with ``reconciler suspend`` straight against the
database must show up in ``/api/v1/audit`` like one who used the dashboard: the OS user
as actor, ``cli`` as client.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.cli import main as cli
from reconciler.service import default_actor
from reconciler.store import SQLStore

TASK = """\
apiVersion: reconciler/v1
kind: Task
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  run: {command: ["true"]}
"""


def test_trigger_suspend_resume_are_audited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("RECONCILER_DATABASE_URL", url)
    monkeypatch.delenv("RECONCILER_SERVER", raising=False)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "nightly.yaml").write_text(TASK)
    assert cli.main(["apply", "--manifests", str(tmp_path / "m")]) == 0
    assert cli.main(["trigger", "nightly"]) == 0
    assert cli.main(["suspend", "nightly", "--note", "disk swap"]) == 0
    store = SQLStore(url)
    try:  # suspended two days ago: a 03:00 slot came meanwhile
        task = store.get_task("nightly")
        assert task is not None and task.override is not None
        store.set_override("nightly", replace(task.override,
                                              at=task.override.at - timedelta(days=2)))
    finally:
        store.close()
    assert cli.main(["resume", "nightly", "--catch-up"]) == 0
    assert "queued for the missed slot" in capsys.readouterr().out
    store = SQLStore(url)
    try:
        rows = list(reversed(store.list_audit(target="nightly")))
    finally:
        store.close()
    assert [r["action"] for r in rows] == ["trigger", "suspend", "resume"]
    assert {r["actor"] for r in rows} == {default_actor()}
    assert {r["client"] for r in rows} == {"cli"}
    assert rows[1]["detail"] == {"note": "disk swap"}
    assert rows[2]["detail"]["catchUp"] is True and rows[2]["detail"]["run"] is not None


def _cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("RECONCILER_DATABASE_URL", url)
    monkeypatch.delenv("RECONCILER_SERVER", raising=False)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "t.yaml").write_text(text)
    assert cli.main(["apply", "--manifests", str(tmp_path / "m")]) == 0
    return url


def test_resume_of_a_task_that_is_not_suspended_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url = _cli_db(tmp_path, monkeypatch, TASK)
    capsys.readouterr()
    assert cli.main(["resume", "nightly", "--catch-up"]) == 0
    assert capsys.readouterr().out == "nightly was not suspended (nothing changed)\n"
    store = SQLStore(url)
    try:
        assert store.list_runs("nightly") == []  # no catch-up run
        (row,) = store.list_audit(target="nightly")
        assert row["outcome"] == "unchanged"
    finally:
        store.close()


@pytest.mark.parametrize("policy", ["Forbid", "Replace", "Allow"])
def test_trigger_follows_the_policy_against_the_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], policy: str) -> None:
    """With a run active, a Forbid task's trigger is refused (exit 1); Replace and Allow
    queue a pending row (the daemon replaces or overlaps when it starts it)."""
    from reconciler.core.protocols import NewRun
    from reconciler.core.runtime import RunStatus, Trigger

    url = _cli_db(tmp_path, monkeypatch, TASK + f"  concurrencyPolicy: {policy}\n")
    store = SQLStore(url)
    try:
        store.insert_run(NewRun(task_name="nightly", slot=datetime(2026, 1, 1, tzinfo=UTC),
                                attempt=1, trigger=Trigger.SCHEDULE, status=RunStatus.RUNNING,
                                replica="elsewhere", started_at=datetime.now(UTC)))
        capsys.readouterr()
        code = cli.main(["trigger", "nightly"])
        out = capsys.readouterr()
        pending = store.list_runs("nightly", statuses=[RunStatus.PENDING])
        audit = store.list_audit(target="nightly")
    finally:
        store.close()
    if policy == "Forbid":
        assert code == 1, out
        assert "a run is active and concurrencyPolicy is Forbid" in out.err
        assert pending == [] and audit[0]["outcome"] == "conflict"
    else:
        assert code == 0 and "queued" in out.out
        assert len(pending) == 1 and audit[0]["outcome"] == "ok"

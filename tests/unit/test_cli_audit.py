"""CLI mutations in database mode leave the same audit rows as the HTTP API.

An operator who suspends a task with ``reconciler suspend`` straight against the
database must show up in ``/api/v1/audit`` like one who used the dashboard: the OS user
as actor, ``cli`` as client.
"""

from __future__ import annotations

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
    assert cli.main(["resume", "nightly", "--catch-up"]) == 0
    capsys.readouterr()
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

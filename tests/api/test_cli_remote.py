"""``reconciler <command> --server URL``: the CLI over HTTP, in-process (no sockets).

The CLI's httpx client gets a transport that hands each request to the app running on
the test daemon's loop in a background thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.api.client import ApiClient
from reconciler.cli import main as cli
from reconciler.cli import remote as cli_remote
from tests.api.conftest import SECRET, LoopServer

SERVER = "http://testserver"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopServer]:
    s = LoopServer(tmp_path_factory.mktemp("cli"))
    yield s
    s.close()


@pytest.fixture
def reconciler(server: LoopServer, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> Any:
    monkeypatch.setattr(cli_remote, "_client", lambda args: ApiClient(
        args.server, args.token, transport=server.transport()))
    monkeypatch.delenv("RECONCILER_TOKEN", raising=False)
    monkeypatch.setenv("RECONCILER_SERVER", SERVER)
    # The database must not be touched in this mode.
    monkeypatch.setenv("RECONCILER_DATABASE_URL", "sqlite:////nonexistent/dir/state.db")

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_get_tasks_over_http(reconciler: Any) -> None:
    code, out, _ = reconciler("get", "tasks")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "SCHEDULE", "TIMEZONE", "NEXT", "NEXT", "(UTC)",
                                "SUSPENDED", "SOURCE"]
    report = next(line for line in lines if line.startswith("nightly-report"))
    assert "2026-03-03T02:30:00+01:00" in report and "2026-03-03T01:30:00+00:00" in report
    code, out, _ = reconciler("get", "tasks", "-o", "json")
    document = json.loads(out)
    assert set(document) == {"items", "count", "total"}  # GET /api/v1/tasks's document
    assert {"name", "schedule", "timeZone", "nextFireAt", "nextFireAtLocal", "suspended",
            "suspension", "source", "labels", "lastRun", "running"} <= set(document["items"][0])
    code, out, _ = reconciler("get", "tasks", "-o", "wide")
    assert "team=data" in out


def test_mutations_over_http(reconciler: Any) -> None:
    code, _, err = reconciler("trigger", "nightly-report")
    assert code == 1 and "pass --token or set RECONCILER_TOKEN" in err
    code, out, _ = reconciler("trigger", "nightly-report", "--token", SECRET)
    assert code == 0 and out.startswith("run ") and "started" in out
    run_id = out.split()[1]
    code, out, _ = reconciler("runs", "nightly-report")
    assert code == 0 and out.splitlines()[1].startswith(f"{run_id} ")
    assert "+01:00" in out.splitlines()[1]  # the slot in the task's zone
    code, out, _ = reconciler("runs", "nightly-report", "-o", "json")
    assert json.loads(out)[0]["status"] == "succeeded"
    code, out, _ = reconciler("logs", run_id)
    assert code == 0 and out == "hello from nightly-report\n"
    code, out, _ = reconciler("suspend", "weekly-summary", "--note", "holiday",
                              "--token", SECRET)
    assert out.strip() == "weekly-summary suspended: holiday"
    code, out, _ = reconciler("suspend", "weekly-summary", "--token", SECRET)
    assert out.strip() == "weekly-summary was already suspended (nothing changed)"
    code, out, _ = reconciler("get", "tasks")
    weekly = next(line for line in out.splitlines() if line.startswith("weekly-summary"))
    assert "yes (override)" in weekly
    code, out, _ = reconciler("resume", "weekly-summary", "--catch-up", "--token", SECRET)
    assert out.splitlines()[0] == "weekly-summary resumed"
    code, out, _ = reconciler("trigger", "no-such-task", "--token", SECRET)
    assert code == 1


def test_status_and_errors_over_http(reconciler: Any) -> None:
    code, out, _ = reconciler("status")
    assert code == 0, out
    assert "mode: single, writer: test-replica, ready: yes" in out
    code, out, _ = reconciler("status", "-o", "json")
    assert json.loads(out)["replica"] == "test-replica"
    code, _, err = reconciler("runs", "no-such-task")
    assert code == 1 and "not found" in err
    code, _, err = reconciler("logs", "9999")
    assert code == 1 and "run 9999 not found" in err


def test_unreachable_server_is_a_clean_error(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    import httpx

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(cli_remote, "_client", lambda args: ApiClient(
        args.server, args.token, transport=httpx.MockTransport(refuse)))
    assert cli.main(["get", "tasks", "--server", "127.0.0.1:1"]) == 1
    assert "cannot reach the daemon at http://127.0.0.1:1" in capsys.readouterr().err


def test_backfills_over_http_carry_the_apis_document(reconciler: Any,
                                                     server: LoopServer) -> None:
    from reconciler.api.views import backfill_doc

    code, _, err = reconciler("backfill", "nightly-report", "--from", "2026-02-01",
                              "--to", "2026-02-04")
    assert code == 1 and "pass --token or set RECONCILER_TOKEN" in err
    code, out, _ = reconciler("backfill", "nightly-report", "--from", "2026-02-01",
                              "--to", "2026-02-04", "--parallel", "2", "--token", SECRET,
                              "-o", "json")
    assert code == 0
    created = json.loads(out)
    stored = server.harness.store.get_backfill(created["id"])
    assert stored is not None and created == backfill_doc(stored)  # one wire format
    assert (created["total"], created["parallel"], created["state"]) == (3, 2, "pending")
    assert created["from"] == "2026-01-31T23:00:00+00:00"  # local midnight, Berlin
    code, out, _ = reconciler("backfills", "-o", "json")
    assert json.loads(out)["items"][0] == created
    code, out, _ = reconciler("backfills")
    assert out.splitlines()[1].split()[:6] == [
        str(created["id"]), "nightly-report", created["from"], created["to"], "pending", "0/3"]
    code, out, _ = reconciler("backfill", "cancel", str(created["id"]), "--token", SECRET)
    assert code == 0 and out.strip() == f"backfill {created['id']} cancelled at 0/3"
    code, out, _ = reconciler("backfill", "cancel", str(created["id"]), "--token", SECRET)
    assert "already cancelled" in out
    code, _, err = reconciler("backfill", "nightly-report", "--from", "2026-02-01T04:00",
                              "--to", "2026-02-01T05:00", "--token", SECRET)
    assert code == 1 and "no slots" in err

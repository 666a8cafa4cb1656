"""``HEAD`` on every GET route, and ``get tasks`` saying the same in database and server mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from reconciler.api.client import ApiClient
from reconciler.api.contract import flat_routes
from reconciler.cli import main as cli
from reconciler.cli import remote as cli_remote
from tests.api.conftest import AUTH, LoopServer, harness, run


def test_every_get_route_answers_head_without_a_body(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            r = await h.client.post("/api/v1/tasks/nightly-report/trigger", headers=AUTH)
            run_id = r.json()["run"]["id"]
            b = await h.client.post("/api/v1/tasks/nightly-report/backfill", headers=AUTH,
                                    json={"from": "2026-02-01", "to": "2026-02-03"})
            assert b.status_code == 201, b.text
            backfill_id = b.json()["backfill"]["id"]
            await h.settle()
            paths = [route.path for route in flat_routes(h.app.routes)
                     if isinstance(route, APIRoute | Route) and "GET" in (route.methods or ())]
            assert {"/healthz", "/metrics", "/api/v1/events"} <= set(paths)
            for path in paths:
                url = (path.replace("{name}", "nightly-report").replace("{run_id}", str(run_id))
                       .replace("{backfill_id}", str(backfill_id)))
                head = await h.client.head(url, headers=AUTH)
                assert (head.status_code, head.content) == (200, b""), url
                if path != "/api/v1/events":  # a stream: its GET does not end
                    get = await h.client.get(url, headers=AUTH)
                    assert head.headers["content-type"] == get.headers["content-type"], url
            refused = await h.client.head("/api/v1/tasks/nightly-report/trigger")
            assert refused.status_code == 405 and refused.content == b""

    run(scenario)


def test_get_tasks_agrees_in_database_and_server_mode(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    server = LoopServer(tmp_path)
    try:
        monkeypatch.delenv("RECONCILER_SERVER", raising=False)
        monkeypatch.setattr(cli_remote, "_client", lambda args: ApiClient(
            args.server, args.token, transport=server.transport()))
        database = f"sqlite:///{tmp_path / 'state.db'}"
        ran = server.call({"method": "POST", "url": "/api/v1/tasks/nightly-report/trigger",
                           "headers": AUTH})
        assert ran.status_code == 202
        shown = {}
        for mode, where in (("database", ["--database", database]),
                            ("server", ["--server", "http://testserver"])):
            assert cli.main(["get", "tasks", "-o", "json", *where]) == 0
            shown[mode] = json.loads(capsys.readouterr().out)
        # One wire format: the CLI prints GET /api/v1/tasks's document in both modes.
        assert set(shown["database"]) == set(shown["server"]) == {"items", "count", "total"}
        by_mode = {m: {t["name"]: t for t in doc["items"]} for m, doc in shown.items()}
        paused = by_mode["database"]["paused-in-git"]
        assert paused["suspended"] is True and paused["nextFireAt"] is None
        assert paused["suspension"] == {"source": "git", "note": None, "actor": None, "at": None}
        for name, task in by_mode["database"].items():
            other = by_mode["server"][name]
            assert set(task) == set(other), name
            # (the times differ: the daemon runs on a fake clock, the CLI on the wall clock)
            for key in set(task) - {"nextFireAt", "nextFireAtLocal"}:
                assert task[key] == other[key], (name, key)
            assert (task["nextFireAt"] is None) == (other["nextFireAt"] is None), name
        assert by_mode["database"]["nightly-report"]["lastRun"] is not None
        assert cli.main(["get", "tasks", "--database", database]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines()
                    if x.startswith("paused-in-git"))
        assert line.split()[-5:-1] == ["UTC", "-", "-", "yes"]  # TIMEZONE NEXT NEXT SUSPENDED
    finally:
        server.close()

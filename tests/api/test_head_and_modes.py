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
            await h.settle()
            paths = [route.path for route in flat_routes(h.app.routes)
                     if isinstance(route, APIRoute | Route) and "GET" in (route.methods or ())]
            assert {"/healthz", "/metrics", "/api/v1/events"} <= set(paths)
            for path in paths:
                url = path.replace("{name}", "nightly-report").replace("{run_id}", str(run_id))
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
        shown = {}
        for mode, where in (("database", ["--database", database]),
                            ("server", ["--server", "http://testserver"])):
            assert cli.main(["get", "tasks", "-o", "json", *where]) == 0
            shown[mode] = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
        paused = shown["database"]["paused-in-git"]
        assert paused["suspended"] is True and paused["next"] is None and paused["nextUTC"] is None
        # (the times differ: the daemon runs on a fake clock, the CLI on the wall clock)
        assert {n: (r["next"] is None, r["suspended"]) for n, r in shown["database"].items()} \
            == {n: (r["next"] is None, r["suspended"]) for n, r in shown["server"].items()}
        assert cli.main(["get", "tasks", "--database", database]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines()
                    if x.startswith("paused-in-git"))
        assert line.split()[-5:-1] == ["UTC", "-", "-", "yes"]  # TIMEZONE NEXT NEXT SUSPENDED
    finally:
        server.close()

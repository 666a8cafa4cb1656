"""Run parameters through the API: ``POST /api/v1/tasks/NAME/trigger`` with
``{"params": ...}`` (values on the run document, the row and the executor's request;
422 naming the parameter), runs of the schedule with the defaults, retries with the
values of the attempt they retry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import AUTH, SECRET, LoopServer, harness, run
from tests.api.test_cli_remote import reconciler

__all__ = ["reconciler"]  # the fixture: the CLI with --server against ``server`` below

REPORT = """\
apiVersion: reconciler/v1
kind: Task
metadata: {name: report}
spec:
  schedule: "@every 10s"
  concurrencyPolicy: Allow
  retries: {limit: 1, backoff: 1s}
  params:
    region: {type: enum, values: [eu, us], default: eu}
    dryRun: {type: boolean, default: true}
    limit: {type: integer, default: 10}
    apiToken: {type: string, default: abc}
    token: {secret: true, fromEnv: REPORT_TOKEN}
  run:
    command: ["true"]
"""
DEFAULTS = {"region": "eu", "dryRun": True, "limit": 10, "apiToken": "abc", "token": "***"}


def test_trigger_with_params(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, manifests={"r.yaml": REPORT}) as h:
            r = await h.client.post("/api/v1/tasks/report/trigger", headers=AUTH,
                                    json={"params": {"region": "us", "dryRun": False,
                                                     "limit": "25"}})
            assert r.status_code == 202, r.text
            doc = r.json()["run"]
            want = {"region": "us", "dryRun": False, "limit": 25, "apiToken": "***",
                    "token": "***"}
            assert doc["params"] == want  # apiToken: a credential-like name is masked
            await h.settle()
            (request,) = h.executor.started
            assert dict(request.params) == {**want, "apiToken": "abc"}
            assert set(request.param_specs) == set(DEFAULTS)
            stored = h.store.get_run(doc["id"])
            assert stored.params == {**want, "apiToken": "abc"}
            r = await h.client.get(f"/api/v1/runs/{doc['id']}")
            assert r.json()["params"] == want
            audit = (await h.client.get("/api/v1/audit")).json()["items"]
            assert audit[0]["detail"]["params"] == {"region": "us", "dryRun": False,
                                                    "limit": "25"}
            r = await h.client.post("/api/v1/tasks/report/trigger", headers=AUTH)
            assert r.status_code == 202 and r.json()["run"]["params"] == {
                **DEFAULTS, "apiToken": "***"}

    run(scenario)


def test_bad_params_are_422_naming_the_parameter(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, manifests={"r.yaml": REPORT}) as h:
            for params, names in [({"regoin": "us"}, "'regoin'"),
                                  ({"limit": "ten"}, "'limit'"),
                                  ({"dryRun": 1}, "'dryRun'"),
                                  ({"token": "s3cret-value"}, "'token' is secret")]:
                r = await h.client.post("/api/v1/tasks/report/trigger", headers=AUTH,
                                        json={"params": params})
                assert r.status_code == 422, r.text
                error = r.json()["error"]
                assert error["code"] == "invalid_params" and names in error["message"]
            r = await h.client.post("/api/v1/tasks/report/trigger", headers=AUTH,
                                    json={"params": {"region": ["us"]}})
            assert r.status_code == 422
            assert h.store.list_runs("report") == []
            assert "s3cret-value" not in str(h.store.list_audit())

    run(scenario)


def test_scheduled_runs_get_the_defaults_and_retries_keep_theirs(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, manifests={"r.yaml": REPORT}) as h:
            h.executor.fail.add("report")
            await h.advance(10)  # the first slot of @every 10s
            await h.settle()
            r = await h.client.post("/api/v1/tasks/report/trigger", headers=AUTH,
                                    json={"params": {"region": "us"}})
            manual = r.json()["run"]
            await h.settle()
            await h.advance(1)  # both retries are due
            await h.settle()
            runs = {(x.trigger.value, x.attempt, x.slot): x.params
                    for x in h.store.list_runs("report")}
            scheduled = [p for (t, _, _), p in runs.items() if t == "schedule"]
            assert scheduled == [DEFAULTS]
            retries = {slot: p for (t, _, slot), p in runs.items() if t == "retry"}
            assert len(retries) == 2
            by_manual = [p for slot, p in retries.items() if slot.isoformat() == manual["slot"]]
            assert by_manual == [{**DEFAULTS, "region": "us"}]

    run(scenario)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopServer]:
    s = LoopServer(tmp_path_factory.mktemp("cli"), manifests={"r.yaml": REPORT})
    yield s
    s.close()


def test_cli_trigger_with_params_over_http(reconciler: Any) -> None:
    code, _, err = reconciler("trigger", "report", "--param", "limit=ten", "--token", SECRET)
    assert code == 1 and "parameter 'limit': expected an integer, got \"ten\"" in err
    code, _, err = reconciler("trigger", "report", "--param", "token=x", "--token", SECRET)
    assert code == 1 and "parameter 'token' is secret" in err
    code, out, _ = reconciler("trigger", "report", "--param", "region=us",
                              "--param", "dryRun=false", "--token", SECRET)
    assert code == 0, out
    code, out, _ = reconciler("runs", "report", "-o", "json")
    (doc,) = json.loads(out)
    assert doc["params"] == {**DEFAULTS, "region": "us", "dryRun": False, "apiToken": "***"}
    code, out, _ = reconciler("runs", "report")
    assert "region=us,dryRun=false,limit=10,apiToken=***,token=***" in out

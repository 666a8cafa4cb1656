"""``specs/openapi.json`` against real responses of every route, checked by other tools.

``openapi-spec-validator`` checks the document itself. Then a real daemon (as in
conftest.py) answers a success case and error cases of every operation, and each
response is checked against the document with ``jsonschema``: its status is declared
for the operation (no ``default``), its required headers are there, its media type is
declared and a JSON body is valid against the declared schema. The operations come from
the app's routes, so a new route without a case fails here; so does a declared 2xx
status that no case produced (the 202 of a cancel of a live run).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate

from reconciler.api.contract import flat_routes
from reconciler.core.backfill import BackfillState, NewBackfill
from tests.api.conftest import AUTH, T0, Harness, harness, run

SPEC_PATH = Path(__file__).resolve().parents[2] / "specs" / "openapi.json"
SPEC: dict[str, Any] = json.loads(SPEC_PATH.read_text())
#: Routes of the app outside the document, and why.
NOT_IN_DOCUMENT = {
    "/": "the dashboard page (HTML)",
    "/api/v1/openapi.json": "the document itself (compared with specs/ below)",
    "/static": "the dashboard's static files",
}
TASK, OTHER = "nightly-report", "weekly-summary"

Seen = list[tuple[str, str, httpx.Response]]  # (operation method, path template, response)


def operations(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of every documented route of ``app``."""
    found = set()
    for route in flat_routes(app.routes):
        if isinstance(route, APIRoute) and route.include_in_schema:
            found |= {(m, route.path_format) for m in route.methods or ()}
        else:
            path = getattr(route, "path", None)
            assert path in NOT_IN_DOCUMENT, f"route {path} is neither documented nor listed"
    return found


def conforms(method: str, template: str, response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url} -> {response.status_code}"
    operation = SPEC["paths"][template][method.lower()]
    declared = operation["responses"].get(str(response.status_code))
    assert declared is not None, f"{where}: status not declared for {method} {template}"
    for name, header in declared.get("headers", {}).items():
        assert not header.get("required") or name in response.headers, f"{where}: no {name}"
    content = declared.get("content", {})
    if response.request.method == "HEAD":
        return
    media = response.headers.get("content-type", "").split(";")[0].strip()
    assert media in content, f"{where}: {media!r} not among {sorted(content)}"
    if media == "application/json":
        schema = {**content[media]["schema"], "components": SPEC["components"]}
        errors = list(Draft202012Validator(schema, format_checker=FormatChecker())
                      .iter_errors(response.json()))
        assert not errors, f"{where}: {[e.message for e in errors][:3]}"


def url_of(template: str, run_id: int, backfill_id: int = 1) -> str:
    return (template.replace("{name}", TASK).replace("{run_id}", str(run_id))
            .replace("{backfill_id}", str(backfill_id)))


#: The body a valid request of a route carries (the 404 cases too).
BACKFILL = {"from": "2026-02-01", "to": "2026-02-03"}
BODIES = {"/api/v1/tasks/{name}/backfill": BACKFILL}


async def _backfills(h: Harness, call: Any) -> None:
    """Start one (201), preview one (200), list, read and cancel it; a conflict each."""
    template = "/api/v1/tasks/{name}/backfill"
    r = await call("POST", template, 201, url_of(template, 0), headers=AUTH,
                   json={**BACKFILL, "parallel": 2})
    created = r.json()["backfill"]["id"]
    await call("POST", template, 200, url_of(template, 0), headers=AUTH,
               json={**BACKFILL, "dryRun": True})
    await call("GET", "/api/v1/backfills", 200)
    one = "/api/v1/backfills/{backfill_id}"
    await call("GET", one, 200, url_of(one, 0, created))
    await call("POST", one + "/cancel", 200, url_of(one + "/cancel", 0, created), headers=AUTH)


async def _successes(h: Harness, seen: Seen) -> int:
    """A success of every operation; returns a live run's id."""
    async def call(method: str, template: str, expect: int, url: str | None = None,
                   **kw: Any) -> httpx.Response:
        r = await h.client.request(method, url or template, **kw)
        assert r.status_code == expect, (method, url or template, r.text)
        seen.append((method if method != "HEAD" else "GET", template, r))
        return r

    h.executor.blocked.add(TASK)
    for path in ("/healthz", "/readyz", "/metrics", "/api/v1/tasks", "/api/v1/plan",
                 "/api/v1/status", "/api/v1/audit", "/api/v1/notifications"):
        await call("GET", path, 200)
    await call("HEAD", "/api/v1/events", 200)  # a stream: HEAD ends it after the headers
    r = await call("POST", "/api/v1/tasks/{name}/trigger", 202, url_of(
        "/api/v1/tasks/{name}/trigger", 0), headers=AUTH)
    live = r.json()["run"]["id"]
    for template in ("/api/v1/tasks/{name}", "/api/v1/tasks/{name}/runs",
                     "/api/v1/runs/{run_id}"):
        await call("GET", template, 200, url_of(template, live))
    await call("GET", "/api/v1/runs/{run_id}/log", 200,
               url_of("/api/v1/runs/{run_id}/log", live), params={"follow": "false"})
    cancel = url_of("/api/v1/runs/{run_id}/cancel", live)
    await call("POST", "/api/v1/runs/{run_id}/cancel", 202, cancel, headers=AUTH)
    h.executor.blocked.discard(TASK)
    await h.settle()  # the cancelled run has ended
    await call("POST", "/api/v1/runs/{run_id}/cancel", 200, cancel, headers=AUTH)
    for action, body in (("suspend", {"note": "contract"}), ("resume", {"catchUp": False})):
        template = f"/api/v1/tasks/{{name}}/{action}"
        await call("POST", template, 200, url_of(template, live), headers=AUTH, json=body)
    await _backfills(h, call)
    return live


async def _errors(h: Harness, seen: Seen, live: int) -> None:
    async def call(method: str, template: str, expect: int, url: str, **kw: Any) -> None:
        r = await h.client.request(method, url, **kw)
        assert r.status_code == expect, (method, url, r.text)
        seen.append((method, template, r))

    for template in SPEC["paths"]:  # another method on every path: 405
        r = await h.client.put(url_of(template, live), headers=AUTH)
        assert r.status_code == 405, template
        seen.extend((m.upper(), template, r) for m in SPEC["paths"][template])
    bad = {"name": "Bad_Name", "run_id": "0", "backfill_id": "0"}
    for method, template in sorted(operations(h.app)):
        url = url_of(template, live)
        if method == "POST":
            await call(method, template, 401, url)  # no token
        if "{" in template:  # a path parameter out of its pattern or range; a missing one
            await call(method, template, 422, template.format(**bad), headers=AUTH,
                       json=BODIES.get(template))
            missing = (template.replace("{name}", "no-such-task").replace("{run_id}", "99999")
                       .replace("{backfill_id}", "99999"))
            await call(method, template, 404, missing, headers=AUTH, json=BODIES.get(template))
    await call("GET", "/api/v1/tasks", 400, "/api/v1/tasks", params={"selector": "a in (b"})
    await call("GET", "/api/v1/tasks", 422, "/api/v1/tasks", params={"limit": "0"})
    await call("GET", "/api/v1/audit", 422, "/api/v1/audit", params={"limit": "0"})
    await call("GET", "/api/v1/notifications", 422, "/api/v1/notifications",
               params={"limit": "0"})
    await call("GET", "/api/v1/tasks/{name}/runs", 400, url_of("/api/v1/tasks/{name}/runs", 0),
               params={"status": "bogus"})
    await call("POST", "/api/v1/tasks/{name}/suspend", 413,
               url_of("/api/v1/tasks/{name}/suspend", 0), headers=AUTH,
               json={"note": "x" * 70_000})
    await call("POST", "/api/v1/tasks/{name}/resume", 422,
               url_of("/api/v1/tasks/{name}/resume", 0), headers=AUTH, json={"catchUp": "yes"})
    h.executor.blocked.add(TASK)
    h.executor.release.clear()
    trigger = url_of("/api/v1/tasks/{name}/trigger", 0)
    await call("POST", "/api/v1/tasks/{name}/trigger", 202, trigger, headers=AUTH)
    await call("POST", "/api/v1/tasks/{name}/trigger", 409, trigger, headers=AUTH)  # Forbid
    r = await h.client.post(f"/api/v1/tasks/{OTHER}/trigger", headers=AUTH)
    await h.settle()
    done = url_of("/api/v1/runs/{run_id}/cancel", r.json()["run"]["id"])
    await call("POST", "/api/v1/runs/{run_id}/cancel", 409, done, headers=AUTH)  # succeeded
    backfill = "/api/v1/tasks/{name}/backfill"
    await call("POST", backfill, 409, url_of(backfill, 0), headers=AUTH,  # no slots
               json={"from": "2026-02-01T04:00", "to": "2026-02-01T05:00"})
    await call("POST", backfill, 409, url_of(backfill, 0), headers=AUTH,  # reversed
               json={**BACKFILL, "to": "2026-01-01", "dryRun": True})
    await call("POST", backfill, 422, url_of(backfill, 0), headers=AUTH,
               json={**BACKFILL, "parallel": 0})
    finished = h.store.add_backfill(NewBackfill(
        task_name=TASK, start=T0 - timedelta(days=2), end=T0, parallel=1, rerun=False,
        total=2, created_by="alice", created_at=T0))
    h.store.update_backfill(finished.id, state=BackfillState.SUCCEEDED, done=2, failed=0,
                            now=T0)
    cancel = "/api/v1/backfills/{backfill_id}/cancel"
    await call("POST", cancel, 409, url_of(cancel, 0, finished.id), headers=AUTH)
    await call("GET", "/api/v1/backfills", 422, "/api/v1/backfills", params={"limit": "0"})


async def _auth_errors(root: Path, seen: Seen) -> None:
    """401 on every read with --auth-reads and no token; 403 on writes without tokens."""
    async with harness(root / "auth-reads", auth_reads=True) as h:
        for method, template in sorted(operations(h.app)):
            if method == "GET" and template not in ("/healthz", "/readyz"):
                r = await h.client.get(url_of(template, 1))
                assert r.status_code == 401, template
                seen.append((method, template, r))
    async with harness(root / "no-tokens", token=None) as h:
        for method, template in sorted(operations(h.app)):
            if method == "POST":
                r = await h.client.post(url_of(template, 1), headers=AUTH)
                assert r.status_code == 403, template
                seen.append((method, template, r))


def test_the_document_is_valid_openapi() -> None:
    validate(SPEC)


def test_every_route_answers_as_the_document_says(tmp_path: Path) -> None:
    seen: Seen = []

    async def scenario() -> set[tuple[str, str]]:
        async with harness(tmp_path / "main") as h:
            served = await h.client.get("/api/v1/openapi.json")
            assert served.json() == SPEC, "the served document differs from specs/"
            dashboard = await h.client.get("/")
            assert dashboard.status_code == 200
            live = await _successes(h, seen)
            await _errors(h, seen, live)
            ops = operations(h.app)
        await _auth_errors(tmp_path, seen)
        return ops

    ops = run(scenario)
    for method, template, response in seen:
        conforms(method, template, response)
    assert ops == {(m.upper(), p) for p, ms in SPEC["paths"].items() for m in ms}
    for method, template in sorted(ops):
        statuses = {r.status_code for m, t, r in seen if (m, t) == (method, template)}
        declared = {int(s) for s in SPEC["paths"][template][method.lower()]["responses"]}
        assert any(s < 300 for s in statuses), f"{method} {template}: no success case"
        assert any(s >= 400 for s in statuses), f"{method} {template}: no error case"
        missing = {s for s in declared if s < 300} - statuses
        assert not missing, f"{method} {template}: no case answers {sorted(missing)}"

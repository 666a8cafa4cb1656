"""Who may change what through the HTTP API: every mutating route, every way to be refused.

tests/api/ checks single examples (one route without a token, a removed token on one
route). This module is the systematic version: the mutating routes are read from the
app itself (its OpenAPI document *and* its route table, which must agree), so an
endpoint added later is attacked here without anyone remembering to add it. For each
route: no token, a wrong token, a token with a suffix, the right token under another
scheme, an expired token and a token removed from the token file while the daemon
runs are refused, and afterwards the tasks, the runs, the audit log and the executor
are exactly as before. The same routes answer 413 to an oversized body, and work with
a valid token (so the refusals above are about the token, not a broken route).

Also: the token comparison is constant time by construction (``hmac.compare_digest``
over every configured token, spied on, not timed), expiry follows an injected clock,
CORS is off, and the security headers are on HTML, JSON, text and error responses.

A real daemon runs in-process (tests/api/conftest.py: SQLite, FakeClock, an executor
that finishes when told); nothing sleeps.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from reconciler.api.app import create_app
from reconciler.api.auth import TokenStore, parse_token_file
from reconciler.api.contract import flat_routes
from reconciler.core.backfill import NewBackfill
from reconciler.core.clock import FakeClock
from tests.api.conftest import T0, Harness, harness, run

pytestmark = [pytest.mark.security]

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}

ALICE = "alice-token-0123456789abcdef"  # valid throughout
BOB = "bob-token-0123456789abcdef"  # removed from the file while the daemon runs
OLD = "old-token-0123456789abcdef"  # expired the day before T0
SOON = "soon-token-0123456789abcdef"  # expires 60 s after T0
TOKENS = (
    "# name:token [expires=<instant>]\n"
    f"alice:{ALICE}\n"
    f"bob:{BOB}\n"
    f"old:{OLD} expires=2026-03-01T00:00:00Z\n"
    f"soon:{SOON} expires={(T0 + timedelta(seconds=60)).isoformat()}\n"
)

MANIFESTS = {
    "tasks.yaml": """\
apiVersion: reconciler/v1
kind: Task
metadata: {name: alpha, labels: {team: a}}
spec:
  schedule: "0 3 * * *"
  run: {command: [/bin/true]}
---
apiVersion: reconciler/v1
kind: Task
metadata: {name: beta}
spec:
  schedule: "0 4 * * *"
  run: {command: [/bin/true]}
""",
}

#: A value for each path parameter a mutating route may have. A route with a parameter
#: missing here fails test_every_mutating_route_is_enumerated: add its value.
PATH_VALUES = {"name": "alpha", "run_id": "{run_id}", "backfill_id": "1"}
#: The body a valid request of a route carries (the others take ``{}``).
BODIES = {"/api/v1/tasks/{name}/backfill": {"from": "2026-02-01", "to": "2026-02-03"}}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def mutating_routes() -> list[tuple[str, str, bool]]:
    """(method, path template, takes a JSON body) of every mutating route, from OpenAPI."""
    doc = create_app(None).openapi()
    out = []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            if method.upper() in MUTATING:
                out.append((method.upper(), path, "requestBody" in op))
    return sorted(out)


def route_table() -> set[tuple[str, str]]:
    """(method, path) of every mutating route in the app's route table (hidden ones too)."""
    app = create_app(None)
    return {(m, r.path) for r in flat_routes(app.routes) if isinstance(r, Route)
            for m in (r.methods or ()) if m in MUTATING}


ROUTES = mutating_routes()


def url_of(template: str, run_id: int) -> str:
    def value(match: re.Match[str]) -> str:
        return PATH_VALUES[match.group(1)].format(run_id=run_id)

    return re.sub(r"\{([a-z_]+)\}", value, template)


async def snapshot(h: Harness) -> dict[str, Any]:
    """Everything a mutation could change: tasks, runs, audit rows, executions."""
    tasks = (await h.client.get("/api/v1/tasks")).json()["items"]
    runs = {t["name"]: (await h.client.get(f"/api/v1/tasks/{t['name']}/runs")).json()["items"]
            for t in tasks}
    audit = (await h.client.get("/api/v1/audit", params={"limit": 1000})).json()["items"]
    return {"tasks": tasks, "runs": runs, "audit": audit, "started": len(h.executor.started),
            "rows": [(r.name, r.generation, r.override) for r in h.store.load_tasks()],
            "run_rows": h.store.count_runs(), "backfills": h.store.list_backfills()}


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    path.chmod(0o600)
    return path


async def live_run(h: Harness) -> int:
    """A running run of alpha (held by the executor), for the cancel route."""
    h.executor.blocked.add("alpha")
    r = await h.client.post("/api/v1/tasks/alpha/trigger", headers=bearer(ALICE))
    assert r.status_code == 202, r.text
    await h.settle()
    return int(r.json()["run"]["id"])


# ------------------------------------------------------------------ enumeration


def test_every_mutating_route_is_enumerated() -> None:
    """The OpenAPI document lists every mutating route of the app (none is hidden from
    this suite), and every path parameter of those routes has a test value."""
    assert {(m, p) for m, p, _ in ROUTES} == route_table()
    assert {(m, p) for m, p, _ in ROUTES} >= {
        ("POST", "/api/v1/tasks/{name}/trigger"), ("POST", "/api/v1/tasks/{name}/suspend"),
        ("POST", "/api/v1/tasks/{name}/resume"), ("POST", "/api/v1/runs/{run_id}/cancel"),
    }
    for _, path, _ in ROUTES:
        assert set(re.findall(r"\{([a-z_]+)\}", path)) <= set(PATH_VALUES), path
    doc = create_app(None).openapi()
    for method, path, _ in ROUTES:
        op = doc["paths"][path][method.lower()]
        assert op["security"] == [{"HTTPBearer": []}], (method, path)  # no anonymous option
        assert {"401", "403"} <= set(op["responses"]), (method, path)


# --------------------------------------------------------------------- refusals


def test_every_mutating_route_refuses_bad_tokens_and_changes_nothing(
    tmp_path: Path, token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No token, a wrong token, the token plus a suffix, the token under Basic, an expired
    token and a token removed while running: 401 on every mutating route, no token is
    ever echoed, and tasks, runs, audit rows and executions are unchanged."""
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        async with harness(tmp_path, token=None, token_file=token_file,
                           manifests=MANIFESTS) as h:
            h.daemon.api.tokens.clock = h.clock  # expiry follows the test's clock
            run_id = await live_run(h)
            # bob works, then is removed from the file while the daemon runs
            r = await h.client.post("/api/v1/tasks/beta/suspend", headers=bearer(BOB))
            assert r.status_code == 200
            r = await h.client.post("/api/v1/tasks/beta/resume", headers=bearer(BOB))
            assert r.status_code == 200
            token_file.write_text(TOKENS.replace(f"bob:{BOB}\n", ""))
            h.store.add_backfill(NewBackfill(  # backfill 1, for the cancel route
                task_name="alpha", start=T0 - timedelta(days=2), end=T0, parallel=1,
                rerun=False, total=2, created_by="alice", created_at=T0))
            before = await snapshot(h)
            cases: list[tuple[str, dict[str, str], str]] = [
                ("no token", {}, "unauthorized"),
                ("wrong token", bearer("wrong-token-0123456789abcdef"), "unauthorized"),
                ("token plus suffix", bearer(ALICE + "x"), "unauthorized"),
                ("token prefix", bearer(ALICE[:-1]), "unauthorized"),
                ("basic scheme", {"Authorization": f"Basic {ALICE}"}, "unauthorized"),
                ("token without scheme", {"Authorization": ALICE}, "unauthorized"),
                ("expired token", bearer(OLD), "token_expired"),
                ("removed token", bearer(BOB), "unauthorized"),
            ]
            for method, template, has_body in ROUTES:
                url = url_of(template, run_id)
                for what, headers, code in cases:
                    body = {"note": "x"} if has_body else None
                    r = await h.client.request(method, url, headers=headers, json=body)
                    assert r.status_code == 401, (method, url, what, r.text)
                    assert r.json()["error"]["code"] == code, (method, url, what)
                    assert r.headers["www-authenticate"].startswith("Bearer"), what
                    for secret in (ALICE, BOB, OLD):
                        assert secret not in r.text and secret[:-1] not in r.text, what
                    if code == "token_expired":
                        assert "expired" in r.json()["error"]["message"]
                await h.settle()
                assert await snapshot(h) == before, (method, url)
            # an expired token is logged once, by name; tokens never reach the log
            expired_lines = [m for m in caplog.messages if "expired" in m and "'old'" in m]
            assert len(expired_lines) == 1, expired_lines
            for secret in (ALICE, BOB, OLD, SOON):
                assert secret not in caplog.text
            # the positive control: the same routes work with a valid token
            for method, template, has_body in ROUTES:
                r = await h.client.request(method, url_of(template, run_id),
                                           headers=bearer(ALICE),
                                           json=BODIES.get(template, {}) if has_body else None)
                assert r.status_code in (200, 201, 202), (method, template, r.text)
            assert len((await snapshot(h))["audit"]) == len(before["audit"]) + len(ROUTES)

    run(scenario)


def test_every_mutating_route_is_disabled_without_any_token(tmp_path: Path) -> None:
    """With no token configured at all, mutations are off (403) on every route, whatever
    the request carries, and nothing changes."""

    async def scenario() -> None:
        async with harness(tmp_path, token=None, manifests=MANIFESTS) as h:
            before = await snapshot(h)
            for method, template, has_body in ROUTES:
                for headers in ({}, bearer(ALICE)):
                    r = await h.client.request(method, url_of(template, 1), headers=headers,
                                               json={} if has_body else None)
                    assert r.status_code == 403, (method, template, r.text)
                    assert r.json()["error"]["code"] == "mutations_disabled"
            assert await snapshot(h) == before

    run(scenario)


def test_a_token_stops_working_when_the_injected_clock_passes_its_expiry(
    tmp_path: Path, token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A token with ``expires=`` works before that instant and gets 401 token_expired from
    it on (FakeClock, no waiting); the refusal is logged once, by name, without the
    token; alice's token (no expiry) keeps working."""

    async def scenario() -> None:
        async with harness(tmp_path, token=None, token_file=token_file,
                           manifests=MANIFESTS) as h:
            h.daemon.api.tokens.clock = h.clock
            url = "/api/v1/tasks/beta/suspend"
            assert (await h.client.post(url, headers=bearer(SOON))).status_code == 200
            h.clock.advance(timedelta(seconds=59))
            assert (await h.client.post(url, headers=bearer(SOON))).status_code == 200
            h.clock.advance(timedelta(seconds=1))  # exactly the expiry instant
            before = await snapshot(h)
            for _ in range(3):
                r = await h.client.post("/api/v1/tasks/beta/resume", headers=bearer(SOON))
                assert r.status_code == 401
                assert r.json()["error"]["code"] == "token_expired"
                assert 'error_description="The access token expired"' in (
                    r.headers["www-authenticate"])
                assert SOON not in r.text
            assert await snapshot(h) == before
            r = await h.client.post("/api/v1/tasks/beta/resume", headers=bearer(ALICE))
            assert r.status_code == 200 and r.json()["changed"] is True
            lines = [m for m in caplog.messages if "'soon'" in m and "expired" in m]
            assert len(lines) == 1 and SOON not in caplog.text

    run(scenario)


# ------------------------------------------------------------------ token store


def test_token_file_expiry_syntax() -> None:
    """``name:token expires=<instant with a zone>`` parses; a naive, malformed or unknown
    option drops the line (never a silently non-expiring token) and the warning names
    the line, not the token."""
    lines = parse_token_file(
        "a:tok-aaaaaaaaaaaaaaaa\n"
        "b:tok-bbbbbbbbbbbbbbbb expires=2027-01-31T00:00:00Z\n"
        "c:tok-cccccccccccccccc   expires=2027-01-31T01:00:00+01:00\n"
        "d:tok-dddddddddddddddd expires=2027-01-31T00:00:00\n"  # no zone
        "e:tok-eeeeeeeeeeeeeeee expires=tomorrow\n"
        "f:tok-ffffffffffffffff expire=2027-01-31T00:00:00Z\n"  # typo
        "g:tok-gggggggggggggggg expires=2027-01-31T00:00:00Z expires=2028-01-01T00:00:00Z\n"
        "h:tok hhhhhhhhhhhhhhhh\n",  # whitespace inside a token is not allowed
        "tokens")
    expected = datetime(2027, 1, 31, tzinfo=UTC)
    assert [(x.name, x.token, x.expires) for x in lines] == [
        ("a", "tok-aaaaaaaaaaaaaaaa", None),
        ("b", "tok-bbbbbbbbbbbbbbbb", expected),
        ("c", "tok-cccccccccccccccc", expected),
    ]


def test_token_file_warnings_never_contain_tokens(caplog: pytest.LogCaptureFixture) -> None:
    """Rejected lines are reported by file, line number and name only."""
    parse_token_file("x:secret-value-0123456789 expires=soon\n", "tokens")
    assert "tokens:1: ignored (token 'x')" in caplog.text
    assert "secret-value" not in caplog.text


class CompareSpy:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.real = hmac.compare_digest

    def __call__(self, a: bytes, b: bytes) -> bool:
        self.calls.append((len(a), len(b)))
        return self.real(a, b)


@pytest.fixture
def compare_spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[CompareSpy]:
    spy = CompareSpy()
    monkeypatch.setattr("reconciler.api.auth.hmac.compare_digest", spy)
    yield spy


def test_comparison_is_constant_time_over_all_tokens(tmp_path: Path,
                                                     compare_spy: CompareSpy) -> None:
    """Every check compares fixed-size digests with hmac.compare_digest against *every*
    configured token (env and file, expired ones included), whether the presented token
    is the first, the last, an expired one, unknown, empty or huge: the work done does
    not depend on which token matched, how much of it matched, or its length."""
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    clock = FakeClock(T0)
    store = TokenStore(f"ci:{'c' * 32}", path, clock=clock)
    configured = 1 + len(parse_token_file(TOKENS))
    for presented, expected in [("c" * 32, "ci"), (ALICE, "alice"), (SOON, "soon"),
                                (OLD, None), ("unknown-token", None), ("", None),
                                ("x" * 100_000, None)]:
        compare_spy.calls.clear()
        assert store.authenticate(presented) == expected, presented[:20]
        assert compare_spy.calls == [(32, 32)] * configured, presented[:20]
    assert configured == 5


def test_api_request_compares_against_every_token(tmp_path: Path, token_file: Path,
                                                  compare_spy: CompareSpy) -> None:
    """A mutating request with the first token listed still runs the comparison against
    all of them (the app goes through the same constant-time path)."""

    async def scenario() -> None:
        async with harness(tmp_path, token=None, token_file=token_file,
                           manifests=MANIFESTS) as h:
            compare_spy.calls.clear()
            r = await h.client.post("/api/v1/tasks/beta/suspend", headers=bearer(ALICE))
            assert r.status_code == 200
            assert compare_spy.calls == [(32, 32)] * len(parse_token_file(TOKENS))

    run(scenario)


# ------------------------------------------------------------------- body limit


def test_oversized_bodies_are_refused_on_every_mutating_route(tmp_path: Path,
                                                               token_file: Path) -> None:
    """A body over the limit gets 413 on every mutating route, with or without a valid
    token, whether it declares its length or streams it; nothing changes."""

    async def scenario() -> None:
        async with harness(tmp_path, token=None, token_file=token_file,
                           manifests=MANIFESTS) as h:
            run_id = await live_run(h)
            limit = h.daemon.api.ctx.max_body
            before = await snapshot(h)
            big = b'{"note": "' + b"x" * limit + b'"}'

            async def stream() -> Any:
                for _ in range(limit // 4096 + 2):
                    yield b"x" * 4096

            for method, template, _ in ROUTES:
                url = url_of(template, run_id)
                for headers in (bearer(ALICE), {}):
                    json_headers = {**headers, "Content-Type": "application/json"}
                    r = await h.client.request(method, url, headers=json_headers, content=big)
                    assert r.status_code == 413, (method, url, r.text)
                    assert r.json()["error"]["code"] == "payload_too_large"
                    r = await h.client.request(method, url, headers=json_headers,
                                               content=stream())
                    assert r.status_code == 413, (method, url, "streamed")
                    r = await h.client.request(method, url, content=b"{}",
                                               headers={**json_headers,
                                                        "Content-Length": "-1"})
                    assert r.status_code == 400, (method, url, "negative length")
            await h.settle()
            assert await snapshot(h) == before

    run(scenario)


# ------------------------------------------------------------------- CORS, CSRF


def test_cors_is_off(tmp_path: Path, token_file: Path) -> None:
    """A cross-origin preflight or request gets no Access-Control-* header, so a page on
    another origin can neither send the Authorization header nor read a response; a
    "simple" cross-site POST (a form) carries no token and is refused."""

    async def scenario() -> None:
        async with harness(tmp_path, token=None, token_file=token_file,
                           manifests=MANIFESTS) as h:
            origin = {"Origin": "https://evil.example"}
            before = await snapshot(h)
            for method, template, _ in ROUTES:
                url = url_of(template, 1)
                r = await h.client.options(url, headers={
                    **origin, "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "authorization, content-type"})
                assert r.status_code >= 400, (url, r.status_code)
                assert not [k for k in r.headers if k.lower().startswith("access-control")]
                r = await h.client.request(method, url, headers={
                    **origin, "Content-Type": "application/x-www-form-urlencoded"},
                    content=b"note=pwned")
                assert r.status_code == 401
                assert "access-control-allow-origin" not in r.headers
            for path in ("/api/v1/tasks", "/api/v1/status", "/metrics", "/"):
                r = await h.client.get(path, headers=origin)
                assert r.status_code == 200
                assert not [k for k in r.headers if k.lower().startswith("access-control")]
            assert await snapshot(h) == before

    run(scenario)


# --------------------------------------------------------------------- headers


def assert_security_headers(r: httpx.Response, what: str) -> None:
    csp = r.headers.get("content-security-policy", "")
    assert "default-src 'none'" in csp, what
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp, what
    assert "frame-ancestors 'none'" in csp, what
    assert r.headers.get("x-content-type-options") == "nosniff", what
    assert r.headers.get("x-frame-options") == "DENY", what
    assert r.headers.get("referrer-policy") == "no-referrer", what
    assert "server" not in r.headers, what


def test_security_headers_on_every_kind_of_response(tmp_path: Path, token_file: Path) -> None:
    """CSP, nosniff, frame denial and Referrer-Policy on the HTML page, static files, every
    read route of the OpenAPI document (JSON, text, event stream), mutations, and the
    error responses (400, 401, 404, 405, 413, 422)."""

    async def scenario() -> None:
        async with harness(tmp_path, token=None, token_file=token_file,
                           manifests=MANIFESTS) as h:
            run_id = await live_run(h)
            h.executor.release.set()
            await h.settle()
            responses: dict[str, httpx.Response] = {}
            doc = h.app.openapi()
            for path, operations in doc["paths"].items():
                if "get" not in operations or path == "/api/v1/events":
                    continue
                url = path.replace("{name}", "alpha").replace("{run_id}", str(run_id))
                responses[f"GET {url}"] = await h.client.get(url)
            for path in ("/", "/static/app.js", "/static/style.css", "/static/favicon.svg"):
                responses[f"GET {path}"] = await h.client.get(path)
            responses["POST mutation"] = await h.client.post(
                "/api/v1/tasks/beta/suspend", headers=bearer(ALICE))
            responses["400"] = await h.client.get("/api/v1/tasks", params={"selector": "a=(("})
            responses["401"] = await h.client.post("/api/v1/tasks/alpha/trigger")
            responses["404"] = await h.client.get("/api/v1/tasks/no-such-task")
            responses["404 static"] = await h.client.get("/static/../auth.py")
            responses["405"] = await h.client.delete("/api/v1/tasks")
            responses["413"] = await h.client.post("/api/v1/tasks/alpha/suspend",
                                                   content=b"x" * (h.daemon.api.ctx.max_body + 1))
            responses["422"] = await h.client.get("/api/v1/runs/0")
            # the event stream ends when the hub closes (done last: it stays closed)
            stream = asyncio.ensure_future(h.client.get("/api/v1/events"))
            deadline = asyncio.get_running_loop().time() + 10
            while not h.daemon.api.events.subscribers:
                assert asyncio.get_running_loop().time() < deadline, "never subscribed"
                await asyncio.sleep(0.002)  # a condition wait: the request is starting
            h.daemon.api.events.close()
            responses["GET /api/v1/events"] = await asyncio.wait_for(stream, timeout=10)
            kinds = set()
            for what, r in responses.items():
                assert_security_headers(r, what)
                kinds.add(r.headers.get("content-type", "").split(";")[0])
                if what.startswith("4"):
                    assert r.status_code == int(what[:3]), (what, r.status_code, r.text)
                    assert r.headers["content-type"].startswith("application/json"), what
            assert {"text/html", "application/json", "text/plain", "text/event-stream",
                    "text/javascript"} <= kinds

    run(scenario)

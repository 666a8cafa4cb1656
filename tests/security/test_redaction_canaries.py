"""No secret of a task's spec leaves the daemon: canaries in every field that can hold one.

Canary strings are planted in every place of a manifest where a secret can sit: literal
env values under secret-looking names, passwords in URLs (postgresql, mysql, redis,
amqp) under plain env names, a signed URL's ``sig``, the http url's userinfo and query,
http headers, the http body, command arguments after ``--password``-like flags, a shell
script and an annotation. A ``fromEnv`` secret is echoed by a run, so the executor's own
output masking is covered too. The manifests are applied, then changed (every canary
replaced by a new one) while a delete keeps the daemon from applying the change, so the
pending plan holds old *and* new values.

Then every GET route of the app (read from its route table, so a route added later is
checked without anyone remembering to) is called for every task and run, plus the event
stream while a run happens, ``/metrics``, the audit log, the CLI (``diff`` in text and
JSON, ``get tasks``, ``runs``, ``logs``, in database and server mode) and the daemon's
log file; no canary may appear in any of them.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from reconciler.api.app import create_app
from reconciler.api.contract import flat_routes
from reconciler.core.runtime import RunStatus
from tests.e2e.conftest import DaemonProcess, wait_until

pytestmark = pytest.mark.e2e

TOKEN = "tok-" + "7" * 24
SOURCE_SECRET = "cnry-fromenv-" + secrets.token_hex(6)  # resolved at run time, echoed


def canaries(tag: str) -> dict[str, str]:
    fields = ("db_password", "access_key", "passphrase", "signing_key", "gh_pat", "pg_url",
              "mysql_url", "redis_url", "amqp_url", "blob_sig", "cmd_password", "cmd_token",
              "shell_key", "shell_header", "shell_flag", "url_password", "url_sig",
              "url_token", "hdr_auth", "hdr_api_key", "hdr_cookie", "body_password",
              "annotation")
    return {f: f"cnry{tag}{i:02d}{secrets.token_hex(4)}" for i, f in enumerate(fields)}


def manifests(c: dict[str, str], port: int) -> str:
    return f"""\
apiVersion: reconciler/v1
kind: Task
metadata:
  name: secrets-cmd
  annotations: {{runbook: "https://ops:{c['annotation']}@wiki.example/run"}}
spec:
  schedule: "@yearly"
  run:
    command: [sh, -c, 'echo "ref=$REF_TOKEN"; echo done', sh, --password, "{c['cmd_password']}",
              "--token={c['cmd_token']}"]
    env:
      PLAIN_SETTING: visible
      DB_PASSWORD: "{c['db_password']}"
      ACCESS_KEY: "{c['access_key']}"
      PASSPHRASE: "{c['passphrase']}"
      SIGNING_KEY: "{c['signing_key']}"
      GH_PAT: "{c['gh_pat']}"
      DATABASE_URL: "postgresql://app:{c['pg_url']}@db:5432/app"
      MYSQL_URL: "mysql://root:{c['mysql_url']}@db/app"
      CACHE_URL: "redis://:{c['redis_url']}@cache:6379/0"
      BROKER_URL: "amqp://app:{c['amqp_url']}@mq/vhost"
      BLOB_URL: "https://acct.blob.example/c/f?sv=2024&sig={c['blob_sig']}"
      REF_TOKEN: {{fromEnv: CANARY_SOURCE}}
---
apiVersion: reconciler/v1
kind: Task
metadata:
  name: secrets-shell
spec:
  schedule: "@yearly"
  run:
    shell: >-
      export API_KEY={c['shell_key']};
      curl -H "Authorization: Bearer {c['shell_header']}" --password {c['shell_flag']} x
---
apiVersion: reconciler/v1
kind: Task
metadata:
  name: secrets-http
spec:
  schedule: "@yearly"
  run:
    http:
      url: "http://hook:{c['url_password']}@127.0.0.1:{port}/x?sig={c['url_sig']}&token={c['url_token']}&page=1"
      headers:
        Authorization: "Bearer {c['hdr_auth']}"
        X-Api-Key: "{c['hdr_api_key']}"
        Cookie: "session={c['hdr_cookie']}"
        X-Trace: "1"
      body: '{{"password": "{c['body_password']}", "user": "bob"}}'
"""


DOOMED = """\
apiVersion: reconciler/v1
kind: Task
metadata:
  name: doomed
spec:
  schedule: "@yearly"
  run:
    shell: "yes 0123456789abcdef | head -c 200000"
"""


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_routes() -> list[str]:
    """Every GET path of the app, from its route table (not from a list kept here)."""
    paths = []
    for route in flat_routes(create_app(None).routes):
        if isinstance(route, APIRoute | Route) and "GET" in (route.methods or set()):
            paths.append(route.path)
    return sorted(paths)


def expand(path: str, names: list[str], run_ids: list[int],
           backfill_ids: list[int] = []) -> list[str]:  # noqa: B006 (read only)
    out = [path]
    if "{backfill_id}" in path:  # a backfill's document holds no spec: ids if any exist
        out = [p.replace("{backfill_id}", str(b)) for p in out for b in backfill_ids]
    if "{name}" in path:
        out = [p.replace("{name}", n) for p in out for n in names]
    if "{run_id}" in path:
        out = [p.replace("{run_id}", str(r)) for p in out for r in run_ids]
    assert all("{" not in p for p in out), f"a path parameter this test cannot fill: {path}"
    return out


def read_events(base: str, seen: list[str], stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(timeout=httpx.Timeout(30.0)) as client, client.stream(
            "GET", f"{base}/api/v1/events", headers=headers) as response:
        for line in response.iter_lines():
            seen.append(line)
            if stop.is_set() or '"status":"failed"' in line:
                return


def leaks(text: str, planted: dict[str, str]) -> list[str]:
    return [f"{field}" for field, value in planted.items() if value in text]


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("RECONCILER_API_TOKEN", f"alice:{TOKEN}")
    monkeypatch.setenv("CANARY_SOURCE", SOURCE_SECRET)
    d = DaemonProcess(tmp_path)
    yield d
    d.stop()


def test_no_canary_leaves_the_daemon(daemon: DaemonProcess) -> None:
    old, new = canaries("o"), canaries("n")
    planted = {**{f"old {k}": v for k, v in old.items()},
               **{f"new {k}": v for k, v in new.items()}, "fromEnv": SOURCE_SECRET}
    port = closed_port()
    daemon.write("secrets.yaml", manifests(old, port))
    daemon.write("doomed.yaml", DOOMED)
    daemon.start("--max-delete", "0", "--output-limit", "4096")
    base = f"http://127.0.0.1:{daemon.port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    http = httpx.Client(base_url=base, headers=auth, timeout=30)
    names = ["secrets-cmd", "secrets-shell", "secrets-http", "doomed"]
    wait_until(lambda: all(daemon.store.get_task(n) for n in names), what="the first apply")
    stored = json.dumps([daemon.store.get_task(n).document for n in names])
    assert all(value in stored for value in old.values())  # planted where the test says

    # Runs: the command task echoes its fromEnv secret; the http task fails to connect
    # (its error must not show the URL's secrets), seen live on the event stream.
    for name in ("secrets-cmd", "doomed"):
        assert http.post(f"/api/v1/tasks/{name}/trigger").status_code == 202
    wait_until(lambda: all(r.status.finished for n in ("secrets-cmd", "doomed")
                           for r in daemon.runs(n)) and daemon.runs("doomed"), what="runs")
    events: list[str] = []
    stop = threading.Event()
    reader = threading.Thread(target=read_events, args=(base, events, stop), daemon=True)
    reader.start()
    wait_until(lambda: any(line.startswith("event: hello") for line in events), what="hello")
    assert http.post("/api/v1/tasks/secrets-http/trigger").status_code == 202
    wait_until(lambda: any('"status":"failed"' in line for line in events), what="run event")
    stop.set()
    reader.join(timeout=30)
    cmd_run = daemon.runs("secrets-cmd")[0]
    assert cmd_run.status is RunStatus.SUCCEEDED and "ref=***" in (cmd_run.output_tail or "")
    assert daemon.runs("secrets-http")[0].status is RunStatus.FAILED

    # A change of every secret, held back by the refused delete: the plan shows it.
    daemon.write("secrets.yaml", manifests(new, port))
    (daemon.manifests / "doomed.yaml").unlink()

    def pending() -> Any:
        plan = http.get("/api/v1/plan").json()["plan"]
        return plan["refused"] and any(c["action"] == "update" for c in plan["changes"])

    wait_until(pending, what="the refused plan with the update")
    plan = http.get("/api/v1/plan").json()["plan"]
    update = next(c for c in plan["changes"] if c["name"] == "secrets-cmd")
    env_fields = {f["path"]: f for f in update["fields"]}
    assert env_fields["spec.run.env.DB_PASSWORD"] == {
        "path": "spec.run.env.DB_PASSWORD", "old": "***", "new": "***", "masked": True}

    responses: dict[str, str] = {"events": "\n".join(events)}
    run_ids = sorted({r.id for n in names for r in daemon.runs(n)})
    backfill_ids = [b["id"] for b in http.get("/api/v1/backfills").json()["items"]]
    for path in get_routes():
        for url in expand(path, names, run_ids, backfill_ids):
            if url == "/api/v1/events":  # read above, while a run happened
                continue
            r = http.get(url, params={"follow": "false"} if url.endswith("/log") else None)
            assert r.status_code < 500, (url, r.text)
            responses[url] = r.text
    assert {"/api/v1/plan", "/api/v1/tasks/secrets-http", "/metrics", "/api/v1/audit",
            f"/api/v1/runs/{cmd_run.id}/log"} <= set(responses)
    doomed = http.get(f"/api/v1/runs/{daemon.runs('doomed')[0].id}").json()
    assert doomed["outputTruncated"] is True  # 200 kB of output, 4 KiB kept

    cli = {
        "diff -o json": daemon.cli("diff", "--manifests", str(daemon.manifests), "-o", "json"),
        "diff": daemon.cli("diff", "--manifests", str(daemon.manifests)),
        "get tasks -o json": daemon.cli("get", "tasks", "-o", "json"),
        "get tasks --server": daemon.cli("get", "tasks", "-o", "json", "--server", base),
        "runs": daemon.cli("runs", "secrets-http", "-o", "json"),
        "logs": daemon.cli("logs", str(cmd_run.id)),
    }
    for what, result in cli.items():
        assert result.returncode in (0, 1, 2), (what, result.stderr)
        responses[f"cli {what}"] = result.stdout + result.stderr
    diff = json.loads(cli["diff -o json"].stdout)
    assert any(c["name"] == "secrets-cmd" for c in diff["changes"])
    assert re.search(r"spec\.run\.env\.GH_PAT: \"\*\*\*\" -> \"\*\*\*\" \(secrets masked\)",
                     cli["diff"].stdout)
    responses["daemon log"] = daemon.log.read_text()

    found = {where: leaks(text, planted) for where, text in responses.items()}
    assert {w: f for w, f in found.items() if f} == {}

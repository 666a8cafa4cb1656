"""What a task's definition can and cannot make the daemon do, end to end.

The executors have integration tests with real processes
(tests/integration/test_executors.py); this module goes through the real daemon
(``python -m reconciler run`` on SQLite, tests/e2e/conftest.py): a manifest is loaded,
applied, triggered through the HTTP API and run by the real executors, and the results
are read back from the database, the API and the log.

* ``command`` never passes through a shell: ``; rm -rf``, ``$(...)``, backticks, globs
  and redirections arrive as one argv entry each, and nothing they name happens.
* ``workingDir`` and ``fromFile``: what is checked (absolute in the manifest; at run
  time an existing directory, a regular file of at most 1 MiB in UTF-8, no FIFO that
  could hang the daemon) and what is deliberately not (``..`` and symlinks: whoever
  writes manifests already runs commands as the daemon's user, so a path check would
  be no boundary; docs/security.md).
* Secrets (``fromEnv``/``fromFile``, in ``env`` and in HTTP headers) reach the task and
  appear nowhere else: not in any table or column of the database (and not in the
  raw SQLite files), not in the daemon's debug log, not in any API response (tasks,
  runs, logs, plan, status, audit, the event stream) and not in /metrics.
* A task that prints its own secret, or raises an exception carrying it: the run's
  error is masked; the test below asks the same of its output.

One daemon serves the whole module (about 30 runs); the tests read what it recorded.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, inspect, select, table

from tests.e2e.conftest import DaemonProcess, wait_until

pytestmark = [pytest.mark.security, pytest.mark.e2e]

PY = sys.executable
TOKEN = "ops:exec-security-token-0123456789"
AUTH = {"Authorization": "Bearer exec-security-token-0123456789"}
_SUFFIX = uuid.uuid4().hex
CANARY_ENV = f"canary-env-{_SUFFIX}"  # fromEnv SEC_CANARY_ENV
CANARY_FILE = f"canary-file-{_SUFFIX}"  # fromFile secrets/api-key
CANARY_HTTP = f"canary-http-{_SUFFIX}"  # fromEnv SEC_CANARY_HTTP, an HTTP header
CANARIES = (CANARY_ENV, CANARY_FILE, CANARY_HTTP)
PRINTED = f"canary-printed-{_SUFFIX}"  # fromEnv SEC_PRINTED: the tasks that print it

ARGS = [
    "; rm -rf {victim}", "$(touch {pwned})", "`touch {pwned}`", "&& touch {pwned}",
    "| tee {pwned}", "> {pwned}", "*", "{victim}/*", "$HOME", "${PATH}", "a b",
    "'single'", '"double"', "\\", "--opt=$(id)", "line\n; touch {pwned}", "ünïcødé ✓",
]
ARGV_SCRIPT = "import json, sys; print(json.dumps(sys.argv[1:]))"
CWD_SCRIPT = "import os; print(os.getcwd())"
LEN_SCRIPT = "import os; print('length', len(os.environ['K']))"


def fill(arg: str, paths: dict[str, Path]) -> str:
    return arg.replace("{victim}", str(paths["victim"])).replace("{pwned}", str(paths["pwned"]))


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class SecurityDaemon(DaemonProcess):
    """The e2e daemon with extra environment (the secrets and the API token)."""

    extra_env: dict[str, str]

    def env(self) -> dict[str, str]:
        env = {**super().env(), **self.extra_env}
        env.pop("SEC_NOT_SET", None)  # the missing-secret task's variable
        return env


class HookServer(http.server.ThreadingHTTPServer):
    """Records the Authorization header of each request (the HTTP task's secret)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.seen.append(self.headers.get("Authorization", ""))
                self.send_response(200)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"ok\n")

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@dataclass
class World:
    daemon: SecurityDaemon
    root: Path
    api: httpx.Client
    hook: HookServer
    paths: dict[str, Path] = field(default_factory=dict)
    run_ids: dict[str, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)

    def run(self, task: str) -> dict[str, Any]:
        """The run of ``task`` as the API shows it (with its output tail)."""
        r = self.api.get(f"/api/v1/runs/{self.run_ids[task]}")
        assert r.status_code == 200, r.text
        doc: dict[str, Any] = r.json()
        return doc


def task(name: str, run: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "reconciler/v1", "kind": "Task", "metadata": {"name": name},
            "spec": {"schedule": "@yearly", "run": run}}


def build_tasks(root: Path, paths: dict[str, Path], hook_port: int) -> dict[str, list[Any]]:
    """The manifest files: {file name: [documents]}."""
    p = paths
    args = [fill(a, p) for a in ARGS]
    files: dict[str, list[Any]] = {}
    files["argv.yaml"] = [task("argv-probe", {"command": [PY, "-c", ARGV_SCRIPT, *args]})]
    files["workdir.yaml"] = [
        task("wd-ok", {"command": [PY, "-c", CWD_SCRIPT], "workingDir": str(p["work"])}),
        task("wd-missing", {"command": [PY, "-c", CWD_SCRIPT],
                            "workingDir": str(root / "no" / "such" / "dir")}),
        task("wd-file", {"command": [PY, "-c", CWD_SCRIPT], "workingDir": str(p["a_file"])}),
        task("wd-dotdot", {"command": [PY, "-c", CWD_SCRIPT],
                           "workingDir": f"{p['work']}/sub/../sub/.."}),
        task("wd-symlink-out", {"command": [PY, "-c", CWD_SCRIPT],
                                "workingDir": str(p["link_dir"])}),
    ]

    def ff(name: str, path: Path | str) -> dict[str, Any]:
        return task(name, {"command": [PY, "-c", LEN_SCRIPT],
                           "env": {"K": {"fromFile": str(path)}}})

    files["fromfile.yaml"] = [
        ff("ff-ok", p["plain_secret"]),
        ff("ff-missing", root / "secrets" / "nope"),
        ff("ff-dir", root / "secrets"),
        ff("ff-fifo", p["fifo"]),
        ff("ff-dev-zero", "/dev/zero"),
        ff("ff-too-big", p["big"]),
        ff("ff-not-utf8", p["binary"]),
        ff("ff-dotdot", f"{root}/secrets/../secrets/{p['plain_secret'].name}"),
        ff("ff-symlink-out", p["link_file"]),
    ]
    # invalid paths: each in a file of its own (an invalid document freezes its file)
    files["bad-workdir.yaml"] = [task("bad-workdir", {"command": ["true"],
                                                      "workingDir": "relative/dir"})]
    files["bad-fromfile.yaml"] = [task("bad-fromfile", {
        "command": ["true"], "env": {"K": {"fromFile": "../secrets/api-key"}}})]
    check = ("import hashlib, os, sys; ok = all(hashlib.sha256(os.environ[k].encode())"
             ".hexdigest() == h for k, h in zip(('DB_PASSWORD', 'API_KEY'), sys.argv[1:])); "
             "print('secrets delivered' if ok else 'wrong secrets'); sys.exit(0 if ok else 3)")
    secret_env = {"DB_PASSWORD": {"fromEnv": "SEC_CANARY_ENV"},
                  "API_KEY": {"fromFile": str(p["api_key"])}}
    files["secrets.yaml"] = [
        task("uses-secret", {"command": [PY, "-c", check, sha(CANARY_ENV), sha(CANARY_FILE)],
                             "env": secret_env}),
        task("uses-secret-shell", {
            "shell": 'test "${#DB_PASSWORD}" -gt 10 && echo "password of ${#DB_PASSWORD} chars"',
            "env": secret_env}),
        task("uses-secret-fails", {"command": [PY, "-c", "import sys; sys.exit(4)"],
                                   "env": secret_env}),
        task("missing-secret", {"command": [PY, "-c", "print('never')"],
                                "env": {**secret_env, "OTHER": {"fromEnv": "SEC_NOT_SET"}}}),
        task("http-secret", {"http": {
            "method": "POST", "url": f"http://127.0.0.1:{hook_port}/hook",
            "headers": {"Authorization": {"fromEnv": "SEC_CANARY_HTTP"}, "X-Plain": "1"}}}),
    ]
    files["printing.yaml"] = [
        task("prints-secret", {"shell": 'echo "the token is $TOKEN"',
                               "env": {"TOKEN": {"fromEnv": "SEC_PRINTED"}}}),
        task("raises-secret", {"python": "leaky:run", "workingDir": str(p["modules"]),
                               "env": {"TOKEN": {"fromEnv": "SEC_PRINTED"}}}),
    ]
    return files


def make_paths(root: Path, outside: Path) -> dict[str, Path]:
    p: dict[str, Path] = {}
    (root / "secrets").mkdir()
    p["victim"] = root / "victim"
    p["victim"].mkdir()
    (p["victim"] / "keep-me").write_text("still here\n")
    p["pwned"] = root / "pwned"
    p["work"] = root / "work"
    (p["work"] / "sub").mkdir(parents=True)
    p["a_file"] = root / "a-file"
    p["a_file"].write_text("")
    (outside / "dir").mkdir()
    p["link_dir"] = root / "link-dir"
    p["link_dir"].symlink_to(outside / "dir")
    p["outside_file"] = outside / "outside-secret"
    p["outside_file"].write_text("read-from-outside\n")
    p["link_file"] = root / "secrets" / "link-file"
    p["link_file"].symlink_to(p["outside_file"])
    p["plain_secret"] = root / "secrets" / "plain"
    p["plain_secret"].write_text("twelve chars\n")
    p["api_key"] = root / "secrets" / "api-key"
    p["api_key"].write_text(CANARY_FILE + "\n")
    p["api_key"].chmod(0o600)
    p["fifo"] = root / "secrets" / "fifo"
    os.mkfifo(p["fifo"])
    p["big"] = root / "secrets" / "big"
    p["big"].write_bytes(b"x" * ((1 << 20) + 1))
    p["binary"] = root / "secrets" / "binary"
    p["binary"].write_bytes(b"\xff\xfe" + CANARY_FILE.encode())
    p["modules"] = root / "modules"
    p["modules"].mkdir()
    (p["modules"] / "leaky.py").write_text(
        "import os\n\n\ndef run(ctx):\n"
        "    print('about to fail')\n"
        "    raise RuntimeError('token was ' + os.environ['TOKEN'])\n")
    return p


def read_events(url: str, sink: list[str], stop: threading.Event) -> None:
    try:
        with httpx.stream("GET", url, timeout=httpx.Timeout(5, read=None)) as response:
            for line in response.iter_lines():
                sink.append(line)
                if stop.is_set():
                    return
    except httpx.HTTPError:
        return  # the daemon stopped


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("exec")
    outside = tmp_path_factory.mktemp("outside")
    hook = HookServer()
    hook_thread = threading.Thread(target=hook.serve_forever, daemon=True)
    hook_thread.start()
    paths = make_paths(root, outside)
    d = SecurityDaemon(root)
    d.extra_env = {"SEC_CANARY_ENV": CANARY_ENV, "SEC_CANARY_HTTP": CANARY_HTTP,
                   "SEC_PRINTED": PRINTED, "RECONCILER_API_TOKEN": TOKEN}
    for name, docs in build_tasks(root, paths, hook.server_address[1]).items():
        d.write(name, yaml.safe_dump_all(docs, allow_unicode=True))
    d.start()
    base = f"http://127.0.0.1:{d.port}"
    api = httpx.Client(base_url=base, timeout=30)
    w = World(d, root, api, hook, paths)
    stop = threading.Event()
    reader = threading.Thread(target=read_events, args=(f"{base}/api/v1/events", w.events, stop),
                              daemon=True)
    try:
        reader.start()
        wait_until(lambda: any(line == "event: hello" for line in w.events),
                   what="the event stream")
        names = [doc["metadata"]["name"]
                 for docs in build_tasks(root, paths, 0).values() for doc in docs
                 if not doc["metadata"]["name"].startswith("bad-")]
        for name in names:
            r = api.post(f"/api/v1/tasks/{name}/trigger", headers=AUTH)
            assert r.status_code == 202, (name, r.text)
            w.run_ids[name] = r.json()["run"]["id"]

        def all_finished() -> bool:
            return all(w.run(n)["finishedAt"] is not None for n in names)

        wait_until(all_finished, timeout=60, what="every triggered run to finish")
        finals = {f'"id":{i},' for i in w.run_ids.values()}
        wait_until(lambda: all(any(f in line and '"finishedAt":"' in line
                                   for line in w.events) for f in finals),
                   what="the final run events")
        yield w
    finally:
        stop.set()
        api.close()
        d.stop()
        reader.join(timeout=15)
        hook.shutdown()
        hook.server_close()


# ------------------------------------------------------------------------- argv


def test_command_arguments_arrive_as_single_argv_entries(world: World) -> None:
    """Shell metacharacters in ``command`` are plain text: the program receives each
    argument as one argv entry, byte for byte, and nothing they name happens (no file
    is created, the victim directory is intact)."""
    run = world.run("argv-probe")
    assert run["status"] == "succeeded", run
    expected = [fill(a, world.paths) for a in ARGS]
    assert json.loads(run["outputTail"]) == expected
    assert (world.paths["victim"] / "keep-me").read_text() == "still here\n"
    assert not world.paths["pwned"].exists()
    log = world.api.get(f"/api/v1/runs/{world.run_ids['argv-probe']}/log",
                        params={"follow": "false"})
    assert json.loads(log.text) == expected


# -------------------------------------------------------------------- workingDir


def test_working_dir_is_checked_at_run_time(world: World) -> None:
    """A missing directory or a file fails the run before anything is spawned, with a
    message naming the path; an existing directory is the process's cwd."""
    ok = world.run("wd-ok")
    assert ok["status"] == "succeeded" and ok["outputTail"].strip() == str(world.paths["work"])
    missing = world.run("wd-missing")
    assert missing["status"] == "failed" and missing["exitCode"] is None
    assert missing["error"] == (f"working directory {world.root / 'no' / 'such' / 'dir'} "
                                "does not exist")
    not_dir = world.run("wd-file")
    assert not_dir["status"] == "failed"
    assert not_dir["error"] == f"working directory {world.paths['a_file']} is not a directory"


def test_working_dir_dotdot_and_symlinks_resolve_like_the_os_does(world: World) -> None:
    """``..`` and symlinks are resolved by the OS, not refused: a manifest writer already
    runs arbitrary commands as the daemon's user, so confining the cwd would protect
    nothing (docs/security.md, "git writers")."""
    dotdot = world.run("wd-dotdot")
    assert dotdot["status"] == "succeeded"
    assert dotdot["outputTail"].strip() == str(world.paths["work"])
    link = world.run("wd-symlink-out")
    assert link["status"] == "succeeded"
    assert link["outputTail"].strip() == os.path.realpath(world.paths["link_dir"])


def test_relative_paths_are_refused_when_the_manifest_is_loaded(world: World) -> None:
    """A relative ``workingDir`` or ``fromFile`` (``../secrets``) is a validation error
    naming the file and field: the task is never created, the others are unaffected."""
    status = world.api.get("/api/v1/status").json()
    errors = json.dumps(status["manifestErrors"])
    assert "bad-workdir.yaml" in errors and "workingDir" in errors, errors
    assert "bad-fromfile.yaml" in errors and "fromFile" in errors, errors
    for name in ("bad-workdir", "bad-fromfile"):
        assert world.api.get(f"/api/v1/tasks/{name}").status_code == 404
    result = world.daemon.cli("validate", str(world.daemon.manifests))
    assert result.returncode != 0
    assert "bad-workdir.yaml" in result.stdout + result.stderr


# ---------------------------------------------------------------------- fromFile


def test_from_file_is_checked_at_run_time_without_leaking_its_content(world: World) -> None:
    """Missing, a directory, a FIFO (which must not hang the daemon), /dev/zero, over
    1 MiB, not UTF-8: the run fails before spawning, the error names the variable and
    the file and never the content; a regular file is read (one newline stripped)."""
    ok = world.run("ff-ok")
    assert ok["status"] == "succeeded" and ok["outputTail"] == "length 12\n"
    secrets = world.root / "secrets"
    expected = {
        "ff-missing": f"env K: secret file {secrets / 'nope'} does not exist",
        "ff-dir": f"env K: secret file {secrets} is not a regular file",
        "ff-fifo": f"env K: secret file {world.paths['fifo']} is not a regular file",
        "ff-dev-zero": "env K: secret file /dev/zero is not a regular file",
        "ff-too-big": f"env K: secret file {world.paths['big']} is larger than 1048576 bytes",
        "ff-not-utf8": f"env K: secret file {world.paths['binary']} is not valid UTF-8",
    }
    for name, error in expected.items():
        run = world.run(name)
        assert (run["status"], run["error"], run["exitCode"]) == ("failed", error, None), name
        assert run["outputTail"] in ("", None), name


def test_from_file_dotdot_and_symlinks_are_read(world: World) -> None:
    """``..`` and a symlink pointing outside the secrets directory are followed: the file
    is read with the daemon's permissions, which the task's own command has anyway
    (docs/security.md explains why this is not a boundary)."""
    assert world.run("ff-dotdot")["outputTail"] == "length 12\n"
    assert world.run("ff-symlink-out")["outputTail"] == "length 17\n"


# ----------------------------------------------------------------------- secrets


def database_dump(url: str) -> str:
    """Every value of every column of every table, as text (a ``.dump`` equivalent)."""
    engine = create_engine(url)
    lines: list[str] = []
    try:
        with engine.connect() as conn:
            for name in inspect(conn).get_table_names():
                columns = [c["name"] for c in inspect(conn).get_columns(name)]
                t = table(name, *[__import__("sqlalchemy").column(c) for c in columns])
                for row in conn.execute(select(t)):
                    lines.append(f"{name}: {json.dumps([str(v) for v in row])}")
    finally:
        engine.dispose()
    return "\n".join(lines)


def raw_database_bytes(root: Path) -> bytes:
    """The SQLite files themselves, WAL and free pages included."""
    return b"".join(p.read_bytes() for p in sorted(root.glob("state.db*")))


def api_surfaces(w: World) -> dict[str, str]:
    """The body of every read the API offers, for every task and run."""
    out: dict[str, str] = {}

    def get(path: str, **params: Any) -> None:
        r = w.api.get(path, params=params)
        assert r.status_code == 200, (path, r.status_code)
        out[path] = r.text

    get("/api/v1/tasks")
    for item in w.api.get("/api/v1/tasks").json()["items"]:
        get(f"/api/v1/tasks/{item['name']}")
        get(f"/api/v1/tasks/{item['name']}/runs", limit=1000)
    for run_id in w.run_ids.values():
        get(f"/api/v1/runs/{run_id}")
        get(f"/api/v1/runs/{run_id}/log", follow="false")
    for path in ("/api/v1/plan", "/api/v1/status", "/metrics", "/readyz", "/healthz", "/",
                 "/api/v1/openapi.json"):
        get(path)
    get("/api/v1/audit", limit=1000)
    out["events"] = "\n".join(w.events)
    return out


def hits(surfaces: dict[str, str | bytes], canaries: tuple[str, ...]) -> list[str]:
    """Where any canary occurs: '<surface>: <canary prefix>' for each hit."""
    found = []
    for where, content in surfaces.items():
        data = content if isinstance(content, bytes) else content.encode()
        for canary in canaries:
            if canary.encode() in data:
                found.append(f"{where}: {canary.rsplit('-', 1)[0]}")
    return found


def test_secrets_reach_the_task_and_appear_nowhere_else(world: World) -> None:
    """The canary secrets (fromEnv, fromFile, an HTTP header from fromEnv) are delivered
    (the task checks their hashes, the hook server sees the header), and there are 0
    occurrences of any of them in the database (every column of every table, and the raw
    SQLite files), the daemon's debug log, every API response and /metrics."""
    assert world.run("uses-secret")["status"] == "succeeded"
    assert world.run("uses-secret")["outputTail"] == "secrets delivered\n"
    shell = world.run("uses-secret-shell")
    assert shell["status"] == "succeeded"
    assert shell["outputTail"] == f"password of {len(CANARY_ENV)} chars\n"
    fails = world.run("uses-secret-fails")
    assert (fails["status"], fails["error"]) == ("failed", "exited with code 4")
    missing = world.run("missing-secret")
    assert missing["status"] == "failed"
    assert missing["error"] == ("env OTHER: environment variable SEC_NOT_SET is not set in "
                                "the daemon's environment")
    assert world.run("http-secret")["status"] == "succeeded"
    assert world.hook.seen == [CANARY_HTTP]

    # the task definitions show references, never values
    detail = world.api.get("/api/v1/tasks/uses-secret").json()
    assert detail["spec"]["run"]["env"]["DB_PASSWORD"] == {"fromEnv": "SEC_CANARY_ENV"}

    surfaces: dict[str, str | bytes] = {
        "database (every table and column)": database_dump(world.daemon.db_url),
        "database (raw SQLite files)": raw_database_bytes(world.root),
        "daemon log (debug level)": world.daemon.log.read_bytes(),
        **api_surfaces(world),
    }
    assert len(surfaces) > 60
    found = hits(surfaces, CANARIES)
    assert found == [], "\n".join(found)


def test_a_secret_printed_or_raised_by_the_task_is_masked(world: World) -> None:
    """A task that prints its secret, or raises an exception carrying it (the traceback
    goes to its output), gets the value replaced by ``***`` in what the daemon keeps
    and serves: the run's error *and* its output, in the database, the API and the log.
    """
    raised = world.run("raises-secret")
    assert raised["status"] == "failed"
    assert raised["error"] == "RuntimeError: token was ***"
    printed = world.run("prints-secret")
    assert printed["status"] == "succeeded"
    surfaces: dict[str, str | bytes] = {
        "database (every table and column)": database_dump(world.daemon.db_url),
        "daemon log (debug level)": world.daemon.log.read_bytes(),
        **api_surfaces(world),
    }
    found = hits(surfaces, (PRINTED,))
    assert found == [], "\n".join(found)
    assert printed["outputTail"] == "the token is ***\n"

"""Executors with isolation settings, on real processes and a real HTTP receiver."""

from __future__ import annotations

import os
import pwd
import resource
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from reconciler.core.isolation import idempotency_key
from reconciler.core.model import HttpTarget, Limits, RunSpec
from reconciler.core.runtime import RunStatus
from reconciler.executors.isolation import detect_mode
from tests.integration.test_executors import PY, SLOT, execute, number_after
from tests.services.ci import require_capability, unavailable

pytestmark = pytest.mark.integration


class _Receiver(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        """Records the headers (lower-cased), the path as ``:path`` and the body as
        ``:body``."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append({k.lower(): v for k, v in self.headers.items()}
                         | {":path": self.path, ":body": body.decode()})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_Receiver,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_receiver_of_an_http_task_sees_the_key(
    receiver: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = receiver
    for attempt in (1, 2):
        result = execute(RunSpec(http=HttpTarget(url=url)), attempt=attempt)
        assert result.status is RunStatus.SUCCEEDED, result
    result = execute(RunSpec(http=HttpTarget(url=url, idempotency_key=False)))
    assert result.status is RunStatus.SUCCEEDED, result
    first, retry, opted_out = seen
    assert first["idempotency-key"] == retry["idempotency-key"] == idempotency_key("demo", SLOT)
    assert "idempotency-key" not in opted_out


def test_a_process_gets_the_key_in_its_environment() -> None:
    result = execute(RunSpec(shell="echo $RECONCILER_IDEMPOTENCY_KEY"))
    assert result.output_tail == idempotency_key("demo", SLOT) + "\n"


# ---------------------------------------------------------------------------- run as


def _as_root() -> None:
    if os.geteuid() != 0:
        unavailable("running tasks as another user needs the tests to run as root")


def test_a_run_as_nobody_has_its_uid_and_home() -> None:
    _as_root()
    result = execute(RunSpec(shell="id -u; id -g; echo HOME=$HOME USER=$USER", user="nobody"))
    assert result.status is RunStatus.SUCCEEDED, result
    nobody = pwd.getpwnam("nobody")
    assert result.output_tail.splitlines() == [
        "65534", str(nobody.pw_gid), f"HOME={nobody.pw_dir} USER=nobody"]


def test_a_group_by_id_and_a_uid_without_a_passwd_entry() -> None:
    _as_root()
    result = execute(RunSpec(command=["id"], user=64999, group=0))
    assert result.status is RunStatus.SUCCEEDED, result
    assert result.output_tail.startswith("uid=64999 gid=0(root) groups=0(root)")


def test_an_unknown_user_fails_the_run_with_its_name() -> None:
    _as_root()
    result = execute(RunSpec(command=["id"], user="no-such-user-x"))
    assert result.status is RunStatus.FAILED
    assert result.error == "run.user: no user 'no-such-user-x' on this host"


# --------------------------------------------------------------------------- limits

#: The system's python (a user such as nobody may not reach the project's venv).
SYSTEM_PY = "/usr/bin/python3"
ALLOCATE = "b = bytearray(1 << 30); b[::4096] = b'x' * len(b[::4096]); print('allocated')"


def test_a_run_over_its_memory_limit_fails_with_the_reason_and_the_daemon_is_unaffected(
) -> None:
    me = psutil.Process()
    rss_before = me.memory_info().rss
    limit_before = resource.getrlimit(resource.RLIMIT_AS)
    result = execute(RunSpec(command=[PY, "-c", ALLOCATE]), limits=Limits(memory="64Mi"))
    assert result.status is RunStatus.FAILED, result
    assert result.error == "memory limit 64Mi exceeded"
    assert "allocated" not in result.output_tail
    assert resource.getrlimit(resource.RLIMIT_AS) == limit_before  # set in the child only
    assert me.memory_info().rss - rss_before < 64 << 20
    # without the limit the same program allocates its GiB
    assert execute(RunSpec(command=[PY, "-c", ALLOCATE])).output_tail == "allocated\n"


FORK_LOOP = """
import os, signal, time
children = []
for _ in range(200):
    try:
        pid = os.fork()
    except OSError as exc:
        print("fork failed:", exc.strerror)
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children.append(pid)
print(f"forked={len(children)}", flush=True)
for pid in children:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""


def test_a_fork_loop_is_contained_by_processes() -> None:
    """RLIMIT_NPROC counts every process of the run's *real user* and does not apply to
    root, so in rlimit mode the limit holds for a task with ``run.user`` only."""
    _as_root()
    result = execute(RunSpec(command=[SYSTEM_PY, "-c", FORK_LOOP], user="nobody"),
                     limits=Limits(processes=50))
    assert result.status is RunStatus.SUCCEEDED, result
    assert "fork failed: Resource temporarily unavailable" in result.output_tail
    forked = number_after("forked", result.output_tail)
    assert 0 < forked < 50, result.output_tail


def test_open_files_and_file_size_are_limited(tmp_path: Path) -> None:
    script = ("import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE), flush=True)"
              f"; open({str(tmp_path / 'big')!r}, 'wb').write(b'x' * 3_000_000)")
    result = execute(RunSpec(command=[PY, "-c", script]),
                     limits=Limits(open_files=100, file_size="1Mi"))
    assert result.output_tail.startswith("(100, 100)\n"), result
    # Python ignores SIGXFSZ, so the write past the limit fails with EFBIG
    assert "OSError: [Errno 27] File too large" in result.output_tail
    assert (tmp_path / "big").stat().st_size == 1 << 20


def test_the_cgroup_mode_contains_memory_and_processes() -> None:
    report = detect_mode()
    require_capability("cgroup2", None if report.mode == "cgroup" else (
        f"cgroup v2 mode is not available here: {report.detail}"))
    result = execute(RunSpec(command=[PY, "-c", ALLOCATE]), limits=Limits(memory="64Mi"))
    assert result.status is RunStatus.FAILED, result
    assert result.error == "memory limit 64Mi exceeded"
    result = execute(RunSpec(command=[PY, "-c", FORK_LOOP]), limits=Limits(processes=50))
    assert 0 < number_after("forked", result.output_tail) < 50, result.output_tail

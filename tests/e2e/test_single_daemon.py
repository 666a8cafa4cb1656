"""One single-replica daemon per database: a second one is refused, on every backend.

Without the lock, a second ``reconciler run`` on the same database marked the first
one's live run ``abandoned`` ("the daemon that ran it stopped", which was false) and
retried it: two processes ran the same Forbid slot.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.runtime import RunStatus
from reconciler.store import SQLStore
from tests.e2e.cluster import server_database
from tests.e2e.conftest import DaemonProcess, task_yaml, wait_until


@contextlib.contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'state.db'}"
    else:
        with server_database(backend) as url:
            yield url


def on(url: str, root: Path) -> DaemonProcess:
    root.mkdir()
    d = DaemonProcess(root)
    d.store.close()
    d.db_url, d.store = url, SQLStore(url)
    return d


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_a_second_daemon_on_the_database_is_refused(backend: str, tmp_path: Path) -> None:
    with database(backend, tmp_path) as url:
        first, second = on(url, tmp_path / "a"), on(url, tmp_path / "b")
        try:
            first.write("slow.yaml", task_yaml("slow", "@yearly", 'command: [sleep, "4"]',
                                               retries="{limit: 2, backoff: 1s}"))
            first.start()
            assert first.cli("trigger", "slow").returncode == 0
            wait_until(lambda: any(r.status is RunStatus.RUNNING for r in first.runs("slow")),
                       what="the first daemon's run")

            refused = second.cli("run", "--manifests", str(first.manifests))
            assert refused.returncode == 1, refused.stderr
            message = refused.stderr
            assert "uses the database" in message and "--zookeeper" in message, message
            assert first.proc is not None and f"pid {first.proc.pid}" in message, message

            (run,) = wait_until(lambda: [r for r in first.runs("slow") if r.status.finished],
                                timeout=30, what="the run to finish")
            assert run.status is RunStatus.SUCCEEDED, run  # never abandoned, never retried
            assert len(first.runs("slow")) == 1

            # kill -9 releases the lock: a successor starts at once
            first.signal(signal.SIGKILL)
            first.wait()
            second.write("slow.yaml", task_yaml("slow", "@yearly", "command: ['true']"))
            second.start("--manifests", str(first.manifests))
        finally:
            first.stop()
            second.stop()

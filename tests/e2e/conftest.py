"""Start the real daemon as a subprocess on a temp directory and database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.store import SQLStore
from tests.services.aio import wait_until as _wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """:func:`tests.services.aio.wait_until` with the daemon tests' defaults."""
    return _wait_until(check, timeout, what, interval=0.05)


def task_yaml(name: str, schedule: str, run: str, **spec: Any) -> str:
    extra = "".join(f"  {k}: {v}\n" for k, v in spec.items())
    return (
        "apiVersion: reconciler/v1\nkind: Task\n"
        f"metadata:\n  name: {name}\n"
        f"spec:\n  schedule: \"{schedule}\"\n  run:\n    {run}\n{extra}"
    )


class DaemonProcess:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifests = root / "manifests"
        self.manifests.mkdir(exist_ok=True)
        self.db_url = f"sqlite:///{root / 'state.db'}"
        self.log = root / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.store = SQLStore(self.db_url)
        self.port = free_port()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            RECONCILER_DATABASE_URL=self.db_url,
            RECONCILER_LISTEN=f"127.0.0.1:{self.port}",
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self, *extra: str) -> DaemonProcess:
        args = [sys.executable, "-m", "reconciler", "run", "--manifests", str(self.manifests),
                "--heartbeat-interval", "1s", "--resync-interval", "30s",
                "--shutdown-grace", "2s", "--log-level", "debug", *extra]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env(), cwd=self.root)
        wait_until(lambda: b" running: " in self.log.read_bytes() or self.exited(),
                   what="daemon start-up")
        assert not self.exited(), self.log.read_text()
        return self

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reconciler", *args], env=self.env(),
                              cwd=self.root, capture_output=True, text=True, timeout=60)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def write(self, rel: str, text: str) -> None:
        """Save like an editor does: write a temp file, then rename over the target."""
        target = self.manifests / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        tmp.rename(target)

    def runs(self, task: str) -> list[Any]:
        return sorted(self.store.list_runs(task, limit=10_000), key=lambda r: (r.slot, r.attempt))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.store.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path)
    yield d
    d.stop()

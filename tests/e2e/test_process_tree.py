"""Through the real daemon: a task's grandchild that called ``setsid`` ends with its run.

The issue's reproduction: ``setsid sh -c "sleep 300" </dev/null >/dev/null 2>&1 &
sleep 30`` with ``timeout: 3s``. Before the fix the run was ``timed_out`` while the
``sleep`` lived on, re-parented to PID 1.
"""

from __future__ import annotations

import random
import sys

import psutil
import pytest

from reconciler.core.runtime import RunStatus
from tests.e2e.conftest import DaemonProcess, task_yaml, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="child subreapers are Linux only")


def sleeping(arg: str) -> list[psutil.Process]:
    """Live processes anywhere running ``sleep <arg>`` (the argument is unique)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and arg in (proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_timeout_kills_a_grandchild_that_called_setsid(daemon: DaemonProcess) -> None:
    arg = f"300.{random.randrange(10**8):08d}"
    script = f'setsid sh -c "sleep {arg}" </dev/null >/dev/null 2>&1 & sleep 30'
    daemon.write("escape.yaml", task_yaml("escape", "0 0 1 1 *", f"shell: '{script}'",
                                          timeout="3s"))
    daemon.start()
    assert daemon.cli("trigger", "escape").returncode == 0
    wait_until(lambda: sleeping(arg), what="the setsid grandchild to start")
    try:
        (run,) = wait_until(lambda: [r for r in daemon.runs("escape") if r.finished_at],
                            what="the run to time out")
        assert run.status is RunStatus.TIMED_OUT
        assert sleeping(arg) == []
    finally:
        for proc in sleeping(arg):  # only with the bug: do not leave it behind
            proc.kill()

"""One wire format: a run's JSON is the same from the API, from `reconciler runs -o json`
against the server and from `reconciler runs -o json` against the database."""

from __future__ import annotations

import json

import httpx

from reconciler.core.runtime import RunStatus
from tests.e2e.conftest import DaemonProcess, task_yaml, wait_until


def test_a_run_reads_the_same_from_every_door(daemon: DaemonProcess) -> None:
    daemon.write("t.yaml", task_yaml("t", "@yearly", "command: [echo, hi]"))
    daemon.start()
    assert daemon.cli("trigger", "t").returncode == 0
    wait_until(lambda: [r for r in daemon.runs("t") if r.status is RunStatus.SUCCEEDED],
               what="the run")
    server = f"http://127.0.0.1:{daemon.port}"
    api = httpx.get(f"{server}/api/v1/tasks/t/runs", timeout=10).json()["items"]
    remote = json.loads(daemon.cli("runs", "t", "-o", "json", "--server", server).stdout)
    local = json.loads(daemon.cli("runs", "t", "-o", "json").stdout)
    assert len(api) == 1 and api[0]["status"] == "succeeded"
    assert local == remote == api

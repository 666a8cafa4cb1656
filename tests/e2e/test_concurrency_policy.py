"""concurrencyPolicy through every door a run comes in by, on the real daemon.

The oracle is the run rows: for a Forbid task, no two executed runs may overlap in
time (each one starts after the previous one finished), whatever started them: the
schedule, ``POST /api/v1/tasks/NAME/trigger`` (the dashboard's button), ``reconciler
trigger`` in server mode (the API) and in database mode (a pending row the daemon's
poll loop picks up), all fired at once.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from reconciler.core.runtime import RunRecord, RunStatus
from tests.e2e.conftest import DaemonProcess, task_yaml, wait_until

TOKEN = "alice:tok"
EXECUTED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT)


def start(daemon: DaemonProcess, **tasks: str) -> httpx.Client:
    for name, text in tasks.items():
        daemon.write(f"{name}.yaml", text)
    daemon.start("--api-token-file", str(_token_file(daemon)))
    wait_until(lambda: all(daemon.store.get_task(n) for n in tasks), what="tasks applied")
    return httpx.Client(base_url=f"http://127.0.0.1:{daemon.port}",
                        headers={"Authorization": "Bearer tok"}, timeout=30)


def _token_file(daemon: DaemonProcess) -> Any:
    path = daemon.root / "tokens"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def settled(daemon: DaemonProcess, name: str) -> list[RunRecord]:
    return wait_until(
        lambda: (rows := daemon.runs(name)) and not any(
            r.status in (RunStatus.RUNNING, RunStatus.PENDING) for r in rows) and rows,
        timeout=60, what=f"every run of {name} finished")


def assert_no_overlap(runs: list[RunRecord]) -> list[RunRecord]:
    executed = sorted((r for r in runs if r.status in EXECUTED and r.started_at),
                      key=lambda r: r.started_at or r.slot)
    for before, after in itertools.pairwise(executed):
        assert before.finished_at is not None and after.started_at is not None
        assert after.started_at >= before.finished_at, (
            f"runs {before.id} ({before.trigger}, {before.started_at} - {before.finished_at}) "
            f"and {after.id} ({after.trigger}, from {after.started_at}) overlap")
    return executed


def test_forbid_holds_for_triggers_from_every_door_at_once(daemon: DaemonProcess) -> None:
    api = start(daemon, f=task_yaml("f", "@every 2s", 'command: [sleep, "0.6"]',
                                    concurrencyPolicy="Forbid"))
    server = f"http://127.0.0.1:{daemon.port}"

    def via_api(_: int) -> int:
        return api.post("/api/v1/tasks/f/trigger").status_code

    def via_cli_server(_: int) -> int:
        return daemon.cli("trigger", "f", "--server", server, "--token", "tok").returncode

    def via_cli_database(_: int) -> int:
        env = daemon.env()
        env.pop("RECONCILER_SERVER", None)
        return subprocess.run([sys.executable, "-m", "reconciler", "trigger", "f"], env=env,
                              cwd=daemon.root, capture_output=True, timeout=60).returncode

    codes: list[int] = []
    with ThreadPoolExecutor(max_workers=24) as pool:
        for _wave in range(3):  # three waves, so some land on or beside a scheduled slot
            futures = [pool.submit(via_api, i) for i in range(14)]
            futures += [pool.submit(via_cli_server, i) for i in range(2)]
            futures += [pool.submit(via_cli_database, i) for i in range(1)]
            codes += [f.result() for f in futures]
    assert codes.count(202) >= 1 and codes.count(409) >= 10, codes
    # The schedule goes on: on a busy machine the waves can hold every slot so far (each
    # skipped), so wait for a scheduled run to have executed beside the manual ones.
    wait_until(lambda: any(r.trigger.value == "schedule" and r.status in EXECUTED
                           for r in daemon.runs("f")), timeout=30, what="a scheduled run")
    runs = settled(daemon, "f")
    executed = assert_no_overlap(runs)
    assert len(executed) >= 2, [(r.trigger, r.status) for r in runs]
    assert any(r.trigger.value == "schedule" for r in executed)
    assert any(r.trigger.value == "manual" for r in executed)
    skipped = [r for r in runs if r.status is RunStatus.SKIPPED]
    assert all(r.reason for r in skipped)  # a slot that met a manual run says why


def test_manual_trigger_follows_replace_and_allow(daemon: DaemonProcess) -> None:
    api = start(
        daemon,
        rep=task_yaml("rep", "@yearly", 'command: [sleep, "30"]', concurrencyPolicy="Replace"),
        alw=task_yaml("alw", "@yearly", 'command: [sleep, "1"]', concurrencyPolicy="Allow"),
    )
    first = api.post("/api/v1/tasks/rep/trigger").json()["run"]
    wait_until(lambda: daemon.store.get_run(first["id"]).status is RunStatus.RUNNING,
               what="first run running")
    second = api.post("/api/v1/tasks/rep/trigger")
    assert second.status_code == 202, second.text
    replaced = wait_until(lambda: (r := daemon.store.get_run(first["id"])).status.finished
                          and r, what="first run replaced")
    assert replaced.status is RunStatus.CANCELLED
    assert replaced.reason == "replaced by a manual run", replaced.reason
    api.post(f"/api/v1/runs/{second.json()['run']['id']}/cancel")

    codes = [api.post("/api/v1/tasks/alw/trigger").status_code for _ in range(2)]
    assert codes == [202, 202]
    runs = settled(daemon, "alw")
    a, b = sorted(runs, key=lambda r: r.id)
    assert a.status is b.status is RunStatus.SUCCEEDED
    assert b.started_at is not None and a.finished_at is not None
    assert b.started_at < a.finished_at  # Allow: they overlapped

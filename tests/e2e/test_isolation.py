"""End-to-end: what a run carries to the outside (its idempotency key) and how it is
isolated (run-as user, limits), with the real daemon and real processes."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from reconciler.core.isolation import idempotency_key
from reconciler.core.runtime import RunStatus, Trigger
from tests.e2e.conftest import DaemonProcess, task_yaml, wait_until
from tests.services.ci import unavailable

pytestmark = pytest.mark.e2e

KEY = re.compile(r"key=([0-9a-f-]{36})")


def _key(output: str | None) -> str:
    match = KEY.search(output or "")
    assert match, f"no key in {output!r}"
    return match.group(1)


def test_a_retried_slot_sees_the_same_key_across_a_restart(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    seen = tmp_path / "first-key"
    # attempt 1 writes its key and hangs; the daemon is killed under it (-9) and started
    # again, which abandons the run and retries the slot (attempt 2, a new process).
    script = (f"echo key=$RECONCILER_IDEMPOTENCY_KEY > {seen}; "
              "[ $RECONCILER_ATTEMPT -ge 2 ] && echo key=$RECONCILER_IDEMPOTENCY_KEY "
              "|| exec sleep 60")
    daemon.write("job.yaml", task_yaml("job", "0 0 1 1 *", f"shell: '{script}'",
                                       retries="{limit: 2, backoff: 1s}"))
    daemon.start()
    assert daemon.cli("trigger", "job").returncode == 0
    wait_until(lambda: seen.exists() and seen.read_text(), what="the first attempt's key")
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    daemon.start()
    wait_until(lambda: any(r.status is RunStatus.SUCCEEDED for r in daemon.runs("job")),
               what="the retry after the restart")
    first, retry = daemon.runs("job")[:2]
    assert first.status is RunStatus.ABANDONED and retry.trigger is Trigger.RETRY
    assert retry.slot == first.slot and retry.attempt == 2
    assert _key(retry.output_tail) == _key(seen.read_text()) == idempotency_key("job", first.slot)


def test_retries_share_a_key_slots_and_manual_runs_do_not(daemon: DaemonProcess) -> None:
    # every attempt 1 fails, attempt 2 succeeds: each slot has two runs
    script = "echo key=$RECONCILER_IDEMPOTENCY_KEY; [ $RECONCILER_ATTEMPT -ge 2 ]"
    daemon.write("flaky.yaml", task_yaml("flaky", "@every 2s", f"shell: '{script}'",
                                         retries="{limit: 1, backoff: 100ms}"))
    daemon.start()
    assert daemon.cli("trigger", "flaky").returncode == 0

    def done() -> list[object]:
        ok = [r for r in daemon.runs("flaky") if r.status is RunStatus.SUCCEEDED]
        return ok if len(ok) >= 3 else []

    wait_until(done, timeout=30, what="three slots retried to success")
    daemon.stop()
    by_slot: dict[object, set[str]] = {}
    triggers: dict[object, set[Trigger]] = {}
    for run in daemon.runs("flaky"):
        if run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
            by_slot.setdefault(run.slot, set()).add(_key(run.output_tail))
            triggers.setdefault(run.slot, set()).add(run.trigger)
    retried = {slot: keys for slot, keys in by_slot.items()
               if Trigger.RETRY in triggers[slot]}
    assert len(retried) >= 3
    assert all(len(keys) == 1 for keys in by_slot.values()), by_slot  # one key per slot
    all_keys = [next(iter(keys)) for keys in by_slot.values()]
    assert len(set(all_keys)) == len(all_keys)  # no two slots share one
    assert any(Trigger.MANUAL in t for t in triggers.values())


# ------------------------------------------------------------------ run as, limits


def test_a_run_as_nobody_prints_its_uid_and_dies_with_a_killed_daemon(
    daemon: DaemonProcess,
) -> None:
    if os.geteuid() != 0:
        unavailable("running tasks as another user needs the daemon to run as root")
    shared = Path(tempfile.mkdtemp(prefix="reconciler-isolation-"))
    try:
        shared.chmod(0o777)  # the task runs as nobody and writes its pid here
        daemon.write("who.yaml", task_yaml("who", "0 0 1 1 *", "command: [id, -u]",
                                           ) + "    user: nobody\n")
        daemon.write("hold.yaml", task_yaml(
            "hold", "0 0 1 1 *", f"shell: 'echo $$ > {shared}/pid; exec sleep 60'",
        ) + "    user: nobody\n")
        daemon.start()
        assert daemon.cli("trigger", "who").returncode == 0
        wait_until(lambda: any(r.status.finished for r in daemon.runs("who")), what="who")
        [run] = daemon.runs("who")
        assert run.status is RunStatus.SUCCEEDED and run.output_tail == "65534\n", run
        assert daemon.cli("trigger", "hold").returncode == 0
        pid = int(wait_until(lambda: (shared / "pid").exists()
                             and (shared / "pid").read_text().strip(), what="hold's pid"))
        assert psutil.Process(pid).uids().real == 65534
        daemon.signal(signal.SIGKILL)
        daemon.wait()
        # the death signal survives the user change (asked for after it)
        wait_until(lambda: not psutil.pid_exists(pid)
                   or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                   timeout=5, what="the run-as process to die with the daemon")
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_run_over_its_memory_limit_fails_and_the_daemon_keeps_its_memory(
    daemon: DaemonProcess,
) -> None:
    allocate = "b = bytearray(1 << 30); print(len(b))"
    daemon.write("hog.yaml", task_yaml("hog", "0 0 1 1 *",
                                       f'command: ["{sys.executable}", "-c", "{allocate}"]',
                                       limits="{memory: 64Mi}"))
    daemon.start()
    assert daemon.proc is not None
    me = psutil.Process(daemon.proc.pid)
    rss_before = me.memory_info().rss
    assert daemon.cli("trigger", "hog").returncode == 0
    wait_until(lambda: any(r.status.finished for r in daemon.runs("hog")), what="the hog")
    [run] = daemon.runs("hog")
    assert run.status is RunStatus.FAILED and run.error == "memory limit 64Mi exceeded", run
    assert "MemoryError" in (run.output_tail or "")
    assert me.memory_info().rss - rss_before < 64 << 20
    status = daemon.cli("status")
    assert "isolation of runs with limits: rlimit: " in status.stdout or (
        "isolation of runs with limits: cgroup: " in status.stdout), status.stdout

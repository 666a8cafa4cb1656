"""End-to-end: the real daemon process, real files, a real SQLite database."""

from __future__ import annotations

import signal

import pytest

from reconciler.core.runtime import RunStatus, Trigger
from tests.e2e.conftest import DaemonProcess, task_yaml, wait_until

pytestmark = pytest.mark.e2e


def test_runs_edits_and_deletes_take_effect_live(daemon: DaemonProcess) -> None:
    daemon.write("tick.yaml", task_yaml("tick", "@every 1s", "shell: echo tick $RECONCILER_SLOT"))
    daemon.start()
    wait_until(lambda: len([r for r in daemon.runs("tick") if r.status is RunStatus.SUCCEEDED])
               >= 2, what="two successful runs")
    run = daemon.runs("tick")[0]
    assert run.output_tail is not None and run.output_tail.startswith("tick ")
    assert run.lateness_seconds is not None and run.lateness_seconds < 1.0
    # A new file: its task starts running.
    daemon.write("team/tock.yaml", task_yaml("tock", "@every 1s", "command: [echo, tock]"))
    wait_until(lambda: daemon.runs("tock"), what="the new task's first run")
    # An edit: the schedule changes, the generation is bumped.
    daemon.write("tick.yaml", task_yaml("tick", "@every 1h", "shell: echo tick"))
    wait_until(lambda: (t := daemon.store.get_task("tick")) is not None and t.generation == 2,
               what="the edit to be applied")
    # A deleted file: its task leaves the table and stops running.
    (daemon.manifests / "team" / "tock.yaml").unlink()
    wait_until(lambda: daemon.store.get_task("tock") is None, what="the delete")
    count = len(daemon.runs("tock"))
    res = daemon.cli("get", "tasks", "-o", "json")
    assert res.returncode == 0 and '"tick"' in res.stdout and '"tock"' not in res.stdout
    wait_until(lambda: len(daemon.runs("tick")) >= 0, timeout=1)
    assert len(daemon.runs("tock")) <= count + 1  # at most one run was already in flight


def test_invalid_edit_keeps_the_task_running(daemon: DaemonProcess) -> None:
    daemon.write("tick.yaml", task_yaml("tick", "@every 1s", "command: [echo, ok]"))
    daemon.start()
    wait_until(lambda: daemon.runs("tick"), what="a first run")
    daemon.write("tick.yaml", "apiVersion: reconciler/v1\nkind: Task\nmetadata: {name: tick\n")
    wait_until(lambda: b"manifest error" in daemon.log.read_bytes(), what="the error in the log")
    before = len(daemon.runs("tick"))
    wait_until(lambda: len(daemon.runs("tick")) >= before + 2, what="runs to continue")
    task = daemon.store.get_task("tick")
    assert task is not None and task.generation == 1
    status = daemon.cli("status")
    assert "tick.yaml:" in status.stdout and "tasks are kept" in status.stdout


def test_sigterm_lets_runs_finish_then_cancels_them(daemon: DaemonProcess) -> None:
    daemon.write("slow.yaml", task_yaml("slow", "@every 1s", "command: [sleep, '30']"))
    daemon.start()
    wait_until(lambda: any(r.status is RunStatus.RUNNING for r in daemon.runs("slow")),
               what="a running run")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=20) == 0
    runs = daemon.runs("slow")
    assert runs and all(r.status is not RunStatus.RUNNING for r in runs)
    cancelled = [r for r in runs if r.status is RunStatus.CANCELLED]
    assert cancelled and cancelled[0].reason == "daemon shutting down"


def test_kill_9_then_restart_abandons_and_retries(daemon: DaemonProcess) -> None:
    daemon.write(
        "job.yaml",
        task_yaml("job", "0 0 1 1 *", "shell: 'sleep 60'", retries="{limit: 1, backoff: 1s}"),
    )
    daemon.start()
    res = daemon.cli("trigger", "job")
    assert res.returncode == 0, res.stderr
    wait_until(lambda: any(r.status is RunStatus.RUNNING for r in daemon.runs("job")),
               what="the triggered run to start")
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    (orphan,) = daemon.runs("job")
    assert orphan.status is RunStatus.RUNNING  # nobody was left to record its end
    daemon.write("job.yaml", task_yaml("job", "0 0 1 1 *", "command: [echo, retried]",
                                       retries="{limit: 1, backoff: 1s}"))
    daemon.start()
    wait_until(lambda: len(daemon.runs("job")) == 2
               and daemon.runs("job")[1].status is RunStatus.SUCCEEDED, what="the retry")
    first, retry = daemon.runs("job")
    assert first.status is RunStatus.ABANDONED and first.reason
    assert retry.attempt == 2 and retry.trigger is Trigger.RETRY and retry.slot == first.slot


def test_cli_trigger_suspend_resume(daemon: DaemonProcess) -> None:
    daemon.write("t.yaml", task_yaml("t", "@every 1s", "command: [echo, hi]"))
    daemon.write("m.yaml", task_yaml("m", "0 0 1 1 *", "command: [echo, manual]"))
    daemon.start()
    assert daemon.cli("trigger", "m").returncode == 0
    wait_until(lambda: [r for r in daemon.runs("m") if r.status is RunStatus.SUCCEEDED],
               what="the manual run")
    assert daemon.runs("m")[0].trigger is Trigger.MANUAL
    res = daemon.cli("suspend", "t", "--note", "maintenance")
    assert res.returncode == 0, res.stderr
    # the daemon took the suspension: it cleared the task's next fire time
    wait_until(lambda: (row := daemon.store.get_task("t")) is not None
               and row.suspended and row.next_fire_at is None,
               timeout=10, what="the daemon to take the suspension")
    # Within a second or two the daemon stops starting runs of t.
    wait_until(lambda: _quiet(daemon, "t"), timeout=10, what="no new runs while suspended")
    assert daemon.cli("resume", "t").returncode == 0
    count = len(daemon.runs("t"))
    wait_until(lambda: len(daemon.runs("t")) > count, what="runs after resume")
    runs = daemon.cli("runs", "t")
    assert runs.returncode == 0 and "succeeded" in runs.stdout


def _quiet(daemon: DaemonProcess, task: str) -> bool:
    import time

    before = len(daemon.runs(task))
    time.sleep(2.5)
    return len(daemon.runs(task)) == before


def test_git_sync_style_symlink_swap(daemon: DaemonProcess) -> None:
    """git-sync publishes each revision in a new folder and swaps a symlink to it."""
    root = daemon.root / "sync"
    (root / "rev-1").mkdir(parents=True)
    (root / "rev-1" / "a.yaml").write_text(task_yaml("a", "@every 1s", "command: [echo, one]"))
    (root / "current").symlink_to("rev-1")
    daemon.manifests = root / "current"
    daemon.start()
    wait_until(lambda: daemon.runs("a"), what="a run from rev-1")
    (root / "rev-2").mkdir()
    (root / "rev-2" / "b.yaml").write_text(task_yaml("b", "@every 1s", "command: [echo, two]"))
    (root / "next").symlink_to("rev-2")
    (root / "next").rename(root / "current")  # atomic swap, as git-sync does
    wait_until(lambda: daemon.store.get_task("b") is not None
               and daemon.store.get_task("a") is None, what="the swap to be applied")
    wait_until(lambda: daemon.runs("b"), what="a run from rev-2")


def test_sighup_resyncs(daemon: DaemonProcess) -> None:
    daemon.write("a.yaml", task_yaml("a", "0 0 1 1 *", "command: [echo, a]"))
    daemon.start("--resync-interval", "1h")
    before = daemon.store.list_applies(limit=50)
    (daemon.manifests / "b.yaml").write_text(task_yaml("b", "0 0 1 1 *", "command: [echo, b]"))
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: daemon.store.get_task("b") is not None, what="the resync")
    assert len(daemon.store.list_applies(limit=50)) == len(before) + 1
    assert not daemon.exited()  # SIGHUP resyncs; it never stops the daemon

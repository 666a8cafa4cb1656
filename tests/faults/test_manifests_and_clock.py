"""Faults under the running daemon: the manifests directory goes away, and the clock steps.

The manifests directory is the source of truth, so the worst thing it can do is vanish,
be swapped for another tree, or become unreadable while the daemon runs. The safety
rules (README "Plan, diff, apply: the safety rules") must hold on the live process, not
only in ``plan()``: a missing or empty directory deletes nothing, a plan deleting more
than ``--max-delete`` tasks is refused, a directory that cannot be listed changes
nothing, and each of these is reported, not silent. The watcher must follow a
directory that was replaced, as it follows a file that was.

The wall clock is stepped with the hidden ``--clock-offset-file`` (re-read when it
changes; monotonic time keeps running), exactly as NTP stepping the host would: one hour
forward, then back ten minutes. The promises (README "The daemon: policies"): the slots
skipped by a forward step are missed slots, decided by ``startingDeadline``, ``catchUp``
and ``maxCatchUp`` and recorded with a reason; no slot ever runs twice (checked on an
execution log the tasks append to, not only on the run table, whose unique key hides a
second run of a slot whose row was pruned); and the daemon keeps running and scheduling.
``tests/unit/test_clock_jumps.py`` pins the same rules with a fake clock.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DaemonProcess, task_yaml, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

TRUE = 'command: ["true"]'
NEVER = "0 0 1 1 *"  # a task that is present but does not fire during a test
KEEP_ALL = "{successful: 100000, failed: 100000}"
#: The periodic resync is what notices a directory the watcher cannot see any more.
FAST_RESYNC = ("--resync-interval", "1s")


# --------------------------------------------------------------------------- helpers


def api(d: DaemonProcess, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{d.port}{path}", timeout=10) as response:
        return json.load(response)


def live_tasks(d: DaemonProcess) -> set[str]:
    return {t.name for t in d.store.load_tasks()}


def error_lines(d: DaemonProcess) -> list[str]:
    return [line for line in d.log.read_text(errors="replace").splitlines() if " ERROR " in line]


def reconciled_since(d: DaemonProcess, instant: datetime, count: int = 2) -> bool:
    """The daemon finished ``count`` reconciles after ``instant`` (its log says so)."""
    stamps = []
    for line in d.log.read_text(errors="replace").splitlines():
        if "reconcile took" in line or "reconcile failed" in line:
            stamps.append(datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f"))
    local = instant.astimezone().replace(tzinfo=None)
    return sum(s > local for s in stamps) >= count


def keeps_running(d: DaemonProcess, names: Iterable[str], more: int = 2) -> None:
    """Each task gets ``more`` new runs: scheduling goes on."""
    before = {n: len(d.runs(n)) for n in names}
    wait_until(lambda: all(len(d.runs(n)) >= before[n] + more for n in before),
               timeout=30, what=f"{more} more runs of {sorted(before)}")
    assert not d.exited(), d.log.read_text()[-3000:]


def reported(d: DaemonProcess, *fragments: str) -> list[str]:
    """Where ``fragments`` (all, case-insensitive) appear: an ERROR log line, the status."""
    def has(text: str) -> bool:
        return all(f.lower() in text.lower() for f in fragments)

    where = [f"log: {line}" for line in error_lines(d) if has(line)]
    status = api(d, "/api/v1/status")
    fields = [*status.get("refusals", []), *map(str, status.get("manifestErrors", [])),
              str((status.get("lastReconcile") or {}).get("error"))]
    fields += [str(r.get("lastError")) for r in status.get("replicas", [])]
    where += [f"status: {f}" for f in fields if has(f)]
    return where


def swap_in(d: DaemonProcess, files: dict[str, str], name: str) -> None:
    """Replace the manifests directory at once: build a tree beside it, rename it in."""
    incoming = d.root / f"incoming-{name}"
    incoming.mkdir()
    for rel, text in files.items():
        (incoming / rel).write_text(text)
    os.rename(d.manifests, d.root / f"previous-{name}")
    os.rename(incoming, d.manifests)


def start_without_dac_override(d: DaemonProcess, *extra: str) -> None:
    """Start the daemon so that mode 000 really denies it (root ignores permissions)."""
    from tests.hostile.test_cli import real_denial

    options = real_denial()  # skips when this root cannot drop the capabilities
    if not options:  # not root: permissions apply anyway
        d.start(*extra)
        return
    with pytest.MonkeyPatch.context() as m:
        m.setattr(subprocess, "Popen",
                  functools.partial(subprocess.Popen, preexec_fn=options["preexec"]))
        d.start(*extra)


# ------------------------------------------------------------ the manifests directory


def test_deleted_manifests_directory_deletes_no_task_and_says_so(daemon: DaemonProcess) -> None:
    """``rm -rf`` of the manifests directory under the running daemon: no task is
    deleted (the missing-directory rule), the tasks keep firing, the daemon reports the
    missing directory (an ERROR line and its status), and once the directory is back
    the daemon reconciles it as usual (a new task in it is created and runs)."""
    names = [f"t{i}" for i in range(3)]
    for n in names:
        daemon.write(f"{n}.yaml", task_yaml(n, "@every 1s", TRUE))
    daemon.start(*FAST_RESYNC)
    wait_until(lambda: all(daemon.runs(n) for n in names), what="first runs")

    deleted_at = datetime.now(UTC)
    shutil.rmtree(daemon.manifests)
    wait_until(lambda: reconciled_since(daemon, deleted_at), what="reconciles without the dir")
    assert live_tasks(daemon) == set(names)
    keeps_running(daemon, names)
    assert live_tasks(daemon) == set(names)
    report = reported(daemon, "manifests directory", "missing")

    daemon.manifests.mkdir()
    for n in names:
        daemon.write(f"{n}.yaml", task_yaml(n, "@every 1s", TRUE))
    daemon.write("new.yaml", task_yaml("new", "@every 1s", TRUE))
    wait_until(lambda: daemon.runs("new"), timeout=30, what="the task added after re-creation")
    assert live_tasks(daemon) == {*names, "new"}
    assert report, (
        "the manifests directory was missing for several reconciles and the daemon said "
        "nothing: no ERROR line, nothing in /api/v1/status (refusals, manifestErrors, "
        "lastReconcile.error, replicas[].lastError)"
    )


def test_replaced_manifests_directory_is_judged_by_the_safety_rules(
    daemon: DaemonProcess,
) -> None:
    """A different tree renamed into place: a plan deleting 11 tasks (more than
    ``--max-delete`` 10) is refused as a whole (no delete, not even its create), said in
    the log and the status, and the tasks keep firing; a later tree deleting one task is
    within the rule and applied (the deleted task becomes a tombstone)."""
    fast = ["fast-0", "fast-1"]
    slow = [f"slow-{i}" for i in range(10)]
    tree = {f"{n}.yaml": task_yaml(n, "@every 1s", TRUE) for n in fast}
    tree |= {f"{n}.yaml": task_yaml(n, NEVER, TRUE) for n in slow}
    for rel, text in tree.items():
        daemon.write(rel, text)
    daemon.start(*FAST_RESYNC)
    wait_until(lambda: all(daemon.runs(n) for n in fast), what="first runs")
    everything = set(fast) | set(slow)
    newcomer = {"newcomer.yaml": task_yaml("newcomer", "@every 1s", TRUE)}

    swap_in(daemon, {"fast-0.yaml": tree["fast-0.yaml"], **newcomer}, "mostly-empty")
    refusal = "plan deletes 11 tasks, more than --max-delete 10"
    wait_until(lambda: any(refusal in line for line in error_lines(daemon)), timeout=30,
               what="the refusal in the log")
    assert any(refusal in r for r in api(daemon, "/api/v1/status")["refusals"])
    keeps_running(daemon, fast)
    assert live_tasks(daemon) == everything  # nothing deleted, newcomer not created
    assert daemon.store.get_task("newcomer", include_deleted=True) is None

    swap_in(daemon, {**{k: v for k, v in tree.items() if k != "slow-9.yaml"}, **newcomer},
            "one-less")
    wait_until(lambda: daemon.runs("newcomer"), timeout=30, what="the allowed plan applied")
    assert live_tasks(daemon) == (everything - {"slow-9"}) | {"newcomer"}
    assert daemon.store.get_task("slow-9", include_deleted=True) is not None  # tombstone
    wait_until(lambda: not api(daemon, "/api/v1/status")["refusals"], what="refusal cleared")


def test_unreadable_manifests_directory_changes_nothing_and_says_so(
    daemon: DaemonProcess,
) -> None:
    """``chmod 000`` on the manifests directory (the daemon started without root's
    permission override, so the kernel really refuses): no task is deleted, the tasks
    keep firing, the failure is an ERROR line and in the status; restoring the mode
    resumes normal reconcile and clears the error."""
    names = ["t0", "t1"]
    for n in names:
        daemon.write(f"{n}.yaml", task_yaml(n, "@every 1s", TRUE))
    start_without_dac_override(daemon, *FAST_RESYNC)
    wait_until(lambda: all(daemon.runs(n) for n in names), what="first runs")

    daemon.manifests.chmod(0)
    try:
        def log_and_status() -> list[str] | None:
            where = reported(daemon, str(daemon.manifests), "permission denied")
            kinds = {w.split(":", 1)[0] for w in where}
            return where if kinds == {"log", "status"} else None

        wait_until(log_and_status, timeout=30, what="the permission error in log and status")
        keeps_running(daemon, names)
        assert live_tasks(daemon) == set(names)
    finally:
        daemon.manifests.chmod(0o755)
    daemon.write("new.yaml", task_yaml("new", "@every 1s", TRUE))
    wait_until(lambda: daemon.runs("new"), timeout=30, what="reconcile after chmod back")
    assert live_tasks(daemon) == {*names, "new"}
    wait_until(lambda: not [w for w in reported(daemon, "permission denied")
                            if w.startswith("status:")], what="the status error cleared")


def test_watcher_follows_a_replaced_or_recreated_directory(daemon: DaemonProcess) -> None:
    """After the directory is swapped for another one, and after it is deleted and
    made again, an edit in it still reaches the daemon through the watcher (within
    seconds), not only at the next periodic resync (5 minutes here)."""
    daemon.write("t0.yaml", task_yaml("t0", "@every 1s", TRUE))
    daemon.start("--resync-interval", "300s")
    wait_until(lambda: daemon.runs("t0"), what="first run")
    base = {"t0.yaml": task_yaml("t0", "@every 1s", TRUE)}

    swap_in(daemon, {**base, "a.yaml": task_yaml("a", NEVER, TRUE)}, "swap")
    wait_until(lambda: "a" in live_tasks(daemon), what="the swapped-in tree")
    daemon.write("b.yaml", task_yaml("b", NEVER, TRUE))
    wait_until(lambda: "b" in live_tasks(daemon), timeout=10,
               what="an edit in the swapped-in directory (is the watcher on the old one?)")

    shutil.rmtree(daemon.manifests)
    daemon.manifests.mkdir()
    for rel, text in base.items():
        daemon.write(rel, text)
    daemon.write("c.yaml", task_yaml("c", NEVER, TRUE))
    wait_until(lambda: "c" in live_tasks(daemon), timeout=10,
               what="a task in the re-created directory (is the watcher on the deleted one?)")


# ----------------------------------------------------------------------------- clock


def set_offset(path: Path, text: str) -> None:
    """Atomically: a half-written file would read as offset 0 for a moment."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def past(d: DaemonProcess, name: str, instant: datetime) -> bool:
    """The task decided a slot after ``instant`` and a run succeeded since (one row read:
    polling every run row would compete with the daemon for the CPU)."""
    task = d.store.get_task(name)
    return bool(task and task.last_slot_at and task.last_slot_at > instant
                and task.last_success_at and task.last_success_at > instant)


def exec_log_task(name: str, schedule: str, log: Path, **spec: Any) -> str:
    """A task whose every execution appends "task slot" to ``log``."""
    run = f"shell: 'echo \"$RECONCILER_TASK $RECONCILER_SLOT\" >> {log}'"
    return task_yaml(name, schedule, run, history=KEEP_ALL, **spec)


def executions(log: Path) -> Counter[str]:
    return Counter(log.read_text().splitlines()) if log.exists() else Counter()


def assert_no_slot_ran_twice(d: DaemonProcess, log: Path, names: Iterable[str]) -> None:
    twice = [line for line, n in executions(log).items() if n > 1]
    assert not twice, f"{len(twice)} slot(s) executed more than once, e.g. {twice[:3]}"
    for name in names:
        runs = d.runs(name)
        assert len({r.slot for r in runs}) == len(runs), f"{name}: a slot has two rows"
        unexplained = [r for r in runs if r.status.value in ("missed", "skipped")
                       and not r.reason]
        assert not unexplained, f"{name}: missed/skipped rows without a reason"


def test_clock_steps_forward_and_back_never_run_a_slot_twice(daemon: DaemonProcess) -> None:
    """One hour forward: the skipped slots are recorded missed with their reason
    (startingDeadline 5s), the tasks fire again on the new time. Then ten minutes back:
    no slot runs again and no old task gets a row while the clock repeats those minutes
    (their next slot stays the one after the last run), a task created meanwhile fires
    on the repeated minutes; once the clock is back where it was, the old tasks resume.
    No (task, slot) is ever executed twice; the daemon never stops."""
    offset = daemon.root / "clock-offset"
    set_offset(offset, "0s")
    execs = daemon.root / "executions.log"
    old = ["sec", "every", "minute"]
    daemon.write("sec.yaml", exec_log_task("sec", "* * * * * *", execs, startingDeadline="5s"))
    daemon.write("every.yaml", exec_log_task("every", "@every 1s", execs, startingDeadline="5s"))
    daemon.write("minute.yaml", exec_log_task("minute", "* * * * *", execs))
    daemon.start("--clock-offset-file", str(offset))
    ran = ("succeeded", "failed")
    wait_until(lambda: all(sum(r.status.value in ran for r in daemon.runs(n)) >= 2
                           for n in ("sec", "every")), what="runs before the jump")

    # ---- one hour forward
    forward_at = datetime.now(UTC)
    set_offset(offset, "+1h")
    target = forward_at + timedelta(hours=1)

    wait_until(lambda: all(past(daemon, n, target) for n in ("sec", "every")), timeout=60,
               what="the daemon past the forward jump")
    wait_until(lambda: all(any(r.slot > target and r.status.value in ran
                               for r in daemon.runs(n)) for n in ("sec", "every")),
               timeout=30, what="runs on the far side of the forward jump")
    assert_no_slot_ran_twice(daemon, execs, old)
    for name in ("sec", "every"):
        inside = [r for r in daemon.runs(name)
                  if forward_at + timedelta(seconds=10) < r.slot < target - timedelta(seconds=10)]
        assert inside and all(r.status.value == "missed" for r in inside), name
        assert all("startingDeadline" in (r.reason or "") or "catchUp" in (r.reason or "")
                   for r in inside), inside[0].reason

    # ---- ten minutes back
    back_at = datetime.now(UTC)
    set_offset(offset, "+50m")
    daemon.write("fresh.yaml",
                 exec_log_task("fresh", "@every 1s", execs, startingDeadline="5s"))
    wait_until(lambda: daemon.runs("fresh"), what="the task created after the step back")
    before = {n: {r.slot for r in daemon.runs(n)} for n in old}
    wait_until(lambda: len(daemon.runs("fresh")) >= 4, what="the new task on repeated minutes")
    assert {n: {r.slot for r in daemon.runs(n)} for n in old} == before, (
        "an old task got a row while the clock repeated minutes it had already run")
    assert all(r.slot < back_at + timedelta(minutes=55) for r in daemon.runs("fresh"))
    for name in ("sec", "every"):
        task = daemon.store.get_task(name)
        assert task is not None and task.last_slot_at == max(before[name])
        assert task.next_fire_at == task.last_slot_at + timedelta(seconds=1)
    assert api(daemon, "/healthz") and not daemon.exited()
    assert_no_slot_ran_twice(daemon, execs, [*old, "fresh"])

    # ---- the clock back where it was: the old tasks resume after their last slot
    set_offset(offset, "+1h")
    newest = {n: max(before[n]) for n in ("sec", "every")}
    wait_until(lambda: all(past(daemon, n, newest[n]) for n in newest), timeout=60,
               what="the old tasks past their last slot")
    wait_until(lambda: all(any(r.slot > newest[n] and r.status.value in ran
                               for r in daemon.runs(n)) for n in newest),
               timeout=30, what="the old tasks firing again")
    assert_no_slot_ran_twice(daemon, execs, [*old, "fresh"])
    assert not daemon.exited()


def test_forward_step_follows_catch_up_on_the_real_daemon(daemon: DaemonProcess) -> None:
    """About one hour forward (landing mid-minute, so the set of slots is unambiguous):
    of the ~60 minute slots skipped, ``catchUp: Latest`` (the default) runs only the
    newest and ``catchUp: All, maxCatchUp: 3`` the three newest; every other one is
    recorded missed with the catchUp reason, as after downtime."""
    offset = daemon.root / "clock-offset"
    set_offset(offset, "0s")
    execs = daemon.root / "executions.log"
    daemon.write("latest.yaml", exec_log_task("latest", "* * * * *", execs))
    daemon.write("all.yaml", exec_log_task("all", "* * * * *", execs, catchUp="All",
                                           maxCatchUp=3))
    daemon.start("--clock-offset-file", str(offset))

    written = datetime.now(UTC)
    seconds = 3600 + (30 - written.second) % 60  # lands at about hh:mm:30
    set_offset(offset, f"+{seconds}s")
    newest = (written + timedelta(seconds=seconds)).replace(second=0, microsecond=0)

    def decided(name: str) -> list[Any]:
        return [r for r in daemon.runs(name) if written < r.slot <= newest]

    wait_until(lambda: all(any(r.slot == newest for r in decided(n)) for n in ("latest", "all")),
               timeout=30, what="the newest skipped slot decided")
    assert_no_slot_ran_twice(daemon, execs, ["latest", "all"])
    for name, runs_expected, why in (("latest", 1, "catchUp is Latest"),
                                     ("all", 3, "more than maxCatchUp 3")):
        rows = decided(name)
        assert len(rows) >= 59, f"{name}: every skipped slot has a row"
        not_missed = sorted(r.slot for r in rows if r.status.value != "missed")
        expected = sorted(r.slot for r in rows)[-runs_expected:]
        statuses = dict(Counter(f"{r.status.value}: {r.reason}" for r in rows))
        assert not_missed == expected, (
            f"{name}: {len(not_missed)} of {len(rows)} skipped slots were not recorded "
            f"missed (documented: only the newest {runs_expected} run); rows: {statuses}")
        assert all(why in (r.reason or "") for r in rows if r.status.value == "missed"), statuses

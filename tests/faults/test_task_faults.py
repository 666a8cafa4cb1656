"""Tasks that misbehave, under the real daemon: nothing lost, nothing doubled, nothing left.

The faults here are in the task, not in the services: a task that prints a gigabyte,
one whose children ignore SIGTERM, one that never exits (with and without a timeout,
and through a daemon shutdown), and ten thousand processes that exit at once, most of
them failing and being retried. Each test runs the real ``reconciler run`` process on
SQLite (the fault is not in the database) and reads the outcome the way an operator
would: the HTTP API and the run rows. Processes are found with psutil by a marker that
every task program carries in its command line, so anything a task leaves behind is
seen, and the daemon's own resident memory, file descriptors and zombie children are
measured from outside.

Orphans: a killed grandchild is reparented to PID 1 (the daemon is not a subreaper),
and the PID 1 of a container or VM may reap it only seconds later (this machine's
does). The tests therefore require that no *live* marked process remains and that the
daemon itself has no zombie children; a zombie of PID 1 is dead, reaped or not.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from reconciler.core.runtime import RunStatus
from tests.e2e.conftest import DaemonProcess, task_yaml, wait_until
from tests.services.aio import wait_until as wait_every

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

HELPER = Path(__file__).resolve().parents[1] / "data" / "faults" / "stubborn.py"
TOKEN = "faults-token-0123456789abcdef"
YEARLY = "0 0 1 1 *"  # never due during a test: runs are triggered through the API
MB = 1024 * 1024


# ----------------------------------------------------------------------------- helpers


def new_marker() -> str:
    return f"ff-{uuid.uuid4().hex[:12]}"


def alive_marked(marker: str) -> list[psutil.Process]:
    """Every live (not zombie) process with ``marker`` in its command line."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(marker in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def daemon_zombies(d: DaemonProcess) -> list[int]:
    assert d.proc is not None
    zombies = []
    for child in psutil.Process(d.proc.pid).children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                zombies.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return zombies


def dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def open_files(proc: psutil.Process) -> Counter[str]:
    """What the process's file descriptors point at (sockets and pipes by kind)."""
    targets: Counter[str] = Counter()
    for fd in Path(f"/proc/{proc.pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        targets[target.split(":")[0] if target.endswith("]") else target] += 1
    return targets


def pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def api(d: DaemonProcess, path: str, method: str = "GET") -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{d.port}{path}", method=method)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def trigger(d: DaemonProcess, task: str) -> int:
    """Start a run now through the API; its run id."""
    return int(api(d, f"/api/v1/tasks/{task}/trigger", "POST")["run"]["id"])


def run_doc(d: DaemonProcess, run_id: int) -> dict[str, Any]:
    doc: dict[str, Any] = api(d, f"/api/v1/runs/{run_id}")
    return doc


def finished(d: DaemonProcess, run_id: int, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        doc = run_doc(d, run_id)
        return doc if doc["status"] not in ("pending", "running") else None

    result: dict[str, Any] = wait_until(check, timeout, what=f"run {run_id} to end")
    return result


def helper(mode: str, marker: str, pidfile: Path, *more: str) -> str:
    argv = [sys.executable, str(HELPER), mode, marker, str(pidfile), *more]
    return "command: [" + ", ".join(json.dumps(a) for a in argv) + "]"


def seconds(a: str | None, b: str | None) -> float:
    assert a is not None and b is not None
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def assert_nothing_left(d: DaemonProcess, marker: str, *pid_files: Path) -> None:
    for path in pid_files:
        left = [p for p in pids(path) if not dead(p)]
        assert not left, f"processes of {path.name} still alive: {left}"
    assert not alive_marked(marker), [p.info for p in alive_marked(marker)]
    if not d.exited():
        assert daemon_zombies(d) == []
    assert "Traceback" not in d.log.read_text(errors="replace")


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutations through the API need a token; the daemon reads it from its environment."""
    monkeypatch.setenv("RECONCILER_API_TOKEN", f"faults:{TOKEN}")


# ------------------------------------------------------------------ 1 GB on stdout

LIMIT = 100_000


def test_a_gigabyte_of_output_keeps_the_daemon_small_and_the_tail_exact(
    daemon: DaemonProcess, token: None
) -> None:
    """1 GiB on stdout: the run succeeds, its record keeps exactly the last
    ``--output-limit`` bytes of the stream and the progress line printed in the middle of
    it, the daemon's memory stays flat (under 100 MB growth) and its API keeps answering
    while it reads."""
    marker = new_marker()
    line = f"{marker} 0123456789abcdefghijklmnopqrstuvwxyz"
    half = 512 * MB
    script = (f"yes '{line}' | head -c {half}; echo; echo '::progress 50 halfway'; "
              f"yes '{line}' | head -c {half}")
    daemon.write("gig.yaml", task_yaml("gig", YEARLY, f'shell: "{script}"'))
    daemon.start("--output-limit", str(LIMIT))
    assert daemon.proc is not None
    proc = psutil.Process(daemon.proc.pid)
    assert api(daemon, "/healthz") == {"status": "ok"}
    rss_before = proc.memory_info().rss
    begun = time.monotonic()
    run_id = trigger(daemon, "gig")
    peak, answers, live_tail = rss_before, 0, 0

    def streamed() -> dict[str, Any] | None:
        nonlocal peak, answers, live_tail
        peak = max(peak, proc.memory_info().rss)
        doc = run_doc(daemon, run_id)
        if doc["status"] in ("pending", "running"):
            if doc["live"]:
                live_tail = max(live_tail, len(doc["outputTail"]))
            assert api(daemon, "/healthz") == {"status": "ok"}
            answers += 1
            return None
        return doc

    doc = wait_every(streamed, 120, "the 1 GiB run to end", interval=0.1)
    took = time.monotonic() - begun
    unit = f"{line}\n"
    start = (half - LIMIT) % len(unit)
    expected_tail = (unit * (LIMIT // len(unit) + 3))[start:start + LIMIT]
    print(f"\n1 GiB: {took:.1f}s, daemon RSS {rss_before / MB:.1f} MB -> peak "
          f"{peak / MB:.1f} MB, /healthz answered {answers} times during the run, "
          f"largest live tail {live_tail} chars")
    assert doc["status"] == "succeeded", doc
    assert doc["exitCode"] == 0 and doc["error"] is None
    assert doc["startedAt"] and doc["finishedAt"]
    assert len(doc["outputTail"]) == LIMIT
    assert doc["outputTail"] == expected_tail
    assert doc["progressPercent"] == 50 and doc["progressMessage"] == "halfway"
    assert answers >= 1, "the run ended before the API could be asked during it"
    assert live_tail <= LIMIT + 256 * 1024  # the live view is bounded too (one read over)
    assert peak - rss_before < 100 * MB
    assert_nothing_left(daemon, marker)


# --------------------------------------------------- children that ignore SIGTERM


def test_children_that_ignore_sigterm_end_with_their_run(
    daemon: DaemonProcess, token: None, tmp_path: Path
) -> None:
    """A task whose whole tree ignores SIGTERM (one child in a process group of its
    own, one grandchild): at its timeout the run is recorded ``timed_out`` with the
    reason, and every process of the tree is gone (SIGKILL after the grace). The same
    tree left behind by a parent that exits 0 is killed too when the run ends, and the
    run is ``succeeded``. The daemon is left with no zombie children."""
    marker = new_marker()
    held, left = tmp_path / "hold.pids", tmp_path / "leave.pids"
    daemon.write("hold.yaml", task_yaml("hold", YEARLY, helper("hold", marker, held, "3"),
                                        timeout="2s"))
    daemon.write("leave.yaml", task_yaml("leave", YEARLY, helper("leave", marker, left, "3")))
    daemon.start()
    hold_id, leave_id = trigger(daemon, "hold"), trigger(daemon, "leave")
    # 3 children + 1 grandchild + the parent each, all in place and alive
    wait_until(lambda: len(pids(held)) == 5 and len(pids(left)) == 5, 30, "both trees up")
    assert len(alive_marked(marker)) >= 9  # the "leave" parent may have exited already
    hold, leave = finished(daemon, hold_id), finished(daemon, leave_id)
    print(f"\nhold: {hold['status']} after {seconds(hold['startedAt'], hold['finishedAt']):.1f}s"
          f" ({hold['error']}); leave: {leave['status']} after "
          f"{seconds(leave['startedAt'], leave['finishedAt']):.1f}s")
    assert hold["status"] == "timed_out"
    assert hold["error"] == "timed out after 2s"
    assert seconds(hold["startedAt"], hold["finishedAt"]) >= 2
    assert "tree up: 4 descendants" in hold["outputTail"]
    assert leave["status"] == "succeeded" and leave["exitCode"] == 0
    assert "tree up: 4 descendants" in leave["outputTail"]
    assert_nothing_left(daemon, marker, held, left)


# ------------------------------------------------------------ a task that never exits


def test_a_task_that_never_exits_is_killed_at_its_timeout(
    daemon: DaemonProcess, token: None, tmp_path: Path
) -> None:
    """A run that never ends by itself ends at its ``timeout``: ``timed_out``, the
    reason in the record, not before the timeout, and the process is gone."""
    marker = new_marker()
    pidfile = tmp_path / "forever.pids"
    daemon.write("forever.yaml", task_yaml("forever", YEARLY,
                                           helper("forever", marker, pidfile), timeout="1s"))
    daemon.start()
    doc = finished(daemon, trigger(daemon, "forever"))
    assert doc["status"] == "timed_out" and doc["error"] == "timed out after 1s"
    assert seconds(doc["startedAt"], doc["finishedAt"]) >= 1
    assert pids(pidfile), "the task never started"
    assert_nothing_left(daemon, marker, pidfile)


def test_sigterm_to_the_daemon_ends_a_run_that_never_exits(
    daemon: DaemonProcess, token: None, tmp_path: Path
) -> None:
    """No timeout, a tree that ignores SIGTERM, and the daemon is told to stop: it
    waits ``--shutdown-grace`` (2 s here), then cancels the run, kills the tree and exits
    0; the record says ``cancelled`` / "daemon shutting down" (never left ``running``)
    and no process of the tree survives the daemon."""
    marker = new_marker()
    pidfile = tmp_path / "hold.pids"
    daemon.write("hold.yaml", task_yaml("hold", YEARLY, helper("hold", marker, pidfile, "2")))
    daemon.start()
    run_id = trigger(daemon, "hold")
    wait_until(lambda: len(pids(pidfile)) == 4, 30, "the tree up")  # 2 + grandchild + parent
    stopped_at = datetime.now(UTC)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0
    (run,) = [r for r in daemon.runs("hold") if r.id == run_id]
    assert run.status is RunStatus.CANCELLED
    assert run.reason == "daemon shutting down"
    assert run.finished_at is not None
    assert run.finished_at >= stopped_at + timedelta(seconds=2) - timedelta(milliseconds=50)
    print(f"\nshutdown: run cancelled {(run.finished_at - stopped_at).total_seconds():.1f}s "
          "after SIGTERM")
    assert_nothing_left(daemon, marker, pidfile)


# ---------------------------------------------------------- 10,000 exits in a row

FAILING, SECOND_TRY, WINDOW, LIMIT_RETRIES = 100, 50, 20, 3


def window_schedules(start: datetime, length: int) -> list[tuple[str, list[datetime]]]:
    """Cron expressions (seconds first) firing once a second for ``length`` seconds
    from ``start``, one per minute touched, with the slots each one fires."""
    out = []
    t, end = start, start + timedelta(seconds=length)
    while t < end:
        stop = min(end, t.replace(second=0) + timedelta(minutes=1))
        a, b = t.second, (stop - timedelta(seconds=1)).second
        field = str(a) if a == b else f"{a}-{b}"
        slots = [t + timedelta(seconds=i) for i in range(int((stop - t).total_seconds()))]
        out.append((f"{field} {t.minute} {t.hour} {t.day} {t.month} *", slots))
        t = stop
    return out


def burst_manifest(name: str, schedule: str, script: str) -> str:
    return (
        "apiVersion: reconciler/v1\nkind: Task\n"
        f"metadata:\n  name: {name}\n"
        f"spec:\n  schedule: \"{schedule}\"\n  concurrencyPolicy: Allow\n"
        f"  retries: {{limit: {LIMIT_RETRIES}, backoff: 1ms, maxBackoff: 1ms}}\n"
        "  history: {successful: 100000, failed: 100000}\n"
        f"  run:\n    shell: '{script}'\n"
    )


def test_ten_thousand_exits_in_a_row(daemon: DaemonProcess) -> None:
    """More than 10,000 task processes that exit at once (most fail, each failure
    retried at once up to ``retries.limit``): every slot has its row, every
    (task, slot, attempt) started exactly one process, a failing slot has exactly
    ``limit + 1`` attempts and one that succeeds on its second try exactly 2, and the
    daemon is unharmed: its memory flat after warm-up (under 30 MB growth between the
    25% and the 100% mark), its file descriptors back to their idle count, no zombie
    children and no process of the tasks left."""
    marker = new_marker()
    starts = daemon.root / "starts.log"
    record = f'echo "$RECONCILER_TASK $RECONCILER_SLOT $RECONCILER_ATTEMPT" >> {starts}'
    scripts = {
        "fail": f": {marker}; {record}; exit 1",
        "second": f': {marker}; {record}; [ "$RECONCILER_ATTEMPT" -ge 2 ]',
    }
    daemon.start("--max-concurrent-runs", "32", "--heartbeat-interval", "5s",
                 "--log-level", "info")
    assert daemon.proc is not None
    proc = psutil.Process(daemon.proc.pid)
    rss_idle, fds_idle = proc.memory_info().rss, proc.num_fds()
    open_idle = open_files(proc)

    opens = (datetime.now(UTC) + timedelta(seconds=5)).replace(microsecond=0)
    expected: dict[str, tuple[str, list[datetime]]] = {}  # task -> (kind, slots)
    documents = []
    for part, (schedule, slots) in enumerate(window_schedules(opens, WINDOW)):
        for kind, count in (("fail", FAILING), ("second", SECOND_TRY)):
            for i in range(count):
                name = f"{kind}-{i}-{part}"
                expected[name] = (kind, slots)
                documents.append(burst_manifest(name, schedule, scripts[kind]))
    daemon.write("burst.yaml", "---\n".join(documents))
    attempts = {"fail": LIMIT_RETRIES + 1, "second": 2}
    total = sum(attempts[k] * len(s) for k, s in expected.values())
    assert total >= 10_000
    wait_until(lambda: len(daemon.store.load_tasks()) == len(expected), 30, "tasks applied")
    assert datetime.now(UTC) < opens, "the tasks were applied only after the window opened"

    samples: list[tuple[float, int, int, int]] = []  # (seconds, starts, rss, fds)
    t0 = time.monotonic()

    def started() -> int:
        with starts.open("rb") as f:
            return sum(1 for _ in f)

    def burst_done() -> bool:
        n = started() if starts.exists() else 0
        samples.append((time.monotonic() - t0, n, proc.memory_info().rss, proc.num_fds()))
        return n >= total

    wait_every(burst_done, 300, f"{total} process starts", interval=0.25)
    wait_until(lambda: not daemon.store.list_runs(None, limit=1, statuses=[RunStatus.RUNNING]),
               60, "the last runs to be recorded")
    rss_end, fds_end = proc.memory_info().rss, proc.num_fds()
    new_fds = dict(open_files(proc) - open_idle)
    zombies = daemon_zombies(daemon)
    first = next(s for s in samples if s[1] > 0)
    quarter, half, three = (next(s for s in samples if s[1] >= total * q // 4)
                            for q in (1, 2, 3))
    full = samples[-1]
    rows = daemon.store.list_runs(None, limit=10 * total)
    wanted = {(name, slot) for name, (_, slots) in expected.items() for slot in slots}
    print(f"\n10k exits: {full[1]} processes started in {full[0] - first[0]:.1f}s "
          f"({full[1] / max(0.001, full[0] - first[0]):.0f}/s), {len(rows)} run rows, "
          f"{len(wanted)} slots of {len(expected)} tasks; daemon RSS idle {rss_idle / MB:.1f} MB, "
          f"25% {quarter[2] / MB:.1f} MB, 50% {half[2] / MB:.1f} MB, 75% {three[2] / MB:.1f} MB, "
          f"100% {full[2] / MB:.1f} MB, end {rss_end / MB:.1f} "
          f"MB, max {max(s[2] for s in samples) / MB:.1f} MB; fds idle {fds_idle}, max "
          f"{max(s[3] for s in samples)}, end {fds_end} (new: {new_fds}); "
          f"daemon zombies at the end "
          f"{len(zombies)}")

    # every process start was one (task, slot, attempt), and each had one start
    lines = starts.read_text().splitlines()
    per_start = Counter(lines)
    doubled = [k for k, n in per_start.items() if n > 1]
    assert not doubled, f"{len(doubled)} (task, slot, attempt) started twice: {doubled[:5]}"
    assert len(lines) == total
    # every slot has its row, and its attempts are exactly what the policy says
    by_slot: dict[tuple[str, datetime], list[Any]] = defaultdict(list)
    for r in rows:
        by_slot[(r.task_name, r.slot)].append(r)
    keys = Counter((r.task_name, r.slot, r.attempt) for r in rows)
    assert max(keys.values()) == 1
    assert set(by_slot) == wanted, (
        f"slots without a row: {sorted(wanted - set(by_slot))[:5]}, "
        f"rows outside the window: {sorted(set(by_slot) - wanted)[:5]}")
    for (name, slot), runs in by_slot.items():
        kind = expected[name][0]
        runs.sort(key=lambda r: r.attempt)
        assert [r.attempt for r in runs] == list(range(1, attempts[kind] + 1)), (name, slot)
        outcome = [(r.status, r.exit_code) for r in runs]
        if kind == "fail":
            assert outcome == [(RunStatus.FAILED, 1)] * attempts[kind], (name, slot, outcome)
        else:
            assert outcome == [(RunStatus.FAILED, 1), (RunStatus.SUCCEEDED, 0)], (name, slot)
    assert {f"{r.task_name} {r.slot.isoformat()} {r.attempt}" for r in rows} == set(per_start)
    # the daemon is unharmed
    assert full[2] - quarter[2] < 30 * MB, "daemon RSS grew after warm-up"
    assert rss_end - quarter[2] < 30 * MB
    assert fds_end <= fds_idle + 4, (
        f"file descriptors {fds_idle} -> {fds_end}: new {new_fds}")
    assert zombies == []
    assert not alive_marked(marker)
    assert "Traceback" not in daemon.log.read_text(errors="replace")

"""A backfill carried out by the real daemon: ``--parallel 2``, a kill -9 in the middle,
a restart, and no slot run twice (bounded waits on observable progress)."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta
from itertools import combinations
from pathlib import Path

import pytest

from reconciler.api.views import backfill_doc
from reconciler.core.backfill import BackfillState
from reconciler.core.runtime import RunStatus, Trigger
from tests.e2e.conftest import DaemonProcess, task_yaml, wait_until

pytestmark = pytest.mark.e2e

SLOTS = [datetime(2026, 1, d, 3, 0, tzinfo=UTC) for d in range(1, 7)]


def _backfill_runs(daemon: DaemonProcess) -> list[object]:
    return [r for r in daemon.runs("bf") if r.trigger is Trigger.BACKFILL]


@pytest.mark.timeout(120)
def test_a_backfill_survives_kill_9_and_runs_no_slot_twice(
        daemon: DaemonProcess, tmp_path: Path) -> None:
    executions = tmp_path / "executions.log"
    daemon.write("bf.yaml", task_yaml(
        "bf", "0 3 * * *",
        f"shell: 'echo \"$RECONCILER_SLOT\" >> {executions}; sleep 1.5'",
        concurrencyPolicy="Forbid"))
    daemon.start()
    made = daemon.cli("backfill", "bf", "--from", "2026-01-01", "--to", "2026-01-07",
                      "--parallel", "2", "-o", "json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert (created["total"], created["state"]) == (6, "pending")
    # two of its runs at once (Forbid does not hold the backfill's own runs back)
    wait_until(lambda: sum(r.status is RunStatus.RUNNING for r in _backfill_runs(daemon)) == 2,
               what="two backfill runs running")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.wait()
    daemon.start()  # abandons the two runs; the backfill goes on from the stored state
    done = wait_until(lambda: (b := daemon.store.get_backfill(created["id"])) is not None
                      and b.state.finished and b, timeout=60, what="the backfill to finish")
    assert (done.state, done.done, done.total, done.failed) == (BackfillState.FAILED, 6, 6, 2)
    runs = _backfill_runs(daemon)
    assert [r.slot for r in runs] == SLOTS  # one row per slot, the nominal slots
    assert sorted(r.status for r in runs) == sorted(
        [RunStatus.ABANDONED] * 2 + [RunStatus.SUCCEEDED] * 4)
    lines = executions.read_text().split()
    assert sorted(lines) == [s.isoformat() for s in SLOTS]  # every slot executed once
    ran = [r for r in runs if r.status is RunStatus.SUCCEEDED]
    for trio in combinations(ran, 3):  # never three at once
        assert max(r.started_at for r in trio) >= min(
            r.finished_at or r.started_at + timedelta(days=1) for r in trio)
    # the CLI on the database prints the API's document
    listed = daemon.cli("backfills", "-o", "json")
    assert json.loads(listed.stdout)["items"] == [backfill_doc(done)]

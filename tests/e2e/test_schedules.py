"""End-to-end: the real daemon runs a task with two schedules and jitter."""

from __future__ import annotations

from datetime import timedelta

import pytest

from reconciler.core.runtime import RunStatus
from reconciler.core.scheduling import jitter_delay
from tests.e2e.conftest import DaemonProcess, wait_until

pytestmark = pytest.mark.e2e

TASK = """\
apiVersion: reconciler/v1
kind: Task
metadata: {name: twice}
spec:
  schedule: ["*/2 * * * * *", "*/3 * * * * *"]
  jitter: 900ms
  concurrencyPolicy: Allow
  run:
    shell: echo "$RECONCILER_SLOT"
"""


def test_two_schedules_with_jitter_run_each_slot_once_at_its_start(
        daemon: DaemonProcess) -> None:
    daemon.write("twice.yaml", TASK)
    daemon.start()
    wait_until(lambda: len([r for r in daemon.runs("twice")
                            if r.status is RunStatus.SUCCEEDED]) >= 8,
               timeout=30, what="eight runs")
    slots = [r.slot for r in daemon.runs("twice")]  # a row for every slot, from the first
    span = int((slots[-1] - slots[0]).total_seconds())
    union = [slots[0] + timedelta(seconds=i) for i in range(span + 1)
             if (slots[0].second + i) % 2 == 0 or (slots[0].second + i) % 3 == 0]
    assert slots == union  # every slot of either schedule, a second both hit once
    assert any(s.second % 6 == 0 for s in slots)
    runs = [r for r in daemon.runs("twice") if r.status is RunStatus.SUCCEEDED]
    for r in runs:
        assert r.output_tail is not None and r.output_tail.strip() == r.slot.isoformat()
        assert r.started_at is not None
        assert r.started_at >= r.slot + jitter_delay("twice", r.slot, timedelta(milliseconds=900))
    # `next --task` previews the same slots from the manifests alone
    res = daemon.cli("next", "--task", "twice", "--manifests", str(daemon.manifests),
                     "--from", slots[0].isoformat(), "--count", "3", "-o", "json")
    assert res.returncode == 0, res.stderr
    assert '"schedules"' in res.stdout and slots[1].isoformat() in res.stdout

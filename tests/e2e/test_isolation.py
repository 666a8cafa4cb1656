"""End-to-end: what a run carries to the outside (its idempotency key) and how it is
isolated (run-as user, limits), with the real daemon and real processes."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from reconciler.core.isolation import idempotency_key
from reconciler.core.runtime import RunStatus, Trigger
from tests.e2e.conftest import DaemonProcess, task_yaml, wait_until

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
              "[ $RECONCILER_ATTEMPT -ge 2 ] && echo key=$RECONCILER_IDEMPOTENCY_KEY || sleep 60")
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

"""Every policy decision as a pure function of plain values (core/scheduling.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.core.model import ConcurrencyPolicy
from reconciler.core.runtime import RunStatus, Trigger
from reconciler.core.scheduling import (
    SlotDecision,
    TaskPolicy,
    Verdict,
    admit_backlog,
    cancel_on_claim_lost,
    concurrency_verdict,
    decide_backlog,
    decide_retry,
    decide_slot,
    decide_trigger,
)

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def policy(schedule: str = "*/10 * * * *", **spec: Any) -> TaskPolicy:
    document = {"apiVersion": "reconciler/v1", "kind": "Task", "metadata": {"name": "t"},
                "spec": {"schedule": schedule, "run": {"command": ["true"]}, **spec}}
    return TaskPolicy.from_document("t", 1, document, suspended=False, calendars={})


@pytest.mark.parametrize(("concurrency", "active", "verdict"), [
    (ConcurrencyPolicy.FORBID, 0, Verdict.RUN), (ConcurrencyPolicy.FORBID, 1, Verdict.SKIPPED),
    (ConcurrencyPolicy.REPLACE, 0, Verdict.RUN), (ConcurrencyPolicy.REPLACE, 2, Verdict.REPLACE),
    (ConcurrencyPolicy.ALLOW, 0, Verdict.RUN), (ConcurrencyPolicy.ALLOW, 5, Verdict.RUN),
])
def test_concurrency_verdict(concurrency: ConcurrencyPolicy, active: int,
                             verdict: Verdict) -> None:
    assert concurrency_verdict(concurrency, active) is verdict
    p = policy(concurrencyPolicy=concurrency.value)
    assert decide_slot(p, T0, T0, active).verdict is verdict
    # a trigger asked for now: the same policy, no startingDeadline, its own trigger
    late = policy(concurrencyPolicy=concurrency.value, startingDeadline="1s")
    decided = decide_trigger(late, T0 - timedelta(hours=1), active, Trigger.CATCH_UP)
    assert decided.verdict is verdict and decided.trigger is Trigger.CATCH_UP


def test_decide_retry() -> None:
    p = policy(retries={"limit": 2, "backoff": "10s", "maxBackoff": "15s"})
    assert decide_retry(p, RunStatus.FAILED, 1, T0) == T0 + timedelta(seconds=10)
    assert decide_retry(p, RunStatus.TIMED_OUT, 2, T0) == T0 + timedelta(seconds=15)  # capped
    assert decide_retry(p, RunStatus.ABANDONED, 2, T0) is not None
    assert decide_retry(p, RunStatus.FAILED, 3, T0) is None  # the limit is spent
    for status in (RunStatus.SUCCEEDED, RunStatus.CANCELLED, RunStatus.SKIPPED,
                   RunStatus.MISSED):
        assert decide_retry(p, status, 1, T0) is None
    assert decide_retry(policy(), RunStatus.FAILED, 1, T0) is None  # retries: 0 by default


def test_cancel_on_claim_lost() -> None:
    assert cancel_on_claim_lost(policy(concurrencyPolicy="Forbid"))
    assert cancel_on_claim_lost(policy(concurrencyPolicy="Replace"))
    assert not cancel_on_claim_lost(policy(concurrencyPolicy="Allow"))


def test_decide_backlog() -> None:
    now = T0 + timedelta(minutes=35)
    assert decide_backlog(policy(), T0 + timedelta(minutes=30), now) == []  # only this one
    latest = decide_backlog(policy(), T0, now)
    assert [d.slot for d in latest] == [T0 + timedelta(minutes=m) for m in (0, 10, 20, 30)]
    assert [d.verdict for d in latest] == [Verdict.MISSED] * 3 + [Verdict.RUN]
    none = decide_backlog(policy(catchUp="None"), T0, now)
    assert [d.verdict for d in none] == [Verdict.MISSED] * 3 + [Verdict.RUN]  # the due one
    assert all(d.verdict is Verdict.RUN
               for d in decide_backlog(policy(catchUp="All", maxCatchUp=10), T0, now))


@pytest.mark.parametrize(("concurrency", "active", "expect"), [
    ("Allow", 0, [Verdict.RUN, Verdict.RUN, Verdict.RUN]),
    ("Forbid", 0, [Verdict.RUN, Verdict.SKIPPED, Verdict.SKIPPED]),
    ("Forbid", 1, [Verdict.SKIPPED, Verdict.SKIPPED, Verdict.SKIPPED]),
    ("Replace", 0, [Verdict.MISSED, Verdict.MISSED, Verdict.RUN]),
    ("Replace", 1, [Verdict.MISSED, Verdict.MISSED, Verdict.REPLACE]),
])
def test_admit_backlog(concurrency: str, active: int, expect: list[Verdict]) -> None:
    runs = [SlotDecision(T0 + timedelta(minutes=10 * i), Verdict.RUN, Trigger.CATCH_UP)
            for i in range(3)]
    admitted = admit_backlog(policy(concurrencyPolicy=concurrency), runs, T0, active, "x")
    assert [d.verdict for d in admitted] == expect
    assert all(d.trigger is Trigger.CATCH_UP for d in admitted)

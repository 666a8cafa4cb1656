"""Notifications through the scheduler, the outbox and the sender, on a fake clock:
which run ends write outbox rows (in the run's transaction), what the sender POSTs
(signed), retries with backoff, giving up after 24 h, and grouping."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
from collections.abc import Callable, Coroutine, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.core.channels import ChannelManifest, channel_def
from reconciler.core.errors import StoreError
from reconciler.core.model import DesiredState, TaskDef
from reconciler.core.outbox import NewNotification, OutboxStatus
from reconciler.core.plan import plan
from reconciler.core.protocols import NewRun
from reconciler.core.runtime import RunStatus, Trigger
from reconciler.daemon.notices import Notices
from reconciler.daemon.scheduler import Scheduler
from reconciler.daemon.sender import NotificationSender, SenderConfig
from reconciler.executors.delivery import Deliverer
from tests.unit.test_scheduler import T0, Harness, doc

KEY = "k3y"
MIN = timedelta(minutes=1)


class Receiver:
    """An httpx transport that records requests and answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.status = 200

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


class OutboxHarness(Harness):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.notices = Notices(self.store, self.clock, channels=self.store.load_channels)
        self.sched = Scheduler(self.store, self.worker, self.sched.claimer, self.executor,
                               self.clock, notices=self.notices)
        self.receiver = Receiver()
        self.results: list[tuple[str, str, str]] = []
        self.sender = NotificationSender(
            self.store, self.clock,
            SenderConfig(replica="r1", min_interval=timedelta(minutes=5), backoff=10 * S),
            Deliverer(httpx.MockTransport(self.receiver)),
            on_result=lambda *a: self.results.append(a),
        )

    def setup(self, *tasks: dict[str, Any], selector: str | None = None) -> None:
        spec: dict[str, Any] = {"webhook": {"url": "http://hooks.test/in",
                                            "headers": {"X-Team": "platform"},
                                            "secret": {"fromEnv": "HOOK_KEY"}}}
        if selector:
            spec["selector"] = selector
        channel = channel_def(ChannelManifest.model_validate({
            "apiVersion": "reconciler/v1", "kind": "Channel", "metadata": {"name": "ops"},
            "spec": spec}), "c.yaml")
        desired = DesiredState(tasks=tuple(TaskDef.from_document(d, "t.yaml") for d in tasks),
                               channels=(channel,))
        p = plan(desired, self.store.load_tasks(), channels=self.store.load_channels())
        self.store.apply_plan(p, actor="test", revision=None, now=self.clock.now())

    def outbox(self) -> list[Any]:
        return sorted(self.store.list_notifications(limit=1000), key=lambda r: r.id)


S = timedelta(seconds=1)


def synchronous(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh loop (as the scheduler tests do)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))
    return wrapper


@pytest.fixture
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OutboxHarness]:
    monkeypatch.setenv("HOOK_KEY", KEY)
    harness = OutboxHarness(tmp_path)
    yield harness
    harness.worker.close()


def failing(name: str = "backup", **spec: Any) -> dict[str, Any]:
    return doc(name, "*/10 * * * *", notify=[{"channel": "ops"}], **spec)


@synchronous
async def test_a_final_failure_is_delivered_signed_with_the_channels_headers(
        h: OutboxHarness) -> None:
    h.setup(failing())
    await h.sync()
    h.executor.outcomes["backup"] = [RunStatus.FAILED]
    await h.advance_to(T0 + 10 * MIN)
    (row,) = h.outbox()
    assert (row.channel, row.task_name, row.event, row.status) == (
        "ops", "backup", "failed", OutboxStatus.PENDING)
    assert row.event_id == f"backup/{(T0 + 10 * MIN).isoformat()}/1/failed"
    assert await h.sender.cycle() == 1
    (request,) = h.receiver.requests
    assert request.headers["X-Team"] == "platform"
    expected = hmac.new(KEY.encode(), request.content, hashlib.sha256).hexdigest()
    assert request.headers["X-Reconciler-Signature"] == f"sha256={expected}"
    body = json.loads(request.content)
    assert (body["id"], body["event"], body["task"], body["repeats"]) == (
        row.event_id, "failed", "backup", 0)
    assert (body["run"]["status"], body["run"]["exitCode"]) == ("failed", 1)
    (row,) = h.outbox()
    assert (row.status, row.attempts, row.last_status_code) == (OutboxStatus.SENT, 1, 200)
    assert h.results == [("ops", "failed", "sent")]


@synchronous
async def test_no_event_while_a_retry_follows_then_failed_then_recovered(
        h: OutboxHarness) -> None:
    h.setup(failing(retries={"limit": 1, "backoff": "10s"}))
    await h.sync()
    h.executor.outcomes["backup"] = [RunStatus.FAILED]
    await h.advance_to(T0 + 10 * MIN)
    assert h.outbox() == []  # attempt 1 failed, attempt 2 follows
    h.executor.outcomes["backup"] = [RunStatus.FAILED]
    await h.advance_to(T0 + 10 * MIN + 30 * S)
    assert [r.event for r in h.outbox()] == ["failed"]
    await h.advance_to(T0 + 20 * MIN)  # succeeds
    assert [r.event for r in h.outbox()] == ["failed", "recovered"]
    await h.advance_to(T0 + 30 * MIN)  # succeeds again: nothing (succeeded is opt-in)
    assert len(h.outbox()) == 2


@synchronous
async def test_a_task_no_channel_routes_writes_no_row(h: OutboxHarness) -> None:
    h.setup(doc("quiet", "*/10 * * * *"))
    await h.sync()
    h.executor.outcomes["quiet"] = [RunStatus.FAILED]
    await h.advance_to(T0 + 10 * MIN)
    assert h.outbox() == []


@synchronous
async def test_a_selector_channel_gets_the_matching_tasks_events(h: OutboxHarness) -> None:
    team = doc("etl", "*/10 * * * *")
    team["metadata"]["labels"] = {"team": "platform"}
    h.setup(team, doc("other", "*/10 * * * *"), selector="team=platform")
    await h.sync()
    h.executor.outcomes.update(etl=[RunStatus.FAILED], other=[RunStatus.FAILED])
    await h.advance_to(T0 + 10 * MIN)
    assert [(r.task_name, r.event) for r in h.outbox()] == [("etl", "failed")]
    assert h.outbox()[0].body["labels"] == {"team": "platform"}


@synchronous
async def test_a_missed_slot_is_written_with_its_row(h: OutboxHarness) -> None:
    h.setup(failing())
    await h.sync()
    row = NewRun(task_name="backup", slot=T0, attempt=1, trigger=Trigger.SCHEDULE,
                 status=RunStatus.MISSED, finished_at=T0, reason="daemon down")
    record, duplicate = await h.worker.call(h.notices.insert_runs, [row, row],
                                            h.sched.policy_of)
    assert record is not None and duplicate is None
    (out,) = h.outbox()
    assert (out.event, out.run_id, out.body["run"]["reason"]) == (
        "missed", record.id, "daemon down")


@synchronous
async def test_a_run_end_is_not_recorded_without_its_notifications(
        h: OutboxHarness) -> None:
    """The outbox write fails: the run's end is not written either (kept for the next
    flush), then both land together."""
    h.setup(failing())
    await h.sync()
    broken = [True]
    real = h.store._write_outbox

    def write(rows: Sequence[NewNotification]) -> list[int]:
        if broken[0] and rows:
            raise StoreError("disk full")
        return real(rows)

    h.store._write_outbox = write  # type: ignore[method-assign]
    h.executor.outcomes["backup"] = [RunStatus.FAILED]
    await h.advance_to(T0 + 10 * MIN)
    (run,) = h.runs("backup")
    assert run.status is RunStatus.RUNNING and h.outbox() == []
    broken[0] = False
    await h.sched.flush_state()
    (run,) = h.runs("backup")
    assert run.status is RunStatus.FAILED and [r.event for r in h.outbox()] == ["failed"]


@synchronous
async def test_a_failing_receiver_is_retried_with_backoff_then_given_up(
        h: OutboxHarness) -> None:
    h.setup(failing())
    await h.sync()
    h.executor.outcomes["backup"] = [RunStatus.FAILED]
    await h.advance_to(T0 + 10 * MIN)
    h.receiver.status = 503
    failed_at = h.clock.now()
    await h.sender.cycle()
    (row,) = h.outbox()
    assert (row.status, row.attempts, row.last_status_code) == (OutboxStatus.PENDING, 1, 503)
    assert row.next_attempt_at == failed_at + 10 * S
    assert await h.sender.cycle() == 0  # not due yet
    h.clock.advance(10 * S)
    await h.sender.cycle()
    (row,) = h.outbox()
    assert row.attempts == 2 and row.next_attempt_at == h.clock.now() + 20 * S
    h.clock.advance(timedelta(hours=25))
    await h.sender.cycle()
    (row,) = h.outbox()
    assert (row.status, row.attempts) == (OutboxStatus.FAILED, 3)
    assert [a["statusCode"] for a in row.attempt_log] == [503, 503, 503]
    assert h.results[-1] == ("ops", "failed", "failed")


@synchronous
async def test_repeats_inside_the_window_are_summarised_in_the_next_message(
        h: OutboxHarness) -> None:
    h.setup(doc("flaky", "* * * * *", notify=[{"channel": "ops"}]))
    await h.sync()
    h.executor.outcomes["flaky"] = [RunStatus.FAILED] * 4
    await h.advance_to(T0 + MIN)
    await h.sender.cycle()  # the first failure: sent at once
    for minute in (2, 3, 4):
        await h.advance_to(T0 + minute * MIN)
        await h.sender.cycle()  # inside the 5-minute window: postponed
    assert len(h.receiver.requests) == 1
    h.clock.set(T0 + 6 * MIN)  # the window of the first message is over
    await h.sender.cycle()
    bodies = h.receiver.bodies()
    assert len(bodies) == 2
    assert bodies[1]["repeats"] == 2 and bodies[1]["run"]["slot"] == "2026-03-02T12:04:00Z"
    statuses = [r.status for r in h.outbox()]
    assert statuses == [OutboxStatus.SENT, OutboxStatus.GROUPED, OutboxStatus.GROUPED,
                        OutboxStatus.SENT]


@synchronous
async def test_a_deleted_channels_rows_fail(h: OutboxHarness) -> None:
    h.store.add_notifications([NewNotification("gone", "backup", "failed", "x", {},
                                               h.clock.now())])
    await h.sender.cycle()
    (row,) = h.outbox()
    assert row.status is OutboxStatus.FAILED and row.last_error == "channel gone no longer exists"



"""The notification decisions (``core/notify.py``): which events an outcome produces,
which channel gets which, and the event's wire format against its published schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from reconciler.core.model import NotifyEvent
from reconciler.core.notify import (
    NOT_STARTED,
    OUTPUT_TAIL_CHARS,
    PING_TAIL_CHARS,
    ChannelRoute,
    Ping,
    deadline_slots,
    decide_events,
    decide_late,
    late_event,
    late_rows,
    next_deadline,
    notification_event,
    ping_of,
    route,
)
from reconciler.core.runtime import RunRecord, RunStatus, Trigger
from reconciler.core.scheduling import TaskSlots

E = NotifyEvent
S = RunStatus
SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.mark.parametrize(("status", "retrying", "previous", "events"), [
    (S.FAILED, False, None, (E.FAILED,)),
    (S.FAILED, True, None, ()),  # a retry follows: not the last attempt
    (S.TIMED_OUT, False, S.SUCCEEDED, (E.TIMED_OUT,)),
    (S.TIMED_OUT, True, None, ()),
    (S.ABANDONED, False, None, (E.ABANDONED,)),
    (S.ABANDONED, True, None, ()),
    (S.MISSED, False, None, (E.MISSED,)),
    (S.SUCCEEDED, False, None, (E.SUCCEEDED,)),
    (S.SUCCEEDED, False, S.SUCCEEDED, (E.SUCCEEDED,)),
    (S.SUCCEEDED, False, S.FAILED, (E.RECOVERED, E.SUCCEEDED)),
    (S.SUCCEEDED, False, S.TIMED_OUT, (E.RECOVERED, E.SUCCEEDED)),
    (S.SUCCEEDED, False, S.ABANDONED, (E.RECOVERED, E.SUCCEEDED)),
    (S.SUCCEEDED, False, S.CANCELLED, (E.SUCCEEDED,)),
    (S.CANCELLED, False, S.FAILED, ()),
    (S.SKIPPED, False, None, ()),
])
def test_decide_events(status: S, retrying: bool, previous: S | None,
                       events: tuple[E, ...]) -> None:
    assert decide_events(status, retrying=retrying, previous=previous) == events


def test_route_by_rule_default_and_selector() -> None:
    channels = [ChannelRoute("ops"), ChannelRoute("team", "team=data"),
                ChannelRoute("all-prod", "env=prod")]
    labels = {"team": "data"}
    # default `on`: everything but succeeded
    assert route([{"channel": "ops"}], labels, channels, (E.RECOVERED, E.SUCCEEDED)) == (
        ("ops", E.RECOVERED), ("team", E.RECOVERED))
    # succeeded only where a rule lists it
    assert route([{"channel": "ops", "on": ["succeeded"]}], {}, channels,
                 (E.RECOVERED, E.SUCCEEDED)) == (("ops", E.SUCCEEDED),)
    # an explicit rule for a selected channel decides for it
    assert route([{"channel": "team", "on": ["missed"]}], labels, channels, (E.FAILED,)) == ()
    assert route([], {"env": "prod"}, channels, (E.FAILED,)) == (("all-prod", E.FAILED),)
    assert route([], {}, channels, (E.FAILED,)) == ()


def run(**values: object) -> RunRecord:
    base: dict[str, object] = dict(
        id=42, task_name="nightly-backup", slot=datetime(2026, 3, 1, 2, 30, tzinfo=UTC),
        attempt=2, trigger=Trigger.RETRY, status=S.FAILED,
        started_at=datetime(2026, 3, 1, 2, 31, tzinfo=UTC),
        finished_at=datetime(2026, 3, 1, 2, 32, tzinfo=UTC), exit_code=1,
        reason="exit code 1", output_tail="x" * (OUTPUT_TAIL_CHARS + 10) + "END",
    )
    base.update(values)
    return RunRecord(**base)  # type: ignore[arg-type]


def test_the_event_wire_format_matches_its_schema() -> None:
    at = datetime(2026, 3, 1, 2, 32, 1, tzinfo=UTC)
    event = notification_event(run(), E.FAILED, {"team": "data"}, at)
    doc = json.loads(event.model_dump_json())
    assert doc["id"] == "nightly-backup/2026-03-01T02:30:00+00:00/2/failed"
    assert doc["event"] == "failed" and doc["labels"] == {"team": "data"}
    assert doc["run"]["exitCode"] == 1 and doc["run"]["startedAt"] == "2026-03-01T02:31:00Z"
    assert len(doc["run"]["outputTail"]) == OUTPUT_TAIL_CHARS
    assert doc["run"]["outputTail"].endswith("END")
    schema = json.loads((SPECS / "notification.schema.json").read_text())
    jsonschema.validate(doc, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "run": {**doc["run"], "exit_code": 1}}, schema)


# ------------------------------------------------------------------------ deadlines

SLOT = datetime(2026, 3, 1, 2, 30, tzinfo=UTC)
DEADLINE = timedelta(minutes=5)


def at(minutes: float) -> datetime:
    return SLOT + timedelta(minutes=minutes)


@pytest.mark.parametrize(("runs", "now", "late"), [
    ([], at(4.99), False),  # the deadline has not passed: nothing to say yet
    ([], at(5), True),  # never started (daemon down, pool full)
    ([run(attempt=1, status=S.RUNNING, finished_at=None)], at(5), True),  # still going
    ([run(attempt=1, status=S.SUCCEEDED, finished_at=at(4))], at(5), False),
    ([run(attempt=1, status=S.SUCCEEDED, finished_at=at(5))], at(5), False),  # just in time
    ([run(attempt=1, status=S.SUCCEEDED, finished_at=at(6))], at(7), True),  # too late
    ([run(attempt=1, status=S.FAILED, finished_at=at(1))], at(5), True),
    ([run(attempt=1, status=S.FAILED, finished_at=at(1)),  # a retry made it
      run(attempt=2, status=S.SUCCEEDED, finished_at=at(3))], at(5), False),
    ([run(attempt=1, status=S.MISSED, finished_at=at(0))], at(5), True),
    ([run(attempt=1, status=S.SKIPPED, finished_at=at(0))], at(5), True),
    # another slot's success does not count
    ([run(attempt=1, status=S.SUCCEEDED, slot=at(-60), finished_at=at(1))], at(5), True),
])
def test_decide_late(runs: list[RunRecord], now: datetime, late: bool) -> None:
    assert decide_late(SLOT, DEADLINE, runs, now) is late


def slots_of(schedule: str, jitter: str | None = None) -> TaskSlots:
    spec: dict[str, object] = {"schedule": schedule, "run": {"command": ["true"]}}
    if jitter:
        spec["jitter"] = jitter
    return TaskSlots.from_document({"apiVersion": "reconciler/v1", "kind": "Task",
                                    "metadata": {"name": "nightly-backup"}, "spec": spec}, {})


def test_deadline_slots_and_the_next_deadline() -> None:
    every10 = slots_of("*/10 * * * *")
    # deadlines in (02:35, 03:15]: the slots 02:40 .. 03:10
    assert deadline_slots(every10, DEADLINE, at(5), at(45)) == [
        at(10), at(20), at(30), at(40)]
    assert deadline_slots(every10, DEADLINE, at(5), at(14)) == []
    assert deadline_slots(every10, DEADLINE, at(5), at(45), limit=2) == [at(30), at(40)]
    assert next_deadline(every10, DEADLINE, at(5)) == at(15)
    assert next_deadline(every10, DEADLINE, at(15)) == at(25)
    # the deadline counts from the nominal slot, not its jittered start
    jittered = slots_of("*/10 * * * *", jitter="4m")
    assert next_deadline(jittered, DEADLINE, at(5)) == at(15)


def test_the_late_event_of_a_slot_with_and_without_runs() -> None:
    event = late_event("nightly-backup", SLOT, DEADLINE, [], {"team": "data"})
    doc = json.loads(event.model_dump_json())
    assert doc["id"] == "nightly-backup/2026-03-01T02:30:00+00:00/0/late"
    assert doc["at"] == "2026-03-01T02:35:00Z"
    assert (doc["run"]["id"], doc["run"]["status"], doc["run"]["attempt"]) == (
        0, NOT_STARTED, 0)
    assert doc["run"]["reason"] == "no success within 5m of the slot: no run started"
    jsonschema.validate(doc, json.loads((SPECS / "notification.schema.json").read_text()))
    going = late_event("nightly-backup", SLOT, DEADLINE,
                       [run(attempt=1, status=S.FAILED, reason="exit code 1"),
                        run(id=43, attempt=2, status=S.RUNNING, finished_at=None, reason=None),
                        run(id=7, slot=at(-60), attempt=3, status=S.RUNNING)], {})
    # one id per slot whatever its runs: the newest run of the slot is described
    assert going.id == event.id
    assert (going.run.id, going.run.status, going.run.reason) == (
        43, "running", "no success within 5m of the slot (attempt 2 running)")
    (row,) = late_rows(going, ["ops"], at(7))
    assert (row.channel, row.event, row.event_id, row.run_id, row.created_at) == (
        "ops", "late", going.id, 43, at(7))
    assert late_rows(event, ["ops"], at(7))[0].run_id is None


@pytest.mark.parametrize(("status", "expected"), [
    (S.RUNNING, Ping("https://hc.example/k/start")),
    (S.SUCCEEDED, Ping("https://hc.example/k")),
    (S.FAILED, Ping("https://hc.example/k/fail", "tail")),
    (S.TIMED_OUT, Ping("https://hc.example/k/fail", "tail")),
    (S.ABANDONED, Ping("https://hc.example/k/fail", "tail")),
    (S.CANCELLED, None), (S.SKIPPED, None), (S.MISSED, None), (S.PENDING, None),
])
def test_ping_of(status: S, expected: Ping | None) -> None:
    assert ping_of("https://hc.example/k/", status, "tail") == expected


def test_a_fail_ping_carries_the_end_of_the_output() -> None:
    ping = ping_of("https://hc.example/k", S.FAILED, "x" * PING_TAIL_CHARS + "END")
    assert ping is not None and len(ping.body) == PING_TAIL_CHARS
    assert ping.body.endswith("END")
    assert ping_of("https://hc.example/k", S.FAILED, None) == Ping("https://hc.example/k/fail")

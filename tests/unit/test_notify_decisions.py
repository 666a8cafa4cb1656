"""The notification decisions (``core/notify.py``): which events an outcome produces,
which channel gets which, and the event's wire format against its published schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from reconciler.core.model import NotifyEvent
from reconciler.core.notify import (
    OUTPUT_TAIL_CHARS,
    ChannelRoute,
    decide_events,
    notification_event,
    route,
)
from reconciler.core.runtime import RunRecord, RunStatus, Trigger

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

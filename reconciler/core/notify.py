"""Which notifications a run's outcome produces, where they go, and what they say.

Pure functions (no I/O, no clock): the daemon calls them when it writes a run's final
status and carries out the result.

* :func:`decide_events`: the events of one outcome. ``failed``, ``timed_out`` and
  ``abandoned`` only when no retry follows (the last attempt of the slot), ``missed``
  for a slot that was not run, ``succeeded`` for every success, and ``recovered`` for a
  success whose previous outcome (of the task's last finished slot) was a failure.
* :func:`route`: which channel gets which of those events. A task's ``spec.notify``
  rule sends the events in its ``on`` list; a channel whose ``selector`` matches the
  task's labels gets the default list (:data:`~reconciler.core.model.DEFAULT_NOTIFY_ON`)
  unless the task names it explicitly (then its rule decides). ``succeeded`` is sent
  only where a rule lists it.
* :class:`NotificationEvent`: the wire format (the webhook's body, camelCase like the
  API; ``specs/notification.schema.json`` is generated from it) and
  :func:`notification_event` to build one. ``id`` is a stable key
  (``task/slot/attempt/event``): a receiver deduplicates the rare repeat after a crash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from reconciler.core.model import DEFAULT_NOTIFY_ON, NotifyEvent, TaskManifest
from reconciler.core.outbox import NewNotification
from reconciler.core.runtime import RunRecord, RunStatus
from reconciler.core.selectors import parse_selector

#: Outcomes that count as a failure for ``recovered``.
FAILURES = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED})
_EVENT_OF = {
    RunStatus.FAILED: NotifyEvent.FAILED,
    RunStatus.TIMED_OUT: NotifyEvent.TIMED_OUT,
    RunStatus.ABANDONED: NotifyEvent.ABANDONED,
}
#: How much of a run's output an event carries (its end).
OUTPUT_TAIL_CHARS = 4000


def decide_events(
    status: RunStatus, *, retrying: bool, previous: RunStatus | None
) -> tuple[NotifyEvent, ...]:
    """The events of a run that ended ``status``.

    ``retrying``: another attempt of the slot follows (``decide_retry`` said when), so a
    failure is not final yet. ``previous``: the final outcome of the task's previous
    slot (None: none yet).
    """
    if status in _EVENT_OF:
        return () if retrying else (_EVENT_OF[status],)
    if status is RunStatus.MISSED:
        return (NotifyEvent.MISSED,)
    if status is RunStatus.SUCCEEDED:
        if previous in FAILURES:
            return (NotifyEvent.RECOVERED, NotifyEvent.SUCCEEDED)
        return (NotifyEvent.SUCCEEDED,)
    return ()  # cancelled, skipped: someone or a policy chose it; nobody needs telling


@dataclass(frozen=True, slots=True)
class ChannelRoute:
    """What routing needs of a channel: its name and its selector (if any)."""

    name: str
    selector: str | None = None


def route(
    rules: Sequence[Mapping[str, Any]],
    labels: Mapping[str, str],
    channels: Iterable[ChannelRoute],
    events: Sequence[NotifyEvent],
) -> tuple[tuple[str, NotifyEvent], ...]:
    """``(channel, event)`` pairs, sorted: ``rules`` are the task's canonical
    ``spec.notify`` entries (``on`` left out when it is the default)."""
    wanted: dict[str, frozenset[NotifyEvent]] = {
        rule["channel"]: frozenset(NotifyEvent(e) for e in rule.get("on", DEFAULT_NOTIFY_ON))
        for rule in rules
    }
    for channel in channels:
        if channel.name in wanted or channel.selector is None:
            continue
        if parse_selector(channel.selector).matches(labels):
            wanted[channel.name] = frozenset(DEFAULT_NOTIFY_ON)
    return tuple(sorted(
        (name, event) for name, on in wanted.items() for event in events if event in on
    ))


def event_id(task: str, slot: datetime, attempt: int, event: NotifyEvent) -> str:
    return f"{task}/{slot.isoformat()}/{attempt}/{event.value}"


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel,
                              validate_by_name=True, serialize_by_alias=True)


class NotificationRun(_Wire):
    id: int
    status: str
    slot: datetime
    attempt: int
    trigger: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    output_tail: str | None = Field(default=None, description="The end of the output.")


class NotificationEvent(_Wire):
    """The body of a webhook notification (and what the other channels format)."""

    model_config = ConfigDict(title="Notification")

    id: str = Field(description="Stable dedupe key: task/slot/attempt/event.")
    event: NotifyEvent
    task: str
    labels: dict[str, str] = {}
    run: NotificationRun
    at: datetime = Field(description="When the event happened.")
    repeats: int = Field(default=0, ge=0, description="Events of the same channel, task and "
                         "kind folded into this message since the previous one.")


def notification_event(
    run: RunRecord, event: NotifyEvent, labels: Mapping[str, str], at: datetime
) -> NotificationEvent:
    tail = run.output_tail
    if tail is not None and len(tail) > OUTPUT_TAIL_CHARS:
        tail = tail[-OUTPUT_TAIL_CHARS:]
    return NotificationEvent(
        id=event_id(run.task_name, run.slot, run.attempt, event),
        event=event,
        task=run.task_name,
        labels=dict(labels),
        run=NotificationRun(
            id=run.id, status=run.status.value, slot=run.slot, attempt=run.attempt,
            trigger=run.trigger.value, started_at=run.started_at,
            finished_at=run.finished_at, exit_code=run.exit_code,
            reason=run.reason or run.error, output_tail=tail,
        ),
        at=at,
    )


def notify_rules(manifest: TaskManifest) -> list[dict[str, Any]]:
    """A task's ``spec.notify`` as :func:`route` takes it."""
    return [{"channel": r.channel, "on": [NotifyEvent(e).value for e in r.on]}
            for r in manifest.spec.notify]


def outbox_rows(
    run: RunRecord, pairs: Sequence[tuple[str, NotifyEvent]], labels: Mapping[str, str],
    at: datetime,
) -> list[NewNotification]:
    """The outbox rows of ``run`` for the ``(channel, event)`` pairs :func:`route` chose:
    one per pair, each with the event's JSON (one event built once per kind)."""
    bodies: dict[NotifyEvent, NotificationEvent] = {}
    out = []
    for channel, event in pairs:
        if event not in bodies:
            bodies[event] = notification_event(run, event, labels, at)
        body = bodies[event]
        out.append(NewNotification(channel=channel, task_name=run.task_name, event=event.value,
                                   event_id=body.id, body=body.model_dump(mode="json"),
                                   created_at=at, run_id=run.id))
    return out


def test_event(channel: str, at: datetime) -> NotificationEvent:
    """What ``reconciler notify test CHANNEL`` sends: a ``succeeded`` event of a task
    named ``notify-test`` whose reason says it is a test."""
    return NotificationEvent(
        id=f"notify-test/{at.isoformat()}/0/{NotifyEvent.SUCCEEDED.value}",
        event=NotifyEvent.SUCCEEDED, task="notify-test", labels={},
        run=NotificationRun(id=0, status="succeeded", slot=at, attempt=0, trigger="manual",
                            started_at=at, finished_at=at, exit_code=0,
                            reason=f"a test notification to channel {channel} "
                                   "(reconciler notify test)"),
        at=at,
    )

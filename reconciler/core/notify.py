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
* :func:`decide_late`: is a slot late at an instant (``spec.deadline``: no run of it
  succeeded within the deadline of the nominal slot, whatever else happened to it);
  :func:`deadline_slots` and :func:`next_deadline` step through the deadlines of a
  task's slots for the daemon's deadline watcher; :func:`late_rows` builds the outbox
  rows of a ``late`` event (its id has attempt 0: one per slot, whichever replica or
  restart decides it).
* :func:`ping_of`: the healthchecks.io-style ping of a run's start or end
  (``spec.ping``).
* :class:`NotificationEvent`: the wire format (the webhook's body, camelCase like the
  API; ``specs/notification.schema.json`` is generated from it) and
  :func:`notification_event` to build one. ``id`` is a stable key
  (``task/slot/attempt/event``): a receiver deduplicates the rare repeat after a crash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from reconciler.core.durations import format_duration
from reconciler.core.model import DEFAULT_NOTIFY_ON, NotifyEvent, TaskManifest
from reconciler.core.outbox import NewNotification
from reconciler.core.runtime import RunRecord, RunStatus, Trigger
from reconciler.core.scheduling import TaskSlots
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
#: How far back a daemon looks, at start-up or when it becomes the writer, for slots
#: whose deadline passed while no daemon watched: at most this long ago, and at most
#: :data:`LATE_MAX_SLOTS` (the newest) per task.
LATE_LOOKBACK = timedelta(hours=24)
LATE_MAX_SLOTS = 100
#: The run status a ``late`` event of a slot without any run carries.
NOT_STARTED = "not_started"
_TICK = timedelta(microseconds=1)


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


# ------------------------------------------------------------------------ deadlines


def decide_late(slot: datetime, deadline: timedelta, runs: Sequence[RunRecord],
                now: datetime) -> bool:
    """Is ``slot`` late at ``now``: its deadline (``slot + deadline``, the nominal slot:
    jitter does not move it) has passed and no run of the slot (any attempt, a retry, a
    catch-up) had succeeded by then. Still running, never started, failed, missed or
    succeeded after the deadline: all late. ``runs`` may hold other slots' runs."""
    due = slot + deadline
    if now < due:
        return False
    return not any(r.slot == slot and r.status is RunStatus.SUCCEEDED
                   and r.finished_at is not None and r.finished_at <= due for r in runs)


def deadline_slots(slots: TaskSlots, deadline: timedelta, after: datetime, now: datetime,
                   *, limit: int = LATE_MAX_SLOTS) -> list[datetime]:
    """The slots whose deadline is in ``(after, now]``, oldest first; only the newest
    ``limit`` when there are more."""
    out: list[datetime] = []
    cursor = now - deadline
    while len(out) < limit:
        slot = slots.previous_before(cursor)
        if slot is None or slot + deadline <= after:
            break
        out.append(slot)
        cursor = slot - _TICK
    out.reverse()
    return out


def next_deadline(slots: TaskSlots, deadline: timedelta, after: datetime) -> datetime | None:
    """The first deadline of a slot later than ``after`` (None: no slot follows)."""
    slot = slots.next_after(after - deadline)
    return None if slot is None else slot + deadline


def late_event(task: str, slot: datetime, deadline: timedelta, runs: Sequence[RunRecord],
               labels: Mapping[str, str]) -> NotificationEvent:
    """The ``late`` event of ``slot``: ``run`` is its newest run (status
    :data:`NOT_STARTED`, id 0, attempt 0 when it has none); ``at`` is the deadline."""
    due = slot + deadline
    mine = [r for r in runs if r.slot == slot]
    latest = max(mine, key=lambda r: (r.attempt, r.id), default=None)
    why = f"no success within {format_duration(deadline)} of the slot"
    if latest is None:
        run = NotificationRun(id=0, status=NOT_STARTED, slot=slot, attempt=0,
                              trigger=Trigger.SCHEDULE.value, reason=f"{why}: no run started")
    else:
        run = notification_event(latest, NotifyEvent.LATE, labels, due).run
        state = f"attempt {latest.attempt} {latest.status.value}"
        run = run.model_copy(update={"reason": f"{why} ({state})"
                                     + (f": {run.reason}" if run.reason else "")})
    return NotificationEvent(id=event_id(task, slot, 0, NotifyEvent.LATE),
                             event=NotifyEvent.LATE, task=task, labels=dict(labels), run=run,
                             at=due)


def late_rows(event: NotificationEvent, channels: Sequence[str],
              now: datetime) -> list[NewNotification]:
    """The outbox rows of a ``late`` event, one per channel, due at ``now``."""
    body = event.model_dump(mode="json")
    return [NewNotification(channel=c, task_name=event.task, event=event.event.value,
                            event_id=event.id, body=body, created_at=now,
                            run_id=event.run.id or None) for c in channels]


# ---------------------------------------------------------------------------- pings

#: Run ends that are pinged ``URL/fail``.
PING_FAILURES = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED})
#: How much of a run's output a ``/fail`` ping carries (its end).
PING_TAIL_CHARS = 10_000


@dataclass(frozen=True, slots=True)
class Ping:
    url: str
    body: str = ""


def ping_of(url: str, status: RunStatus, output_tail: str | None = None) -> Ping | None:
    """The ping of a run that is now ``status`` to the check at ``url``: ``URL/start``
    when it starts (running), ``URL`` when it succeeded, ``URL/fail`` with the output's
    tail when it failed, timed out or was abandoned; None otherwise (cancelled,
    skipped, missed: nobody ran it to an end)."""
    base = url.rstrip("/")
    if status is RunStatus.RUNNING:
        return Ping(f"{base}/start")
    if status is RunStatus.SUCCEEDED:
        return Ping(base)
    if status in PING_FAILURES:
        return Ping(f"{base}/fail", (output_tail or "")[-PING_TAIL_CHARS:])
    return None

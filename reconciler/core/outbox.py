"""The notification outbox: its rows and the pure delivery decisions.

A run's final status (or a missed slot) and the notifications it produces are written
in one transaction (the store's ``update_run``/``insert_runs`` take a
:data:`NotifyBuilder`), one outbox row per (channel, event). A background sender claims
due rows (a lease: ``claimed_by``, ``lease_until``; a crashed sender's rows are taken
over once the lease ran out), delivers them and records each attempt. This module
decides, without I/O or a clock of its own:

* :func:`retry_at`: when a failed delivery is tried again (exponential backoff from
  ``base``, at most ``cap`` apart), or None when the row has been failing for
  :data:`GIVE_UP_AFTER` (it becomes ``failed``);
* :func:`plan_delivery`: which claimed rows are sent now and which wait, so that a
  (channel, task, event) gets at most one message per ``min_interval``; the rows that
  waited are folded into one message whose ``repeats`` counts the others.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from reconciler.core.runtime import RunRecord

#: A row still failing this long after it was written is given up (``failed``).
GIVE_UP_AFTER = timedelta(hours=24)
#: The longest wait between two attempts.
RETRY_CAP = timedelta(hours=1)
#: Attempts kept per row (the newest).
ATTEMPT_LOG_MAX = 50


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its (next) attempt
    SENT = "sent"
    FAILED = "failed"  # every attempt for GIVE_UP_AFTER failed
    GROUPED = "grouped"  # folded into another row's message (``grouped_into``)


#: A (channel, task, event): at most one message per ``--notify-min-interval``.
GroupKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class NewNotification:
    """An outbox row to write, in the transaction of the run's status."""

    channel: str
    task_name: str
    event: str
    event_id: str
    body: Mapping[str, Any]
    created_at: datetime
    run_id: int | None = None


#: Called by the store inside the write's transaction with the run as written; returns
#: the outbox rows to write with it.
NotifyBuilder = Callable[[RunRecord], Sequence[NewNotification]]


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    at: datetime
    status_code: int | None
    error: str | None

    def doc(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "statusCode": self.status_code, "error": self.error}


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    """One outbox row."""

    id: int
    channel: str
    task_name: str
    event: str
    event_id: str
    run_id: int | None
    body: dict[str, Any]
    status: OutboxStatus
    created_at: datetime
    next_attempt_at: datetime
    attempts: int = 0
    repeats: int = 0
    claimed_by: str | None = None
    lease_until: datetime | None = None
    sent_at: datetime | None = None
    grouped_into: int | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    attempt_log: tuple[dict[str, Any], ...] = ()

    @property
    def key(self) -> GroupKey:
        return (self.channel, self.task_name, self.event)


@dataclass(frozen=True, slots=True)
class NotificationUpdate:
    """What a sender writes back for a row it claimed (the claim is released)."""

    id: int
    status: OutboxStatus
    next_attempt_at: datetime | None = None  # None: unchanged
    attempt: DeliveryAttempt | None = None  # an attempt made (counted and logged)
    repeats: int | None = None
    sent_at: datetime | None = None
    grouped_into: int | None = None


def retry_at(
    created_at: datetime, attempts: int, now: datetime, *, base: timedelta,
    cap: timedelta = RETRY_CAP, give_up_after: timedelta = GIVE_UP_AFTER,
) -> datetime | None:
    """When to try again after ``attempts`` failed attempts (>= 1): ``now`` + ``base``
    doubled per earlier failure (at most ``cap``), never later than the give-up
    instant (one last attempt there); None once that instant has passed."""
    deadline = created_at + give_up_after
    if now >= deadline:
        return None
    exponent = min(max(attempts, 1) - 1, 40)
    delay: timedelta = min(cap, base * (2 ** exponent))
    at: datetime = min(now + delay, deadline)
    return at


@dataclass(frozen=True, slots=True)
class Send:
    """Deliver ``row`` now; ``folded`` rows are summarised in it (``repeats``)."""

    row: NotificationRecord
    folded: tuple[NotificationRecord, ...] = ()

    @property
    def repeats(self) -> int:
        return self.row.repeats + len(self.folded)


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    sends: list[Send] = field(default_factory=list)
    #: rows whose group had a message less than ``min_interval`` ago: wait until then
    postponed: list[tuple[NotificationRecord, datetime]] = field(default_factory=list)


def plan_delivery(
    claimed: Sequence[NotificationRecord], last_sent: Mapping[GroupKey, datetime],
    now: datetime, min_interval: timedelta,
) -> DeliveryPlan:
    """Per (channel, task, event) of the claimed rows: wait while the group's last
    message is younger than ``min_interval``; otherwise send one message, the newest
    row, with the older rows that never had an attempt folded into it. A row already
    tried before (a retry) is sent on its own: it was the group's message."""
    plan = DeliveryPlan()
    groups: dict[GroupKey, list[NotificationRecord]] = {}
    for row in sorted(claimed, key=lambda r: r.id):
        groups.setdefault(row.key, []).append(row)
    for key, rows in groups.items():
        last = last_sent.get(key)
        retries = [r for r in rows if r.attempts > 0]
        fresh = [r for r in rows if r.attempts == 0]
        plan.sends.extend(Send(r) for r in retries)
        if not fresh:
            continue
        if last is not None and now < last + min_interval:
            plan.postponed.extend((r, last + min_interval) for r in fresh)
            continue
        plan.sends.append(Send(fresh[-1], tuple(fresh[:-1])))
    return plan

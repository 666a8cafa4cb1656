"""Backfill: which slots a backfill covers and which of them to start next. Pure.

A backfill runs a task's slots of a past (or future) range ``[start, end)``: the same
slots the scheduler would have run (:class:`~reconciler.core.scheduling.TaskSlots`:
its schedules, ``H``, active window and exclusions), each once, by its nominal slot.

* :func:`range_bound` reads ``--from`` / ``--to``: a date is local midnight in the
  task's zone (the first instant of that day by the DST rule), a date-time without an
  offset is a wall time in the task's zone, one with an offset is that instant.
* :func:`backfill_slots` lists the slots in ``[start, end)``; on a DST day these are
  the scheduler's own (a skipped 02:30 runs at 03:00, a repeated hour once).
* :func:`plan_backfill` decides, from what has run so far, which slots to start now:
  slots that already succeeded outside the backfill are skipped unless ``rerun``; at
  most ``parallel`` of the backfill's runs are active at once; the task's concurrency
  policy is applied against its *other* active runs (scheduled, manual) by
  :func:`~reconciler.core.scheduling.concurrency_verdict`: Forbid and Replace make
  the backfill wait (a backfill never cancels another run), Allow lets it run beside.
  A slot whose run ended in any way (failed, abandoned by a daemon that died) is done:
  a backfill never starts a slot twice.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from reconciler.core.model import ConcurrencyPolicy
from reconciler.core.runtime import RunRecord, RunStatus, Trigger
from reconciler.core.schedule import check_time_zone, wall_instant
from reconciler.core.scheduling import TaskSlots, Verdict, concurrency_verdict

__all__ = [
    "MAX_BACKFILL_SLOTS", "BackfillRecord", "BackfillState", "BackfillStep", "NewBackfill",
    "backfill_slots", "outcomes", "plan_backfill", "range_bound",
]

#: The most slots one backfill may cover (a one-minute schedule over a week).
MAX_BACKFILL_SLOTS = 10_080
_EPSILON = timedelta(microseconds=1)


class BackfillState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (BackfillState.SUCCEEDED, BackfillState.FAILED, BackfillState.CANCELLED)


@dataclass(frozen=True, slots=True)
class NewBackfill:
    """A backfill to store (its slots are counted when it is created)."""

    task_name: str
    start: datetime
    end: datetime
    parallel: int
    rerun: bool
    total: int
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BackfillRecord:
    """One row of the ``backfills`` table; ``done`` of ``total`` slots are finished
    (run, or skipped as already succeeded), ``failed`` of them did not succeed."""

    id: int
    task_name: str
    start: datetime
    end: datetime
    parallel: int
    rerun: bool
    state: BackfillState
    total: int
    done: int
    failed: int
    created_by: str
    created_at: datetime
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None


def range_bound(text: str, time_zone: str, option: str) -> datetime:
    """``--from`` / ``--to`` as an aware instant (see the module); raises ``ValueError``
    naming ``option``."""
    zone = check_time_zone(time_zone)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return wall_instant(datetime(day.year, day.month, day.day), zone)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option}: not a date or an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        return wall_instant(value, zone)
    return value.astimezone(UTC)


def backfill_slots(slots: TaskSlots, start: datetime, end: datetime,
                   limit: int = MAX_BACKFILL_SLOTS) -> list[datetime]:
    """The task's slots in ``[start, end)``, oldest first (excluded slots left out);
    raises ``ValueError`` for a reversed range or more than ``limit`` slots."""
    if end <= start:
        raise ValueError(f"the range is empty: --to {end.isoformat()} is not after "
                         f"--from {start.isoformat()}")
    out: list[datetime] = []
    for slot, excluded in slots.candidates(start - _EPSILON):
        if slot >= end:
            break
        if excluded is not None:
            continue
        if len(out) >= limit:
            raise ValueError(f"the range holds more than {limit} slots; backfill it in parts")
        out.append(slot)
    return out


def outcomes(ledger: Mapping[datetime, int], runs: Sequence[RunRecord]
             ) -> tuple[dict[datetime, RunStatus], set[datetime]]:
    """From the backfill's own runs (``ledger``: slot -> the attempt it started) and
    every run of the task in its range: the status of each own slot (the newest attempt
    at or after the backfill's, so a retry's outcome counts), and the slots that
    succeeded outside the backfill."""
    own: dict[datetime, tuple[int, RunStatus]] = {}
    succeeded: set[datetime] = set()
    for run in runs:
        first = ledger.get(run.slot)
        if first is not None and run.attempt >= first:
            if run.slot not in own or own[run.slot][0] < run.attempt:
                own[run.slot] = (run.attempt, run.status)
        elif run.status is RunStatus.SUCCEEDED:
            succeeded.add(run.slot)
    for slot in ledger:  # a ledger row whose run was pruned: it ran
        own.setdefault(slot, (0, RunStatus.SUCCEEDED))
    return {slot: status for slot, (_, status) in own.items()}, succeeded


@dataclass(frozen=True, slots=True)
class BackfillStep:
    """What :func:`plan_backfill` decided: the slots to start now (oldest first), the
    progress, and the state the backfill is in."""

    start: tuple[datetime, ...]
    total: int
    done: int
    failed: int
    running: int
    state: BackfillState
    waiting: str | None = None


def plan_backfill(slots: Sequence[datetime], own: Mapping[datetime, RunStatus],
                  succeeded: Collection[datetime], *, parallel: int, rerun: bool,
                  policy: ConcurrencyPolicy, others_active: int) -> BackfillStep:
    """The next step of a backfill over ``slots`` (see the module): ``own`` is the
    status of each slot the backfill started, ``succeeded`` the slots that succeeded
    outside it, ``others_active`` the task's active runs that are not the backfill's."""
    done = failed = running = 0
    todo: list[datetime] = []
    for slot in slots:
        status = own.get(slot)
        if status is None:
            if not rerun and slot in succeeded:
                done += 1
            else:
                todo.append(slot)
        elif status.finished:
            done += 1
            failed += status is not RunStatus.SUCCEEDED
        else:
            running += 1
    if not todo and not running:
        state = BackfillState.FAILED if failed else BackfillState.SUCCEEDED
        return BackfillStep((), len(slots), done, failed, 0, state)
    waiting = None
    room = max(0, parallel - running)
    if room and todo and concurrency_verdict(policy, others_active) is not Verdict.RUN:
        room = 0
        waiting = f"another run of the task is active (concurrencyPolicy {policy.value})"
    return BackfillStep(tuple(todo[:room]), len(slots), done, failed, running,
                        BackfillState.RUNNING, waiting)


#: The trigger of a backfill's runs.
TRIGGER = Trigger.BACKFILL

"""Scheduling decisions: pure functions of (task policy, slot, now, what is running).

The daemon's loop only moves time and performs side effects; *what* to do at a slot
is decided here, so every policy (missed slots, catch-up, concurrency, retries) is
unit-tested with plain values and a fake clock.

Vocabulary: a *slot* is an exact UTC instant produced by the schedule; a *run* is one
attempt at a slot; *lateness* is the run's actual start minus its slot.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from reconciler.core.model import CatchUpPolicy, ConcurrencyPolicy, TaskManifest, TaskSpec
from reconciler.core.params import defaults, row_values
from reconciler.core.runtime import RunStatus, Trigger
from reconciler.core.schedule import Schedule

#: How many individual ``missed`` rows one recovery writes per task at most; older
#: missed slots are summarised in the reason of the oldest recorded one.
MAX_MISSED_RECORDS = 100
_EPSILON = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class TaskPolicy:
    """What the scheduler needs to know about one task: its parsed schedule, generation
    and suspension, and its spec (``spec.concurrency_policy``, ``spec.retries``, ...:
    every field is declared once, in :class:`~reconciler.core.model.TaskSpec`)."""

    name: str
    generation: int
    schedule: Schedule
    suspended: bool
    manifest: TaskManifest = field(compare=False, repr=False)

    @property
    def spec(self) -> TaskSpec:
        return self.manifest.spec

    @classmethod
    def from_document(
        cls, name: str, generation: int, document: dict[str, Any], suspended: bool
    ) -> TaskPolicy:
        m = TaskManifest.model_validate(document)
        schedule = Schedule.parse(m.spec.schedule, m.spec.time_zone)
        return cls(name=name, generation=generation, schedule=schedule, suspended=suspended,
                   manifest=m)


class Verdict(enum.StrEnum):
    RUN = "run"
    MISSED = "missed"
    SKIPPED = "skipped"
    REPLACE = "replace"  # cancel the active run(s), then run


@dataclass(frozen=True, slots=True)
class SlotDecision:
    slot: datetime
    verdict: Verdict
    trigger: Trigger = Trigger.SCHEDULE
    reason: str | None = None
    #: The parameter values of the run (a retry's: its first attempt's); None: the
    #: defaults (:func:`run_params`).
    params: Mapping[str, Any] | None = field(default=None, compare=False)


def run_params(policy: TaskPolicy, decision: SlotDecision) -> dict[str, Any] | None:
    """The parameter values a run decided by ``decision`` records: those it carries
    (a retry keeps its first attempt's), else the declared defaults (a run of the
    schedule or a catch-up). None when the task declares no parameters."""
    if decision.params is not None:
        return dict(decision.params)
    declared = policy.spec.params
    return row_values(declared, defaults(declared))


def _late(policy: TaskPolicy, slot: datetime, now: datetime) -> str | None:
    deadline = policy.spec.starting_deadline
    if deadline is not None and now - slot > deadline:
        late = (now - slot).total_seconds()
        return (
            f"started too late: {late:.3f}s after the slot, past startingDeadline "
            f"{deadline.total_seconds():g}s"
        )
    return None


def concurrency_verdict(policy: ConcurrencyPolicy, active: int) -> Verdict:
    """The concurrency policy, for a run that would start while ``active`` runs of its
    task are active or starting: Forbid skips it, Replace replaces them, Allow runs."""
    if not active or policy is ConcurrencyPolicy.ALLOW:
        return Verdict.RUN
    if policy is ConcurrencyPolicy.FORBID:
        return Verdict.SKIPPED
    return Verdict.REPLACE


_CONCURRENCY_REASONS = {Verdict.SKIPPED: "previous run active",
                        Verdict.REPLACE: "replaces the previous run"}


def decide_slot(policy: TaskPolicy, slot: datetime, now: datetime, active: int) -> SlotDecision:
    """What to do with a slot that has come due at ``now``."""
    reason = _late(policy, slot, now)
    if reason is not None:
        return SlotDecision(slot, Verdict.MISSED, reason=reason)
    verdict = concurrency_verdict(policy.spec.concurrency_policy, active)
    return SlotDecision(slot, verdict, reason=_CONCURRENCY_REASONS.get(verdict))


def decide_trigger(policy: TaskPolicy, slot: datetime, active: int,
                   trigger: Trigger = Trigger.MANUAL,
                   params: Mapping[str, Any] | None = None) -> SlotDecision:
    """What to do with a run asked for now (a manual trigger, an operator's catch-up,
    a pending row, a retry with its first attempt's ``params``): the concurrency
    policy, and no ``startingDeadline`` (it was asked for now)."""
    verdict = concurrency_verdict(policy.spec.concurrency_policy, active)
    return SlotDecision(slot, verdict, trigger, _CONCURRENCY_REASONS.get(verdict), params)


def recover_missed(
    policy: TaskPolicy, last_slot: datetime | None, now: datetime, *, cause: str = "downtime"
) -> list[SlotDecision]:
    """Decide the slots in ``(last_slot, now]`` that nobody ran (after downtime or overload).

    * slots older than ``startingDeadline`` are recorded missed;
    * ``catchUp: None`` records every one missed; ``Latest`` runs the most recent and
      records the others missed; ``All`` runs the newest ``maxCatchUp`` (oldest first)
      and records the rest missed.

    Only the newest :data:`MAX_MISSED_RECORDS` missed slots get a row each; the oldest
    recorded one says that earlier ones exist.
    """
    if last_slot is None or last_slot >= now:
        return []
    # Walk backwards from now: only the newest slots matter, so a long outage costs
    # no more than a short one.
    window = MAX_MISSED_RECORDS + policy.spec.max_catch_up
    newest_first: list[datetime] = []
    cursor = policy.schedule.previous_before(now)
    while cursor is not None and cursor > last_slot and len(newest_first) < window:
        newest_first.append(cursor)
        cursor = policy.schedule.previous_before(cursor - _EPSILON)
    truncated = cursor is not None and cursor > last_slot
    recent = newest_first[::-1]
    if not recent:
        return []
    runnable = [s for s in recent if _late(policy, s, now) is None]
    if policy.spec.catch_up is CatchUpPolicy.NONE:
        run: list[datetime] = []
    elif policy.spec.catch_up is CatchUpPolicy.LATEST:
        run = runnable[-1:]
    else:
        run = runnable[-policy.spec.max_catch_up :]
    chosen = set(run)
    why = {
        CatchUpPolicy.NONE: "catchUp is None",
        CatchUpPolicy.LATEST: "catchUp is Latest: only the most recent slot runs",
        CatchUpPolicy.ALL: f"more than maxCatchUp {policy.spec.max_catch_up} slots missed",
    }[policy.spec.catch_up]
    missed: list[SlotDecision] = []
    for slot in recent:
        if slot in chosen:
            continue
        late = _late(policy, slot, now)
        missed.append(
            SlotDecision(slot, Verdict.MISSED, Trigger.CATCH_UP, f"{cause}: {late or why}")
        )
    dropped = len(missed) > MAX_MISSED_RECORDS
    missed = missed[-MAX_MISSED_RECORDS:]
    if missed and (truncated or dropped):
        first = missed[0]
        missed[0] = SlotDecision(
            first.slot, first.verdict, first.trigger,
            f"{first.reason} (earlier missed slots since {last_slot.isoformat()} are not "
            "recorded one by one)",
        )
    out = missed + [SlotDecision(s, Verdict.RUN, Trigger.CATCH_UP) for s in run]
    out.sort(key=lambda d: d.slot)
    return out


def retry_delay(failed_attempt: int, backoff: timedelta, max_backoff: timedelta) -> timedelta:
    """Exponential backoff: ``backoff * 2**(attempt-1)``, capped at ``max_backoff``."""
    factor: int = 2 ** max(0, min(failed_attempt - 1, 40))
    delay: timedelta = min(backoff * factor, max_backoff)
    return delay


#: Outcomes of an attempt that the retry policy retries.
RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED})


def decide_retry(policy: TaskPolicy, status: RunStatus, attempt: int,
                 ended: datetime) -> datetime | None:
    """When to retry an attempt that ended ``status`` at ``ended`` (None: no retry).

    ``retries.limit`` more attempts of the same slot after a failed, timed-out or
    abandoned one, ``backoff * 2^(n-1)`` apart, capped at ``maxBackoff``.
    """
    retries = policy.spec.retries
    if status not in RETRYABLE or attempt > retries.limit:
        return None
    return ended + retry_delay(attempt, retries.backoff, retries.max_backoff)


def decide_backlog(policy: TaskPolicy, slot: datetime, now: datetime) -> list[SlotDecision]:
    """A slot that came due a whole period late (the next one is due too: the clock
    stepped forward, the host was suspended, the loop was blocked): the decisions for it
    and every slot since, oldest first, by the catch-up rules; empty when only this slot
    is due. ``catchUp: None`` drops the backlog but not the slot due now, which is then
    decided as if on time (``startingDeadline`` and the concurrency policy apply)."""
    following = policy.schedule.next_after(slot)
    if following is None or following > now:
        return []
    decisions = recover_missed(policy, slot - _EPSILON, now, cause="behind schedule")
    if decisions and policy.spec.catch_up is CatchUpPolicy.NONE:
        decisions[-1] = SlotDecision(decisions[-1].slot, Verdict.RUN)
    return decisions


def start_order(priority: int, slot: datetime, arrival: int) -> tuple[int, datetime, int]:
    """Which waiting run starts first when the pool of ``--max-concurrent-runs`` has
    room: the smallest key, i.e. the highest ``spec.priority`` (10 before 1), then the
    oldest slot, then the one that came first (``arrival``). A flood of low-priority
    runs therefore never holds back a higher-priority one: it starts at the next free
    place, whatever is waiting before it."""
    return (-priority, slot, arrival)


def cancel_on_claim_lost(policy: TaskPolicy) -> bool:
    """A run's lock is gone (ZooKeeper session lost): stop it? Forbid and Replace yes
    (a peer may take the task now: overlapping runs would break the policy); Allow no."""
    return policy.spec.concurrency_policy is not ConcurrencyPolicy.ALLOW


def admit_backlog(policy: TaskPolicy, decisions: list[SlotDecision], now: datetime,
                  active: int, cause: str) -> list[SlotDecision]:
    """The concurrency policy over runs that start together (a backlog after downtime
    or a clock step, oldest first) with ``active`` runs active or starting: Replace runs
    only the newest (the others are recorded missed), Forbid the first, Allow all."""
    runs = [d.slot for d in decisions if d.verdict is Verdict.RUN]
    out = []
    for d in decisions:
        if d.verdict is Verdict.RUN:
            if policy.spec.concurrency_policy is ConcurrencyPolicy.REPLACE and d.slot != runs[-1]:
                # each run would replace the one before it at once: only the newest
                d = SlotDecision(d.slot, Verdict.MISSED, d.trigger,
                                 f"{cause}: replaced by the run of slot "
                                 f"{runs[-1].isoformat()} (concurrencyPolicy Replace)")
            else:
                decided = decide_slot(policy, d.slot, now, active)
                d = SlotDecision(d.slot, decided.verdict, d.trigger, decided.reason)
                active += d.verdict in (Verdict.RUN, Verdict.REPLACE)
        out.append(d)
    return out


# --------------------------------------------------------------------------- timeline


class EntryKind(enum.StrEnum):
    SLOT = "slot"
    RETRY = "retry"


@dataclass(order=True, slots=True)
class Entry:
    at: datetime
    seq: int
    name: str = field(compare=False)
    kind: EntryKind = field(compare=False)
    generation: int = field(compare=False)
    slot: datetime = field(compare=False)
    attempt: int = field(compare=False, default=1)
    cancelled: bool = field(compare=False, default=False)
    params: Mapping[str, Any] | None = field(compare=False, default=None)  # a retry's


class Timeline:
    """One heap of upcoming (instant, task) entries for every task.

    Each task has at most one live SLOT entry; replacing it marks the old one
    cancelled (lazy deletion), so updates are O(log n) and nothing polls every task.
    """

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._slots: dict[str, Entry] = {}
        self._retries: dict[tuple[str, datetime, int], Entry] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._slots) + len(self._retries)

    def set_slot(self, name: str, slot: datetime | None, generation: int) -> None:
        old = self._slots.pop(name, None)
        if old is not None:
            old.cancelled = True
        if slot is not None:
            entry = Entry(slot, next(self._seq), name, EntryKind.SLOT, generation, slot)
            self._slots[name] = entry
            heapq.heappush(self._heap, entry)

    def add_retry(
        self, name: str, at: datetime, slot: datetime, attempt: int, generation: int,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        entry = Entry(at, next(self._seq), name, EntryKind.RETRY, generation, slot, attempt,
                      params=params)
        self._retries[(name, slot, attempt)] = entry
        heapq.heappush(self._heap, entry)

    def remove(self, name: str) -> None:
        self.set_slot(name, None, 0)
        for key in [k for k in self._retries if k[0] == name]:
            self._retries.pop(key).cancelled = True

    def slot_of(self, name: str) -> datetime | None:
        e = self._slots.get(name)
        return e.slot if e else None

    def next_at(self) -> datetime | None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].at if self._heap else None

    def pop_due(self, now: datetime) -> list[Entry]:
        due: list[Entry] = []
        while self._heap and (self._heap[0].cancelled or self._heap[0].at <= now):
            e = heapq.heappop(self._heap)
            if e.cancelled:
                continue
            if e.kind is EntryKind.SLOT:
                self._slots.pop(e.name, None)
            else:
                self._retries.pop((e.name, e.slot, e.attempt), None)
            due.append(e)
        return due

    def names(self) -> Iterable[str]:
        return self._slots.keys()


def whole_period_late(due: Iterable[Entry], policy_of: Callable[[str], TaskPolicy | None],
                      now: datetime) -> list[str]:
    """The tasks of ``due`` whose slot is a whole period late (their next slot is due
    too): in distributed mode a peer may have run them already, so the scheduler asks
    the runs table for the newest slot any replica recorded before deciding them."""
    late: list[str] = []
    for entry in due:
        policy = policy_of(entry.name)
        if entry.kind is not EntryKind.SLOT or policy is None:
            continue
        nxt = policy.schedule.next_after(entry.slot)
        if nxt is not None and nxt <= now:
            late.append(entry.name)
    return late

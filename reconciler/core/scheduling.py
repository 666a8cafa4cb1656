"""Scheduling decisions: pure functions of (task policy, slot, now, what is running).

The daemon's loop only moves time and performs side effects; *what* to do at a slot
is decided here, so every policy (missed slots, catch-up, concurrency, retries) is
unit-tested with plain values and a fake clock.

Vocabulary: a *slot* is an exact UTC instant produced by the schedule; a *run* is one
attempt at a slot; *lateness* is the run's actual start minus its slot. With
``spec.jitter`` a slot *starts* a little after it (:meth:`TaskSlots.start_of`): the
run keeps its slot (``RECONCILER_SLOT``, the claim's key) and records its real start;
``startingDeadline`` counts from the planned start.

Which instants are slots is decided here too (:class:`TaskSlots`): the union of the
task's schedules (:class:`~reconciler.core.schedule_set.ScheduleSet`, ``H`` resolved
with the task's name) inside its active window (:func:`active_window`), less the
slots an :class:`Exclusion` removes (the hook for calendars).
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol, TypeVar

from reconciler.core._spread import stable_int
from reconciler.core.durations import format_duration
from reconciler.core.errors import ScheduleError
from reconciler.core.model import CatchUpPolicy, ConcurrencyPolicy, TaskManifest, TaskSpec
from reconciler.core.params import defaults, row_values
from reconciler.core.runtime import RunStatus, Trigger
from reconciler.core.schedule import (
    SlotSteps,
    check_schedule,
    check_time_zone,
    uses_hash,
    wall_instant,
)
from reconciler.core.schedule_set import ScheduleSet, shortest_interval, slot_seconds

#: How many individual ``missed`` rows one recovery writes per task at most; older
#: missed slots are summarised in the reason of the oldest recorded one.
MAX_MISSED_RECORDS = 100
_EPSILON = timedelta(microseconds=1)


# --------------------------------------------------------------------------- slots


class Exclusion(Protocol):
    """A rule that removes single slots of a task (the hook for calendars): a removed
    slot does not run and is not recorded; ``name`` is shown beside it."""

    @property
    def name(self) -> str: ...

    def excludes(self, slot: datetime) -> bool: ...


@dataclass(frozen=True, slots=True)
class ActiveWindow:
    """Slots run from ``start`` (inclusive) until ``end`` (exclusive); None: no bound."""

    start: datetime | None = None
    end: datetime | None = None

    def contains(self, slot: datetime) -> bool:
        return (self.start is None or slot >= self.start) and (self.end is None or slot < self.end)

    @property
    def empty(self) -> bool:
        return self.start is not None and self.end is not None and self.end <= self.start


def _bound(text: str, time_zone: str, *, end: bool) -> datetime | None:
    if len(text) == 10:  # a date: its local midnight; an end date includes its whole day
        day = date.fromisoformat(text)
        try:
            day += timedelta(days=1) if end else timedelta(0)
        except OverflowError:
            return None
        return wall_instant(datetime(day.year, day.month, day.day), check_time_zone(time_zone))
    instant = datetime.fromisoformat(text).astimezone(UTC)
    return instant + _EPSILON if end else instant  # an end instant is inclusive


def active_window(active_from: str | None, active_until: str | None,
                  time_zone: str = "UTC") -> ActiveWindow:
    """``spec.activeFrom``/``spec.activeUntil`` as instants. A date means local midnight
    in ``time_zone`` (the first instant of that day by the DST rule); ``activeUntil`` as
    a date includes that whole day, as an instant it includes that instant."""
    return ActiveWindow(
        _bound(active_from, time_zone, end=False) if active_from else None,
        _bound(active_until, time_zone, end=True) if active_until else None,
    )


def jitter_delay(name: str, slot: datetime, jitter: timedelta | None) -> timedelta:
    """How long after ``slot`` the task ``name`` starts: in ``[0, jitter)``, from a stable
    hash of the name and the slot (the same on every replica, in every process, after
    every restart); whole seconds when ``jitter`` is, else whole milliseconds."""
    if not jitter:
        return timedelta(0)
    unit = _SECOND if not jitter % _SECOND else _MILLISECOND
    span = jitter // unit
    if span <= 0:
        return timedelta(0)
    key = slot.astimezone(UTC).isoformat()
    return stable_int(span, "jitter", name, key) * unit


def window_seconds(expressions: tuple[str, ...], time_zone: str, name: str,
                   window: ActiveWindow, start: datetime, end: datetime) -> list[int]:
    """The slots of ``expressions`` inside ``window`` and ``[start, end)``, as Unix
    seconds (:func:`~reconciler.core.schedule_set.slot_seconds`); what
    :meth:`TaskSlots.slot_seconds` counts before exclusions, without building one."""
    if window.start is not None:
        start = max(start, window.start)
    if window.end is not None:
        end = min(end, window.end)
    if end <= start:
        return []
    return slot_seconds(expressions, time_zone, name, start, end)


def _instant(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def not_excluded(seconds: list[int], exclusions: tuple[Exclusion, ...]) -> list[int]:
    """The slots (Unix seconds) that no exclusion removes."""
    if not exclusions:
        return seconds
    return [s for s in seconds if not any(e.excludes(_instant(s)) for e in exclusions)]


_E = TypeVar("_E", bound=Exclusion)


def task_exclusions(names: Sequence[str], calendars: Mapping[str, _E]) -> tuple[_E, ...]:
    """The exclusions ``spec.calendars`` names, in order (a name not among
    ``calendars`` excludes nothing: the loader and the plan keep that from happening)."""
    return tuple(calendars[n] for n in names if n in calendars)


#: How many excluded slots in a row a search skips before it gives up.
MAX_EXCLUDED_IN_A_ROW = 10_000
_MILLISECOND = timedelta(milliseconds=1)
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class TaskSlots(SlotSteps):
    """The slots of one task and when each starts: the union of its schedules, inside
    its active window, less excluded slots; each starts ``jitter_delay`` after it.

    Same queries as :class:`~reconciler.core.schedule.Schedule` (``next_after``,
    ``previous_before``, ``iter_after``, ``between``), so everything that steps
    through a task's slots (the scheduler, recovery, ``next``, ``diff``) steps through
    these."""

    name: str
    schedules: ScheduleSet
    window: ActiveWindow = ActiveWindow()
    jitter: timedelta | None = None
    exclusions: tuple[Exclusion, ...] = ()

    @classmethod
    def of(cls, manifest: TaskManifest, exclusions: tuple[Exclusion, ...] = ()) -> TaskSlots:
        """A validated manifest's slots; raises :class:`ScheduleError` for a schedule
        that does not resolve (``H`` with this name)."""
        spec = manifest.spec
        name = manifest.metadata.name
        return cls(
            name=name,
            schedules=ScheduleSet.parse(spec.schedules, spec.time_zone, name),
            window=active_window(spec.active_from, spec.active_until, spec.time_zone),
            jitter=spec.jitter,
            exclusions=exclusions,
        )

    @classmethod
    def from_document(cls, document: dict[str, Any],
                      calendars: Mapping[str, Exclusion]) -> TaskSlots:
        """A stored document's slots, less what the calendars it names exclude
        (``calendars``: every calendar by name, e.g. from the store)."""
        manifest = TaskManifest.model_validate(document)
        return cls.of(manifest, task_exclusions(manifest.spec.calendars, calendars))

    def excluded_by(self, slot: datetime) -> str | None:
        """The name of the first exclusion that removes ``slot`` (None: it runs)."""
        for rule in self.exclusions:
            if rule.excludes(slot):
                return rule.name
        return None

    def candidates(self, instant: datetime) -> Iterator[tuple[datetime, str | None]]:
        """Slots of the schedules inside the window after ``instant``, each with the
        exclusion that removes it (None: it runs); for ``next --show-excluded``."""
        x = instant
        if self.window.start is not None and x < self.window.start:
            x = self.window.start - _EPSILON
        for slot in self.schedules.iter_after(x):
            if self.window.end is not None and slot >= self.window.end:
                return
            yield slot, self.excluded_by(slot)

    def next_after(self, instant: datetime) -> datetime | None:
        """The first slot strictly after ``instant`` (aware), or None."""
        for n, (slot, excluded) in enumerate(self.candidates(instant)):
            if excluded is None:
                return slot
            if n >= MAX_EXCLUDED_IN_A_ROW:
                break
        return None

    def previous_before(self, instant: datetime) -> datetime | None:
        """The latest slot at or before ``instant`` (aware), or None."""
        x = instant
        if self.window.end is not None and x >= self.window.end:
            x = self.window.end - _EPSILON
        for _ in range(MAX_EXCLUDED_IN_A_ROW):
            slot = self.schedules.previous_before(x)
            if slot is None or (self.window.start is not None and slot < self.window.start):
                return None
            if self.excluded_by(slot) is None:
                return slot
            x = slot - _EPSILON
        return None

    def start_of(self, slot: datetime) -> datetime:
        """When ``slot`` starts: ``slot + jitter_delay``, cut short of the next slot of
        the schedules so that starts keep the order of slots (a DST night can bring two
        slots closer than the shortest interval the jitter was checked against)."""
        delay = jitter_delay(self.name, slot, self.jitter)
        if delay:
            following = self.schedules.next_after(slot)
            if following is not None and following - slot <= delay:
                delay = max(timedelta(0), following - slot - _MILLISECOND)
        return slot + delay

    def slot_seconds(self, start: datetime, end: datetime) -> list[int]:
        """The slots in ``[start, end)`` as Unix seconds, ascending: the same slots as
        :meth:`between`, counted by arithmetic (for ``diff``'s counts over weeks)."""
        found = window_seconds(self.schedules.expressions, self.schedules.time_zone,
                               self.name, self.window, start, end)
        return not_excluded(found, self.exclusions)

    def start_seconds(self, slots: list[int]) -> list[int]:
        """The starts of ``slots`` (Unix seconds, ascending, from :meth:`slot_seconds`)
        as whole Unix seconds: :meth:`start_of`, with the next slot taken from the list
        where it is the schedules' next one."""
        if not self.jitter:
            return slots
        out = []
        for i, s in enumerate(slots):
            slot = _instant(s)
            delay = jitter_delay(self.name, slot, self.jitter).total_seconds()
            following = slots[i + 1] if i + 1 < len(slots) else None
            if following is None or following - s <= delay or self.exclusions:
                out.append(int(self.start_of(slot).timestamp()))
            else:
                out.append(int(s + delay))
        return out

    def next_planned(self, now: datetime, after: datetime | None = None) -> datetime | None:
        """The slot to plan at ``now``: the first one later than ``after`` (the last
        slot decided, if any) that has not started yet. With jitter that may be a slot
        at or before ``now`` whose start is still ahead."""
        base = now if after is None or after < now else after
        if self.jitter:
            latest = self.previous_before(base)
            if (latest is not None and (after is None or latest > after)
                    and self.start_of(latest) > now):
                return latest
        return self.next_after(base)

    def describe(self) -> str:
        return self.schedules.describe()

    @property
    def same_slots_key(self) -> tuple[Any, ...]:
        """Equal for tasks whose slots are the same (parsed schedules are shared between
        tasks with the same expressions and zone): one computation serves them all."""
        return (tuple(map(id, self.schedules.schedules)), self.window, self.exclusions)


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """A task that does not hold together: ``path`` is the field (``("spec", "jitter")``,
    ``("spec", "schedule", 1)``), the loader points at it in the file."""

    path: tuple[str | int, ...]
    message: str


def check_task(manifest: TaskManifest) -> list[FieldProblem]:
    """What a manifest's fields cannot say alone: ``H`` resolved with the task's name
    (a day it picks may not exist), an active window that ends before it starts, and
    ``jitter`` longer than the shortest interval between slots (runs would start out
    of order), and a ``deadline`` not longer than the ``jitter``."""
    spec = manifest.spec
    name = manifest.metadata.name
    problems: list[FieldProblem] = []
    for i, expression in enumerate(spec.schedules):
        if uses_hash(expression):
            try:
                check_schedule(expression, name)
            except ScheduleError as exc:
                path = ("spec", "schedule") if isinstance(spec.schedule, str) else (
                    "spec", "schedule", i)
                problems.append(FieldProblem(path, f"{exc} (H resolved for {name!r})"))
    schedules_ok = not problems
    window = active_window(spec.active_from, spec.active_until, spec.time_zone)
    if window.empty:
        problems.append(FieldProblem(("spec", "activeUntil"), (
            f"activeUntil {spec.active_until} is before activeFrom {spec.active_from}: "
            "the task would never run")))
    if spec.jitter is not None and schedules_ok:
        gap = shortest_interval(spec.schedules, spec.time_zone, name)
        if spec.jitter > gap:
            problems.append(FieldProblem(("spec", "jitter"), (
                f"jitter {format_duration(spec.jitter)} is longer than the shortest interval "
                f"between slots ({format_duration(gap)}): runs could start out of order; "
                f"use at most {format_duration(gap)}")))
    if spec.deadline is not None and spec.jitter is not None and spec.deadline <= spec.jitter:
        problems.append(FieldProblem(("spec", "deadline"), (
            f"deadline {format_duration(spec.deadline)} is not longer than the jitter "
            f"({format_duration(spec.jitter)}): a slot that starts late by its jitter "
            "could never succeed in time; the deadline counts from the nominal slot")))
    return problems


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True, slots=True)
class TaskPolicy:
    """What the scheduler needs to know about one task: its slots (schedules, ``H``,
    active window, jitter), generation and suspension, and its spec
    (``spec.concurrency_policy``, ``spec.retries``, ...: every field is declared once,
    in :class:`~reconciler.core.model.TaskSpec`)."""

    name: str
    generation: int
    schedule: TaskSlots
    suspended: bool
    manifest: TaskManifest = field(compare=False, repr=False)

    @property
    def spec(self) -> TaskSpec:
        return self.manifest.spec

    @classmethod
    def from_document(
        cls, name: str, generation: int, document: dict[str, Any], suspended: bool,
        calendars: Mapping[str, Exclusion],
    ) -> TaskPolicy:
        """``calendars``: every calendar by name; the task's own (``spec.calendars``)
        remove slots, and a changed one makes a different policy (policies compare by
        their slots)."""
        m = TaskManifest.model_validate(document)
        slots = TaskSlots.of(m, task_exclusions(m.spec.calendars, calendars))
        return cls(name=name, generation=generation, schedule=slots,
                   suspended=suspended, manifest=m)

    def current(self, generation: int, suspended: bool,
                calendars: Mapping[str, Exclusion]) -> bool:
        """Whether this policy still holds for a row of ``generation`` and ``suspended``
        with ``calendars``: False when a calendar the task names changed (re-plan it)."""
        return (self.generation == generation and self.suspended == suspended
                and self.schedule.exclusions == task_exclusions(self.spec.calendars,
                                                                calendars))


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
    start = policy.schedule.start_of(slot)  # the slot itself unless jitter delays it
    if deadline is not None and now - start > deadline:
        late = (now - start).total_seconds()
        where = "the slot" if start == slot else "its jittered start"
        return (
            f"started too late: {late:.3f}s after {where}, past startingDeadline "
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
    if cursor is not None and policy.schedule.start_of(cursor) > now:
        cursor = policy.schedule.previous_before(cursor - _EPSILON)  # not started yet (jitter)
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
    if following is None or policy.schedule.start_of(following) > now:
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

    def set_slot(self, name: str, slot: datetime | None, generation: int,
                 at: datetime | None = None) -> None:
        """Plan ``slot`` (None: nothing) to fire at ``at`` (default: the slot itself;
        later with jitter)."""
        old = self._slots.pop(name, None)
        if old is not None:
            old.cancelled = True
        if slot is not None:
            entry = Entry(at or slot, next(self._seq), name, EntryKind.SLOT, generation, slot)
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
        if nxt is not None and policy.schedule.start_of(nxt) <= now:
            late.append(entry.name)
    return late

"""What a plan does to the timeline, for ``reconciler diff``: the slots each changed
schedule adds and removes over the next 30 days, and the load (the most slots that
start in the same minute over the next 7 days) before and after.

Pure functions of the plan and an instant. Slots are counted by arithmetic
(:meth:`~reconciler.core.scheduling.TaskSlots.slot_seconds`), and tasks that share a
schedule, zone and window (and use neither ``H`` nor jitter) are counted once, so
10,000 tasks take a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from reconciler.core.plan import Action, Plan, TaskChange
from reconciler.core.schedule import uses_hash
from reconciler.core.scheduling import TaskSlots

#: The window of the slot counts of a changed schedule.
SLOT_DAYS = 30
#: The window of the load (starts per minute).
LOAD_DAYS = 7
#: Fields of a task whose change can add or remove slots.
SLOT_FIELDS = ("schedule", "timeZone", "activeFrom", "activeUntil")


@dataclass(frozen=True, slots=True)
class SlotDelta:
    """How many slots in the next :data:`SLOT_DAYS` days a change adds and removes."""

    added: int
    removed: int


@dataclass(frozen=True, slots=True)
class LoadPeak:
    """The most slots starting in one minute (UTC), and the first such minute."""

    starts: int
    minute: datetime | None

    @property
    def text(self) -> str:
        """``"Sun 02:00 UTC"``."""
        return self.minute.strftime("%a %H:%M UTC") if self.minute else "-"


@dataclass(frozen=True, slots=True)
class Impact:
    start: datetime
    deltas: dict[str, SlotDelta]
    before: LoadPeak
    after: LoadPeak


def _slots(document: dict[str, Any] | None) -> TaskSlots | None:
    if document is None:
        return None
    try:
        return TaskSlots.from_document(document)
    except ValueError:  # a stored row this version cannot read: it counts nothing
        return None


def _spec(document: dict[str, Any] | None) -> dict[str, Any]:
    spec = (document or {}).get("spec")
    return spec if isinstance(spec, dict) else {}


def slot_delta(before: TaskSlots, after: TaskSlots, start: datetime,
               days: int = SLOT_DAYS) -> SlotDelta:
    """Slots in ``[start, start + days)`` that ``after`` has and ``before`` has not, and
    the reverse."""
    end = start + timedelta(days=days)
    old = set(before.slot_seconds(start, end))
    new = set(after.slot_seconds(start, end))
    return SlotDelta(len(new - old), len(old - new))


def _sides(change: TaskChange) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The documents that run before and after the plan (None: nothing runs)."""
    have = change.actual
    before = have.document if have is not None and not have.suspended else None
    if change.action in (Action.KEEP, Action.UNCHANGED):
        return before, before
    if change.action is Action.DELETE or change.desired is None:
        return before, None
    want = change.desired
    suspended = have.override.suspended if have is not None and have.override else want.suspend
    return before, None if suspended else want.document


class _Counter:
    """Starts per minute of a window; tasks with the same slots are counted once."""

    def __init__(self, start: datetime, days: int) -> None:
        self.start = start
        self.origin = int(start.timestamp()) // 60
        self.counts = [0] * (days * 1440)
        self._shared: dict[tuple[Any, ...], list[int]] = {}

    def minutes(self, slots: TaskSlots, end: datetime) -> list[int]:
        key: tuple[Any, ...] | None = None
        if not slots.jitter and not slots.exclusions and not any(
                uses_hash(e) for e in slots.schedules.expressions):
            key = (slots.schedules.expressions, slots.schedules.time_zone, slots.window)
            if key in self._shared:
                return self._shared[key]
        seconds = slots.slot_seconds(self.start, end)
        if slots.jitter:
            seconds = slots.start_seconds(seconds)
        out = [s // 60 - self.origin for s in seconds]
        if key is not None:
            self._shared[key] = out
        return out

    def add(self, minutes: Iterable[int], into: list[int]) -> None:
        size = len(into)
        for m in minutes:
            if 0 <= m < size:
                into[m] += 1

    def peak(self, counts: list[int]) -> LoadPeak:
        best = max(counts, default=0)
        if not best:
            return LoadPeak(0, None)
        at = (self.origin + counts.index(best)) * 60
        return LoadPeak(best, datetime.fromtimestamp(at, UTC))


def plan_impact(plan: Plan, now: datetime, *, slot_days: int = SLOT_DAYS,
                load_days: int = LOAD_DAYS) -> Impact:
    """The slot deltas of every update whose schedule, zone or window changed, and the
    load before and after the plan over ``load_days`` days from ``now``."""
    start = now.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = start + timedelta(days=load_days)
    counter = _Counter(start, load_days)
    base = [0] * len(counter.counts)
    before_only: list[int] = []
    after_only: list[int] = []
    deltas: dict[str, SlotDelta] = {}
    for change in plan.changes:
        old_doc, new_doc = _sides(change)
        same = old_doc is new_doc
        old, new = _slots(old_doc), (None if same else _slots(new_doc))
        if same:
            if old is not None:
                counter.add(counter.minutes(old, end), base)
            continue
        if old is not None:
            before_only.extend(counter.minutes(old, end))
        if new is not None:
            after_only.extend(counter.minutes(new, end))
        if change.action is Action.UPDATE and change.actual is not None and (
                change.desired is not None):
            a, b = _spec(change.actual.document), _spec(change.desired.document)
            if any(a.get(k) != b.get(k) for k in SLOT_FIELDS):
                was, will = _slots(change.actual.document), _slots(change.desired.document)
                if was is not None and will is not None:
                    deltas[change.name] = slot_delta(was, will, start, slot_days)
    before, after = list(base), base
    counter.add(before_only, before)
    counter.add(after_only, after)
    return Impact(start, deltas, counter.peak(before), counter.peak(after))

"""What a plan does to the timeline, for ``reconciler diff``: the slots each changed
schedule adds and removes over the next 30 days, and the load (the most slots that
start in the same minute over the next 7 days) before and after.

Pure functions of the plan and an instant. Slots are counted by arithmetic
(:func:`~reconciler.core.scheduling.window_seconds`, read from the stored document
without validating it again; a task with jitter goes through
:class:`~reconciler.core.scheduling.TaskSlots` for its starts), and tasks that share a
schedule, zone and window (and use neither ``H`` nor jitter) are counted once, so
10,000 tasks take a fraction of a second.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from reconciler.core.calendars import Calendar, calendars_of, task_calendars
from reconciler.core.model import schedules_of
from reconciler.core.plan import Action, ObjectChange, Plan, TaskChange
from reconciler.core.schedule import uses_hash
from reconciler.core.scheduling import (
    ActiveWindow,
    TaskSlots,
    active_window,
    not_excluded,
    task_exclusions,
    window_seconds,
)

#: The window of the slot counts of a changed schedule.
SLOT_DAYS = 30
#: The window of the load (starts per minute).
LOAD_DAYS = 7
#: Fields of a task whose change can add or remove slots.
SLOT_FIELDS = ("schedule", "timeZone", "activeFrom", "activeUntil", "calendars")


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
    #: per created, updated or deleted calendar: what it changes for the tasks that
    #: name it (the tasks as the plan leaves them)
    calendar_deltas: dict[str, SlotDelta] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Timing:
    """When a task runs, read from its canonical document (validated when it was
    stored). ``jittered``: its starts need :class:`TaskSlots` (:meth:`slots`)."""

    expressions: tuple[str, ...]
    zone: str
    name: str
    window: ActiveWindow
    document: dict[str, Any] = field(compare=False, hash=False)
    #: the calendars it names, as they are on this side of the plan
    exclusions: tuple[Calendar, ...] = ()

    @property
    def jittered(self) -> bool:
        return "jitter" in self.document["spec"]

    def slots(self) -> TaskSlots:
        return TaskSlots.from_document(self.document, {c.name: c for c in self.exclusions})

    def slot_seconds(self, start: datetime, end: datetime) -> list[int]:
        found = window_seconds(self.expressions, self.zone, self.name, self.window, start, end)
        return not_excluded(found, self.exclusions)


def _timing(document: dict[str, Any] | None,
            calendars: dict[str, Calendar]) -> _Timing | None:
    if document is None:
        return None
    try:
        spec = document["spec"]
        zone = spec.get("timeZone", "UTC")
        window = active_window(spec.get("activeFrom"), spec.get("activeUntil"), zone)
        rules = task_exclusions(task_calendars(spec), calendars)
        return _Timing(schedules_of(spec["schedule"]), zone, document["metadata"]["name"],
                       window, document, rules)
    except (KeyError, TypeError, ValueError):  # a row this version cannot read: nothing
        return None


def _spec(document: dict[str, Any] | None) -> dict[str, Any]:
    spec = (document or {}).get("spec")
    return spec if isinstance(spec, dict) else {}


class CountsSlots(Protocol):
    """Anything that lists its slots in a window (:class:`TaskSlots`, and what
    :func:`plan_impact` reads from a stored document)."""

    def slot_seconds(self, start: datetime, end: datetime) -> list[int]: ...


def slot_delta(before: CountsSlots, after: CountsSlots, start: datetime,
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
        self.size = days * 1440
        self._shared: dict[tuple[Any, ...], list[int]] = {}

    def minutes(self, timing: _Timing, end: datetime) -> list[int]:
        key: tuple[Any, ...] | None = None
        if not timing.jittered and not any(uses_hash(e) for e in timing.expressions):
            key = (timing.expressions, timing.zone, timing.window, timing.exclusions)
            if key in self._shared:
                return self._shared[key]
        seconds = timing.slot_seconds(self.start, end)
        if timing.jittered:
            # (a stored row this version cannot read: its slots, without jitter)
            with contextlib.suppress(ValueError):
                seconds = timing.slots().start_seconds(seconds)
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


def _calendar_sides(changes: Iterable[ObjectChange]
                    ) -> tuple[dict[str, Calendar], dict[str, Calendar]]:
    """The calendars before and after the plan, by name."""
    before: list[tuple[str, dict[str, Any]]] = []
    after: list[tuple[str, dict[str, Any]]] = []
    for c in changes:
        if c.actual is not None:
            before.append((c.name, c.actual.document))
        if c.action is not Action.DELETE:
            source = c.actual if c.action is Action.KEEP else c.desired
            if source is not None:
                after.append((c.name, source.document))
    return calendars_of(before), calendars_of(after)


def _calendar_deltas(plan: Plan, old: dict[str, Calendar], new: dict[str, Calendar],
                     start: datetime, days: int) -> dict[str, SlotDelta]:
    """Per changed calendar, the slots it adds and removes for the tasks that name it
    after the plan (each task with its other calendars as the plan leaves them)."""
    out: dict[str, SlotDelta] = {}
    for c in plan.calendars:
        if c.action not in (Action.CREATE, Action.UPDATE, Action.DELETE):
            continue
        added = removed = 0
        without = {k: v for k, v in new.items() if k != c.name}
        was = {**without, **({c.name: old[c.name]} if c.name in old else {})}
        for change in plan.changes:
            _, doc = _sides(change)
            if doc is None or c.name not in task_calendars(_spec(doc)):
                continue
            before, after = _timing(doc, was), _timing(doc, new)
            if before is not None and after is not None:
                delta = slot_delta(before, after, start, days)
                added, removed = added + delta.added, removed + delta.removed
        out[c.name] = SlotDelta(added, removed)
    return out


def plan_impact(plan: Plan, now: datetime, *, slot_days: int = SLOT_DAYS,
                load_days: int = LOAD_DAYS) -> Impact:
    """The slot deltas of every update whose schedule, zone or window changed, and the
    load before and after the plan over ``load_days`` days from ``now``."""
    start = now.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = start + timedelta(days=load_days)
    counter = _Counter(start, load_days)
    base = [0] * counter.size
    before_only: list[int] = []
    after_only: list[int] = []
    deltas: dict[str, SlotDelta] = {}
    cal_before, cal_after = _calendar_sides(plan.calendars)
    for change in plan.changes:
        old_doc, new_doc = _sides(change)
        uses = set(task_calendars(_spec(old_doc))) | set(task_calendars(_spec(new_doc)))
        same = old_doc is new_doc and all(
            cal_before.get(n) == cal_after.get(n) for n in uses)
        old = _timing(old_doc, cal_before)
        new = None if same else _timing(new_doc, cal_after)
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
                was = _timing(change.actual.document, cal_before)
                will = _timing(change.desired.document, cal_after)
                if was is not None and will is not None:
                    deltas[change.name] = slot_delta(was, will, start, slot_days)
    before, after = list(base), base
    counter.add(before_only, before)
    counter.add(after_only, after)
    return Impact(start, deltas, counter.peak(before), counter.peak(after),
                  _calendar_deltas(plan, cal_before, cal_after, start, slot_days))

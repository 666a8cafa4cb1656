"""The API's in-memory view of every task: what ``GET /api/v1/tasks`` serves.

With 10,000 tasks the list must come back in well under 150 ms, and building it must
not hold the event loop (the scheduler's timeline runs on it) for long. So:

* the daemon's scheduler hooks keep one :class:`_Entry` per task current: the runtime
  row, the next slot, the newest run, the newest executed-and-finished run and the
  live runs; nothing is read from the database to answer a list request;
* each entry caches its JSON (``fragment``, bytes) and drops it only when something
  about that task changed, so a request joins cached bytes and renders just the
  tasks that changed since the last one;
* rendering yields to the event loop every :data:`YIELD_EVERY` fragments, so even a
  cold cache never blocks the loop for more than a few milliseconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.api.views import (
    iso,
    local_iso,
    run_brief,
    run_type,
    schedule_text,
    suspension,
)
from reconciler.core.calendars import calendars_of_rows
from reconciler.core.protocols import Store
from reconciler.core.runtime import ActualTask, RunRecord, RunStatus
from reconciler.core.scheduling import TaskSlots
from reconciler.core.selectors import Selector

YIELD_EVERY = 25  # fragments rendered between yields: about a millisecond of loop time
FAILING = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED})
EXECUTED = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED,
     RunStatus.ABANDONED}
)
STATES = ("active", "suspended", "running", "failing")


@dataclass(slots=True)
class _Entry:
    row: ActualTask
    labels: dict[str, str]
    next_fire: Any = None  # datetime | None
    last_run: RunRecord | None = None
    last_result: RunRecord | None = None
    live: set[int] = field(default_factory=set)
    fragment: bytes | None = None
    next_times: tuple[Any, list[Any]] | None = None  # (next_fire, the fire times after it)
    last_success: Any = None  # datetime | None: from the row, then from run events
    counts: tuple[float, dict[str, int]] | None = None  # (monotonic time read, run counts)
    runs_version: int = 0  # bumped by every run event (a count read across one is stale)

    @property
    def failing(self) -> bool:
        return self.last_result is not None and self.last_result.status in FAILING

    def in_state(self, state: str) -> bool:
        if state == "active":
            return not self.row.suspended
        if state == "suspended":
            return self.row.suspended
        if state == "running":
            return bool(self.live)
        if state == "failing":
            return self.failing
        return False


def _labels(row: ActualTask) -> dict[str, str]:
    labels = row.document.get("metadata", {}).get("labels", {})
    return dict(labels) if isinstance(labels, dict) else {}


def _key(row: ActualTask) -> tuple[Any, ...]:
    """What the list shows of a row (not the scheduler columns, which change every slot)."""
    return (row.hash, row.generation, row.source_file, row.source_revision, row.override)


def summary(entry: _Entry) -> dict[str, Any]:
    row = entry.row
    zone = row.time_zone
    return {
        "name": row.name,
        "labels": entry.labels,
        "schedule": row.schedule,
        "scheduleText": schedule_text(row.schedules, row.name),
        "timeZone": zone,
        "runType": run_type(row.document),
        "suspended": row.suspended,
        "suspension": suspension(row),
        "running": len(entry.live),
        "failing": entry.failing,
        "nextFireAt": iso(entry.next_fire),
        "nextFireAtLocal": local_iso(entry.next_fire, zone),
        "lastRun": None if entry.last_run is None else run_brief(entry.last_run),
        "lastResult": None if entry.last_result is None else run_brief(entry.last_result),
        "source": {
            "file": row.source_file,
            "revision": row.source_revision,
            "generation": row.generation,
        },
    }


def _encode(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


class TaskIndex:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._order: list[str] | None = []
        self.version = 0  # bumped on every change (cheap "did anything change" checks)
        # The unfiltered list, assembled from the fragments in name order: only the
        # fragments of changed tasks are replaced, then the parts are joined.
        self._dirty: set[str] = set()
        self._parts: list[bytes] | None = None
        self._pos: dict[str, int] = {}
        self._body: bytes | None = None
        self._body_version = -1

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        if self._order is None:
            self._order = sorted(self._entries)
        return self._order

    def _touch(self, entry: _Entry) -> None:
        entry.fragment = None
        self._dirty.add(entry.row.name)
        self.version += 1

    # ----------------------------------------------------------------- updates

    def upsert(self, row: ActualTask) -> bool:
        """Take a runtime row; True when the task is new or its row changed."""
        entry = self._entries.get(row.name)
        if entry is None:
            self._entries[row.name] = _Entry(row, _labels(row), last_success=row.last_success_at)
            self._order = None
            self._parts = None
            self._dirty.add(row.name)
            self.version += 1
            return True
        changed = _key(entry.row) != _key(row)
        entry.row = row  # the scheduler columns may differ; the list does not show them
        if row.last_success_at is not None and (
            entry.last_success is None or row.last_success_at > entry.last_success
        ):
            entry.last_success = row.last_success_at
        if changed:
            entry.labels = _labels(row)
            self._touch(entry)
        return changed

    def remove(self, name: str) -> bool:
        if self._entries.pop(name, None) is None:
            return False
        self._order = None
        self._parts = None
        self._dirty.discard(name)
        self.version += 1
        return True

    def set_next(self, name: str, at: Any) -> None:
        entry = self._entries.get(name)
        if entry is not None:
            entry.next_times = None  # planned again (a changed calendar): the times after too
        if entry is not None and entry.next_fire != at:
            entry.next_fire = at
            self._touch(entry)

    def run_changed(self, record: RunRecord) -> None:
        entry = self._entries.get(record.task_name)
        if entry is None:
            return
        entry.counts = None  # re-read at the next request
        entry.runs_version += 1
        if record.status is RunStatus.RUNNING:
            entry.live.add(record.id)
        else:
            entry.live.discard(record.id)
        if entry.last_run is None or record.id >= entry.last_run.id:
            entry.last_run = record
        if record.status is RunStatus.SUCCEEDED and record.finished_at is not None and (
            entry.last_success is None or record.finished_at > entry.last_success
        ):
            entry.last_success = record.finished_at
        if record.status in EXECUTED and (
            entry.last_result is None or record.id >= entry.last_result.id
        ):
            entry.last_result = record
        self._touch(entry)

    def load_runs(self, latest: Mapping[str, RunRecord], executed: Mapping[str, RunRecord]
                  ) -> None:
        """Seed the newest runs from the database (start-up); newer hooks win."""
        for name, record in latest.items():
            entry = self._entries.get(name)
            if entry is not None and (entry.last_run is None or record.id > entry.last_run.id):
                entry.last_run = record
                self._touch(entry)
        for name, record in executed.items():
            entry = self._entries.get(name)
            if entry is not None and (
                entry.last_result is None or record.id > entry.last_result.id
            ):
                entry.last_result = record
                self._touch(entry)

    # ------------------------------------------------------------------- reads

    def get(self, name: str) -> _Entry | None:
        return self._entries.get(name)

    def row(self, name: str) -> ActualTask | None:
        entry = self._entries.get(name)
        return None if entry is None else entry.row

    def summary(self, name: str) -> dict[str, Any] | None:
        entry = self._entries.get(name)
        return None if entry is None else summary(entry)

    def fragment(self, entry: _Entry) -> bytes:
        if entry.fragment is None:
            entry.fragment = _encode(summary(entry))
        return entry.fragment

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for entry in self._entries.values():
            out["suspended" if entry.row.suspended else "active"] += 1
            if entry.live:
                out["running"] += 1
            if entry.failing:
                out["failing"] += 1
        return out

    def select(self, selector: Selector | None = None, state: str | None = None
               ) -> Iterable[_Entry]:
        for name in list(self.names()):
            entry = self._entries.get(name)
            if entry is None:
                continue
            if state is not None and not entry.in_state(state):
                continue
            if selector is not None and selector.tests and not selector.matches(entry.labels):
                continue
            yield entry

    async def _render_dirty(self) -> None:
        """Render the fragments of changed tasks, yielding to the loop now and then."""
        rendered = 0
        for name in list(self._dirty):
            entry = self._entries.get(name)
            if entry is not None and entry.fragment is None:
                self.fragment(entry)
                rendered += 1
                if rendered % YIELD_EVERY == 0:
                    await asyncio.sleep(0)

    async def render_all(self) -> bytes:
        """The unfiltered list: changed fragments re-rendered, then one join."""
        if self._body is not None and self._body_version == self.version:
            return self._body
        await self._render_dirty()
        # From here on nothing yields: the parts match the entries exactly.
        names = self.names()
        if self._parts is None or len(self._parts) != len(names):
            self._pos = {name: i for i, name in enumerate(names)}
            self._parts = [self.fragment(self._entries[name]) for name in names]
        else:
            for name in self._dirty:
                i = self._pos.get(name)
                entry = self._entries.get(name)
                if i is not None and entry is not None:
                    self._parts[i] = self.fragment(entry)
        self._dirty.clear()
        body = (b'{"items":[' + b",".join(self._parts)
                + b'],"count":%d,"total":%d}' % (len(names), len(names)))
        self._body, self._body_version = body, self.version
        return body

    async def render_list(self, selector: Selector | None = None, state: str | None = None,
                          limit: int | None = None) -> bytes:
        """``{"items": [...], "count": n, "total": N}`` as bytes, yielding while rendering."""
        if (selector is None or not selector.tests) and state is None and limit is None:
            return await self.render_all()
        parts: list[bytes] = []
        rendered = 0
        total = len(self._entries)
        for entry in self.select(selector, state):
            if limit is not None and len(parts) >= limit:
                break
            if entry.fragment is None:
                rendered += 1
                if rendered % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            parts.append(self.fragment(entry))
        head = b'{"items":['
        tail = b'],"count":%d,"total":%d}' % (len(parts), total)
        return head + b",".join(parts) + tail

    async def warm(self) -> None:
        """Render every stale fragment in the background (after start-up)."""
        await self.render_all()


def list_document(store: Store, now: Any) -> dict[str, Any]:
    """``GET /api/v1/tasks``'s document read straight from the database: what
    ``reconciler get tasks`` shows without a daemon. The same entries and the same
    :func:`summary` as the daemon's index, so the two cannot drift apart; a run is
    ``running`` when it is the task's newest run and its row says so."""
    index = TaskIndex()
    calendars = calendars_of_rows(store.load_calendars())
    for row in store.load_tasks():
        index.upsert(row)
        nxt = row.next_fire_at
        if row.suspended:  # a suspended task has no next fire time
            nxt = None
        elif nxt is None or nxt <= now:
            nxt = TaskSlots.from_document(row.document, calendars).next_planned(now)
        index.set_next(row.name, nxt)
    latest = store.latest_runs()
    index.load_runs(latest, store.latest_runs(executed=True))
    for name, record in latest.items():
        entry = index.get(name)
        if entry is not None and record.status is RunStatus.RUNNING:
            entry.live.add(record.id)
    items = [summary(entry) for entry in index.select()]
    return {"items": items, "count": len(items), "total": len(items)}

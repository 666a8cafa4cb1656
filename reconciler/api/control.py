"""What the HTTP API needs from the daemon, as Protocols (the API layer sits below it).

The daemon implements :class:`Operations` (``reconciler.daemon.api_ops``); the API never
touches the scheduler or the database write path directly, so every mutation goes
through the daemon's event loop exactly like its own decisions do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from reconciler.api.auth import TokenStore
from reconciler.api.events import EventHub
from reconciler.api.index import TaskIndex
from reconciler.api.metrics import Metrics
from reconciler.core.backfill import BackfillRecord
from reconciler.core.clock import Clock, SystemClock
from reconciler.core.protocols import Store
from reconciler.core.runtime import ActualTask, RunRecord
from reconciler.service.operations import Caller, ResumeResult

MAX_BODY = 64 * 1024


class LiveRun(Protocol):
    """A run executing in this process: its record and the live output chunks.

    ``output`` keeps the newest chunks only; ``output_seq`` counts every chunk ever
    appended, so chunk number ``i`` is ``output[i - (output_seq - len(output))]``.
    ``waiter()`` returns an event set at the next change (new output, or ``done``).
    """

    record: RunRecord
    output: list[str]
    output_seq: int
    done: bool

    def waiter(self) -> asyncio.Event: ...


class Operations(Protocol):
    replica: str

    def live_run(self, task: str, run_id: int) -> LiveRun | None: ...

    def refresh(self) -> None:
        """Update pull-based gauges (writer, ZooKeeper state) before a scrape."""

    def ready_checks(self) -> dict[str, tuple[bool, str]]:
        """Checks other than the database (which the API pings itself)."""

    def status_info(self) -> dict[str, Any]:
        """``mode``, ``writer``, ``lastReconcile``, ``manifestErrors``, ``refusals``."""

    # The mutations are reconciler.service.operations.TaskOperations, with their audit rows.

    async def trigger(self, name: str, caller: Caller,
                      params: Mapping[str, object] | None = None) -> RunRecord: ...

    async def suspend(self, name: str, note: str | None, caller: Caller
                      ) -> tuple[ActualTask, bool]: ...

    async def resume(self, name: str, catch_up: bool, caller: Caller) -> ResumeResult: ...

    async def cancel(self, run_id: int, caller: Caller) -> tuple[RunRecord, bool]: ...

    async def backfill(self, name: str, start: str, end: str, caller: Caller, *,
                       parallel: int, rerun: bool) -> BackfillRecord: ...

    async def cancel_backfill(self, backfill_id: int, caller: Caller
                              ) -> tuple[BackfillRecord, bool]: ...

    async def backfill_slots(self, name: str, start: str, end: str
                             ) -> tuple[ActualTask, datetime, datetime, list[datetime]]: ...

    async def plan(self) -> dict[str, Any]:
        """The :class:`~reconciler.api.models.PlanResponse` document."""


@dataclass
class ApiContext:
    store: Store  # reads (and audit rows), from the API's own threads
    ops: Operations
    index: TaskIndex = field(default_factory=TaskIndex)
    metrics: Metrics = field(default_factory=Metrics)
    events: EventHub = field(default_factory=EventHub)
    tokens: TokenStore = field(default_factory=TokenStore)
    clock: Clock = field(default_factory=SystemClock)
    auth_reads: bool = False
    max_body: int = MAX_BODY
    read_threads: int = 4
    stopping: bool = False

"""``MemoryStore``: every store port in process memory, for tests and embedding.

It keeps the semantics of :class:`~reconciler.store.sql.SQLStore` (the same contract
suite runs against both): one winner per ``(task, slot, attempt)``, fencing tokens,
generations, tombstones and resurrection in ``apply_plan``, overrides and their
marker, the conditions of ``claim_pending_run`` and ``abandon_runs``, pruning rules,
the audit log, the replicas' rows and the notification outbox
(:mod:`reconciler.store.memory_outbox`). Naive datetimes are refused with ``ValueError``
like on SQL; documents and audit details are stored as JSON, so callers get copies.

Nothing is kept across restarts, and nothing is shared between processes: a daemon
needs a database (its single-instance lock and clock-skew probe live there).
``create_store("memory://")`` returns one. Safe to share between threads (one lock).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from reconciler.core.clock import Clock, SystemClock
from reconciler.core.errors import PlanRefusedError, StoreError, TaskNotFoundError
from reconciler.core.outbox import NotifyBuilder
from reconciler.core.plan import Action, ObjectChange, Plan, TaskChange
from reconciler.core.protocols import NewRun
from reconciler.core.runtime import (
    ActualCalendar,
    ActualChannel,
    ActualObject,
    ActualTask,
    ApplyRecord,
    GitRevision,
    RunRecord,
    RunStatus,
    SuspendOverride,
    Trigger,
)
from reconciler.store.memory_backfills import MemoryBackfills
from reconciler.store.memory_outbox import MemoryOutbox
from reconciler.store.sql_audit import replica_identity
from reconciler.store.sql_base import ACTIVE_STATUSES, check_aware
from reconciler.store.sql_reads import EXECUTED_STATUSES
from reconciler.store.sql_runs import (
    check_claim_status,
    check_prune_limits,
    check_run_columns,
    duplicate_run_error,
)
from reconciler.store.sql_tasks import apply_summary_of, check_schedule_columns, describe_tasks
from reconciler.store.types import dumps_json

MEMORY_URL = "memory://"


@dataclass(slots=True)
class _Task:
    """One row of the task table (``ActualTask`` plus what only the store sees)."""

    name: str
    document: str  # JSON text, decoded on every read (callers get their own copy)
    hash: str
    generation: int
    source_file: str
    source_revision: str | None
    source_dirty: bool
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    next_fire_at: datetime | None = None
    last_slot_at: datetime | None = None
    last_success_at: datetime | None = None
    override_suspended: bool | None = None
    override_note: str | None = None
    override_actor: str | None = None
    override_at: datetime | None = None

    def actual(self) -> ActualTask:
        override = None
        if self.override_suspended is not None:
            override = SuspendOverride(
                self.override_suspended, self.override_note, self.override_actor, self.override_at
            )
        return ActualTask(
            name=self.name,
            document=json.loads(self.document),
            hash=self.hash,
            generation=self.generation,
            source_file=self.source_file,
            source_revision=self.source_revision,
            created_at=self.created_at,
            updated_at=self.updated_at,
            next_fire_at=self.next_fire_at,
            last_slot_at=self.last_slot_at,
            last_success_at=self.last_success_at,
            override=override,
        )


def _utc(value: datetime | None) -> datetime | None:
    """Aware UTC, as a value reads back from SQL; naive values are refused."""
    check_aware(value=value)
    return None if value is None else value.astimezone(UTC)


def _copy_json(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(json.loads(dumps_json(dict(value))))


def _fields(row: ActualObject) -> dict[str, Any]:
    return {f: getattr(row, f) for f in ActualObject.__dataclass_fields__}


def _stale_object(change: ObjectChange, rows: dict[str, ActualObject]) -> bool:
    """Whether a planned channel or calendar write no longer matches the row."""
    row = rows.get(change.name)
    if change.action is Action.CREATE:
        return row is not None
    if change.action in (Action.UPDATE, Action.DELETE):
        assert change.actual is not None
        return row is None or row.generation != change.actual.generation
    return False


def _write_object(change: ObjectChange, rows: dict[str, ActualObject], sha: str | None,
                  at: datetime) -> None:
    want, have = change.desired, change.actual
    if change.action is Action.DELETE:
        del rows[change.name]
    elif change.action in (Action.CREATE, Action.UPDATE):
        assert want is not None
        generation = 1 if have is None else have.generation + (want.hash != have.hash)
        rows[change.name] = ActualObject(
            want.name, json.loads(dumps_json(want.document)), want.hash, generation,
            want.source_file, sha, at)


class MemoryStore(MemoryOutbox, MemoryBackfills):
    """Every port of :class:`~reconciler.core.protocols.Store`, in memory (see above)."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._tasks: dict[str, _Task] = {}
        self._channels: dict[str, ActualObject] = {}
        self._calendars: dict[str, ActualObject] = {}
        self._runs: dict[int, RunRecord] = {}
        self._keys: dict[tuple[str, datetime, int], int] = {}
        self._applies: list[tuple[ApplyRecord, dict[str, Any]]] = []
        self._audit: list[dict[str, Any]] = []
        self._replicas: dict[str, dict[str, Any]] = {}
        self._next_run_id = 1
        MemoryOutbox.__init__(self)
        MemoryBackfills.__init__(self)

    url = MEMORY_URL
    dialect = "memory"

    def __repr__(self) -> str:
        return f"MemoryStore({self.url!r})"

    def close(self) -> None:
        """Nothing to release; the data stays until the object is dropped."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def upgrade(self) -> None:
        """There is no schema: nothing to do."""

    def ping(self) -> None:
        """Always reachable."""

    # --------------------------------------------------------------------- tasks

    def load_tasks(self) -> list[ActualTask]:
        with self._lock:
            live = [t for t in self._tasks.values() if t.deleted_at is None]
        return [t.actual() for t in sorted(live, key=lambda t: t.name)]

    def load_channels(self) -> list[ActualChannel]:
        with self._lock:
            return [ActualChannel(**_fields(self._channels[n])) for n in sorted(self._channels)]

    def load_calendars(self) -> list[ActualCalendar]:
        with self._lock:
            return [ActualCalendar(**_fields(self._calendars[n])) for n in sorted(self._calendars)]

    def get_task(self, name: str, *, include_deleted: bool = False) -> ActualTask | None:
        with self._lock:
            row = self._tasks.get(name)
            if row is None or (row.deleted_at is not None and not include_deleted):
                return None
            return row.actual()

    def get_tasks(self, names: Sequence[str]) -> list[ActualTask]:
        if isinstance(names, str):
            raise TypeError("get_tasks expects a sequence of names, not a single str")
        with self._lock:
            rows = [self._tasks.get(name) for name in sorted(set(names))]
            return [r.actual() for r in rows if r is not None and r.deleted_at is None]

    def apply_plan(
        self, plan: Plan, *, actor: str, revision: GitRevision | None, now: datetime
    ) -> ApplyRecord:
        """Check every guard first, then write: the whole plan lands or nothing does."""
        if plan.refused:
            raise PlanRefusedError(list(plan.refusals))
        at = _utc(now)
        assert at is not None
        sha = revision.sha if revision is not None else None
        dirty = revision.dirty if revision is not None else False
        counts, summary = apply_summary_of(plan)
        with self._lock:
            stale = sorted(c.name for c in plan.changes if self._stale(c))
            if stale:
                raise StoreError(
                    f"{describe_tasks(stale)} changed since the plan was made; plan again"
                )
            for kind, changes, rows in (("channel", plan.channels, self._channels),
                                        ("calendar", plan.calendars, self._calendars)):
                stale = [c.name for c in changes if _stale_object(c, rows)]
                if stale:
                    raise StoreError(f"{kind}(s) {', '.join(stale)} changed since the plan "
                                     "was made; plan again")
            for changes, rows in ((plan.channels, self._channels),
                                  (plan.calendars, self._calendars)):
                for written in changes:
                    _write_object(written, rows, sha, at)
            for change in plan.creates:
                self._create(change, sha, dirty, at)
            for change in plan.updates:
                row, want, have = self._tasks[change.name], change.desired, change.actual
                assert want is not None and have is not None, "an UPDATE carries both sides"
                row.document, row.hash, row.source_file = (
                    dumps_json(want.document), want.hash, want.source_file
                )
                row.generation = have.generation + (1 if change.spec_changed else 0)
                row.source_revision, row.source_dirty, row.updated_at = sha, dirty, at
            for change in plan.deletes:
                row = self._tasks[change.name]
                row.deleted_at = row.updated_at = at
            record = ApplyRecord(
                id=len(self._applies) + 1, applied_at=at, actor=actor, revision=sha,
                dirty=dirty, **counts,
            )
            self._applies.append((record, summary))
        return record

    def _stale(self, change: TaskChange) -> bool:
        """Whether a planned write no longer matches the row (the SQL store's guard)."""
        row = self._tasks.get(change.name)
        live = row is not None and row.deleted_at is None
        if change.action is Action.CREATE:
            return live
        if change.action in (Action.UPDATE, Action.DELETE):
            assert change.actual is not None
            return not live or row is None or row.generation != change.actual.generation
        return False

    def _create(self, change: TaskChange, sha: str | None, dirty: bool, now: datetime) -> None:
        want = change.desired
        assert want is not None, "a CREATE change carries its TaskDef"
        old = self._tasks.get(change.name)
        row = _Task(
            name=change.name, document=dumps_json(want.document), hash=want.hash,
            generation=1 if old is None else old.generation + 1, source_file=want.source_file,
            source_revision=sha, source_dirty=dirty, created_at=now, updated_at=now,
        )
        if old is not None:  # resurrection: the old life's success time is kept
            row.last_success_at = old.last_success_at
        self._tasks[change.name] = row

    def set_override(self, name: str, override: SuspendOverride | None) -> ActualTask:
        with self._lock:
            row = self._tasks.get(name)
            if row is None or row.deleted_at is not None:
                raise TaskNotFoundError(name)
            at = _utc(override.at) if override is not None else None
            if at is None:
                at = self.clock.now().astimezone(UTC)
                newest = max((t.override_at for t in self._tasks.values() if t.override_at),
                             default=None)
                if newest is not None and at <= newest:
                    at = newest + timedelta(microseconds=1)
            row.override_suspended = None if override is None else override.suspended
            row.override_note = None if override is None else override.note
            row.override_actor = None if override is None else override.actor
            row.override_at = at
            return row.actual()

    def override_marker(self) -> tuple[datetime | None, int, int]:
        with self._lock:
            rows = list(self._tasks.values())
        newest = max((t.override_at for t in rows if t.override_at), default=None)
        overrides = [t.override_suspended for t in rows if t.override_suspended is not None]
        return newest, len(overrides), sum(1 for s in overrides if s)

    def set_schedule_state(self, updates: Mapping[str, Mapping[str, datetime | None]]) -> None:
        for values in updates.values():
            check_schedule_columns(values)
        clean = {
            name: {col: _utc(value) for col, value in values.items()}
            for name, values in updates.items()
        }
        with self._lock:
            for name, values in clean.items():
                row = self._tasks.get(name)
                if row is not None and row.deleted_at is None:
                    for col, value in values.items():
                        setattr(row, col, value)

    # ---------------------------------------------------------------------- runs

    def insert_run(self, run: NewRun) -> RunRecord:
        with self._lock:
            record = self._insert(run, self.clock.now())
        if record is None:
            raise duplicate_run_error(run)
        return record

    def insert_runs(
        self, batch: Sequence[NewRun], *, notify: NotifyBuilder | None = None
    ) -> list[RunRecord | None]:
        if not batch:
            return []
        now = self.clock.now()
        for run in batch:  # refuse a bad value before anything is written
            check_aware(slot=run.slot, started_at=run.started_at, finished_at=run.finished_at)
        with self._lock:
            before = (dict(self._runs), dict(self._keys), self._next_run_id)
            out = [self._insert(run, now) for run in batch]
            try:
                rows = [n for r in out if r is not None and notify is not None
                        for n in notify(r)]
                self._write_outbox(rows)
            except BaseException:  # one transaction: the runs go with their notifications
                self._runs, self._keys, self._next_run_id = before
                raise
            return out

    def _insert(self, run: NewRun, created_at: datetime) -> RunRecord | None:
        """Insert (lock held); ``None`` when (task, slot, attempt) is taken."""
        slot = _utc(run.slot)
        assert slot is not None
        key = (run.task_name, slot, run.attempt)
        record = RunRecord(
            id=self._next_run_id, task_name=run.task_name, slot=slot, attempt=run.attempt,
            trigger=Trigger(run.trigger), status=RunStatus(run.status), replica=run.replica,
            fencing_token=run.fencing_token, created_at=_utc(created_at),
            started_at=_utc(run.started_at), finished_at=_utc(run.finished_at),
            reason=run.reason, generation=run.generation,
            params=None if run.params is None else dict(run.params),
        )
        if key in self._keys:
            return None
        self._next_run_id += 1
        self._keys[key] = record.id
        self._runs[record.id] = record
        return record

    def update_run(
        self, run_id: int, *, fencing_token: int | None = None,
        notify: NotifyBuilder | None = None, **values: Any,
    ) -> bool:
        check_run_columns(values)
        if "status" in values:
            values["status"] = RunStatus(values["status"])
        for key, value in values.items():
            if key.endswith("_at"):
                values[key] = _utc(value)
        if "output_truncated" in values:
            values["output_truncated"] = bool(values["output_truncated"])
        with self._lock:
            record = self._runs.get(run_id)
            if record is None:
                return False
            if fencing_token is not None:
                if record.fencing_token is not None and record.fencing_token > fencing_token:
                    return False
                values["fencing_token"] = fencing_token
            updated = replace(record, **values)
            rows = () if notify is None else notify(updated)  # raises: nothing written
            self._write_outbox(rows)  # all or nothing, before the run's row
            self._runs[run_id] = updated
            return True

    def get_run(self, run_id: int) -> RunRecord | None:
        with self._lock:
            return self._runs.get(run_id)

    def list_runs(
        self, task_name: str | None = None, *, limit: int = 50, statuses: Sequence[RunStatus] = ()
    ) -> list[RunRecord]:
        wanted = {RunStatus(s) for s in statuses}
        with self._lock:
            rows = [
                r for r in self._runs.values()
                if (task_name is None or r.task_name == task_name)
                and (not wanted or r.status in wanted)
            ]
        return sorted(rows, key=_newest_first, reverse=True)[: max(0, limit)]

    def prune_runs(self, task_name: str, *, successful: int, failed: int) -> int:
        check_prune_limits(successful, failed)
        with self._lock:
            finished = sorted(
                (
                    r for r in self._runs.values()
                    if r.task_name == task_name and r.status.value not in ACTIVE_STATUSES
                ),
                key=_newest_first,
                reverse=True,
            )
            ok = [r for r in finished if r.status is RunStatus.SUCCEEDED]
            bad = [r for r in finished if r.status is not RunStatus.SUCCEEDED]
            doomed = ok[successful:] + bad[failed:]
            for r in doomed:
                del self._runs[r.id]
                del self._keys[(r.task_name, r.slot, r.attempt)]
        return len(doomed)

    def abandon_runs(
        self, *, replica: str, stale_before: datetime | None, now: datetime, reason: str,
        notify: NotifyBuilder | None = None,
    ) -> list[RunRecord]:
        at, before = _utc(now), _utc(stale_before)

        def gone(r: RunRecord) -> bool:
            if before is None:
                return r.status is RunStatus.RUNNING or (
                    r.status is RunStatus.PENDING and r.replica is not None
                )
            last_sign = r.heartbeat_at or r.started_at or r.created_at
            return (
                r.status is RunStatus.RUNNING
                and last_sign is not None
                and last_sign < before
                and r.replica != replica
            )

        with self._lock:
            out = [replace(r, status=RunStatus.ABANDONED, finished_at=at, reason=reason)
                   for _, r in sorted(self._runs.items()) if gone(r)]
            rows = [n for r in out for n in notify(r)] if notify is not None else []
            self._write_outbox(rows)  # raises: nothing written
            for r in out:
                self._runs[r.id] = r
            return out

    def claim_pending_run(
        self,
        run_id: int,
        *,
        replica: str,
        fencing_token: int | None,
        started_at: datetime,
        status: RunStatus = RunStatus.RUNNING,
        reason: str | None = None,
    ) -> bool:
        new_status = check_claim_status(status)
        start = _utc(started_at)
        with self._lock:
            record = self._runs.get(run_id)
            if record is None or record.status is not RunStatus.PENDING:
                return False
            self._runs[run_id] = replace(
                record, status=new_status, replica=replica, fencing_token=fencing_token,
                started_at=start,
                finished_at=start if new_status.finished else record.finished_at,
                reason=record.reason if reason is None else reason,
            )
            return True

    def runs_of_slot(self, task_name: str, slot: datetime) -> list[RunRecord]:
        at = _utc(slot)
        with self._lock:
            found = [r for r in self._runs.values() if r.task_name == task_name and r.slot == at]
        return sorted(found, key=lambda r: (r.attempt, r.id))

    def next_attempt(self, task_name: str, slot: datetime) -> int:
        at = _utc(slot)
        with self._lock:
            attempts = [a for (t, s, a) in self._keys if t == task_name and s == at]
        return max(attempts, default=0) + 1

    # ------------------------------------------------------------------ reads

    def latest_runs(
        self, names: Sequence[str] | None = None, *, executed: bool = False
    ) -> dict[str, RunRecord]:
        if isinstance(names, str):
            raise TypeError("latest_runs expects a sequence of names, not a single str")
        wanted = None if names is None else set(names)
        out: dict[str, RunRecord] = {}
        with self._lock:
            for run_id in sorted(self._runs):
                r = self._runs[run_id]
                if (wanted is None or r.task_name in wanted) and (
                    not executed or r.status.value in EXECUTED_STATUSES
                ):
                    out[r.task_name] = r
        return out

    def run_counts(self, task_name: str) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for r in self._runs.values():
                if r.task_name == task_name:
                    out[r.status.value] = out.get(r.status.value, 0) + 1
        return out

    def count_runs(self, task_name: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self._runs.values() if task_name in (None, r.task_name))

    def list_applies(self, limit: int = 20) -> list[ApplyRecord]:
        with self._lock:
            return [record for record, _ in reversed(self._applies)][: max(0, limit)]

    def apply_summary(self, apply_id: int) -> dict[str, Any] | None:
        with self._lock:
            if not 1 <= apply_id <= len(self._applies):
                return None
            return _copy_json(self._applies[apply_id - 1][1])

    # ---------------------------------------------------------------------- audit

    def add_audit(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        target: str | None,
        outcome: str,
        client: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> int:
        row: dict[str, Any] = {
            "id": 0,  # set under the lock
            "at": _utc(at),
            "actor": actor[:255],
            "action": action[:32],
            "target": None if target is None else target[:255],
            "outcome": outcome[:32],
            "client": None if client is None else client[:255],
            "detail": _copy_json(detail),
        }
        with self._lock:
            row["id"] = audit_id = len(self._audit) + 1
            self._audit.append(row)
            return audit_id

    def list_audit(
        self, *, limit: int = 50, target: str | None = None, before_id: int | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            rows = [
                r for r in reversed(self._audit)
                if (target is None or r["target"] == target)
                and (before_id is None or r["id"] < before_id)
            ][: max(0, limit)]
        return [{**r, "detail": _copy_json(r["detail"])} for r in rows]

    # ------------------------------------------------------------------- replicas

    def write_replica_status(
        self, replica: str, status: Mapping[str, Any] | None, now: datetime
    ) -> None:
        at = _utc(now)
        with self._lock:
            row = self._replicas.get(replica)
            if row is None:
                row = self._replicas[replica] = {
                    "id": replica, "host": None, "pid": None, "version": None,
                    "started_at": at, "heartbeat_at": at, "stopped_at": None, "status": None,
                }
            elif status is not None and row["stopped_at"] is not None:
                row["started_at"] = at  # a restart after a stop
            row["heartbeat_at"] = at
            row["stopped_at"] = at if status is None else None
            if status is not None:
                row["status"] = _copy_json(status)
                row.update(replica_identity(status))

    def list_replicas(self, *, include_stopped: bool = True) -> list[dict[str, Any]]:
        with self._lock:
            rows = [
                {**self._replicas[key], "status": _copy_json(self._replicas[key]["status"])}
                for key in sorted(self._replicas)
            ]
        return [r for r in rows if include_stopped or r["stopped_at"] is None]

    def delete_stale_replicas(self, before: datetime) -> int:
        at = _utc(before)
        assert at is not None
        with self._lock:
            doomed = [
                key for key, r in self._replicas.items()
                if (r["stopped_at"] is not None and r["stopped_at"] < at) or r["heartbeat_at"] < at
            ]
            for key in doomed:
                del self._replicas[key]
        return len(doomed)


def _newest_first(r: RunRecord) -> tuple[datetime, int, int]:
    """Sort key, reversed: slot, then attempt, then id, newest first (as on SQL)."""
    return (r.slot, r.attempt, r.id)

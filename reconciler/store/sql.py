"""``SQLStore``: the runtime table and run records in SQLite, PostgreSQL or MariaDB.

It implements :class:`~reconciler.core.protocols.TaskStore` and
:class:`~reconciler.core.protocols.RunStore` with SQLAlchemy Core.

Applying a plan
    ``apply_plan`` writes all creates, updates and deletes of a plan plus its ``applies``
    audit row in one transaction: either the whole plan lands or nothing does.

    A plan is computed from a snapshot of the table (``load_tasks``) and applied later,
    maybe after another ``apply`` (a second CLI, the daemon) changed the same rows.
    Rather than lock the table between planning and applying, every UPDATE and DELETE
    is *guarded* by the generation the plan saw::

        UPDATE tasks SET ... WHERE name = :n AND generation = :seen AND deleted_at IS NULL

    If any guarded statement matches no row, the task moved on since the plan was made
    and the whole apply is rolled back with ``StoreError("... plan again")``. This is
    optimistic concurrency: no locks are held while a person reads a diff, and a stale
    plan can never overwrite a newer definition. A CREATE that meets a live row of the
    same name fails on the unique name for the same reason.

Tombstones and resurrection
    DELETE sets ``deleted_at``; the row stays so the task's run history still has a
    definition. Creating the name again resurrects that row: ``deleted_at`` cleared,
    ``generation`` = old + 1 (so run rows of the old life stay distinguishable), and the
    state of the old life reset: ``created_at`` = now, the scheduler columns
    ``next_fire_at``/``last_slot_at`` and any runtime suspend override are cleared.
    ``last_success_at`` is kept; it describes run rows that are still there.

Runtime overrides
    ``override_*`` (suspend/resume from the CLI/API) belong to operators, not to git:
    ``apply_plan`` never writes them on create-of-a-new-row, update or delete.

Runs
    ``insert_run`` relies on the unique ``(task_name, slot, attempt)`` key to let only one
    replica claim a slot; the loser gets ``DuplicateRunError``. ``update_run`` with a
    ``fencing_token`` is one conditional UPDATE (``fencing_token IS NULL OR
    fencing_token <= :token``) that also records the token, so a lock holder that lost
    its lock cannot overwrite what the newer holder wrote.

Daemon support
    ``abandon_runs`` marks runs whose process is gone ``abandoned`` and
    ``claim_pending_run`` turns a ``pending`` row (a manual trigger written by the CLI)
    into a started one; both are conditional UPDATEs that re-check the row's status, so
    a run finished (or claimed) concurrently is never overwritten. ``override_marker``
    is a one-query fingerprint of all suspend overrides that the daemon polls; for it,
    ``set_override`` always stamps ``override_at``, also when it clears an override.
    The ``replicas`` table holds one status row per daemon (``write_replica_status``).

API support
    ``latest_runs`` (the newest run, or newest executed one, of every task in one query),
    ``run_counts`` (runs per status of one task), ``ping`` (readiness) and the ``audit``
    table (``add_audit``/``list_audit``: one row per operator action through the API).

Retention (``prune_runs``)
    Only finished runs are pruned; ``pending`` and ``running`` rows are never deleted.
    ``succeeded`` runs count against ``successful``; every other finished status
    (``failed``, ``timed_out``, ``cancelled``, ``abandoned``, ``missed``, ``skipped``)
    counts against ``failed``. "Newest" means by slot, then attempt, then id.

Errors
    Driver errors (server down, lock timeouts, ...) become :class:`StoreError` naming the
    database URL with its password hidden. A naive ``datetime`` passed in is refused with
    ``ValueError`` before anything is written.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from alembic.util import CommandError
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    type_coerce,
    update,
)
from sqlalchemy.engine import URL, CursorResult, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError, StatementError
from sqlalchemy.types import NullType

from reconciler.core.clock import Clock, SystemClock
from reconciler.core.errors import (
    DuplicateRunError,
    PlanRefusedError,
    ReconcilerError,
    StoreError,
    TaskNotFoundError,
)
from reconciler.core.plan import Action, Plan, TaskChange
from reconciler.core.protocols import NewRun
from reconciler.core.runtime import (
    ActualTask,
    ApplyRecord,
    GitRevision,
    RunRecord,
    RunStatus,
    SuspendOverride,
    Trigger,
)
from reconciler.store import migrate
from reconciler.store.engine import default_database_url, make_engine, safe_url
from reconciler.store.schema import applies, audit, replicas, runs, tasks
from reconciler.store.types import UTCDateTime, loads_json, utc_from_db

SCHEDULE_COLUMNS: Final = frozenset({"next_fire_at", "last_slot_at", "last_success_at"})

#: Columns ``update_run`` may set (identity columns and ``created_at`` are fixed).
RUN_UPDATE_COLUMNS: Final = frozenset(
    {
        "status",
        "replica",
        "generation",
        "started_at",
        "finished_at",
        "heartbeat_at",
        "exit_code",
        "error",
        "reason",
        "output_tail",
        "output_truncated",
        "progress_percent",
        "progress_message",
    }
)

ACTIVE_STATUSES: Final = (RunStatus.PENDING.value, RunStatus.RUNNING.value)
#: Statuses of runs that were executed and finished (``latest_runs(executed=True)``).
EXECUTED_STATUSES: Final = tuple(
    s.value
    for s in (
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.TIMED_OUT,
        RunStatus.CANCELLED,
        RunStatus.ABANDONED,
    )
)
CHUNK: Final = 500  # names/ids per IN (...) list; SQLite caps bound parameters


def _raw(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """The column without SQLAlchemy's per-value result processing (decoded in ``_tasks``)."""
    return type_coerce(column, NullType()).label(column.key)


# Reading 10,000 tasks is on the daemon's start-up path. SQLAlchemy's JSON and datetime
# result processors cost more than the query itself there, so the JSON document and
# the timestamps come back raw and ``_tasks`` decodes them with the same functions the
# column types use (``loads_json``, ``utc_from_db``). Order matters: ``_tasks`` unpacks.
_TASK_COLUMNS = (
    tasks.c.name,
    _raw(tasks.c.document),
    tasks.c.spec_hash,
    tasks.c.generation,
    tasks.c.source_file,
    tasks.c.source_revision,
    _raw(tasks.c.created_at),
    _raw(tasks.c.updated_at),
    _raw(tasks.c.next_fire_at),
    _raw(tasks.c.last_slot_at),
    _raw(tasks.c.last_success_at),
    tasks.c.override_suspended,
    tasks.c.override_note,
    tasks.c.override_actor,
    _raw(tasks.c.override_at),
)

_RUN_ORDER = (runs.c.slot.desc(), runs.c.attempt.desc(), runs.c.id.desc())


_MISSING: Final = object()


class _Conflict(Exception):
    """Internal: a guarded statement matched fewer rows than planned."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(", ".join(names))
        self.names = list(names)


class SQLStore:
    """The runtime store on a SQLAlchemy engine (see the module docstring).

    ``SQLStore(url)`` connects lazily (nothing happens until the first call); ``url``
    defaults to :func:`~reconciler.store.engine.default_database_url`. Pass ``engine``
    to reuse an existing engine, and ``clock`` to control ``runs.created_at``.
    Call :meth:`upgrade` once before use. Safe to share between threads.
    """

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        engine: Engine | None = None,
        clock: Clock | None = None,
    ) -> None:
        if engine is None:
            engine = make_engine(default_database_url() if url is None else url)
        self.engine: Engine = engine
        self.clock: Clock = clock or SystemClock()

    # ------------------------------------------------------------------ housekeeping

    @property
    def url(self) -> str:
        """The database URL with the password hidden (safe to print)."""
        return safe_url(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def __repr__(self) -> str:
        return f"SQLStore({self.url!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> SQLStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def upgrade(self) -> None:
        with self._errors("upgrade the schema"):
            try:
                migrate.upgrade(self.engine)
            except CommandError as exc:  # e.g. a revision from a newer reconciler
                raise StoreError(
                    f"cannot upgrade the schema of {self.url}: {exc} "
                    f"(this version knows revisions up to {migrate.head_revision()})"
                ) from exc

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (``None`` for an empty database)."""
        with self._errors("read the schema revision"), self.engine.connect() as conn:
            return migrate.current_revision(conn)

    @staticmethod
    def head_revision() -> str | None:
        """The newest migration shipped with this version."""
        return migrate.head_revision()

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except ReconcilerError:
            raise
        except DBAPIError as exc:
            raise StoreError(
                f"cannot {action}: database {self.url}: {_first_line(exc.orig)}"
            ) from exc
        except StatementError as exc:
            # Raised while binding parameters, e.g. a naive datetime: the caller's mistake.
            if isinstance(exc.orig, ValueError | TypeError):
                raise exc.orig from None
            raise StoreError(f"cannot {action}: database {self.url}: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot {action}: database {self.url}: {exc}") from exc

    # --------------------------------------------------------------------- tasks

    def load_tasks(self) -> list[ActualTask]:
        stmt = select(*_TASK_COLUMNS).where(tasks.c.deleted_at.is_(None)).order_by(tasks.c.name)
        with self._errors("load tasks"), _gc_paused(), self.engine.connect() as conn:
            return _tasks(conn.execute(stmt).all())

    def get_task(self, name: str, *, include_deleted: bool = False) -> ActualTask | None:
        stmt = select(*_TASK_COLUMNS).where(tasks.c.name == name)
        if not include_deleted:
            stmt = stmt.where(tasks.c.deleted_at.is_(None))
        with self._errors(f"read task {name}"), self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _tasks([row])[0]

    def get_tasks(self, names: Sequence[str]) -> list[ActualTask]:
        """The live tasks among ``names``, by name; unknown and deleted names are left out."""
        if isinstance(names, str):
            raise TypeError("get_tasks expects a sequence of names, not a single str")
        wanted = sorted(set(names))
        out: list[ActualTask] = []
        if not wanted:
            return out
        with self._errors("read tasks"), _gc_paused(), self.engine.connect() as conn:
            for chunk in _chunks(wanted):
                stmt = select(*_TASK_COLUMNS).where(
                    tasks.c.name.in_(chunk), tasks.c.deleted_at.is_(None)
                )
                out.extend(_tasks(conn.execute(stmt).all()))
        out.sort(key=lambda t: t.name)  # Python order, whatever the server's collation
        return out

    def apply_plan(
        self, plan: Plan, *, actor: str, revision: GitRevision | None, now: datetime
    ) -> ApplyRecord:
        """Write the plan in one transaction (see the module docstring for the guard)."""
        if plan.refused:
            raise PlanRefusedError(list(plan.refusals))
        creates, updates, deletes = plan.creates, plan.updates, plan.deletes
        sha = revision.sha if revision is not None else None
        dirty = revision.dirty if revision is not None else False
        counts = {
            "created": len(creates),
            "updated": len(updates),
            "deleted": len(deletes),
            "unchanged": plan.count(Action.UNCHANGED),
            "kept": plan.count(Action.KEEP),
        }
        # Names per action (unchanged only as a count: it is every task, every apply).
        summary: dict[str, Any] = {
            "create": [c.name for c in creates],
            "update": [c.name for c in updates],
            "delete": [c.name for c in deletes],
            "keep": [c.name for c in plan.kept],
            "unchanged": counts["unchanged"],
            "drift": [d.name for d in plan.drift],
            "errors": len(plan.errors),
        }
        try:
            with self._errors("apply the plan"), self.engine.begin() as conn:
                if creates:
                    self._write_creates(conn, creates, sha, dirty, now)
                if updates:
                    self._write_updates(conn, updates, sha, dirty, now)
                if deletes:
                    self._write_deletes(conn, deletes, now)
                result = conn.execute(
                    insert(applies),
                    {
                        "applied_at": now,
                        "actor": actor,
                        "revision": sha,
                        "dirty": dirty,
                        "summary": summary,
                        **counts,
                    },
                )
                apply_id = _new_id(result)
        except _Conflict as conflict:
            stale = _describe(self._stale_names(plan, conflict.names))
            raise StoreError(f"{stale} changed since the plan was made; plan again") from None
        return ApplyRecord(
            id=apply_id,
            applied_at=now.astimezone(UTC),
            actor=actor,
            revision=sha,
            dirty=dirty,
            **counts,
        )

    def _write_creates(
        self,
        conn: Connection,
        creates: Sequence[TaskChange],
        sha: str | None,
        dirty: bool,
        now: datetime,
    ) -> None:
        names = [c.name for c in creates]
        find = select(tasks.c.name, tasks.c.generation).where(tasks.c.deleted_at.is_not(None))
        if len(names) <= CHUNK:
            find = find.where(tasks.c.name.in_(names))
        # else: one scan of all tombstones beats many IN (...) lists; extras are ignored
        tombstones: dict[str, int] = {name: generation for name, generation in conn.execute(find)}
        fresh: list[dict[str, Any]] = []
        revived: list[dict[str, Any]] = []
        for change in creates:
            want = change.desired
            assert want is not None, "a CREATE change carries its TaskDef"
            if change.name in tombstones:
                old = tombstones[change.name]
                revived.append(
                    {
                        "b_name": change.name,
                        "b_old": old,
                        "b_generation": old + 1,
                        "b_document": want.document,
                        "b_hash": want.hash,
                        "b_file": want.source_file,
                        "b_revision": sha,
                        "b_dirty": dirty,
                        "b_now": now,
                    }
                )
            else:
                fresh.append(
                    {
                        "name": change.name,
                        "document": want.document,
                        "spec_hash": want.hash,
                        "generation": 1,
                        "source_file": want.source_file,
                        "source_revision": sha,
                        "source_dirty": dirty,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
        if fresh:
            try:
                _insert_many(conn, tasks, fresh)
            except IntegrityError:  # a live row with that name appeared since the plan
                raise _Conflict([row["name"] for row in fresh]) from None
        if revived:
            stmt = (
                update(tasks)
                .where(
                    tasks.c.name == bindparam("b_name"),
                    tasks.c.generation == bindparam("b_old"),
                    tasks.c.deleted_at.is_not(None),
                )
                .values(
                    document=bindparam("b_document", type_=tasks.c.document.type),
                    spec_hash=bindparam("b_hash"),
                    generation=bindparam("b_generation"),
                    source_file=bindparam("b_file"),
                    source_revision=bindparam("b_revision"),
                    source_dirty=bindparam("b_dirty"),
                    created_at=bindparam("b_now", type_=tasks.c.created_at.type),
                    updated_at=bindparam("b_now", type_=tasks.c.updated_at.type),
                    deleted_at=None,
                    next_fire_at=None,
                    last_slot_at=None,
                    override_suspended=None,
                    override_note=None,
                    override_actor=None,
                    override_at=None,
                )
            )
            _execute_guarded(conn, stmt, revived)

    def _write_updates(
        self,
        conn: Connection,
        updates: Sequence[TaskChange],
        sha: str | None,
        dirty: bool,
        now: datetime,
    ) -> None:
        params = []
        for change in updates:
            want, have = change.desired, change.actual
            assert want is not None and have is not None, "an UPDATE carries both sides"
            params.append(
                {
                    "b_name": change.name,
                    "b_expected": have.generation,
                    "b_generation": have.generation + (1 if change.spec_changed else 0),
                    "b_document": want.document,
                    "b_hash": want.hash,
                    "b_file": want.source_file,
                    "b_revision": sha,
                    "b_dirty": dirty,
                    "b_now": now,
                }
            )
        stmt = (
            update(tasks)
            .where(
                tasks.c.name == bindparam("b_name"),
                tasks.c.generation == bindparam("b_expected"),
                tasks.c.deleted_at.is_(None),
            )
            .values(
                document=bindparam("b_document", type_=tasks.c.document.type),
                spec_hash=bindparam("b_hash"),
                generation=bindparam("b_generation"),
                source_file=bindparam("b_file"),
                source_revision=bindparam("b_revision"),
                source_dirty=bindparam("b_dirty"),
                updated_at=bindparam("b_now", type_=tasks.c.updated_at.type),
            )
        )
        _execute_guarded(conn, stmt, params)

    def _write_deletes(
        self, conn: Connection, deletes: Sequence[TaskChange], now: datetime
    ) -> None:
        params = []
        for change in deletes:
            assert change.actual is not None, "a DELETE carries the row it deletes"
            params.append(
                {"b_name": change.name, "b_expected": change.actual.generation, "b_now": now}
            )
        stmt = (
            update(tasks)
            .where(
                tasks.c.name == bindparam("b_name"),
                tasks.c.generation == bindparam("b_expected"),
                tasks.c.deleted_at.is_(None),
            )
            .values(
                deleted_at=bindparam("b_now", type_=tasks.c.deleted_at.type),
                updated_at=bindparam("b_now", type_=tasks.c.updated_at.type),
            )
        )
        _execute_guarded(conn, stmt, params)

    def _stale_names(self, plan: Plan, candidates: Sequence[str]) -> list[str]:
        """After a rolled-back apply: which planned rows no longer look as planned."""
        wanted = set(candidates)
        expected: dict[str, tuple[int, bool] | None] = {}
        for change in plan.changes:
            if change.name not in wanted:
                continue
            if change.action is Action.CREATE:
                expected[change.name] = None  # must not exist as a live row
            elif change.actual is not None:
                expected[change.name] = (change.actual.generation, True)
        current: dict[str, tuple[int, bool]] = {}
        try:
            with self.engine.connect() as conn:
                for chunk in _chunks(list(expected)):
                    for row in conn.execute(
                        select(tasks.c.name, tasks.c.generation, tasks.c.deleted_at).where(
                            tasks.c.name.in_(chunk)
                        )
                    ):
                        current[row.name] = (row.generation, row.deleted_at is None)
        except SQLAlchemyError:
            return sorted(expected)
        stale = []
        for name, want in expected.items():
            have = current.get(name)
            if want is None:
                if have is not None and have[1]:
                    stale.append(name)
            elif have != want:
                stale.append(name)
        return sorted(stale) or sorted(expected)

    def list_applies(self, limit: int = 20) -> list[ApplyRecord]:
        stmt = select(applies).order_by(applies.c.id.desc()).limit(limit)
        with self._errors("list applies"), self.engine.connect() as conn:
            return [
                ApplyRecord(
                    id=row.id,
                    applied_at=row.applied_at,
                    actor=row.actor,
                    revision=row.revision,
                    dirty=bool(row.dirty),
                    created=row.created,
                    updated=row.updated,
                    deleted=row.deleted,
                    unchanged=row.unchanged,
                    kept=row.kept,
                )
                for row in conn.execute(stmt)
            ]

    def apply_summary(self, apply_id: int) -> dict[str, Any] | None:
        """The JSON summary of one apply: task names per action."""
        stmt = select(applies.c.summary).where(applies.c.id == apply_id)
        with self._errors("read an apply"), self.engine.connect() as conn:
            value = conn.execute(stmt).scalar()
        return None if value is None else dict(value)

    def set_override(self, name: str, override: SuspendOverride | None) -> ActualTask:
        """Set (or clear, with ``None``) the runtime suspend override of a live task.

        ``override_at`` is always written, also when clearing (then only as the time of
        the change: no override means ``override_suspended`` is NULL, and the task's
        ``override`` reads as ``None``). It is ``override.at`` when given, else a fresh
        stamp from the store's clock that is later than every ``override_at`` in the
        table, so every such write changes :meth:`override_marker`.
        """
        at = override.at if override is not None else None
        what = f"set the override of {name}"
        if at is None:
            at = self._fresh_override_stamp(what)
        values: dict[str, Any] = {
            "override_suspended": None if override is None else override.suspended,
            "override_note": None if override is None else override.note,
            "override_actor": None if override is None else override.actor,
            "override_at": at,
        }
        stmt = (
            update(tasks).where(tasks.c.name == name, tasks.c.deleted_at.is_(None)).values(**values)
        )
        with self._errors(what), self.engine.begin() as conn:
            if conn.execute(stmt).rowcount == 0:
                raise TaskNotFoundError(name)
            row = conn.execute(select(*_TASK_COLUMNS).where(tasks.c.name == name)).one()
        return _tasks([row])[0]

    def _fresh_override_stamp(self, what: str) -> datetime:
        """The clock's now, moved past the newest ``override_at`` if the clock lags it.

        Read before (not inside) the writing transaction: on SQLite a transaction that
        reads first cannot always upgrade to a writer. A race between two writers can
        at worst give both the same stamp; the marker's counts still see most changes.
        """
        now = self.clock.now()
        with self._errors(what), self.engine.connect() as conn:
            newest = conn.execute(select(func.max(tasks.c.override_at))).scalar()
        newest = utc_from_db(newest)
        if newest is not None and now <= newest:
            now = newest + timedelta(microseconds=1)
        return now

    def override_marker(self) -> tuple[datetime | None, int, int]:
        """A cheap fingerprint of every task's suspend override (one aggregate query).

        ``(newest override_at, number of overrides set, number of them suspending)``.
        It changes whenever ``set_override`` sets or clears an override with a fresh
        stamp, and whenever the number of overrides or of suspending ones changes (so
        also for a flip written with an old explicit ``at``). Compare with ``!=`` only.
        """
        stmt = select(
            func.max(tasks.c.override_at),
            func.count(tasks.c.override_suspended),
            func.count(case((tasks.c.override_suspended == true(), 1))),
        )
        with self._errors("read the override marker"), self.engine.connect() as conn:
            newest, count, suspended = conn.execute(stmt).one()
        return utc_from_db(newest), int(count), int(suspended)

    def set_schedule_state(self, updates: Mapping[str, Mapping[str, datetime | None]]) -> None:
        """Bulk-update ``next_fire_at``/``last_slot_at``/``last_success_at`` in one transaction.

        Names that are not live tasks (deleted meanwhile) are skipped silently: the
        scheduler's view may be a moment old. Other column names raise ``ValueError``.
        """
        # One statement for every row, in name order: replicas writing the same rows
        # then lock them in the same order and cannot deadlock each other.
        cols = sorted(SCHEDULE_COLUMNS)
        params: list[dict[str, Any]] = []
        for name in sorted(updates):
            values = updates[name]
            unknown = set(values) - SCHEDULE_COLUMNS
            if unknown:
                raise ValueError(
                    f"set_schedule_state: unknown column(s) {sorted(unknown)}; "
                    f"allowed: {sorted(SCHEDULE_COLUMNS)}"
                )
            if not values:
                continue
            row: dict[str, Any] = {"b_name": name}
            for col in cols:
                row[f"s_{col}"] = col in values
                row[f"b_{col}"] = values.get(col)
            params.append(row)
        if not params:
            return
        stmt = (
            update(tasks)
            .where(tasks.c.name == bindparam("b_name"), tasks.c.deleted_at.is_(None))
            .values(
                {
                    col: case(
                        (bindparam(f"s_{col}", type_=Boolean()),
                         bindparam(f"b_{col}", type_=tasks.c[col].type)),
                        else_=tasks.c[col],
                    )
                    for col in cols
                }
            )
        )
        with self._errors("save schedule state"), self.engine.begin() as conn:
            conn.execute(stmt, params)

    # ---------------------------------------------------------------------- runs

    def insert_run(self, run: NewRun) -> RunRecord:
        """Insert a run (``created_at`` from the store's clock); ``DuplicateRunError`` if taken."""
        created_at = self.clock.now()
        values = _run_values(run, created_at)
        what = f"insert run {run.task_name}@{_iso(run.slot)}#{run.attempt}"
        with self._errors(what):
            try:
                with self.engine.begin() as conn:
                    run_id = _new_id(conn.execute(insert(runs), values))
            except IntegrityError:
                # The failed transaction is rolled back and its connection back in the
                # pool; look with a fresh one whether the unique key is what failed.
                if not self._run_exists(run):
                    raise
                raise DuplicateRunError(
                    f"run {run.task_name} slot {_iso(run.slot)} attempt {run.attempt} "
                    "already exists (another replica claimed it)"
                ) from None
        return _new_record(run, run_id, created_at)

    def insert_runs(self, batch: Sequence[NewRun]) -> list[RunRecord | None]:
        """Insert many runs in ONE transaction; ``None`` where (task, slot, attempt) is taken.

        The scheduler starts every run due at the same instant through one call, so a
        second with hundreds of slots costs one commit, not hundreds. A taken key is
        skipped by the database itself (``ON CONFLICT DO NOTHING`` / ``INSERT IGNORE``),
        so one duplicate never aborts the others.
        """
        if not batch:
            return []
        created_at = self.clock.now()
        out: list[RunRecord | None] = []
        with self._errors(f"insert {len(batch)} runs"), self.engine.begin() as conn:
            stmt = _insert_ignoring_duplicates(self.dialect)
            for run in batch:
                result = conn.execute(stmt, _run_values(run, created_at))
                if self.dialect in ("sqlite", "postgresql"):
                    row = result.first()  # RETURNING id: no row when the key was taken
                    run_id = None if row is None else int(row[0])
                else:
                    run_id = _new_id(result) if result.rowcount == 1 else None
                out.append(None if run_id is None else _new_record(run, run_id, created_at))
        return out

    def _run_exists(self, run: NewRun) -> bool:
        stmt = select(runs.c.id).where(
            runs.c.task_name == run.task_name,
            runs.c.slot == run.slot,
            runs.c.attempt == run.attempt,
        )
        with self._errors("check for a duplicate run"), self.engine.connect() as conn:
            return conn.execute(stmt).first() is not None

    def update_run(self, run_id: int, *, fencing_token: int | None = None, **values: Any) -> bool:
        """Set columns of a run; ``True`` when the row was updated.

        With ``fencing_token``, one atomic ``UPDATE ... WHERE fencing_token IS NULL OR
        fencing_token <= :token`` that also stores the token: ``False`` when a newer
        holder has written the row. ``False`` too for an unknown ``run_id``. Only the
        columns in ``RUN_UPDATE_COLUMNS`` may be set (``ValueError`` otherwise).
        """
        unknown = set(values) - RUN_UPDATE_COLUMNS
        if unknown:
            raise ValueError(
                f"update_run: column(s) {sorted(unknown)} cannot be updated; "
                f"allowed: {sorted(RUN_UPDATE_COLUMNS)}"
            )
        if "status" in values:
            values["status"] = RunStatus(values["status"]).value
        conditions = [runs.c.id == run_id]
        if fencing_token is not None:
            conditions.append(
                or_(runs.c.fencing_token.is_(None), runs.c.fencing_token <= fencing_token)
            )
            values["fencing_token"] = fencing_token  # the row remembers the newest holder
        with self._errors(f"update run {run_id}"), self.engine.begin() as conn:
            if not values:
                return conn.execute(select(runs.c.id).where(*conditions)).first() is not None
            result = conn.execute(update(runs).where(*conditions).values(**values))
            return bool(result.rowcount == 1)

    def get_run(self, run_id: int) -> RunRecord | None:
        with self._errors(f"read run {run_id}"), self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        return None if row is None else _run(row)

    def list_runs(
        self, task_name: str | None = None, *, limit: int = 50, statuses: Sequence[RunStatus] = ()
    ) -> list[RunRecord]:
        """Newest first: by slot, then attempt, then id (all descending)."""
        stmt = select(runs).order_by(*_RUN_ORDER).limit(limit)
        if task_name is not None:
            stmt = stmt.where(runs.c.task_name == task_name)
        if statuses:
            stmt = stmt.where(runs.c.status.in_([RunStatus(s).value for s in statuses]))
        with self._errors("list runs"), self.engine.connect() as conn:
            return [_run(row) for row in conn.execute(stmt)]

    def count_runs(self, task_name: str | None = None) -> int:
        stmt = select(func.count()).select_from(runs)
        if task_name is not None:
            stmt = stmt.where(runs.c.task_name == task_name)
        with self._errors("count runs"), self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def prune_runs(self, task_name: str, *, successful: int, failed: int) -> int:
        """Delete all but the newest ``successful`` succeeded and ``failed`` other finished runs.

        Every finished status except ``succeeded`` counts as failed for retention
        (failed, timed_out, cancelled, abandoned, missed, skipped). Pending and running
        rows are never deleted. Returns the number of rows deleted.
        """
        if successful < 0 or failed < 0:
            raise ValueError("prune_runs: successful and failed must be >= 0")
        stmt = (
            select(runs.c.id, runs.c.status)
            .where(runs.c.task_name == task_name, runs.c.status.not_in(ACTIVE_STATUSES))
            .order_by(*_RUN_ORDER)
        )
        with self._errors(f"prune runs of {task_name}"), self.engine.begin() as conn:
            kept_ok = kept_failed = 0
            doomed: list[int] = []
            for row in conn.execute(stmt):
                if row.status == RunStatus.SUCCEEDED.value:
                    kept_ok += 1
                    if kept_ok > successful:
                        doomed.append(row.id)
                else:
                    kept_failed += 1
                    if kept_failed > failed:
                        doomed.append(row.id)
            deleted = 0
            for chunk in _chunks(doomed):
                result = conn.execute(
                    delete(runs).where(
                        and_(runs.c.id.in_(chunk), runs.c.status.not_in(ACTIVE_STATUSES))
                    )
                )
                deleted += result.rowcount
        return deleted

    # ------------------------------------------------------------ daemon: run rows

    def abandon_runs(
        self, *, replica: str, stale_before: datetime | None, now: datetime, reason: str
    ) -> list[RunRecord]:
        """Mark runs whose process is gone ``abandoned``; return them (oldest id first).

        ``stale_before=None`` (start-up of a single replica): every ``running`` run, and
        every ``pending`` run that a replica had already taken (``replica`` set; pending
        rows without a replica are manual triggers still waiting and stay). Otherwise:
        ``running`` runs of *other* replicas whose last sign of life
        (``coalesce(heartbeat_at, started_at, created_at)``) is older than
        ``stale_before``. Each row is updated on its own with the full condition
        re-checked, so a run that finished (or heartbeated) meanwhile is left alone and
        not returned. ``finished_at`` = ``now``, ``reason`` = ``reason``.
        """
        _check_aware(now=now, stale_before=stale_before)
        condition: ColumnElement[bool]
        if stale_before is None:
            condition = or_(
                runs.c.status == RunStatus.RUNNING.value,
                and_(runs.c.status == RunStatus.PENDING.value, runs.c.replica.is_not(None)),
            )
        else:
            last_sign = func.coalesce(runs.c.heartbeat_at, runs.c.started_at, runs.c.created_at)
            condition = and_(
                runs.c.status == RunStatus.RUNNING.value,
                last_sign < stale_before,
                or_(runs.c.replica.is_(None), runs.c.replica != replica),
            )
        with self._errors("find abandoned runs"), self.engine.connect() as conn:
            candidates = list(
                conn.execute(select(runs.c.id).where(condition).order_by(runs.c.id)).scalars()
            )
        if not candidates:
            return []
        # A separate write transaction (see _fresh_override_stamp for why on SQLite).
        abandoned: list[int] = []
        with self._errors("abandon runs"), self.engine.begin() as conn:
            stmt = (
                update(runs)
                .where(runs.c.id == bindparam("b_id"), condition)
                .values(status=RunStatus.ABANDONED.value, finished_at=now, reason=reason)
            )
            for run_id in candidates:
                if conn.execute(stmt, {"b_id": run_id}).rowcount == 1:
                    abandoned.append(run_id)
            records: list[RunRecord] = []
            for chunk in _chunks(abandoned):
                rows = conn.execute(select(runs).where(runs.c.id.in_(chunk)).order_by(runs.c.id))
                records.extend(_run(row) for row in rows)
        return records

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
        """Take a ``pending`` run (e.g. a manual trigger); ``True`` when this call got it.

        One atomic ``UPDATE ... WHERE id = :id AND status = 'pending'`` that sets the
        status (``running``, or a finished one such as ``skipped``, which also sets
        ``finished_at`` = ``started_at``), ``replica``, ``fencing_token`` and
        ``started_at``; ``reason`` only when given (a reason the CLI wrote is kept).
        ``False`` when another replica was first or the run is gone.
        """
        new_status = RunStatus(status)
        if new_status is RunStatus.PENDING:
            raise ValueError("claim_pending_run: the new status cannot be pending")
        values: dict[str, Any] = {
            "status": new_status.value,
            "replica": replica,
            "fencing_token": fencing_token,
            "started_at": started_at,
        }
        if new_status.finished:
            values["finished_at"] = started_at
        if reason is not None:
            values["reason"] = reason
        stmt = (
            update(runs)
            .where(runs.c.id == run_id, runs.c.status == RunStatus.PENDING.value)
            .values(**values)
        )
        with self._errors(f"claim run {run_id}"), self.engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def next_attempt(self, task_name: str, slot: datetime) -> int:
        """1 + the highest attempt recorded for ``(task_name, slot)``; 1 when there is none."""
        stmt = select(func.max(runs.c.attempt)).where(
            runs.c.task_name == task_name, runs.c.slot == slot
        )
        with self._errors(f"read the attempts of {task_name}"), self.engine.connect() as conn:
            highest = conn.execute(stmt).scalar()
        return 1 if highest is None else int(highest) + 1

    # ------------------------------------------------------------------ API reads

    def ping(self) -> None:
        """One trivial query: raises ``StoreError`` when the database is unreachable."""
        with self._errors("reach the database"), self.engine.connect() as conn:
            conn.execute(select(literal(1))).scalar()

    def latest_runs(
        self, names: Sequence[str] | None = None, *, executed: bool = False
    ) -> dict[str, RunRecord]:
        """The newest run row (highest id) per task, for every task or for ``names``.

        With ``executed``, only runs that ran and finished count (``succeeded``,
        ``failed``, ``timed_out``, ``cancelled``, ``abandoned``; not ``missed`` or
        ``skipped``): what "the last result" of a task means on the dashboard.
        """
        if isinstance(names, str):
            raise TypeError("latest_runs expects a sequence of names, not a single str")
        out: dict[str, RunRecord] = {}
        chunks: Iterable[Sequence[str] | None] = [None] if names is None else _chunks(
            sorted(set(names))
        )
        with self._errors("read the latest runs"), self.engine.connect() as conn:
            for chunk in chunks:
                newest = select(func.max(runs.c.id).label("id")).group_by(runs.c.task_name)
                if chunk is not None:
                    newest = newest.where(runs.c.task_name.in_(chunk))
                if executed:
                    newest = newest.where(runs.c.status.in_(EXECUTED_STATUSES))
                ids = newest.subquery()
                stmt = select(runs).join(ids, runs.c.id == ids.c.id)
                for row in conn.execute(stmt):
                    out[row.task_name] = _run(row)
        return out

    def run_counts(self, task_name: str) -> dict[str, int]:
        """How many run rows of ``task_name`` exist per status (statuses with none left out)."""
        stmt = (
            select(runs.c.status, func.count())
            .where(runs.c.task_name == task_name)
            .group_by(runs.c.status)
        )
        with self._errors(f"count the runs of {task_name}"), self.engine.connect() as conn:
            return {str(status): int(n) for status, n in conn.execute(stmt)}

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
        """Record one operator action (API mutation); return the row's id."""
        _check_aware(at=at)
        values = {
            "at": at,
            "actor": actor[:255],
            "action": action[:32],
            "target": None if target is None else target[:255],
            "outcome": outcome[:32],
            "client": None if client is None else client[:255],
            "detail": None if detail is None else dict(detail),
        }
        with self._errors("write the audit log"), self.engine.begin() as conn:
            return _new_id(conn.execute(insert(audit), values))

    def list_audit(
        self, *, limit: int = 50, target: str | None = None, before_id: int | None = None
    ) -> list[dict[str, Any]]:
        """Audit rows, newest first: ``id``, ``at`` (aware UTC), ``actor``, ``action``,
        ``target``, ``outcome``, ``client`` and ``detail`` (a dict or ``None``)."""
        stmt = select(audit).order_by(audit.c.id.desc()).limit(max(0, limit))
        if target is not None:
            stmt = stmt.where(audit.c.target == target)
        if before_id is not None:
            stmt = stmt.where(audit.c.id < before_id)
        with self._errors("read the audit log"), self.engine.connect() as conn:
            return [
                {
                    "id": row.id,
                    "at": row.at,
                    "actor": row.actor,
                    "action": row.action,
                    "target": row.target,
                    "outcome": row.outcome,
                    "client": row.client,
                    "detail": None if row.detail is None else dict(row.detail),
                }
                for row in conn.execute(stmt)
            ]

    # ------------------------------------------------------------ daemon: replicas

    def write_replica_status(
        self, replica: str, status: Mapping[str, Any] | None, now: datetime
    ) -> None:
        """Upsert the status row of a replica (the daemon calls it on every heartbeat).

        Every write sets ``heartbeat_at`` = ``now``. With a ``status`` dict it also stores
        the dict, takes ``host``/``pid``/``version`` from its keys of those names when
        present, and clears ``stopped_at``; the first write of a replica, or the first
        after it stopped, sets ``started_at`` = ``now``. ``status=None`` marks the replica
        stopped (``stopped_at`` = ``now``) and keeps the last status.
        """
        _check_aware(now=now)
        now_param = bindparam("b_now", now, type_=replicas.c.started_at.type)
        changes: list[tuple[Any, Any]] = []
        if status is not None:
            # Before stopped_at is cleared: MariaDB evaluates SET left to right.
            changes.append(
                (
                    replicas.c.started_at,
                    case((replicas.c.stopped_at.is_(None), replicas.c.started_at), else_=now_param),
                )
            )
        changes.append((replicas.c.heartbeat_at, now))
        changes.append((replicas.c.stopped_at, now if status is None else None))
        new_row: dict[str, Any] = {
            "id": replica,
            "started_at": now,
            "heartbeat_at": now,
            "stopped_at": now if status is None else None,
        }
        if status is not None:
            document = dict(status)
            identity = _replica_identity(document)
            changes.append((replicas.c.status, document))
            changes.extend((replicas.c[key], value) for key, value in identity.items())
            new_row.update(identity, status=document)
        stmt = update(replicas).where(replicas.c.id == replica).ordered_values(*changes)
        with self._errors(f"write the status of replica {replica}"):
            for attempt in (1, 2):
                try:
                    with self.engine.begin() as conn:
                        if conn.execute(stmt).rowcount == 0:
                            conn.execute(insert(replicas).values(**new_row))
                    return
                except IntegrityError:  # another writer inserted the row first: update it
                    if attempt == 2:
                        raise

    def list_replicas(self, *, include_stopped: bool = True) -> list[dict[str, Any]]:
        """Replica status rows by id: ``id``, ``host``, ``pid``, ``version``, ``started_at``,
        ``heartbeat_at``, ``stopped_at`` (aware UTC) and ``status`` (the last dict)."""
        stmt = select(replicas).order_by(replicas.c.id)
        if not include_stopped:
            stmt = stmt.where(replicas.c.stopped_at.is_(None))
        with self._errors("list replicas"), self.engine.connect() as conn:
            return [
                {
                    "id": row.id,
                    "host": row.host,
                    "pid": row.pid,
                    "version": row.version,
                    "started_at": row.started_at,
                    "heartbeat_at": row.heartbeat_at,
                    "stopped_at": row.stopped_at,
                    "status": None if row.status is None else dict(row.status),
                }
                for row in conn.execute(stmt)
            ]

    def delete_stale_replicas(self, before: datetime) -> int:
        """Delete replica rows last heard of before ``before``; return how many.

        That is: stopped before ``before``, or (never stopped and) last heartbeat before
        ``before``. A replica that stopped more recently stays listed.
        """
        _check_aware(before=before)
        stmt = delete(replicas).where(
            or_(replicas.c.stopped_at < before, replicas.c.heartbeat_at < before)
        )
        with self._errors("delete stale replicas"), self.engine.begin() as conn:
            return int(conn.execute(stmt).rowcount)


# ---------------------------------------------------------------------------- helpers


def _execute_guarded(conn: Connection, stmt: Any, params: list[dict[str, Any]]) -> None:
    """Run a guarded UPDATE for every parameter set; raise ``_Conflict`` on any miss."""
    if conn.dialect.supports_sane_multi_rowcount:
        matched = conn.execute(stmt, params).rowcount
        if matched != len(params):
            raise _Conflict([p["b_name"] for p in params])
        return
    for p in params:  # pragma: no cover - every dialect we ship reports multi rowcounts
        if conn.execute(stmt, p).rowcount != 1:
            raise _Conflict([p["b_name"]])


def _insert_many(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """``INSERT`` many rows (all with the same keys) in one ``executemany``.

    On SQLite this bypasses SQLAlchemy's per-row parameter handling, which costs more
    than SQLite itself: the statement is compiled once, every value goes through the
    column type's own bind processor for this dialect (so the stored text is exactly
    what the normal path stores), and a value repeated from the previous row (the same
    ``now``, the same revision) is processed once. The server backends keep SQLAlchemy's
    path (psycopg pipelines it, PyMySQL batches it into multi-row VALUES).
    """
    dialect = conn.dialect
    if dialect.name != "sqlite" or not dialect.positional:
        conn.execute(insert(table), rows)
        return
    keys = list(rows[0])
    compiled = insert(table).compile(dialect=dialect, column_keys=keys)
    order = list(compiled.positiontup or ())
    if sorted(order) != sorted(keys):  # pragma: no cover - defensive, never seen
        conn.execute(insert(table), rows)
        return
    processors = [table.c[key].type.dialect_impl(dialect).bind_processor(dialect) for key in order]
    columns: list[list[Any]] = []
    for key, process in zip(order, processors, strict=True):
        values = [row[key] for row in rows]
        if process is not None:
            values = _process_column(values, process)
        columns.append(values)
    conn.exec_driver_sql(compiled.string, list(zip(*columns, strict=True)))


def _process_column(values: list[Any], process: Any) -> list[Any]:
    out: list[Any] = []
    last_in: Any = _MISSING
    last_out: Any = None
    for value in values:
        if value is not last_in:
            last_in, last_out = value, process(value)
        out.append(last_out)
    return out


def _insert_ignoring_duplicates(dialect: str) -> Any:
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return (
            sqlite_insert(runs)
            .on_conflict_do_nothing(index_elements=["task_name", "slot", "attempt"])
            .returning(runs.c.id)
        )
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return (
            pg_insert(runs)
            .on_conflict_do_nothing(index_elements=["task_name", "slot", "attempt"])
            .returning(runs.c.id)
        )
    return insert(runs).prefix_with("IGNORE")


def _run_values(run: NewRun, created_at: datetime) -> dict[str, Any]:
    return {
        "task_name": run.task_name,
        "slot": run.slot,
        "attempt": run.attempt,
        "trigger": Trigger(run.trigger).value,
        "status": RunStatus(run.status).value,
        "replica": run.replica,
        "fencing_token": run.fencing_token,
        "generation": run.generation,
        "created_at": created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "reason": run.reason,
    }


def _new_record(run: NewRun, run_id: int, created_at: datetime) -> RunRecord:
    return RunRecord(
        id=run_id,
        task_name=run.task_name,
        slot=run.slot.astimezone(UTC),
        attempt=run.attempt,
        trigger=Trigger(run.trigger),
        status=RunStatus(run.status),
        replica=run.replica,
        fencing_token=run.fencing_token,
        created_at=_utc(created_at),
        started_at=_utc(run.started_at),
        finished_at=_utc(run.finished_at),
        reason=run.reason,
        generation=run.generation,
    )


def _new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None or key[0] is None:  # pragma: no cover - every backend reports it
        raise StoreError("the database did not report the id of the inserted row")
    return int(key[0])


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _describe(names: Sequence[str], limit: int = 10) -> str:
    if len(names) == 1:
        return f"task {names[0]}"
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return "tasks " + ", ".join(names[:limit]) + more


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip() if error is not None else "unknown error"
    return text.splitlines()[0] if text else type(error).__name__


def _utc(value: datetime | None) -> datetime | None:
    """What a value looks like after a round trip (UTC, aware); validated on insert."""
    return None if value is None else value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _tasks(rows: Iterable[Any]) -> list[ActualTask]:
    """Build ``ActualTask`` values from rows of ``_TASK_COLUMNS`` (raw JSON and timestamps).

    Timestamps repeat a lot (one apply stamps every row it creates with the same
    instant), so each distinct raw value is decoded once per call; ``datetime`` values
    are immutable, sharing them is safe.
    """
    decoded: dict[Any, datetime | None] = {None: None}

    def utc(value: Any) -> datetime | None:
        try:
            return decoded[value]
        except KeyError:
            result = decoded[value] = utc_from_db(value)
            return result

    out = []
    for (
        name,
        document,
        spec_hash,
        generation,
        source_file,
        source_revision,
        created_at,
        updated_at,
        next_fire_at,
        last_slot_at,
        last_success_at,
        override_suspended,
        override_note,
        override_actor,
        override_at,
    ) in rows:
        override = None
        if override_suspended is not None:
            override = SuspendOverride(
                suspended=bool(override_suspended),
                note=override_note,
                actor=override_actor,
                at=utc(override_at),
            )
        out.append(
            ActualTask(
                name=name,
                document=loads_json(document),
                hash=spec_hash,
                generation=generation,
                source_file=source_file,
                source_revision=source_revision,
                created_at=utc(created_at),
                updated_at=utc(updated_at),
                next_fire_at=utc(next_fire_at),
                last_slot_at=utc(last_slot_at),
                last_success_at=utc(last_success_at),
                override=override,
            )
        )
    return out


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects.

    Decoding 10,000 documents allocates ~100,000 dicts and lists, which triggers several
    full collections of the whole heap: in measurements that was a third of
    ``load_tasks``. Nothing built here forms cycles, so collecting during the loop frees
    nothing; the collector resumes (if it was on) right after.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


_UTC_TYPE: Final = UTCDateTime()


def _check_aware(**values: datetime | None) -> None:
    """Refuse naive datetimes up front (as the column type would, but before any query)."""
    for value in values.values():
        if value is not None:
            _UTC_TYPE.process_bind_param(value, None)  # type: ignore[arg-type]


def _replica_identity(status: Mapping[str, Any]) -> dict[str, Any]:
    """``host``/``pid``/``version`` columns from a replica's status dict (keys present only)."""
    out: dict[str, Any] = {}
    host, pid, version = status.get("host"), status.get("pid"), status.get("version")
    if host is not None:
        out["host"] = str(host)[:255]
    if isinstance(pid, int) and not isinstance(pid, bool):
        out["pid"] = pid
    elif isinstance(pid, str) and pid.strip().isdigit():
        out["pid"] = int(pid)
    if version is not None:
        out["version"] = str(version)[:64]
    return out


def _run(row: Any) -> RunRecord:
    return RunRecord(
        id=row.id,
        task_name=row.task_name,
        slot=row.slot,
        attempt=row.attempt,
        trigger=Trigger(row.trigger),
        status=RunStatus(row.status),
        replica=row.replica,
        fencing_token=row.fencing_token,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        heartbeat_at=row.heartbeat_at,
        exit_code=row.exit_code,
        error=row.error,
        reason=row.reason,
        output_tail=row.output_tail,
        output_truncated=bool(row.output_truncated),
        progress_percent=row.progress_percent,
        progress_message=row.progress_message,
        generation=row.generation,
    )

"""The task table of ``SQLStore``: load, apply a plan, overrides, scheduler columns.

See :mod:`reconciler.store.sql` for the guarded writes of ``apply_plan``, tombstones
and runtime overrides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import (
    Boolean,
    Connection,
    Table,
    bindparam,
    case,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from reconciler.core.errors import (
    PlanRefusedError,
    StoreError,
    TaskNotFoundError,
)
from reconciler.core.plan import Action, Plan, TaskChange
from reconciler.core.runtime import (
    ActualTask,
    ApplyRecord,
    GitRevision,
    SuspendOverride,
)
from reconciler.store.schema import applies, calendars, tasks
from reconciler.store.sql_base import (
    CHUNK,
    TASK_COLUMNS,
    SQLBase,
    chunks,
    gc_paused,
    new_id,
    task_records,
)
from reconciler.store.sql_channels import ChannelConflict, write_channels
from reconciler.store.types import utc_from_db

SCHEDULE_COLUMNS: Final = frozenset({"next_fire_at", "last_slot_at", "last_success_at"})

_MISSING: Final = object()


class _Conflict(Exception):
    """Internal: a guarded statement matched fewer rows than planned."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(", ".join(names))
        self.names = list(names)


class SQLTasks(SQLBase):
    """:class:`~reconciler.core.protocols.TaskStore` (and the scheduler columns)."""

    def load_tasks(self) -> list[ActualTask]:
        stmt = select(*TASK_COLUMNS).where(tasks.c.deleted_at.is_(None)).order_by(tasks.c.name)
        with self._errors("load tasks"), gc_paused(), self.engine.connect() as conn:
            return task_records(conn.execute(stmt).all())

    def get_task(self, name: str, *, include_deleted: bool = False) -> ActualTask | None:
        stmt = select(*TASK_COLUMNS).where(tasks.c.name == name)
        if not include_deleted:
            stmt = stmt.where(tasks.c.deleted_at.is_(None))
        with self._errors(f"read task {name}"), self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else task_records([row])[0]

    def get_tasks(self, names: Sequence[str]) -> list[ActualTask]:
        """The live tasks among ``names``, by name; unknown and deleted names are left out."""
        if isinstance(names, str):
            raise TypeError("get_tasks expects a sequence of names, not a single str")
        wanted = sorted(set(names))
        out: list[ActualTask] = []
        if not wanted:
            return out
        with self._errors("read tasks"), gc_paused(), self.engine.connect() as conn:
            for chunk in chunks(wanted):
                stmt = select(*TASK_COLUMNS).where(
                    tasks.c.name.in_(chunk), tasks.c.deleted_at.is_(None)
                )
                out.extend(task_records(conn.execute(stmt).all()))
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
        counts, summary = apply_summary_of(plan)
        try:
            with self._errors("apply the plan"), self.engine.begin() as conn:
                if creates:
                    self._write_creates(conn, creates, sha, dirty, now)
                if updates:
                    self._write_updates(conn, updates, sha, dirty, now)
                if deletes:
                    self._write_deletes(conn, deletes, now)
                if plan.channels:
                    write_channels(conn, plan.channels, sha, now)
                if plan.calendars:
                    write_channels(conn, plan.calendars, sha, now, calendars)
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
                apply_id = new_id(result)
        except _Conflict as conflict:
            stale = describe_tasks(self._stale_names(plan, conflict.names))
            raise StoreError(f"{stale} changed since the plan was made; plan again") from None
        except ChannelConflict as conflict:
            stale = ", ".join(conflict.names)
            raise StoreError(
                f"{conflict.kind}(s) {stale} changed since the plan was made; plan again"
            ) from None
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
                for chunk in chunks(list(expected)):
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
            row = conn.execute(select(*TASK_COLUMNS).where(tasks.c.name == name)).one()
        return task_records([row])[0]

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
            check_schedule_columns(values)
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
                        (
                            bindparam(f"s_{col}", type_=Boolean()),
                            bindparam(f"b_{col}", type_=tasks.c[col].type),
                        ),
                        else_=tasks.c[col],
                    )
                    for col in cols
                }
            )
        )
        with self._errors("save schedule state"), self.engine.begin() as conn:
            conn.execute(stmt, params)


# ---------------------------------------------------------------------------- helpers


def check_schedule_columns(values: Mapping[str, Any]) -> None:
    """``ValueError`` unless every key is a scheduler column of the task table."""
    unknown = set(values) - SCHEDULE_COLUMNS
    if unknown:
        raise ValueError(
            f"set_schedule_state: unknown column(s) {sorted(unknown)}; "
            f"allowed: {sorted(SCHEDULE_COLUMNS)}"
        )


def apply_summary_of(plan: Plan) -> tuple[dict[str, int], dict[str, Any]]:
    """The counts of an ``applies`` row and its JSON summary (task names per action)."""
    counts = {
        "created": len(plan.creates),
        "updated": len(plan.updates),
        "deleted": len(plan.deletes),
        "unchanged": plan.count(Action.UNCHANGED),
        "kept": plan.count(Action.KEEP),
    }
    # Names per action (unchanged only as a count: it is every task, every apply).
    summary: dict[str, Any] = {
        "create": [c.name for c in plan.creates],
        "update": [c.name for c in plan.updates],
        "delete": [c.name for c in plan.deletes],
        "keep": [c.name for c in plan.kept],
        "unchanged": counts["unchanged"],
        "drift": [d.name for d in plan.drift],
        "errors": len(plan.errors),
    }
    for key, objects in (("channels", plan.channels_of), ("calendars", plan.calendars_of)):
        names = {action: [c.name for c in objects(Action(action))]
                 for action in ("create", "update", "delete")}
        if any(names.values()):
            summary[key] = names
    return counts, summary


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


def describe_tasks(names: Sequence[str], limit: int = 10) -> str:
    if len(names) == 1:
        return f"task {names[0]}"
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return "tasks " + ", ".join(names[:limit]) + more

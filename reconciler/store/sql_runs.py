"""Run rows of ``SQLStore``: insert (one winner per slot), update with fencing, claim,
abandon, prune. See :mod:`reconciler.store.sql` for the rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from reconciler.core.errors import (
    DuplicateRunError,
)
from reconciler.core.outbox import NotifyBuilder
from reconciler.core.protocols import NewRun
from reconciler.core.runtime import (
    RunRecord,
    RunStatus,
    Trigger,
)
from reconciler.store.schema import runs
from reconciler.store.sql_base import (
    ACTIVE_STATUSES,
    RUN_ORDER,
    SQLBase,
    as_utc,
    check_aware,
    chunks,
    iso,
    new_id,
    run_record,
)
from reconciler.store.sql_outbox import write_outbox

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


class SQLRuns(SQLBase):
    """:class:`~reconciler.core.protocols.RunStore` except ``set_schedule_state``."""

    def insert_run(self, run: NewRun) -> RunRecord:
        """Insert a run (``created_at`` from the store's clock); ``DuplicateRunError`` if taken."""
        created_at = self.clock.now()
        values = run_values(run, created_at)
        what = f"insert run {run.task_name}@{iso(run.slot)}#{run.attempt}"
        with self._errors(what):
            try:
                with self.engine.begin() as conn:
                    run_id = new_id(conn.execute(insert(runs), values))
            except IntegrityError:
                # The failed transaction is rolled back and its connection back in the
                # pool; look with a fresh one whether the unique key is what failed.
                if not self._run_exists(run):
                    raise
                raise duplicate_run_error(run) from None
        return new_run_record(run, run_id, created_at)

    def insert_runs(
        self, batch: Sequence[NewRun], *, notify: NotifyBuilder | None = None
    ) -> list[RunRecord | None]:
        """Insert many runs in ONE transaction; ``None`` where (task, slot, attempt) is taken.

        The scheduler starts every run due at the same instant through one call, so a
        second with hundreds of slots costs one commit, not hundreds. A taken key is
        skipped by the database itself (``ON CONFLICT DO NOTHING`` / ``INSERT IGNORE``),
        so one duplicate never aborts the others. ``notify``: the outbox rows of each
        inserted run, written in the same transaction.
        """
        if not batch:
            return []
        created_at = self.clock.now()
        out: list[RunRecord | None] = []
        with self._errors(f"insert {len(batch)} runs"), self.engine.begin() as conn:
            stmt = _insert_ignoring_duplicates(self.dialect)
            for run in batch:
                result = conn.execute(stmt, run_values(run, created_at))
                if self.dialect in ("sqlite", "postgresql"):
                    row = result.first()  # RETURNING id: no row when the key was taken
                    run_id = None if row is None else int(row[0])
                else:
                    run_id = new_id(result) if result.rowcount == 1 else None
                record = None if run_id is None else new_run_record(run, run_id, created_at)
                out.append(record)
                if record is not None and notify is not None:
                    write_outbox(conn, notify(record))
        return out

    def _run_exists(self, run: NewRun) -> bool:
        stmt = select(runs.c.id).where(
            runs.c.task_name == run.task_name,
            runs.c.slot == run.slot,
            runs.c.attempt == run.attempt,
        )
        with self._errors("check for a duplicate run"), self.engine.connect() as conn:
            return conn.execute(stmt).first() is not None

    def update_run(
        self, run_id: int, *, fencing_token: int | None = None,
        notify: NotifyBuilder | None = None, **values: Any,
    ) -> bool:
        """Set columns of a run; ``True`` when the row was updated.

        With ``fencing_token``, one atomic ``UPDATE ... WHERE fencing_token IS NULL OR
        fencing_token <= :token`` that also stores the token: ``False`` when a newer
        holder has written the row. ``False`` too for an unknown ``run_id``. Only the
        columns in ``RUN_UPDATE_COLUMNS`` may be set (``ValueError`` otherwise).
        ``notify``: called with the row as written when it was updated; the outbox rows
        it returns are written in the same transaction (the run's final status and its
        notifications land together or not at all).
        """
        check_run_columns(values)
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
            if result.rowcount != 1:
                return False
            if notify is not None:
                row = conn.execute(select(runs).where(runs.c.id == run_id)).one()
                write_outbox(conn, notify(run_record(row)))
            return True

    def get_run(self, run_id: int) -> RunRecord | None:
        with self._errors(f"read run {run_id}"), self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        return None if row is None else run_record(row)

    def list_runs(
        self, task_name: str | None = None, *, limit: int = 50, statuses: Sequence[RunStatus] = ()
    ) -> list[RunRecord]:
        """Newest first: by slot, then attempt, then id (all descending)."""
        stmt = select(runs).order_by(*RUN_ORDER).limit(limit)
        if task_name is not None:
            stmt = stmt.where(runs.c.task_name == task_name)
        if statuses:
            stmt = stmt.where(runs.c.status.in_([RunStatus(s).value for s in statuses]))
        with self._errors("list runs"), self.engine.connect() as conn:
            return [run_record(row) for row in conn.execute(stmt)]

    def prune_runs(self, task_name: str, *, successful: int, failed: int) -> int:
        """Delete all but the newest ``successful`` succeeded and ``failed`` other finished runs.

        Every finished status except ``succeeded`` counts as failed for retention
        (failed, timed_out, cancelled, abandoned, missed, skipped). Pending and running
        rows are never deleted. Returns the number of rows deleted.
        """
        check_prune_limits(successful, failed)
        stmt = (
            select(runs.c.id, runs.c.status)
            .where(runs.c.task_name == task_name, runs.c.status.not_in(ACTIVE_STATUSES))
            .order_by(*RUN_ORDER)
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
            for chunk in chunks(doomed):
                result = conn.execute(
                    delete(runs).where(
                        and_(runs.c.id.in_(chunk), runs.c.status.not_in(ACTIVE_STATUSES))
                    )
                )
                deleted += result.rowcount
        return deleted

    # ------------------------------------------------------------ daemon: run rows

    def abandon_runs(
        self, *, replica: str, stale_before: datetime | None, now: datetime, reason: str,
        notify: NotifyBuilder | None = None,
    ) -> list[RunRecord]:
        """Mark runs whose process is gone ``abandoned``; return them (oldest id first).

        ``stale_before=None`` (start-up of a single replica): every ``running`` run, and
        every ``pending`` run that a replica had already taken (``replica`` set; pending
        rows without a replica are manual triggers still waiting and stay). Otherwise:
        ``running`` runs of *other* replicas whose last sign of life
        (``coalesce(heartbeat_at, started_at, created_at)``) is older than
        ``stale_before``. Each row is updated on its own with the full condition
        re-checked, so a run that finished (or heartbeated) meanwhile is left alone and
        not returned. ``finished_at`` = ``now``, ``reason`` = ``reason``. ``notify``: the
        outbox rows of each abandoned run, written in the same transaction.
        """
        check_aware(now=now, stale_before=stale_before)
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
            for chunk in chunks(abandoned):
                rows = conn.execute(select(runs).where(runs.c.id.in_(chunk)).order_by(runs.c.id))
                records.extend(run_record(row) for row in rows)
            if notify is not None:
                for record in records:
                    write_outbox(conn, notify(record))
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
        new_status = check_claim_status(status)
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

    def runs_of_slot(self, task_name: str, slot: datetime) -> list[RunRecord]:
        """Every run of ``(task_name, slot)``, by attempt."""
        check_aware(slot=slot)
        stmt = (select(runs).where(runs.c.task_name == task_name, runs.c.slot == slot)
                .order_by(runs.c.attempt, runs.c.id))
        with self._errors(f"read the runs of a slot of {task_name}"), \
                self.engine.connect() as conn:
            return [run_record(row) for row in conn.execute(stmt)]

    def next_attempt(self, task_name: str, slot: datetime) -> int:
        """1 + the highest attempt recorded for ``(task_name, slot)``; 1 when there is none."""
        stmt = select(func.max(runs.c.attempt)).where(
            runs.c.task_name == task_name, runs.c.slot == slot
        )
        with self._errors(f"read the attempts of {task_name}"), self.engine.connect() as conn:
            highest = conn.execute(stmt).scalar()
        return 1 if highest is None else int(highest) + 1


# ---------------------------------------------------------------------------- helpers


def duplicate_run_error(run: NewRun) -> DuplicateRunError:
    return DuplicateRunError(
        f"run {run.task_name} slot {iso(run.slot)} attempt {run.attempt} "
        "already exists (another replica claimed it)"
    )


def check_run_columns(values: Mapping[str, Any]) -> None:
    """``ValueError`` unless every key is a column ``update_run`` may set."""
    unknown = set(values) - RUN_UPDATE_COLUMNS
    if unknown:
        raise ValueError(
            f"update_run: column(s) {sorted(unknown)} cannot be updated; "
            f"allowed: {sorted(RUN_UPDATE_COLUMNS)}"
        )


def check_prune_limits(successful: int, failed: int) -> None:
    if successful < 0 or failed < 0:
        raise ValueError("prune_runs: successful and failed must be >= 0")


def check_claim_status(status: RunStatus) -> RunStatus:
    """The status a claimed pending run gets; ``ValueError`` for ``pending`` itself."""
    new_status = RunStatus(status)
    if new_status is RunStatus.PENDING:
        raise ValueError("claim_pending_run: the new status cannot be pending")
    return new_status


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


def run_values(run: NewRun, created_at: datetime) -> dict[str, Any]:
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
        # only when there are some: a row without them is written as before 0007
        **({} if run.params is None else {"params": dict(run.params)}),
    }


def new_run_record(run: NewRun, run_id: int, created_at: datetime) -> RunRecord:
    return RunRecord(
        id=run_id,
        task_name=run.task_name,
        slot=run.slot.astimezone(UTC),
        attempt=run.attempt,
        trigger=Trigger(run.trigger),
        status=RunStatus(run.status),
        replica=run.replica,
        fencing_token=run.fencing_token,
        created_at=as_utc(created_at),
        started_at=as_utc(run.started_at),
        finished_at=as_utc(run.finished_at),
        reason=run.reason,
        generation=run.generation,
        params=None if run.params is None else dict(run.params),
    )

"""The notification outbox of ``SQLStore`` (:class:`~reconciler.core.protocols.
NotificationStore`).

Rows are written by :func:`write_outbox` inside the transaction that writes a run's
final status or a missed slot (``update_run``/``insert_runs`` with ``notify``), so a
crash can never leave a recorded failure without its notifications, nor the reverse.

Claiming is one conditional ``UPDATE`` per candidate row (``status = 'pending' AND
next_attempt_at <= now AND (lease_until IS NULL OR lease_until < now)``), the same on
every backend: of two senders racing for a row, one updates it and the other matches
nothing. Writing back is guarded by ``claimed_by`` so a sender whose lease ran out (and
whose row another sender took over) cannot overwrite what the new holder writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, or_, select, update

from reconciler.core.outbox import (
    ATTEMPT_LOG_MAX,
    NewNotification,
    NotificationRecord,
    NotificationUpdate,
    OutboxStatus,
)
from reconciler.store.schema import notifications
from reconciler.store.sql_base import SQLBase, as_utc, check_aware, chunks, new_id

ERROR_MAX = 2000  # characters of a delivery error kept


def outbox_values(row: NewNotification) -> dict[str, Any]:
    return {
        "channel": row.channel, "task_name": row.task_name, "event": row.event,
        "event_id": row.event_id, "run_id": row.run_id, "body": dict(row.body),
        "status": OutboxStatus.PENDING.value, "attempts": 0, "repeats": 0,
        "created_at": row.created_at, "next_attempt_at": row.created_at,
    }


def write_outbox(conn: Connection, rows: Sequence[NewNotification]) -> list[int]:
    """Insert outbox rows on ``conn`` (the caller's transaction); return the ids of those
    written. A row whose (channel, event id) is taken is skipped by the database
    (``ON CONFLICT DO NOTHING`` / ``INSERT IGNORE``): an event is written once however
    many replicas or restarts decide it."""
    dialect = conn.dialect.name
    stmt = _insert_ignoring_duplicates(dialect)
    out: list[int] = []
    for row in rows:
        result = conn.execute(stmt, outbox_values(row))
        if dialect in ("sqlite", "postgresql"):
            first = result.first()  # RETURNING id: no row when the key was taken
            if first is not None:
                out.append(int(first[0]))
        elif result.rowcount == 1:
            out.append(new_id(result))
    return out


def _insert_ignoring_duplicates(dialect: str) -> Any:
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return (sqlite_insert(notifications)
                .on_conflict_do_nothing(index_elements=["channel", "event_id"])
                .returning(notifications.c.id))
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return (pg_insert(notifications)
                .on_conflict_do_nothing(index_elements=["channel", "event_id"])
                .returning(notifications.c.id))
    return insert(notifications).prefix_with("IGNORE")


def notification_record(row: Any) -> NotificationRecord:
    return NotificationRecord(
        id=row.id, channel=row.channel, task_name=row.task_name, event=row.event,
        event_id=row.event_id, run_id=row.run_id, body=dict(row.body),
        status=OutboxStatus(row.status), created_at=row.created_at,
        next_attempt_at=row.next_attempt_at, attempts=row.attempts, repeats=row.repeats,
        claimed_by=row.claimed_by, lease_until=row.lease_until, sent_at=row.sent_at,
        grouped_into=row.grouped_into, last_status_code=row.last_status_code,
        last_error=row.last_error, attempt_log=tuple(row.attempt_log or ()),
    )


def update_values(
    update_: NotificationUpdate, current: NotificationRecord
) -> dict[str, Any]:
    """The columns a sender's write-back sets (the claim is released)."""
    values: dict[str, Any] = {"status": update_.status.value, "claimed_by": None,
                              "lease_until": None}
    if update_.next_attempt_at is not None:
        values["next_attempt_at"] = update_.next_attempt_at
    if update_.repeats is not None:
        values["repeats"] = update_.repeats
    if update_.sent_at is not None:
        values["sent_at"] = update_.sent_at
    if update_.grouped_into is not None:
        values["grouped_into"] = update_.grouped_into
    attempt = update_.attempt
    if attempt is not None:
        error = None if attempt.error is None else attempt.error[:ERROR_MAX]
        values["attempts"] = current.attempts + 1
        values["last_status_code"] = attempt.status_code
        values["last_error"] = error
        log = [*current.attempt_log, {**attempt.doc(), "error": error}]
        values["attempt_log"] = log[-ATTEMPT_LOG_MAX:]
    return values


class SQLOutbox(SQLBase):
    """:class:`~reconciler.core.protocols.NotificationStore` on SQL."""

    def add_notifications(self, rows: Sequence[NewNotification]) -> list[int]:
        for row in rows:
            check_aware(created_at=row.created_at)
        with self._errors("write notifications"), self.engine.begin() as conn:
            return write_outbox(conn, rows)

    def claim_notifications(
        self, *, replica: str, now: datetime, lease: timedelta, limit: int = 100,
        takeover: bool = False,
    ) -> list[NotificationRecord]:
        check_aware(now=now)
        due = [notifications.c.status == OutboxStatus.PENDING.value,
               notifications.c.next_attempt_at <= now]
        if not takeover:
            due.append(or_(notifications.c.lease_until.is_(None),
                           notifications.c.lease_until < now))
        with self._errors("find due notifications"), self.engine.connect() as conn:
            ids = list(conn.execute(
                select(notifications.c.id).where(*due).order_by(notifications.c.id)
                .limit(limit)).scalars())
        if not ids:
            return []
        stmt = (update(notifications).where(notifications.c.id == bindparam("b_id"), *due)
                .values(claimed_by=replica, lease_until=now + lease))
        claimed: list[int] = []
        with self._errors("claim notifications"), self.engine.begin() as conn:
            for row_id in ids:
                if conn.execute(stmt, {"b_id": row_id}).rowcount == 1:
                    claimed.append(row_id)
            out: list[NotificationRecord] = []
            for chunk in chunks(claimed):
                rows = conn.execute(select(notifications).where(notifications.c.id.in_(chunk))
                                    .order_by(notifications.c.id))
                out.extend(notification_record(r) for r in rows)
        return out

    def finish_notifications(
        self, updates: Sequence[NotificationUpdate], *, replica: str
    ) -> int:
        if not updates:
            return 0
        by_id = {u.id: u for u in updates}
        written = 0
        with self._errors("record notification attempts"), self.engine.begin() as conn:
            for chunk in chunks(sorted(by_id)):
                rows = conn.execute(select(notifications).where(
                    notifications.c.id.in_(chunk), notifications.c.claimed_by == replica))
                for row in rows.all():
                    current = notification_record(row)
                    result = conn.execute(
                        update(notifications)
                        .where(notifications.c.id == current.id,
                               notifications.c.claimed_by == replica)
                        .values(**update_values(by_id[current.id], current)))
                    written += result.rowcount
        return written

    def last_sent(
        self, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], datetime]:
        wanted = set(keys)
        if not wanted:
            return {}
        n = notifications.c
        out: dict[tuple[str, str, str], datetime] = {}
        with self._errors("read the last notifications sent"), self.engine.connect() as conn:
            for chunk in chunks(sorted({k[1] for k in wanted})):
                stmt = (select(n.channel, n.task_name, n.event, func.max(n.sent_at))
                        .where(n.task_name.in_(chunk), n.sent_at.is_not(None))
                        .group_by(n.channel, n.task_name, n.event))
                for channel, task, event, at in conn.execute(stmt):
                    value = as_utc(at)
                    if (channel, task, event) in wanted and value is not None:
                        out[(channel, task, event)] = value
        return out

    def list_notifications(
        self, task_name: str | None = None, *, limit: int = 50,
        statuses: Sequence[OutboxStatus] = (),
    ) -> list[NotificationRecord]:
        stmt = select(notifications).order_by(notifications.c.id.desc()).limit(limit)
        if task_name is not None:
            stmt = stmt.where(notifications.c.task_name == task_name)
        if statuses:
            stmt = stmt.where(notifications.c.status.in_(
                [OutboxStatus(s).value for s in statuses]))
        with self._errors("list notifications"), self.engine.connect() as conn:
            return [notification_record(r) for r in conn.execute(stmt)]

    def notification_counts(self) -> dict[str, int]:
        stmt = select(notifications.c.status, func.count()).group_by(notifications.c.status)
        with self._errors("count notifications"), self.engine.connect() as conn:
            return {status: int(count) for status, count in conn.execute(stmt)}


def counts_of(records: Mapping[int, NotificationRecord]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records.values():
        out[r.status.value] = out.get(r.status.value, 0) + 1
    return out

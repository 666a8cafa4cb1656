"""The notification outbox of ``MemoryStore``, with the rules of
:mod:`reconciler.store.sql_outbox` (the contract suite runs over both)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from reconciler.core.outbox import (
    NewNotification,
    NotificationRecord,
    NotificationUpdate,
    OutboxStatus,
)
from reconciler.store.sql_base import check_aware
from reconciler.store.sql_outbox import counts_of, update_values
from reconciler.store.types import dumps_json


class MemoryOutbox:
    """:class:`~reconciler.core.protocols.NotificationStore` in memory."""

    _lock: threading.RLock

    def __init__(self) -> None:
        self._outbox: dict[int, NotificationRecord] = {}
        self._next_outbox_id = 1
        self._event_keys: set[tuple[str, str]] = set()  # (channel, event id): one row each

    def _write_outbox(self, rows: Sequence[NewNotification]) -> list[int]:
        """Insert rows (lock held): all of them or, when one is bad, none; a row whose
        (channel, event id) is taken is skipped."""
        records: list[NotificationRecord] = []
        new: set[tuple[str, str]] = set()
        for row in rows:
            check_aware(created_at=row.created_at)
            key = (row.channel, row.event_id)
            if key in self._event_keys or key in new:
                continue  # one row per (channel, event id), as the unique index says
            new.add(key)
            at = row.created_at.astimezone(UTC)
            records.append(NotificationRecord(
                id=self._next_outbox_id + len(records), channel=row.channel,
                task_name=row.task_name,
                event=row.event, event_id=row.event_id, run_id=row.run_id,
                body=json.loads(dumps_json(dict(row.body))), status=OutboxStatus.PENDING,
                created_at=at, next_attempt_at=at,
            ))
        for record in records:
            self._outbox[record.id] = record
        self._event_keys |= new
        self._next_outbox_id += len(records)
        return [r.id for r in records]

    def add_notifications(self, rows: Sequence[NewNotification]) -> list[int]:
        with self._lock:
            return self._write_outbox(rows)

    def claim_notifications(
        self, *, replica: str, now: datetime, lease: timedelta, limit: int = 100,
        takeover: bool = False,
    ) -> list[NotificationRecord]:
        check_aware(now=now)
        with self._lock:
            out: list[NotificationRecord] = []
            for row_id in sorted(self._outbox):
                row = self._outbox[row_id]
                if len(out) >= limit:
                    break
                if row.status is not OutboxStatus.PENDING or row.next_attempt_at > now:
                    continue
                if not takeover and row.lease_until is not None and row.lease_until >= now:
                    continue
                row = self._outbox[row_id] = replace(
                    row, claimed_by=replica, lease_until=(now + lease).astimezone(UTC))
                out.append(row)
            return out

    def finish_notifications(
        self, updates: Sequence[NotificationUpdate], *, replica: str
    ) -> int:
        written = 0
        with self._lock:
            for update in {u.id: u for u in updates}.values():
                current = self._outbox.get(update.id)
                if current is None or current.claimed_by != replica:
                    continue
                values = update_values(update, current)
                values["status"] = OutboxStatus(values["status"])
                values["attempt_log"] = tuple(values.get("attempt_log", current.attempt_log))
                for key in ("next_attempt_at", "sent_at", "lease_until"):
                    if values.get(key) is not None:
                        check_aware(value=values[key])
                        values[key] = values[key].astimezone(UTC)
                self._outbox[update.id] = replace(current, **values)
                written += 1
        return written

    def last_sent(
        self, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], datetime]:
        wanted = set(keys)
        out: dict[tuple[str, str, str], datetime] = {}
        with self._lock:
            for row in self._outbox.values():
                if row.sent_at is None or row.key not in wanted:
                    continue
                if row.key not in out or out[row.key] < row.sent_at:
                    out[row.key] = row.sent_at
        return out

    def list_notifications(
        self, task_name: str | None = None, *, limit: int = 50,
        statuses: Sequence[OutboxStatus] = (),
    ) -> list[NotificationRecord]:
        wanted = {OutboxStatus(s) for s in statuses}
        with self._lock:
            rows = [r for r in self._outbox.values()
                    if (task_name is None or r.task_name == task_name)
                    and (not wanted or r.status in wanted)]
        return sorted(rows, key=lambda r: r.id, reverse=True)[: max(0, limit)]

    def notification_counts(self) -> dict[str, int]:
        with self._lock:
            return counts_of(self._outbox)

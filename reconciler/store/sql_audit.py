"""The audit log (one row per operator action) and the replicas' status rows."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    bindparam,
    case,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from reconciler.store.schema import audit, replicas
from reconciler.store.sql_base import (
    SQLBase,
    check_aware,
    new_id,
)


class SQLAudit(SQLBase):
    """:class:`~reconciler.core.protocols.AuditStore`."""

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
        check_aware(at=at)
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
            return new_id(conn.execute(insert(audit), values))

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


class SQLReplicas(SQLBase):
    """:class:`~reconciler.core.protocols.ReplicaStore`."""

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
        check_aware(now=now)
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
            identity = replica_identity(document)
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
        check_aware(before=before)
        stmt = delete(replicas).where(
            or_(replicas.c.stopped_at < before, replicas.c.heartbeat_at < before)
        )
        with self._errors("delete stale replicas"), self.engine.begin() as conn:
            return int(conn.execute(stmt).rowcount)


def replica_identity(status: Mapping[str, Any]) -> dict[str, Any]:
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

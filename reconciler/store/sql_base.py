"""What every part of ``SQLStore`` shares: the engine, error mapping and row decoding.

Errors
    Driver errors (server down, lock timeouts, ...) become :class:`StoreError` naming the
    database URL with its password hidden. A naive ``datetime`` passed in is refused with
    ``ValueError`` before anything is written.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final, Self

from alembic.util import CommandError
from sqlalchemy import (
    ColumnElement,
    type_coerce,
)
from sqlalchemy.engine import URL, CursorResult, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.types import NullType

from reconciler.core.clock import Clock, SystemClock
from reconciler.core.errors import (
    ReconcilerError,
    StoreError,
)
from reconciler.core.runtime import (
    ActualTask,
    RunRecord,
    RunStatus,
    SuspendOverride,
    Trigger,
)
from reconciler.store import migrate
from reconciler.store.engine import default_database_url, make_engine, safe_url
from reconciler.store.schema import runs, tasks
from reconciler.store.types import UTCDateTime, loads_json, utc_from_db

ACTIVE_STATUSES: Final = (RunStatus.PENDING.value, RunStatus.RUNNING.value)
CHUNK: Final = 500  # names/ids per IN (...) list; SQLite caps bound parameters


def _raw(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """The column without SQLAlchemy's per-value result processing (decoded in ``task_records``)."""
    return type_coerce(column, NullType()).label(column.key)


# Reading 10,000 tasks is on the daemon's start-up path. SQLAlchemy's JSON and datetime
# result processors cost more than the query itself there, so the JSON document and
# the timestamps come back raw and ``task_records`` decodes them with the same functions the
# column types use (``loads_json``, ``utc_from_db``). Order matters: ``task_records`` unpacks.
TASK_COLUMNS = (
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

RUN_ORDER = (runs.c.slot.desc(), runs.c.attempt.desc(), runs.c.id.desc())


class SQLBase:
    """The engine, the clock and the error mapping every port of ``SQLStore`` uses.

    ``SQLBase(url)`` connects lazily (nothing happens until the first call); ``url``
    defaults to :func:`~reconciler.store.engine.default_database_url`. Pass ``engine``
    to reuse an existing engine, and ``clock`` to control ``runs.created_at``.
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

    def __enter__(self) -> Self:
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
                f"cannot {action}: database {self.url}: {first_line(exc.orig)}"
            ) from exc
        except StatementError as exc:
            # Raised while binding parameters, e.g. a naive datetime: the caller's mistake.
            if isinstance(exc.orig, ValueError | TypeError):
                raise exc.orig from None
            raise StoreError(f"cannot {action}: database {self.url}: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot {action}: database {self.url}: {exc}") from exc


# ---------------------------------------------------------------------------- helpers


def new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None or key[0] is None:  # pragma: no cover - every backend reports it
        raise StoreError("the database did not report the id of the inserted row")
    return int(key[0])


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def first_line(error: BaseException | None) -> str:
    text = str(error).strip() if error is not None else "unknown error"
    return text.splitlines()[0] if text else type(error).__name__


def as_utc(value: datetime | None) -> datetime | None:
    """What a value looks like after a round trip (UTC, aware); validated on insert."""
    return None if value is None else value.astimezone(UTC)


def iso(value: datetime) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def task_records(rows: Iterable[Any]) -> list[ActualTask]:
    """Build ``ActualTask`` values from rows of ``TASK_COLUMNS`` (raw JSON and timestamps).

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
def gc_paused() -> Iterator[None]:
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


def check_aware(**values: datetime | None) -> None:
    """Refuse naive datetimes up front (as the column type would, but before any query)."""
    for value in values.values():
        if value is not None:
            _UTC_TYPE.process_bind_param(value, None)  # type: ignore[arg-type]


def run_record(row: Any) -> RunRecord:
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
        params=row.params,
    )

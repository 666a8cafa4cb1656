"""Column types that behave the same on SQLite, PostgreSQL and MariaDB.

Why timestamps are stored as *naive UTC*:

* The three backends disagree about time zones. SQLite has no datetime type at all
  (SQLAlchemy stores ISO text), MariaDB's ``DATETIME`` has no zone and ``TIMESTAMP``
  silently converts through the session time zone and ends in 2038, and PostgreSQL's
  ``timestamptz`` returns values in the session zone. The one representation all three
  store and compare identically is "wall-clock UTC without an offset".
* So :class:`UTCDateTime` converts every aware value to UTC and drops the offset on
  the way in, and re-attaches ``UTC`` on the way out. Python code only ever sees aware
  UTC values; the database only ever sees naive UTC values.
* A *naive* value handed to the store is refused (``ValueError``): we cannot know
  whether it meant local time or UTC, and guessing wrong shifts schedules by hours.
* Microseconds matter (run slots and heartbeats are compared for equality), so MariaDB
  gets ``DATETIME(6)``; PostgreSQL's ``timestamp`` and SQLite's text keep microseconds
  already. SQLite's text form is fixed-width, so string order is time order.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Text
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

MYSQL_DIALECTS = ("mysql", "mariadb")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC ``datetime`` in Python, naive UTC (microsecond precision) in SQL."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in MYSQL_DIALECTS:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} refused: the store needs timezone-aware "
                "values (use datetime.now(UTC) or .replace(tzinfo=UTC))"
            )
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return utc_from_db(value)


def utc_from_db(value: datetime | str | None) -> datetime | None:
    """Turn what a driver returned for a ``UTCDateTime`` column into an aware UTC value.

    Also used directly on raw rows by the bulk read path, which skips SQLAlchemy's
    per-value type processing (SQLite hands back the ISO text it stored).
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is not None:  # a driver that returned an aware value after all
        return value.astimezone(UTC)
    return value.replace(tzinfo=UTC)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps_json(value: Any) -> str:
    """The JSON serializer of every engine: compact, UTF-8 kept as is."""
    return _ENCODER.encode(value)


def loads_json(value: Any) -> Any:
    """Decode a raw JSON column value (PostgreSQL drivers return it decoded already)."""
    if isinstance(value, str | bytes | bytearray):
        return json.loads(value)
    return value


def json_type() -> TypeEngine[Any]:
    """JSON everywhere; ``jsonb`` on PostgreSQL (compact, and it can be indexed later)."""
    return JSON().with_variant(postgresql.JSONB(), "postgresql")


def long_text() -> TypeEngine[str]:
    """Unbounded text; MariaDB's plain ``TEXT`` stops at 64 KiB, so it gets ``MEDIUMTEXT``."""
    return Text().with_variant(mysql.MEDIUMTEXT(), *MYSQL_DIALECTS)

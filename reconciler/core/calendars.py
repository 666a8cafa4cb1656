"""The Calendar manifest (``apiVersion: reconciler/v1``, ``kind: Calendar``): days and
hours when the tasks that name it in ``spec.calendars`` do not run.

``spec.exclude`` lists, in the calendar's ``spec.timeZone``:

* a date, ``2026-12-25``;
* a date range, ``{from: 2026-12-24, to: 2026-12-26}`` (both days included);
* a yearly date, ``12-25`` (every December 25; ``02-29`` only in leap years);
* a weekly window, ``{days: [Sat, Sun]}`` (whole days) or
  ``{days: [Fri], from: "18:00", to: "23:59"}`` (both minutes included).

A slot is excluded when its local time in the calendar's zone falls in any of them
(:meth:`Calendar.excludes`): it does not run, is not recorded and is not caught up.
:class:`Calendar` is an :class:`~reconciler.core.scheduling.Exclusion`; the task's
:class:`~reconciler.core.scheduling.TaskSlots` step over what it removes.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
)

from reconciler.core.model import Metadata, NamedDef, spec_hash, valid_zone
from reconciler.core.model_base import _Frozen
from reconciler.core.schedule import check_time_zone
from reconciler.core.scheduling import FieldProblem

CALENDAR_KIND = "Calendar"
#: At most this many items in one ``spec.exclude``.
MAX_EXCLUDE = 1000
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # date.weekday() order
_DAYS = {name.lower(): i for i, name in enumerate(DAY_NAMES)}
_YEARLY = re.compile(r"^(\d{2})-(\d{2})$")
_TIME = re.compile(r"^(\d{2}):(\d{2})$")


def _date(value: object) -> str:
    """A date (``2026-12-25``, also a YAML date) in canonical form."""
    if isinstance(value, datetime):
        raise ValueError(f"expected a date (2026-12-25), got a time {value.isoformat()}")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            return date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise ValueError(f"expected a date (2026-12-25), got {value!r}")


def _day(value: object) -> str:
    """A date or a yearly date (``12-25``)."""
    if isinstance(value, str) and _YEARLY.match(value.strip()):
        text = value.strip()
        try:
            date(2000, int(text[:2]), int(text[3:]))  # 2000: February 29 exists
        except ValueError:
            raise ValueError(f"{text!r} is not a day of the year (MM-DD, e.g. 12-25)") from None
        return text
    try:
        return _date(value)
    except ValueError:
        raise ValueError(
            f"expected a date (2026-12-25) or a yearly date (12-25), got {value!r}") from None


def _clock(value: object) -> str:
    """``HH:MM`` (00:00 to 23:59)."""
    match = _TIME.match(value) if isinstance(value, str) else None
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(f"expected a time of day HH:MM from 00:00 to 23:59, got {value!r}")
    return value  # type: ignore[return-value]


def _day_name(value: object) -> str:
    index = _DAYS.get(value.lower()) if isinstance(value, str) else None
    if index is None:
        raise ValueError(f"unknown day {value!r} (use {', '.join(DAY_NAMES)})")
    return DAY_NAMES[index]


DateText = Annotated[str, BeforeValidator(_date), WithJsonSchema(
    {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"})]
DayText = Annotated[str, BeforeValidator(_day), WithJsonSchema(
    {"type": "string", "pattern": r"^([0-9]{4}-)?[0-9]{2}-[0-9]{2}$",
     "description": "A date (2026-12-25) or a yearly date (12-25)."})]
ClockText = Annotated[str, BeforeValidator(_clock), WithJsonSchema(
    {"type": "string", "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9]$"})]
DayName = Annotated[str, BeforeValidator(_day_name), WithJsonSchema(
    {"type": "string", "enum": list(DAY_NAMES)})]


class DateRange(_Frozen):
    """From one date to another, both included."""

    from_: DateText = Field(alias="from")
    to: DateText


class Weekly(_Frozen):
    """Days of the week, whole or from one minute to another (both included)."""

    days: list[DayName] = Field(min_length=1, max_length=7)
    from_: ClockText = Field(default="00:00", alias="from")
    to: ClockText = "23:59"

    @field_validator("days")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a day is listed twice")
        return value


def _item_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "weekly" if "days" in value else "range"
    if isinstance(value, DateRange | Weekly):
        return "weekly" if isinstance(value, Weekly) else "range"
    return "day"


ExcludeItem = Annotated[
    Annotated[DayText, Tag("day")] | Annotated[DateRange, Tag("range")]
    | Annotated[Weekly, Tag("weekly")],
    Discriminator(_item_kind),
]


class CalendarSpec(_Frozen):
    """Where the exclusions are read (``timeZone``) and what they are."""

    time_zone: str = Field(default="UTC", max_length=128, description="IANA time zone name.")
    exclude: list[ExcludeItem] = Field(
        min_length=1, max_length=MAX_EXCLUDE,
        description="Dates (2026-12-25), date ranges ({from, to}, inclusive), yearly dates "
                    "(12-25) and weekly windows ({days: [Sat, Sun]} or {days: [Fri], "
                    "from: '18:00', to: '23:59'}) in timeZone.")

    @field_validator("time_zone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        return valid_zone(value)


class CalendarManifest(_Frozen):
    """One ``kind: Calendar`` document."""

    model_config = ConfigDict(
        title="Calendar",
        json_schema_extra={"description": "A reconciler Calendar manifest (apiVersion "
                           "reconciler/v1): when the tasks that name it do not run."},
    )

    api_version: Literal["reconciler/v1"] = Field(alias="apiVersion")
    kind: Literal["Calendar"]
    metadata: Metadata
    spec: CalendarSpec


@dataclass(frozen=True, slots=True)
class CalendarDef(NamedDef):
    """A validated ``kind: Calendar`` as found in the manifests."""


def calendar_def(manifest: CalendarManifest, source_file: str,
                 source_line: int = 1) -> CalendarDef:
    """The inner form: the canonical document (defaults left out) and its hash."""
    doc: dict[str, Any] = manifest.model_dump(mode="json", exclude_defaults=True)
    return CalendarDef(manifest.metadata.name, doc, spec_hash(doc), source_file, source_line)


def check_calendar(manifest: CalendarManifest) -> list[FieldProblem]:
    """What the items cannot say alone: a range or a window that ends before it starts,
    and date ranges that overlap (or contain a listed date)."""
    problems: list[FieldProblem] = []
    spans: list[tuple[date, date, int]] = []
    for i, item in enumerate(manifest.spec.exclude):
        if isinstance(item, DateRange):
            start, end = date.fromisoformat(item.from_), date.fromisoformat(item.to)
            if end < start:
                problems.append(FieldProblem(("spec", "exclude", i, "to"), (
                    f"range ends ({item.to}) before it starts ({item.from_})")))
                continue
            spans.append((start, end, i))
        elif isinstance(item, Weekly) and item.to < item.from_:
            problems.append(FieldProblem(("spec", "exclude", i, "to"), (
                f"window ends ({item.to}) before it starts ({item.from_}); a window across "
                "midnight is two items")))
        elif isinstance(item, str) and len(item) == 10:
            day = date.fromisoformat(item)
            spans.append((day, day, i))
    spans.sort()
    for (a_start, a_end, a), (b_start, b_end, b) in itertools.pairwise(spans):
        if b_start <= a_end:
            first, second = min(a, b), max(a, b)
            problems.append(FieldProblem(("spec", "exclude", second), (
                f"overlaps spec.exclude[{first}] ({a_start}..{a_end} and "
                f"{b_start}..{b_end}); merge them into one range")))
    return problems


# ------------------------------------------------------------------------ the rule


def _minutes(text: str) -> int:
    return int(text[:2]) * 60 + int(text[3:])


@dataclass(frozen=True, slots=True)
class Calendar:
    """A calendar as an :class:`~reconciler.core.scheduling.Exclusion`: compares by
    value, so a changed calendar is a changed policy for the tasks that use it."""

    name: str
    time_zone: str
    dates: frozenset[date] = frozenset()
    ranges: tuple[tuple[date, date], ...] = ()
    yearly: frozenset[tuple[int, int]] = frozenset()
    #: (weekdays, first minute, last minute), Monday = 0
    weekly: tuple[tuple[frozenset[int], int, int], ...] = ()

    @classmethod
    def of(cls, manifest: CalendarManifest) -> Calendar:
        dates, ranges, yearly, weekly = set(), [], set(), []
        for item in manifest.spec.exclude:
            if isinstance(item, DateRange):
                ranges.append((date.fromisoformat(item.from_), date.fromisoformat(item.to)))
            elif isinstance(item, Weekly):
                days = frozenset(_DAYS[d.lower()] for d in item.days)
                weekly.append((days, _minutes(item.from_), _minutes(item.to)))
            elif len(item) == 5:
                yearly.add((int(item[:2]), int(item[3:])))
            else:
                dates.add(date.fromisoformat(item))
        return cls(manifest.metadata.name, manifest.spec.time_zone, frozenset(dates),
                   tuple(ranges), frozenset(yearly), tuple(weekly))

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Calendar:
        """A stored canonical document, validated again."""
        return cls.of(CalendarManifest.model_validate(document))

    def excludes(self, slot: datetime) -> bool:
        """Whether ``slot``'s local time in :attr:`time_zone` falls in an exclusion."""
        local = slot.astimezone(check_time_zone(self.time_zone))
        day = local.date()
        if day in self.dates or (day.month, day.day) in self.yearly:
            return True
        if any(start <= day <= end for start, end in self.ranges):
            return True
        minute = local.hour * 60 + local.minute
        weekday = day.weekday()
        return any(weekday in days and first <= minute <= last
                   for days, first, last in self.weekly)


def calendars_of(documents: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Calendar]:
    """``{name: Calendar}`` of stored documents; one this version cannot read is left
    out (its tasks run as if it excluded nothing)."""
    out = {}
    for name, document in documents:
        try:
            out[name] = Calendar.from_document(document)
        except ValueError:
            continue
    return out


class _Named(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def document(self) -> dict[str, Any]: ...


def calendars_of_rows(rows: Iterable[_Named]) -> dict[str, Calendar]:
    """:func:`calendars_of` the stored rows or declared calendars (``name``, ``document``)."""
    return calendars_of((row.name, row.document) for row in rows)


def task_calendars(spec: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The calendars a task's stored ``spec`` names, in order."""
    names = (spec or {}).get("calendars", ())
    return tuple(names) if isinstance(names, list | tuple) else ()


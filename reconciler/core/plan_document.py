"""The JSON form of a :class:`~reconciler.core.plan.Plan` (``reconciler diff -o json``).

The document is described by frozen pydantic models so that ``specs/plan.schema.json``
is generated from the same code that produces the output; a test fails when the
committed schema is stale. Secrets in field values are masked
(:mod:`reconciler.core.redaction`). Unchanged tasks are counted, not listed, so the document
stays small for large installations.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reconciler.core.channels import channel_type
from reconciler.core.impact import LOAD_DAYS, SLOT_DAYS, Impact, LoadPeak
from reconciler.core.plan import (
    Action,
    ChannelChange,
    FieldChange,
    ObjectChange,
    Plan,
    TaskChange,
)
from reconciler.core.redaction import redact_change


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlanSummary(_Doc):
    create: int
    update: int
    delete: int
    unchanged: int
    keep: int = Field(description="Tasks left as they are because their manifests have errors.")
    errors: int


class FieldChangeDoc(_Doc):
    path: str = Field(description="Dotted field path, e.g. spec.schedule or source.file.")
    old: Any = Field(description="Value in the runtime table (null when unset); secrets "
                                 "masked as ***.")
    new: Any = Field(description="Value in the manifests (null when unset); secrets masked "
                                 "as ***.")
    masked: bool = Field(default=False, description="Secrets in old or new are masked: the "
                         "field did change, even when both sides look the same.")


class SlotChangeDoc(_Doc):
    added: int = Field(description="Slots the new schedule has and the old one has not.")
    removed: int = Field(description="Slots the old schedule has and the new one has not.")
    days: int = Field(description="The window counted, from now.")


class ChangeDoc(_Doc):
    name: str
    action: Literal["create", "update", "delete", "keep"]
    sourceFile: str | None
    schedule: str | None = Field(description="The schedule as one line (several expressions "
                                             "joined by '; ').")
    timeZone: str | None
    reason: str | None = None
    fields: list[FieldChangeDoc] = []
    slots: SlotChangeDoc | None = Field(
        default=None, description="For an update that changes when the task runs (schedule, "
                                  "time zone, active window).")


class ChannelChangeDoc(_Doc):
    name: str
    action: Literal["create", "update", "delete", "keep"]
    type: Literal["webhook", "slack", "email"]
    sourceFile: str
    reason: str | None = None
    fields: list[FieldChangeDoc] = []


class CalendarChangeDoc(_Doc):
    name: str
    action: Literal["create", "update", "delete", "keep"]
    timeZone: str
    exclusions: int = Field(description="How many items spec.exclude lists.")
    sourceFile: str
    reason: str | None = None
    fields: list[FieldChangeDoc] = []
    slots: SlotChangeDoc | None = Field(
        default=None, description="What the change adds and removes for the tasks that name "
                                  "the calendar (reconciler diff).")


class ErrorDoc(_Doc):
    file: str
    line: int | None
    column: int | None
    task: str | None
    field: str | None
    message: str


class DriftDoc(_Doc):
    name: str
    message: str
    suspended: bool
    note: str | None
    actor: str | None
    at: str | None


class LoadPeakDoc(_Doc):
    starts: int = Field(description="The most slots that start in one minute.")
    at: str | None = Field(description="The first such minute, UTC (null: no starts).")
    text: str = Field(description="The minute as 'Sun 02:00 UTC'.")


class LoadDoc(_Doc):
    days: int = Field(description="The window, from now.")
    before: LoadPeakDoc = Field(description="With the runtime table as it is.")
    after: LoadPeakDoc = Field(description="Once the plan is applied.")
    maxConcurrentRuns: int = Field(description="The daemon's pool (--max-concurrent-runs).")


class PlanDocument(_Doc):
    """What ``reconciler diff -o json`` prints."""

    model_config = ConfigDict(title="Plan")

    apiVersion: Literal["reconciler/v1"] = "reconciler/v1"
    kind: Literal["Plan"] = "Plan"
    hasChanges: bool
    refused: bool
    refusals: list[str]
    summary: PlanSummary
    changes: list[ChangeDoc]
    errors: list[ErrorDoc]
    drift: list[DriftDoc]
    channels: list[ChannelChangeDoc] = Field(
        default=[], description="Changes of kind: Channel manifests (unchanged ones left out).")
    calendars: list[CalendarChangeDoc] = Field(
        default=[], description="Changes of kind: Calendar manifests (unchanged ones left "
                                "out).")
    load: LoadDoc | None = Field(
        default=None, description="Slots starting in the same minute, before and after "
                                  "(reconciler diff).")


def _change_doc(change: TaskChange, impact: Impact | None) -> ChangeDoc:
    source = change.desired or change.actual
    assert source is not None
    delta = impact.deltas.get(change.name) if impact is not None else None
    return ChangeDoc(
        name=change.name,
        action=change.action.value,
        sourceFile=source.source_file,
        schedule=source.schedule,
        timeZone=source.time_zone,
        reason=change.reason,
        fields=[_field_doc(f) for f in change.changes],
        slots=SlotChangeDoc(added=delta.added, removed=delta.removed, days=SLOT_DAYS)
        if delta is not None else None,
    )


def _channel_doc(change: ChannelChange) -> ChannelChangeDoc:
    source = change.desired or change.actual
    assert source is not None
    return ChannelChangeDoc(
        name=change.name,
        action=change.action.value,
        type=channel_type(source.document),
        sourceFile=source.source_file,
        reason=change.reason,
        fields=[_field_doc(f) for f in change.changes],
    )


def _calendar_doc(change: ObjectChange, impact: Impact | None) -> CalendarChangeDoc:
    source = change.desired or change.actual
    assert source is not None
    spec = source.document.get("spec", {})
    delta = impact.calendar_deltas.get(change.name) if impact is not None else None
    return CalendarChangeDoc(
        name=change.name,
        action=change.action.value,
        timeZone=spec.get("timeZone", "UTC"),
        exclusions=len(spec.get("exclude", ())),
        sourceFile=source.source_file,
        reason=change.reason,
        fields=[_field_doc(f) for f in change.changes],
        slots=SlotChangeDoc(added=delta.added, removed=delta.removed, days=SLOT_DAYS)
        if delta is not None else None,
    )


def _peak_doc(peak: LoadPeak) -> LoadPeakDoc:
    return LoadPeakDoc(starts=peak.starts,
                       at=peak.minute.isoformat() if peak.minute else None, text=peak.text)


def load_doc(impact: Impact, max_concurrent_runs: int) -> LoadDoc:
    return LoadDoc(days=LOAD_DAYS, before=_peak_doc(impact.before),
                   after=_peak_doc(impact.after), maxConcurrentRuns=max_concurrent_runs)


def _field_doc(change: FieldChange) -> FieldChangeDoc:
    old, new, masked = redact_change(change.path, change.old, change.new)
    return FieldChangeDoc(path=change.path, old=old, new=new, masked=masked)


def plan_document(plan: Plan, impact: Impact | None = None,
                  max_concurrent_runs: int = 16) -> PlanDocument:
    """The plan as JSON; with ``impact`` (``diff``) the slot counts and the load too."""
    return PlanDocument(
        hasChanges=plan.has_changes,
        refused=plan.refused,
        refusals=list(plan.refusals),
        summary=PlanSummary(
            create=plan.count(Action.CREATE),
            update=plan.count(Action.UPDATE),
            delete=plan.count(Action.DELETE),
            unchanged=plan.count(Action.UNCHANGED),
            keep=plan.count(Action.KEEP),
            errors=len(plan.errors),
        ),
        changes=[_change_doc(c, impact) for c in plan.changes
                 if c.action is not Action.UNCHANGED],
        errors=[ErrorDoc(**e.to_json()) for e in plan.errors],
        drift=[
            DriftDoc(
                name=d.name,
                message=d.message,
                suspended=d.override.suspended,
                note=d.override.note,
                actor=d.override.actor,
                at=d.override.at.isoformat() if d.override.at else None,
            )
            for d in plan.drift
        ],
        channels=[_channel_doc(c) for c in plan.channels if c.action is not Action.UNCHANGED],
        calendars=[_calendar_doc(c, impact) for c in plan.calendars
                   if c.action is not Action.UNCHANGED],
        load=load_doc(impact, max_concurrent_runs) if impact is not None else None,
    )

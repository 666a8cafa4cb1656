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
from reconciler.core.plan import Action, ChannelChange, FieldChange, Plan, TaskChange
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


class ChangeDoc(_Doc):
    name: str
    action: Literal["create", "update", "delete", "keep"]
    sourceFile: str | None
    schedule: str | None
    timeZone: str | None
    reason: str | None = None
    fields: list[FieldChangeDoc] = []


class ChannelChangeDoc(_Doc):
    name: str
    action: Literal["create", "update", "delete", "keep"]
    type: Literal["webhook", "slack", "email"]
    sourceFile: str
    reason: str | None = None
    fields: list[FieldChangeDoc] = []


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


def _change_doc(change: TaskChange) -> ChangeDoc:
    source = change.desired or change.actual
    assert source is not None
    return ChangeDoc(
        name=change.name,
        action=change.action.value,
        sourceFile=source.source_file,
        schedule=source.schedule,
        timeZone=source.time_zone,
        reason=change.reason,
        fields=[_field_doc(f) for f in change.changes],
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


def _field_doc(change: FieldChange) -> FieldChangeDoc:
    old, new, masked = redact_change(change.path, change.old, change.new)
    return FieldChangeDoc(path=change.path, old=old, new=new, masked=masked)


def plan_document(plan: Plan) -> PlanDocument:
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
        changes=[_change_doc(c) for c in plan.changes if c.action is not Action.UNCHANGED],
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
    )

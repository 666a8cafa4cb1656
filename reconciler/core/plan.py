"""``plan(desired, actual) -> Plan``: the pure heart of reconciliation.

Like kopf's ``diff()``, planning has no side effects and returns an immutable value.
Everything that writes (the store's ``apply``) consumes a :class:`Plan`, so the dry-run
``reconciler diff`` and the real ``reconciler apply`` can never disagree about what
would happen.

The GitOps safety rules live here, where they can be tested one by one:

* a task whose source file now fails to load is **kept** unchanged, never deleted;
* a name declared twice is frozen (both definitions are in doubt);
* an empty or missing manifests directory deletes nothing unless ``allow_empty``;
* deleting more than ``max_delete`` tasks is refused unless ``force``;
* a runtime suspend override is reported as drift and never undone by apply.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from reconciler.core.model import DesiredState, ManifestError, NamedDef, TaskDef, TaskManifest
from reconciler.core.runtime import ActualObject, ActualTask, SuspendOverride

UNSET: Any = None  # how an absent value prints in a field change


class Action(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    UNCHANGED = "unchanged"
    KEEP = "keep"  # frozen by an error: left exactly as it is in the table


class FieldChange(NamedTuple):
    path: str
    old: Any
    new: Any


class TaskChange(NamedTuple):
    """What happens to one task. A NamedTuple: immutable, and cheap to build ten
    thousand of on every plan."""

    name: str
    action: Action
    desired: TaskDef | None = None
    actual: ActualTask | None = None
    changes: tuple[FieldChange, ...] = ()
    reason: str | None = None

    @property
    def spec_changed(self) -> bool:
        """True when the generation must be bumped (the spec, not just the source, changed)."""
        return (
            self.action is Action.UPDATE
            and self.desired is not None
            and self.actual is not None
            and self.desired.hash != self.actual.hash
        )


class ObjectChange(NamedTuple):
    """What happens to one ``kind: Channel`` or ``kind: Calendar`` (the same actions as
    a task's)."""

    name: str
    action: Action
    desired: NamedDef | None = None
    actual: ActualObject | None = None
    changes: tuple[FieldChange, ...] = ()
    reason: str | None = None


ChannelChange = ObjectChange
CalendarChange = ObjectChange


@dataclass(frozen=True, slots=True)
class Drift:
    """A difference between git and the table that apply deliberately leaves alone."""

    name: str
    message: str
    override: SuspendOverride


@dataclass(frozen=True, slots=True)
class SafetyOptions:
    allow_empty: bool = False
    max_delete: int = 10
    force: bool = False
    strict: bool = False


DEFAULT_SAFETY = SafetyOptions()


@dataclass(frozen=True, slots=True)
class Plan:
    changes: tuple[TaskChange, ...]
    errors: tuple[ManifestError, ...] = ()
    drift: tuple[Drift, ...] = ()
    refusals: tuple[str, ...] = ()
    channels: tuple[ChannelChange, ...] = ()
    calendars: tuple[CalendarChange, ...] = ()

    def of(self, action: Action) -> tuple[TaskChange, ...]:
        return tuple(c for c in self.changes if c.action is action)

    @property
    def creates(self) -> tuple[TaskChange, ...]:
        return self.of(Action.CREATE)

    @property
    def updates(self) -> tuple[TaskChange, ...]:
        return self.of(Action.UPDATE)

    @property
    def deletes(self) -> tuple[TaskChange, ...]:
        return self.of(Action.DELETE)

    @property
    def kept(self) -> tuple[TaskChange, ...]:
        return self.of(Action.KEEP)

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)

    def channels_of(self, action: Action) -> tuple[ChannelChange, ...]:
        return tuple(c for c in self.channels if c.action is action)

    def calendars_of(self, action: Action) -> tuple[CalendarChange, ...]:
        return tuple(c for c in self.calendars if c.action is action)

    @property
    def has_changes(self) -> bool:
        writes = (Action.CREATE, Action.UPDATE, Action.DELETE)
        return any(c.action in writes for c in self.changes) or any(
            c.action in writes for c in (*self.channels, *self.calendars))

    @property
    def refused(self) -> bool:
        return bool(self.refusals)


def plan(
    desired: DesiredState,
    actual: Iterable[ActualTask],
    options: SafetyOptions = DEFAULT_SAFETY,
    channels: Iterable[ActualObject] = (),
    calendars: Iterable[ActualObject] = (),
) -> Plan:
    """Compare the manifests with the runtime table and say what apply would do.

    ``channels`` and ``calendars``: the table's channels (``kind: Channel``) and
    calendars (``kind: Calendar``), planned the same way.
    """
    actual_by_name = {t.name: t for t in actual}
    desired_by_name: dict[str, TaskDef] = {}
    for task in desired.tasks:
        if task.name not in desired.frozen_names:
            desired_by_name[task.name] = task

    changes: list[TaskChange] = []
    drift: list[Drift] = []
    empty_guard = _empty_guard(desired, actual_by_name, options)

    for name in sorted(actual_by_name.keys() | desired_by_name.keys() | desired.frozen_names):
        have = actual_by_name.get(name)
        want = desired_by_name.get(name)
        frozen = _frozen_reason(name, have, want, desired)
        if frozen is not None:
            if have is not None:
                changes.append(TaskChange(name, Action.KEEP, want, have, reason=frozen))
        elif have is None:
            assert want is not None
            changes.append(TaskChange(name, Action.CREATE, desired=want))
        elif want is None:
            if empty_guard:
                changes.append(TaskChange(name, Action.KEEP, None, have, reason=empty_guard))
            else:
                changes.append(TaskChange(name, Action.DELETE, actual=have))
        elif want.hash == have.hash and want.source_file == have.source_file:
            changes.append(TaskChange(name, Action.UNCHANGED, want, have))
        else:
            changes.append(
                TaskChange(name, Action.UPDATE, want, have, changes=field_changes(want, have))
            )
        if have is not None and have.override is not None and _is_drift(have, want):
            state = "suspended" if have.override.suspended else "resumed"
            by = f" by {have.override.actor}" if have.override.actor else ""
            note = f": {have.override.note}" if have.override.note else ""
            drift.append(Drift(name, f"{state} at run time{by}{note}", have.override))

    channel_changes = plan_objects(desired, desired.channels, desired.frozen_channels,
                                   channels, empty_guard)
    calendar_changes = plan_objects(desired, desired.calendars, desired.frozen_calendars,
                                    calendars, empty_guard)
    refusals = _refusals(desired, changes, options)
    refusals += _referenced_deletes(changes, channel_changes, _CHANNEL_USES)
    refusals += _referenced_deletes(changes, calendar_changes, _CALENDAR_USES)
    if empty_guard:  # nothing would be applied anyway; say so like any other refusal
        refusals.insert(0, empty_guard)
    return Plan(tuple(changes), tuple(desired.errors), tuple(drift), tuple(refusals),
                tuple(channel_changes), tuple(calendar_changes))


def plan_objects(
    desired: DesiredState, wanted: Iterable[NamedDef], frozen: frozenset[str],
    actual: Iterable[ActualObject], empty_guard: str | None = None
) -> list[ObjectChange]:
    """The changes of channels or calendars: the rules of tasks (one of a failed file
    or declared twice is kept; nothing is deleted while the empty-directory guard
    holds)."""
    have_by_name = {c.name: c for c in actual}
    want_by_name = {c.name: c for c in wanted if c.name not in frozen}
    out: list[ObjectChange] = []
    for name in sorted(have_by_name.keys() | want_by_name.keys() | frozen):
        have, want = have_by_name.get(name), want_by_name.get(name)
        reason = None
        if name in frozen:
            reason = "name declared more than once; fix the duplicate to apply changes"
        elif have is not None and _failed(have.source_file, desired.failed_files):
            reason = f"source file {have.source_file} failed to load"
        elif have is not None and want is None and (empty_guard or desired.directory_missing):
            reason = empty_guard or "manifests directory is missing; kept"
        if reason is not None:
            if have is not None:
                out.append(ObjectChange(name, Action.KEEP, want, have, reason=reason))
        elif have is None:
            assert want is not None
            out.append(ObjectChange(name, Action.CREATE, desired=want))
        elif want is None:
            out.append(ObjectChange(name, Action.DELETE, actual=have))
        elif want.hash == have.hash and want.source_file == have.source_file:
            out.append(ObjectChange(name, Action.UNCHANGED, want, have))
        else:
            fields: list[FieldChange] = []
            if want.hash != have.hash:
                _diff(have.document, want.document, "", fields)
            if want.source_file != have.source_file:
                fields.append(FieldChange("source.file", have.source_file, want.source_file))
            out.append(ObjectChange(name, Action.UPDATE, want, have, tuple(fields)))
    return out


@dataclass(frozen=True, slots=True)
class _Uses:
    """How a task's spec names objects of one kind, and the refusal's words."""

    kind: str
    field: str
    verb: str
    names: Any  # (spec) -> Iterable[str]


_CHANNEL_USES = _Uses("channel", "spec.notify", "notify",
                      lambda spec: (rule["channel"] for rule in spec.get("notify", ())))
_CALENDAR_USES = _Uses("calendar", "spec.calendars", "use",
                       lambda spec: spec.get("calendars", ()))


def _referenced_deletes(
    changes: Iterable[TaskChange], objects: Iterable[ObjectChange], uses: _Uses
) -> list[str]:
    """A channel or calendar the plan deletes that a task would still name."""
    deleted = {c.name for c in objects if c.action is Action.DELETE}
    if not deleted:
        return []
    users: dict[str, list[str]] = {}
    for change in changes:
        if change.action is Action.DELETE:
            continue
        source = change.desired if change.action is not Action.KEEP else change.actual
        if source is None:
            continue
        for used in uses.names(source.document["spec"]):
            if used in deleted:
                users.setdefault(used, []).append(change.name)
    return [
        f'plan deletes {uses.kind} "{name}" but task(s) {", ".join(tasks)} still '
        f"{uses.verb} it; remove it from their {uses.field} first"
        for name, tasks in sorted(users.items())
    ]


def _failed(path: str, failed: frozenset[str]) -> bool:
    """``path`` is a failed file, or lies under a failed (e.g. unlistable) directory."""
    if path in failed:
        return True
    parts = path.split("/")
    return any("/".join(parts[:i]) in failed for i in range(1, len(parts)))


def _frozen_reason(
    name: str, have: ActualTask | None, want: TaskDef | None, desired: DesiredState
) -> str | None:
    if name in desired.frozen_names:
        return "name declared more than once; fix the duplicate to apply changes"
    failed = desired.failed_files
    if not failed:
        return None
    if have is not None and _failed(have.source_file, failed):
        return f"source file {have.source_file} failed to load"
    if want is not None and _failed(want.source_file, failed):
        return f"source file {want.source_file} has errors"
    return None


def _empty_guard(
    desired: DesiredState, actual: Mapping[str, ActualTask], options: SafetyOptions
) -> str | None:
    if desired.tasks or desired.failed_files or not actual or options.allow_empty:
        return None
    if desired.directory_missing:
        return "manifests directory is missing; refusing to delete every task (use --allow-empty)"
    return "manifests directory has no tasks; refusing to delete every task (use --allow-empty)"


def _refusals(
    desired: DesiredState, changes: list[TaskChange], options: SafetyOptions
) -> list[str]:
    reasons = []
    deletes = sum(1 for c in changes if c.action is Action.DELETE)
    if deletes > options.max_delete and not options.force:
        reasons.append(
            f"plan deletes {deletes} tasks, more than --max-delete {options.max_delete}; "
            "use --force to apply it"
        )
    if options.strict and (desired.errors or desired.directory_missing):
        reasons.append(
            f"{len(desired.errors)} manifest error(s) and --strict is set; nothing is applied"
        )
    return reasons


def _is_drift(have: ActualTask, want: TaskDef | None) -> bool:
    assert have.override is not None
    in_git = want.suspend if want is not None else have.suspended_in_git
    return have.override.suspended != in_git


# ----------------------------------------------------------------------------- diff


def _effective(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document with defaults filled in, for a readable old -> new diff."""
    try:
        full: dict[str, Any] = TaskManifest.model_validate(document).model_dump(mode="json")
        return full
    except ValueError:  # a stored row from an older, looser version: show it as stored
        return dict(document)


def field_changes(want: TaskDef, have: ActualTask) -> tuple[FieldChange, ...]:
    """Field paths that differ between the table's row and the manifest, old -> new."""
    out: list[FieldChange] = []
    if want.hash != have.hash:
        _diff(_effective(have.document), _effective(want.document), "", out)
    if want.source_file != have.source_file:
        out.append(FieldChange("source.file", have.source_file, want.source_file))
    return tuple(out)


def _diff(old: Any, new: Any, prefix: str, out: list[FieldChange]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys(), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(FieldChange(path, UNSET, new[key]))
            elif key not in new:
                out.append(FieldChange(path, old[key], UNSET))
            else:
                _diff(old[key], new[key], path, out)
    elif old != new:
        out.append(FieldChange(prefix, old, new))

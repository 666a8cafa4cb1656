"""Plan and apply: from a manifests directory to the runtime table.

``make_plan`` loads the manifests and compares them with what the store holds;
``apply`` writes a plan and nothing else writes task definitions. ``reconcile`` does
both, which is what ``reconciler apply`` and every daemon resync run.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.clock import Clock, SystemClock
from reconciler.core.errors import PlanRefusedError
from reconciler.core.isolation import HostFacts, admit_on_host
from reconciler.core.model import DesiredState
from reconciler.core.plan import DEFAULT_SAFETY, Plan, SafetyOptions, plan
from reconciler.core.protocols import TaskStore
from reconciler.core.runtime import (
    ActualCalendar,
    ActualChannel,
    ActualTask,
    ApplyRecord,
    GitRevision,
)
from reconciler.manifests import LoadCache, load_directory
from reconciler.manifests.git import detect_revision


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    desired: DesiredState
    plan: Plan
    revision: GitRevision | None
    applied: ApplyRecord | None


def default_actor() -> str:
    """``user@host``: who applied a plan from the command line."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def make_plan(
    manifests: str | os.PathLike[str],
    store: TaskStore,
    options: SafetyOptions = DEFAULT_SAFETY,
    *,
    cache: LoadCache | None = None,
    actual: Iterable[ActualTask] | None = None,
    hint: Collection[str] | None = None,
    host: HostFacts | None = None,
) -> tuple[DesiredState, Plan]:
    """Load the manifests and plan against ``actual`` (default: the store's live tasks).

    The daemon passes the table as it last saw it, so a one-file change does not
    re-read ten thousand rows, and ``host`` (what it runs as): tasks it cannot run as
    declared are manifest errors (:func:`~reconciler.core.isolation.admit_on_host`).
    """
    desired = load_directory(manifests, cache=cache, hint=hint)
    if host is not None:
        desired = admit_on_host(desired, host)
    tasks = store.load_tasks() if actual is None else actual
    return desired, plan(desired, tasks, options, store.load_channels(),
                         store.load_calendars())


def apply(
    the_plan: Plan,
    store: TaskStore,
    *,
    actor: str,
    revision: GitRevision | None,
    clock: Clock | None = None,
) -> ApplyRecord:
    """Write ``the_plan``. Raises :class:`PlanRefusedError` when a safety rule refused it."""
    if the_plan.refused:
        raise PlanRefusedError(list(the_plan.refusals))
    now = (clock or SystemClock()).now()
    return store.apply_plan(the_plan, actor=actor, revision=revision, now=now)


def reconcile(
    manifests: str | os.PathLike[str],
    store: TaskStore,
    options: SafetyOptions = DEFAULT_SAFETY,
    *,
    actor: str,
    clock: Clock | None = None,
    cache: LoadCache | None = None,
    actual: Iterable[ActualTask] | None = None,
    hint: Collection[str] | None = None,
    host: HostFacts | None = None,
) -> ReconcileResult:
    """Load, plan and (when there is something to do and no rule refuses) apply.

    The git revision is looked up only when there is something to apply: ``git
    status`` over a large tree costs more than the rest of a no-change reconcile.
    """
    desired, the_plan = make_plan(
        manifests, store, options, cache=cache, actual=actual, hint=hint, host=host
    )
    revision = None
    applied = None
    if the_plan.has_changes and not the_plan.refused:
        revision = detect_revision(manifests) if Path(manifests).exists() else None
        applied = apply(the_plan, store, actor=actor, revision=revision, clock=clock)
    return ReconcileResult(desired, the_plan, revision, applied)


def actual_from_desired(desired: DesiredState) -> Iterable[ActualTask]:
    """Treat manifests (e.g. at a git ref) as if they were the runtime table."""
    for task in desired.tasks:
        yield ActualTask(
            name=task.name,
            document=task.document,
            hash=task.hash,
            generation=1,
            source_file=task.source_file,
        )


def channels_from_desired(desired: DesiredState) -> Iterable[ActualChannel]:
    """Treat manifests' channels (e.g. at a git ref) as if they were the runtime table."""
    for channel in desired.channels:
        yield ActualChannel(channel.name, channel.document, channel.hash, 1, channel.source_file)


def calendars_from_desired(desired: DesiredState) -> Iterable[ActualCalendar]:
    """Treat manifests' calendars (e.g. at a git ref) as if they were the runtime table."""
    for c in desired.calendars:
        yield ActualCalendar(c.name, c.document, c.hash, 1, c.source_file)

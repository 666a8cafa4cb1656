"""reconciler: a declarative, GitOps-style scheduler for recurring tasks.

The public surface is small and re-exported here; everything else is internal.
Attributes load lazily so that ``import reconciler`` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: The one version source: the package metadata (pyproject's dynamic version) reads it.
__version__ = "0.1.0"

_EXPORTS = {
    # manifest model
    "TaskManifest": "reconciler.core.model",
    "TaskDef": "reconciler.core.model",
    "DesiredState": "reconciler.core.model",
    "ManifestError": "reconciler.core.model",
    "ConcurrencyPolicy": "reconciler.core.model",
    "CatchUpPolicy": "reconciler.core.model",
    # plan
    "plan": "reconciler.core.plan",
    "Plan": "reconciler.core.plan",
    "Action": "reconciler.core.plan",
    "SafetyOptions": "reconciler.core.plan",
    # schedule
    "Schedule": "reconciler.core.schedule",
    # time
    "Clock": "reconciler.core.clock",
    "SystemClock": "reconciler.core.clock",
    "FakeClock": "reconciler.core.clock",
    # runtime values
    "RunStatus": "reconciler.core.runtime",
    "Trigger": "reconciler.core.runtime",
    # errors
    "ReconcilerError": "reconciler.core.errors",
    "ScheduleError": "reconciler.core.errors",
    "DurationError": "reconciler.core.errors",
    "ManifestLoadError": "reconciler.core.errors",
    "PlanRefusedError": "reconciler.core.errors",
    "StoreError": "reconciler.core.errors",
    "TaskNotFoundError": "reconciler.core.errors",
    "DuplicateRunError": "reconciler.core.errors",
    "GitError": "reconciler.core.errors",
    # adapters and use cases
    "load_directory": "reconciler.manifests",
    "create_store": "reconciler.store",
    "reconcile": "reconciler.service",
}

__all__ = [
    "Action",
    "CatchUpPolicy",
    "Clock",
    "ConcurrencyPolicy",
    "DesiredState",
    "DuplicateRunError",
    "DurationError",
    "FakeClock",
    "GitError",
    "ManifestError",
    "ManifestLoadError",
    "Plan",
    "PlanRefusedError",
    "ReconcilerError",
    "RunStatus",
    "SafetyOptions",
    "Schedule",
    "ScheduleError",
    "StoreError",
    "SystemClock",
    "TaskDef",
    "TaskManifest",
    "TaskNotFoundError",
    "Trigger",
    "create_store",
    "load_directory",
    "plan",
    "reconcile",
]

if TYPE_CHECKING:  # pragma: no cover
    from reconciler.core.clock import Clock, FakeClock, SystemClock
    from reconciler.core.errors import (
        DuplicateRunError,
        DurationError,
        GitError,
        ManifestLoadError,
        PlanRefusedError,
        ReconcilerError,
        ScheduleError,
        StoreError,
        TaskNotFoundError,
    )
    from reconciler.core.model import (
        CatchUpPolicy,
        ConcurrencyPolicy,
        DesiredState,
        ManifestError,
        TaskDef,
        TaskManifest,
    )
    from reconciler.core.plan import Action, Plan, SafetyOptions, plan
    from reconciler.core.runtime import RunStatus, Trigger
    from reconciler.core.schedule import Schedule
    from reconciler.manifests import load_directory
    from reconciler.service import reconcile
    from reconciler.store import create_store


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'reconciler' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

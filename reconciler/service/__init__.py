"""Use cases that tie the core to the adapters: plan, apply, reconcile.

The CLI (and later the daemon and the API) call these functions; they take adapters
through the Protocols in :mod:`reconciler.core.protocols`, so tests can hand in any
store. :func:`apply` is the single place where a plan is written.
"""

from reconciler.service.reconcile import (
    ReconcileResult,
    actual_from_desired,
    apply,
    calendars_from_desired,
    channels_from_desired,
    default_actor,
    make_plan,
    reconcile,
)

__all__ = [
    "ReconcileResult",
    "actual_from_desired",
    "apply",
    "calendars_from_desired",
    "channels_from_desired",
    "default_actor",
    "make_plan",
    "reconcile",
]

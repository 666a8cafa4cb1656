"""Plain parts shared by the daemon's loops and its API, built by the composition
function (:mod:`reconciler.daemon.compose`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.locks import SkewGuard, ZooKeeperClaimer, ZooKeeperCoordinator

if TYPE_CHECKING:
    from reconciler.service import ReconcileResult


@dataclass
class DaemonState:
    """What the daemon's loops learn and its API reports. The daemon writes it; the API
    reads it (both on the daemon's event loop)."""

    #: The newest successful reconcile; None until the first one.
    last_result: ReconcileResult | None = None
    #: Why the newest reconcile failed (None after a success).
    last_error: str | None = None
    #: Why this daemon no longer holds its database lock (None while it does).
    lock_error: str | None = None


@dataclass(frozen=True)
class Cluster:
    """Distributed mode's parts (``--zookeeper``): absent for a single replica."""

    coordinator: ZooKeeperCoordinator
    claimer: ZooKeeperClaimer
    skew_guard: SkewGuard

"""The HTTP API, the dashboard, the metrics and the event stream of ``reconciler run``.

Layering: this package sits between the daemon (which starts it and implements
:class:`~reconciler.api.control.Operations`) and the service/adapters below; it never
imports :mod:`reconciler.daemon`. See ``docs/api.md``.
"""

from reconciler.api.auth import TokenStore
from reconciler.api.control import ApiContext, LiveRun, Operations
from reconciler.api.errors import ApiError
from reconciler.api.events import EventHub
from reconciler.api.index import TaskIndex
from reconciler.api.metrics import Metrics
from reconciler.api.observer import ApiObserver

__all__ = [
    "ApiContext",
    "ApiError",
    "ApiObserver",
    "EventHub",
    "LiveRun",
    "Metrics",
    "Operations",
    "TaskIndex",
    "TokenStore",
]

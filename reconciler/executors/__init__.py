"""Executors: how a run's target is actually executed (asyncio, on the daemon's loop).

Public API::

    executor_for(run) -> Executor           # by run.kind; or DispatchExecutor()
    CommandExecutor, ShellExecutor          # argv without a shell; /bin/sh -c
    HttpExecutor(transport=None)            # httpx; inject httpx.MockTransport in tests
    PythonExecutor                          # module:function in a child process
    RunContext                              # the argument of python task functions
    resolve_env(env) -> dict[str, str]      # fromEnv / fromFile resolution
    SecretResolutionError                   # a ReconcilerError

Every executor implements :class:`reconciler.core.protocols.Executor` and never
raises for a failing task: failures are ``ExecutionResult`` values. Where to read on:

* :mod:`~reconciler.executors.process` - process groups, timeouts, cancellation,
  SIGTERM/SIGKILL of the whole tree, orphan handling;
* :mod:`~reconciler.executors.output` - the bounded output tail and the
  ``::progress`` line protocol;
* :mod:`~reconciler.executors.environment` - the minimal base environment and secret
  handling;
* :mod:`~reconciler.executors.http_executor`, :mod:`~reconciler.executors.python_executor`.

The names are imported lazily (PEP 562): a ``python`` run's child process imports
``reconciler.executors._pyrunner``, which runs this ``__init__``, and it should not pay
for importing httpx and pydantic it never uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.executors.command import CommandExecutor, ShellExecutor
    from reconciler.executors.context import RunContext
    from reconciler.executors.dispatch import DispatchExecutor, executor_for
    from reconciler.executors.environment import SecretResolutionError, resolve_env
    from reconciler.executors.http_executor import HttpExecutor
    from reconciler.executors.python_executor import PythonExecutor

__all__ = [
    "CommandExecutor",
    "DispatchExecutor",
    "HttpExecutor",
    "PythonExecutor",
    "RunContext",
    "SecretResolutionError",
    "ShellExecutor",
    "executor_for",
    "resolve_env",
]

_WHERE = {
    "CommandExecutor": "command",
    "ShellExecutor": "command",
    "RunContext": "context",
    "DispatchExecutor": "dispatch",
    "executor_for": "dispatch",
    "SecretResolutionError": "environment",
    "resolve_env": "environment",
    "HttpExecutor": "http_executor",
    "PythonExecutor": "python_executor",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

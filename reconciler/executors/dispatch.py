"""Choosing the executor for a run by its kind (``command``, ``shell``, ``http``, ``python``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from reconciler.core.model import RUN_TARGETS, RunKind, RunSpec
from reconciler.core.protocols import ExecutionEvents, ExecutionRequest, ExecutionResult, Executor
from reconciler.executors.command import CommandExecutor, ShellExecutor
from reconciler.executors.http_executor import HttpExecutor
from reconciler.executors.python_executor import PythonExecutor

#: The executor of each run kind (:data:`~reconciler.core.model.RUN_TARGETS`).
EXECUTORS: dict[RunKind, Callable[[], Executor]] = {
    "command": CommandExecutor,
    "shell": ShellExecutor,
    "http": HttpExecutor,
    "python": PythonExecutor,
}
if set(EXECUTORS) != set(RUN_TARGETS):  # pragma: no cover - a kind declared half-way
    raise ImportError(f"run kinds without an executor: {set(RUN_TARGETS) ^ set(EXECUTORS)}")


class DispatchExecutor:
    """An :class:`Executor` that hands each request to the executor for its run kind.

    Each executor can be replaced, e.g. ``DispatchExecutor(http=HttpExecutor(transport))``
    in tests. The executors keep no per-run state, so one instance serves every run.
    """

    def __init__(self, **overrides: Executor) -> None:
        unknown = set(overrides) - set(EXECUTORS)
        if unknown:
            raise TypeError(f"no run kind {sorted(unknown)}; kinds: {', '.join(RUN_TARGETS)}")
        self.executors: dict[str, Executor] = {
            kind: overrides.get(kind) or make() for kind, make in EXECUTORS.items()
        }

    def for_run(self, run: RunSpec) -> Executor:
        return self.executors[run.kind]

    async def execute(
        self, request: ExecutionRequest, events: ExecutionEvents, cancel: asyncio.Event
    ) -> ExecutionResult:
        return await self.for_run(request.run).execute(request, events, cancel)


_default: DispatchExecutor | None = None


def executor_for(run: RunSpec) -> Executor:
    """The default executor for ``run``'s kind (shared, stateless instances)."""
    global _default
    if _default is None:
        _default = DispatchExecutor()
    return _default.for_run(run)

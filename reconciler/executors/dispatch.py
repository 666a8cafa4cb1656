"""Choosing the executor for a run by its kind (``command``, ``shell``, ``http``, ``python``)."""

from __future__ import annotations

import asyncio

from reconciler.core.model import RunSpec
from reconciler.core.protocols import ExecutionEvents, ExecutionRequest, ExecutionResult, Executor
from reconciler.executors.command import CommandExecutor, ShellExecutor
from reconciler.executors.http_executor import HttpExecutor
from reconciler.executors.python_executor import PythonExecutor


class DispatchExecutor:
    """An :class:`Executor` that hands each request to the executor for its run kind.

    Each executor can be replaced, e.g. ``DispatchExecutor(http=HttpExecutor(transport))``
    in tests. The executors keep no per-run state, so one instance serves every run.
    """

    def __init__(
        self,
        *,
        command: Executor | None = None,
        shell: Executor | None = None,
        http: Executor | None = None,
        python: Executor | None = None,
    ) -> None:
        self.executors: dict[str, Executor] = {
            "command": command or CommandExecutor(),
            "shell": shell or ShellExecutor(),
            "http": http or HttpExecutor(),
            "python": python or PythonExecutor(),
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

"""``command`` and ``shell`` runs.

``command`` executes an argv list directly (``execve`` after a ``PATH`` lookup in the
*task's* environment): no shell is involved, so ``; rm -rf /`` or ``$(whoami)`` in an
argument is just text. ``shell`` runs ``/bin/sh -c <script> <task-name>``; the task
name becomes ``$0``, so the shell's own error messages say which task failed.

Both share the process handling of :mod:`reconciler.executors.process` (own session
and process group, SIGTERM/SIGKILL of the whole tree, bounded output tail) and the
``::progress`` line protocol of :mod:`reconciler.executors.output`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from reconciler.core.protocols import ExecutionEvents, ExecutionRequest, ExecutionResult
from reconciler.executors.environment import redact
from reconciler.executors.process import ProcessOutcome, failed, result_for, run_process

logger = logging.getLogger(__name__)

SHELL = "/bin/sh"


class _ArgvExecutor:
    kind = ""

    def argv(self, request: ExecutionRequest) -> list[str] | None:
        raise NotImplementedError

    async def execute(
        self, request: ExecutionRequest, events: ExecutionEvents, cancel: asyncio.Event
    ) -> ExecutionResult:
        argv = self.argv(request)
        if argv is None:
            return failed(f"not a {self.kind} run (run kind is {request.run.kind})")
        outcome, secrets = await run_process(argv, request, events, cancel)
        if not isinstance(outcome, ProcessOutcome):
            return outcome
        result = result_for(request, outcome)
        logger.info(
            "run %s of task %s: %s (exit code %s)",
            request.run_id,
            request.task,
            result.status,
            result.exit_code,
        )
        return _redacted(result, secrets)


def _redacted(result: ExecutionResult, secrets: tuple[str, ...]) -> ExecutionResult:
    error = redact(result.error, secrets)
    if error == result.error:
        return result
    return replace(result, error=error)


class CommandExecutor(_ArgvExecutor):
    """Runs ``run.command`` (an argv list) without a shell."""

    kind = "command"

    def argv(self, request: ExecutionRequest) -> list[str] | None:
        command = request.run.command
        return list(command) if command else None


class ShellExecutor(_ArgvExecutor):
    """Runs ``run.shell`` with ``/bin/sh -c``."""

    kind = "shell"

    def __init__(self, shell: str = SHELL) -> None:
        self.shell = shell

    def argv(self, request: ExecutionRequest) -> list[str] | None:
        script = request.run.shell
        if script is None:
            return None
        return [self.shell, "-c", script, request.task]

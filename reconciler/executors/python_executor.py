"""``python`` runs: ``package.module:function`` called in a child process.

Why a child process and not the daemon: a task function can block, leak memory,
crash the interpreter or call ``os._exit``; none of that may touch the scheduler.
The child is an ordinary task process (own session and process group, output
captured, SIGTERM then SIGKILL on timeout or cancel), so everything in
:mod:`reconciler.executors.process` applies.

The child is ``<python> -c <bootstrap>``, where ``<python>`` is the daemon's own
interpreter (``sys.executable``, so the task sees the same installed packages). It
runs :mod:`reconciler.executors._pyrunner`, which imports the module, calls the
function with a :class:`~reconciler.executors.context.RunContext` and, for an
``async def`` function, runs the coroutine with ``asyncio.run``. The return value is
ignored. ``ctx.params`` holds the run's parameters (``spec.params``) with their types.

Where modules are found: the child's ``sys.path`` starts with its working directory
(``workingDir``, else the daemon's), then ``PYTHONPATH`` from the task's ``env`` (the
daemon's own ``PYTHONPATH`` is not inherited, see
:mod:`reconciler.executors.environment`), then the interpreter's site-packages.

Results: exit status 0 is success. An exception is printed as a traceback into the
output and reported back, as ``ExceptionType: message`` on a private pipe, to become
the run's error (redacted of the run's secret values). ``sys.exit(n)`` is an exit
with code ``n``. Progress is the ``::progress`` line protocol, written by
``ctx.progress()``; records of ``ctx.logger`` (and of the root logger, level INFO)
go to stderr, i.e. to the captured output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from reconciler.core.protocols import ExecutionEvents, ExecutionRequest, ExecutionResult
from reconciler.executors.environment import redact, run_deadline
from reconciler.executors.process import ProcessOutcome, failed, result_for, run_process

logger = logging.getLogger(__name__)

#: Directory that contains the ``reconciler`` package, appended to the child's
#: ``sys.path`` when the interpreter cannot import ``reconciler`` by itself.
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)

BOOTSTRAP = (
    "import importlib.util, sys\n"
    "root = sys.argv.pop(1)\n"
    "if importlib.util.find_spec('reconciler') is None:\n"
    "    sys.path.append(root)\n"
    "from reconciler.executors._pyrunner import main\n"
    "sys.exit(main(sys.argv))\n"
)

MAX_REPORT_BYTES = 64 * 1024


class PythonExecutor:
    """Calls ``run.python`` (``module:function``) in a child interpreter."""

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable

    async def execute(
        self, request: ExecutionRequest, events: ExecutionEvents, cancel: asyncio.Event
    ) -> ExecutionResult:
        target = request.run.python
        if target is None:
            return failed(f"not a python run (run kind is {request.run.kind})")
        if not self.python:
            return failed("cannot run python tasks: the interpreter path is unknown")
        now = datetime.now(UTC)
        deadline = run_deadline(request, now)
        report_r, report_w = os.pipe()
        try:
            spec = {
                "target": target,
                "task": request.task,
                "run_id": request.run_id,
                "slot": request.slot.isoformat(),
                "attempt": request.attempt,
                "deadline": deadline.isoformat() if deadline else None,
                "report_fd": report_w,
                # ctx.params: the values; a secret one from its RECONCILER_PARAM_ variable
                # (never on the command line, which other users can read)
                "params": {k: v for k, v in request.params.items()
                           if k in request.param_specs and not request.param_specs[k].secret},
                "secret_params": [k for k, d in request.param_specs.items() if d.secret],
            }
            argv = [self.python, "-c", BOOTSTRAP, PACKAGE_ROOT, json.dumps(spec)]
            outcome, secrets = await run_process(
                argv, request, events, cancel, pass_fds=(report_w,), describe=self.python, now=now
            )
            os.close(report_w)
            report_w = -1
            reported = _read_report(report_r)
        finally:
            for fd in (report_r, report_w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        if not isinstance(outcome, ProcessOutcome):
            return outcome
        result = result_for(request, outcome, error=reported)
        error = redact(result.error, secrets)
        logger.info(
            "run %s of task %s: %s (exit code %s)",
            request.run_id,
            request.task,
            result.status,
            result.exit_code,
        )
        if error != result.error:
            result = replace(result, error=error)
        return result


def _read_report(fd: int) -> str | None:
    """The child's error report, if it wrote one (the write end is closed by now)."""
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(OSError):  # BlockingIOError: nothing was written
        while len(data) < MAX_REPORT_BYTES:
            chunk = os.read(fd, MAX_REPORT_BYTES - len(data))
            if not chunk:
                break
            data += chunk
    if not data:
        return None
    try:
        error = json.loads(data.decode("utf-8", errors="replace")).get("error")
    except (ValueError, AttributeError):
        return None
    return error if isinstance(error, str) and error else None

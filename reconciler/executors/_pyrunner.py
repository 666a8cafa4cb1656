"""Child-process side of ``python`` runs (started by :class:`PythonExecutor`).

Invoked as ``python -c <bootstrap> <package-root> <json>``; the JSON holds the
target (``module:function``), the context fields and the number of an inherited
file descriptor on which a one-line JSON report (the error message of a failed
call) is written. The report goes to its own descriptor rather than stdout so that
a task cannot forge it by printing, and so the message does not have to be dug out
of the output tail.

Standard library only, and the package's ``__init__`` is lazy, so the child starts
quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import io
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import Any

from reconciler.executors.context import RunContext

MAX_ERROR_CHARS = 2000
EXIT_FAILED = 1
EXIT_NOT_LOADED = 2


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv if argv is None else argv)
    spec: dict[str, Any] = json.loads(args[1])
    report_fd: int | None = spec.get("report_fd")
    if report_fd is not None:
        os.set_inheritable(report_fd, False)  # not for the task's own subprocesses
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)  # progress and logs arrive promptly
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    deadline = spec.get("deadline")
    ctx = RunContext(
        task=spec["task"],
        run_id=int(spec["run_id"]),
        slot=datetime.fromisoformat(spec["slot"]),
        attempt=int(spec["attempt"]),
        deadline=datetime.fromisoformat(deadline) if deadline else None,
        logger=logging.getLogger(f"task.{spec['task']}"),
        params={**spec.get("params", {}),
                **{name: os.environ.get("RECONCILER_PARAM_" + name.upper(), "")
                   for name in spec.get("secret_params", ())}},
    )
    signal.signal(signal.SIGTERM, lambda _sig, _frame: ctx.request_cancel())

    target: str = spec["target"]
    module_name, _, function_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        function = getattr(module, function_name)
        if not callable(function):
            raise TypeError(f"{target} is not callable")
    except Exception as exc:
        traceback.print_exc()
        _report(report_fd, f"cannot load {target}: {_one_line(exc)}")
        return EXIT_NOT_LOADED
    try:
        value = function(ctx)
        if inspect.isawaitable(value):
            asyncio.run(_await(value))
    except Exception as exc:
        # Leave this runner's own frame out: the traceback starts in the task's code.
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        traceback.print_exception(type(exc), exc, tb)
        _report(report_fd, _one_line(exc))
        return EXIT_FAILED
    finally:
        sys.stdout.flush()
    return 0


async def _await(value: Awaitable[Any]) -> Any:
    return await value


def _one_line(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    text = " ".join(text.split())
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 3] + "..."
    return text


def _report(fd: int | None, error: str) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps({"error": error}).encode())
        os.close(fd)


if __name__ == "__main__":  # pragma: no cover - normally started via the bootstrap
    sys.exit(main())

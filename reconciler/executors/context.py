""":class:`RunContext`, the argument a ``python`` run's function is called with.

This module is imported inside the task's child process, so it uses the standard
library only (no pydantic, no httpx): keeping the child's start-up cheap.

Cancellation is cooperative. When the run times out or is cancelled, the child
receives SIGTERM; the runner's signal handler sets the flag behind
:attr:`RunContext.cancelled` and wakes :meth:`RunContext.wait`. A function that
ignores the flag is killed with SIGKILL after the run's kill grace period.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TextIO

from reconciler.executors.output import format_progress_line


class RunContext:
    """What a python task function gets: identity of the run, progress, cancellation.

    ``deadline`` is the aware UTC instant at which the run times out (None without a
    timeout). ``logger`` writes to the run's captured output. ``params`` holds the
    run's parameters (``spec.params``): strings, ints, floats and booleans.
    """

    def __init__(
        self,
        *,
        task: str,
        run_id: int,
        slot: datetime,
        attempt: int,
        deadline: datetime | None = None,
        logger: logging.Logger | None = None,
        stream: TextIO | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.task = task
        self.run_id = run_id
        self.slot = slot
        self.attempt = attempt
        self.deadline = deadline
        self.params: dict[str, Any] = dict(params or {})
        self.logger = logger or logging.getLogger(f"task.{task}")
        self._stream = stream if stream is not None else sys.stdout
        self._cancelled = False
        # Self-pipe: written by the SIGTERM handler so wait() can block in select().
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def __repr__(self) -> str:
        return (
            f"RunContext(task={self.task!r}, run_id={self.run_id}, attempt={self.attempt}, "
            f"cancelled={self._cancelled})"
        )

    @property
    def cancelled(self) -> bool:
        """True once the run was asked to stop (timeout or cancel)."""
        return self._cancelled

    def is_cancelled(self) -> bool:
        return self._cancelled

    def progress(self, percent: float | None, message: str | None = None) -> None:
        """Report progress (0-100, or None for a message only)."""
        if percent is not None and not 0.0 <= float(percent) <= 100.0:
            raise ValueError(f"percent must be between 0 and 100, got {percent!r}")
        self._stream.write(format_progress_line(percent, message))
        self._stream.flush()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run is cancelled or ``timeout`` seconds pass; return ``cancelled``.

        Useful instead of ``time.sleep`` in loops: ``while not ctx.wait(60): poll()``.
        """
        if not self._cancelled:
            with contextlib.suppress(InterruptedError):
                select.select([self._wake_r], [], [], timeout)
        return self._cancelled

    def request_cancel(self) -> None:
        """Set the cancelled flag (called from the SIGTERM handler; async-signal safe)."""
        self._cancelled = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

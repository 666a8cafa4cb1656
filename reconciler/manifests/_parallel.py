"""A minimal fork-join map: the parent parses one share, forked children the others.

Why not ``concurrent.futures``/``multiprocessing``: a pool costs a pickle round trip
for every task and, with ``spawn``/``forkserver``, a fresh interpreter that must import
pydantic and the model again (hundreds of milliseconds). With ``fork`` the children
inherit the job list and every imported module; only their compact results travel
back, pickled once per child through a pipe. The parent works on its own share
meanwhile, so two cores mean one child.

Failure of a child (crash, killed, deadlock past the timeout, unpicklable result) is not
an error: the parent computes that share itself. Jobs must not raise.
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import os
import pickle
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Seconds a child may take per job before the parent gives up on it (plus a base).
CHILD_SECONDS_PER_JOB = 0.05
CHILD_BASE_SECONDS = 30.0


def can_fork() -> bool:
    return hasattr(os, "fork") and sys.platform != "win32"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: Reducers for result types: a ``dataclass(slots=True)`` otherwise pickles through
#: Python-level ``__getstate__``/``__setstate__``, twice as slow both ways.
REDUCERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def fork_map(fn: Callable[[T], R], items: Sequence[T], processes: int) -> list[R]:
    """``[fn(x) for x in items]`` spread over ``processes`` processes (this one included)."""
    n = len(items)
    processes = min(processes, n)
    if processes <= 1 or not can_fork():
        return [fn(x) for x in items]
    shares = [range(i, n, processes) for i in range(processes)]
    children: list[tuple[int, int, range]] = []
    local = [shares[0]]
    for k, share in enumerate(shares[1:], start=1):
        try:
            read_fd, write_fd = os.pipe()
            try:
                pid = os.fork()
            except OSError:
                os.close(read_fd)
                os.close(write_fd)
                raise
        except OSError:  # out of processes or descriptors: do the rest here
            local.extend(shares[k:])
            break
        if pid == 0:  # pragma: no cover - runs in the child (coverage can't see it)
            _child(fn, items, share, read_fd, write_fd)
        os.close(write_fd)
        children.append((pid, read_fd, share))
    results: list[R | None] = [None] * n
    for share in local:
        for i in share:
            results[i] = fn(items[i])
    deadline = time.monotonic() + CHILD_BASE_SECONDS + CHILD_SECONDS_PER_JOB * n
    for pid, read_fd, share in children:
        payload = _collect(pid, read_fd, deadline)
        values: list[R] | None = None
        if payload is not None:
            try:
                loaded = pickle.loads(payload)  # noqa: S301 - our own child, same program
            except Exception:
                loaded = None
            if isinstance(loaded, list) and len(loaded) == len(share):
                values = loaded
        if values is None:
            values = [fn(items[i]) for i in share]
        for i, value in zip(share, values, strict=True):
            results[i] = value
    return results  # type: ignore[return-value]


def _child(
    fn: Callable[[T], R], items: Sequence[T], share: range, read_fd: int, write_fd: int
) -> None:  # pragma: no cover - runs in the child
    code = 1
    try:
        os.close(read_fd)
        import gc

        gc.disable()  # nothing survives the child; collections would only cost time
        results = [fn(items[i]) for i in share]
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
        pickler.dispatch_table = {**copyreg.dispatch_table, **REDUCERS}
        pickler.dump(results)
        view = buffer.getbuffer()
        while view:
            written = os.write(write_fd, view)
            view = view[written:]
        code = 0
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _collect(pid: int, read_fd: int, deadline: float) -> bytes | None:
    chunks: list[bytes] = []
    ok = True
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                ok = False
                break
            poller = select.poll()
            poller.register(read_fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            if not poller.poll(remaining * 1000):
                ok = False
                break
            chunk = os.read(read_fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        ok = False
    finally:
        os.close(read_fd)
    if not ok:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # pragma: no cover - reaped by someone else (SIGCHLD ignored)
        status = 0
    if not ok or not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        return None
    return b"".join(chunks)

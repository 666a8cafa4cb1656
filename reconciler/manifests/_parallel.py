"""A minimal fork-join map: the parent parses one share, forked children the others.

Why not ``concurrent.futures``/``multiprocessing``: a pool costs a pickle round trip
for every task and, with ``spawn``/``forkserver``, a fresh interpreter that must import
pydantic and the model again (hundreds of milliseconds). With ``fork`` the children
inherit the job list and every imported module; only their compact results travel
back, pickled once per child through a pipe. The parent works on its own share
meanwhile, so two cores mean one child.

Work is handed out in chunks through a pipe, so a process that gets less CPU (a busy
machine) does fewer of them. A child that fails (crash, killed, unpicklable result) or
is still not done long after the parent finished (e.g. deadlocked on a lock another
thread held at fork time) is not an error: the parent kills it and computes the chunks
it had claimed itself. Jobs must not raise.
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import os
import pickle
import select
import signal
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: After finishing its own share in ``t`` seconds, the parent waits for a child at
#: most ``max(CHILD_GRACE_SECONDS, CHILD_GRACE_FACTOR * t)`` more.
CHILD_GRACE_SECONDS = 10.0
CHILD_GRACE_FACTOR = 4.0

#: Reducers for result types: a ``dataclass(slots=True)`` otherwise pickles through
#: Python-level ``__getstate__``/``__setstate__``, twice as slow both ways.
REDUCERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def can_fork() -> bool:
    return hasattr(os, "fork") and sys.platform != "win32"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def fork_map(fn: Callable[[T], R], items: Sequence[T], processes: int) -> list[R]:
    """``[fn(x) for x in items]`` spread over ``processes`` processes (this one included).

    The items are cut into chunks that every process claims one at a time from a
    shared pipe (reads of 4 bytes from a pipe are atomic), so a process that gets less
    CPU simply does fewer chunks.
    """
    n = len(items)
    processes = min(processes, n)
    if processes <= 1 or not can_fork():
        return [fn(x) for x in items]
    size = max(MIN_CHUNK, -(-n // (processes * CHUNKS_PER_PROCESS)))
    chunks = [range(start, min(start + size, n)) for start in range(0, n, size)]
    queue_r, queue_w = os.pipe()
    try:
        os.write(queue_w, b"".join(_RECORD.pack(k) for k in range(len(chunks))))
    finally:
        os.close(queue_w)
    children: list[tuple[int, int]] = []
    try:
        for _ in range(processes - 1):
            try:
                read_fd, write_fd = os.pipe()
                try:
                    pid = os.fork()
                except OSError:
                    os.close(read_fd)
                    os.close(write_fd)
                    raise
            except OSError:  # out of processes or descriptors: fewer helpers
                break
            if pid == 0:  # pragma: no cover - runs in the child (coverage can't see it)
                _child(fn, items, chunks, queue_r, read_fd, write_fd)
            os.close(write_fd)
            children.append((pid, read_fd))
        started = time.monotonic()
        results: list[R | None] = [None] * n
        done: set[int] = set()
        for k in _claims(queue_r):
            for i in chunks[k]:
                results[i] = fn(items[i])
            done.add(k)
    finally:
        os.close(queue_r)
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + max(CHILD_GRACE_SECONDS, CHILD_GRACE_FACTOR * elapsed)
    for pid, read_fd in children:
        for k, values in _collect(pid, read_fd, deadline, chunks):
            if k not in done:
                results[chunks[k].start : chunks[k].stop] = values
                done.add(k)
    for k, chunk in enumerate(chunks):  # claimed by a child that failed
        if k not in done:
            for i in chunk:
                results[i] = fn(items[i])
    return results  # type: ignore[return-value]


_RECORD: Final = struct.Struct("<I")
#: Chunks per process: enough to even out unequal speeds, few enough to be cheap.
CHUNKS_PER_PROCESS = 8
MIN_CHUNK = 16


def _claims(queue_fd: int) -> Iterator[int]:
    while True:
        record = os.read(queue_fd, _RECORD.size)
        if len(record) < _RECORD.size:
            return
        yield _RECORD.unpack(record)[0]


def _child(
    fn: Callable[[T], R],
    items: Sequence[T],
    chunks: list[range],
    queue_fd: int,
    read_fd: int,
    write_fd: int,
) -> None:  # pragma: no cover - runs in the child
    code = 1
    try:
        os.close(read_fd)
        import gc

        gc.disable()  # nothing survives the child; collections would only cost time
        results = [(k, [fn(items[i]) for i in chunks[k]]) for k in _claims(queue_fd)]
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


def _collect(
    pid: int, read_fd: int, deadline: float, chunks: list[range]
) -> list[tuple[int, list[Any]]]:
    """The child's (chunk, results) pairs; [] if it failed (then it is killed, reaped)."""
    data: list[bytes] = []
    ok = True
    poller = select.poll()
    poller.register(read_fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                ok = False
                break
            block = os.read(read_fd, 1 << 20)
            if not block:
                break
            data.append(block)
    except OSError:
        ok = False
    finally:
        os.close(read_fd)
    if not ok:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # pragma: no cover - reaped elsewhere (SIGCHLD ignored)
        status = 0
    if not ok or not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        return []
    try:
        pairs = pickle.loads(b"".join(data))  # noqa: S301 - from our own child  # nosec B301
    except Exception:
        return []
    if not isinstance(pairs, list):
        return []
    return [
        (k, values)
        for k, values in pairs
        if isinstance(k, int) and 0 <= k < len(chunks) and len(values) == len(chunks[k])
    ]

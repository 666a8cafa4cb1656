"""A run's whole process tree, including members that left its session (Linux).

The process group and session of a task's leader (see :mod:`.process`) hold every
descendant except one that called ``setsid()`` itself (``setsid cmd &``, a daemonising
program). This module finds those too:

* **Descendants of the live leader**, by parent links (``/proc/PID/task/*/children``):
  a timeout or cancel reaches a ``setsid`` grandchild while its parent is alive.
* **Orphans of the run.** When the daemon is a *child subreaper*
  (:func:`become_subreaper`, ``PR_SET_CHILD_SUBREAPER``), a descendant whose parent
  dies is re-parented to the daemon instead of to init. Such a direct child of the
  daemon that is not a task leader and carries the run's marker in its environment
  (``RECONCILER_TASK`` and ``RECONCILER_RUN_ID``, inherited from the task) belongs to
  the run, and so does everything below it.

Not found: a process that leaves the session *and* drops the marker from its
environment before it is orphaned (``setsid env -i cmd`` after a double fork), and
a process of another user (a setuid program): the kernel does not let us read its
environment or signal it. Without a subreaper (not Linux, or ``prctl`` refused),
orphans go to init and only the first kind (descendants of the live leader) is found.

Reaping: orphans re-parented to the daemon become its zombies when they exit.
:func:`reap_orphans` reaps the zombies that can only be run members; asyncio's child
watcher and ``subprocess`` reap the rest (task leaders, whose pids are registered in
:data:`LEADERS` for the duration of their run, and helpers such as ``git``, which stay
in the daemon's session).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import threading
from collections.abc import Iterable

logger = logging.getLogger(__name__)

_LINUX = sys.platform.startswith("linux") and os.path.isdir("/proc")
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


class _Leaders:
    """Pids of task leaders this process spawned, and how many spawns are under way."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pids: set[int] = set()
        self.spawning = 0

    def begin_spawn(self) -> None:
        with self._lock:
            self.spawning += 1

    def end_spawn(self, pid: int | None) -> None:
        with self._lock:
            self.spawning -= 1
            if pid is not None:
                self.pids.add(pid)

    def discard(self, pid: int) -> None:
        with self._lock:
            self.pids.discard(pid)

    def leader_or_spawning(self, pid: int) -> tuple[bool, bool]:
        """(``pid`` is a registered leader, a spawn is under way): O(1), at every run
        end and for every child, where a snapshot of every leader would cost O(runs)."""
        with self._lock:
            return pid in self.pids, self.spawning > 0


#: Task leaders of this process: never reaped here (asyncio waits for them).
LEADERS = _Leaders()


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: int | ctypes.c_int | ctypes._Pointer[ctypes.c_int]) -> int:
    return int(_libc().prctl(option, arg, 0, 0, 0))


_became_subreaper = False


@functools.cache
def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants; True on success.

    Once per process (the attribute is per process and inherited by no one). Linux
    only; elsewhere, or when ``prctl`` fails, a note is logged and orphans keep going
    to init.
    """
    if not _LINUX:
        logger.info("not Linux: task processes that leave their session (setsid) are not "
                    "killed with their run")
        return False
    try:
        ok = _prctl(_PR_SET_CHILD_SUBREAPER, 1) == 0
    except (OSError, AttributeError):
        ok = False
    global _became_subreaper
    _became_subreaper = ok
    if not ok:
        logger.warning("prctl(PR_SET_CHILD_SUBREAPER) failed: task processes that leave "
                       "their session (setsid) and are orphaned are not killed with their run")
    return ok


def is_subreaper() -> bool:
    """True when orphaned descendants come back to this process (PID 1 or subreaper).

    Asked at every run's end: after :func:`become_subreaper` succeeded (the daemon, at
    start-up; nothing in it clears the attribute again) the answer costs no ``prctl``."""
    if _became_subreaper:
        return True
    if not _LINUX:
        return False
    if os.getpid() == 1:
        return True
    value = ctypes.c_int(0)
    try:
        if _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.pointer(value)) != 0:
            return False
    except (OSError, AttributeError):
        return False
    return value.value != 0


def _stat(pid: int) -> tuple[bytes, int, int] | None:
    """(state, ppid, session) of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            data = stat_file.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()  # comm may contain spaces or parens
    try:
        return fields[0], int(fields[1]), int(fields[3])
    except (IndexError, ValueError):
        return None


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's), or [] when unknown."""
    found: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as listing:
                found.extend(int(x) for x in listing.read().split())
        except (OSError, ValueError):
            continue
    return found


def adopted() -> list[int]:
    """Children of this process's main thread: where the kernel re-parents orphans for a
    subreaper (the first live thread of the group, its leader while the process runs).
    One read, where :func:`children` of the whole process reads one file per thread, and
    the daemon has a thread per running task (asyncio's child watcher)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children", "rb") as listing:
            return [int(x) for x in listing.read().split()]
    except (OSError, ValueError):
        return []


def _descendants(roots: Iterable[int]) -> list[int]:
    seen: list[int] = []
    pending = list(roots)
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.append(pid)
        pending.extend(children(pid))
    return seen


def _marked(pid: int, marker: frozenset[bytes]) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            entries = set(environ.read().split(b"\0"))
    except OSError:
        return False
    return marker <= entries


def run_marker(env: dict[str, str]) -> frozenset[bytes]:
    """The environment entries that identify a run's processes."""
    keys = ("RECONCILER_TASK", "RECONCILER_RUN_ID")
    return frozenset(f"{k}={env[k]}".encode() for k in keys if k in env)


def orphans() -> list[int]:
    """This process's children that are not task leaders it spawned: the orphans of
    runs it adopted (subreaper or PID 1), live or zombie, and helpers such as ``git``.
    One read of :func:`adopted`; [] when orphans do not come back to this process."""
    if not _LINUX or not is_subreaper():
        return []
    return [pid for pid in adopted() if not LEADERS.leader_or_spawning(pid)[0]]


def run_members(leader: int, marker: frozenset[bytes],
                adopted_now: list[int] | None = None) -> list[int]:
    """Live processes of the run led by ``leader``, found by parent links: the leader's
    descendants and (subreaper only) the run's orphans with theirs; not the leader.
    ``adopted_now`` is a fresh :func:`orphans` when the caller has one."""
    if not _LINUX:
        return []
    roots = [leader]
    if marker:
        own_session = os.getsid(0)
        for pid in orphans() if adopted_now is None else adopted_now:
            if pid == leader:
                continue
            stat = _stat(pid)
            if stat is None or stat[0] == b"Z" or stat[2] == own_session:
                continue  # gone, dead, or a helper of the daemon's own (git)
            if _marked(pid, marker):
                roots.append(pid)
    members = []
    for pid in _descendants(roots):
        stat = _stat(pid)
        if pid != leader and stat is not None and stat[0] != b"Z":
            members.append(pid)
    return members


def reap_orphans(adopted_now: list[int] | None = None) -> int:
    """Reap zombie children that can only be orphans of runs; return how many.

    A zombie child of ours is an orphan of a run when it is outside the daemon's
    session (helpers such as ``git`` stay in it) and not a registered task leader. A
    zombie that leads its own session looks like a leader just spawned, so while a
    spawn is under way those wait for the next call. ``adopted_now``: a recent
    :func:`orphans` (a zombie that came after it is reaped by a later call).
    """
    candidates = orphans() if adopted_now is None else adopted_now
    if not candidates:
        return 0
    own_session = os.getsid(0)
    reaped = 0
    for pid in candidates:
        is_leader, spawning = LEADERS.leader_or_spawning(pid)
        if is_leader:
            continue
        stat = _stat(pid)
        if stat is None or stat[0] != b"Z" or stat[2] == own_session:
            continue
        if stat[2] == pid and spawning:
            continue
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        reaped += done == pid
    return reaped

"""Carrying out a run's isolation: its user, its limits, its cgroup (Linux).

The decisions are in :mod:`reconciler.core.isolation`; this module turns them into
the programs a task process is started through, all util-linux, never Python code in
the child (a ``preexec_fn`` would force a full ``fork()`` of the daemon)::

    [sh -c 'echo $$ > CGROUP/cgroup.procs; exec "$@"']      cgroup mode, with limits
    [setpriv --reuid U --regid G --init-groups --]           run.user / run.group
    setpriv --pdeathsig KILL --                              always (process.py)
    [prlimit --as=N --nproc=N --nofile=N --fsize=N --]       rlimits of the mode
    program args...

The death signal is asked for *after* the user change: the kernel clears
``PR_SET_PDEATHSIG`` when a process's credentials change. Limits are set in the child
only, by ``prlimit`` as the task's user (lowering a limit needs no privilege); the
daemon's own limits never change.

**Modes.** ``cgroup``: the daemon can create cgroup v2 groups with the ``memory`` and
``pids`` controllers (its own group, or a delegated one, is writable and the
controllers are enabled or can be); each run with limits gets ``reconciler-run-<id>``
under the daemon's group with ``memory.max``, ``memory.swap.max``, ``pids.max`` and
``cpu.max``; the run's end kills the whole group (``cgroup.kill``) and removes it, and
``memory.events`` says whether the OOM killer ended it. ``rlimit``: everything else
(cgroup v1, no delegation, not root): ``RLIMIT_AS``, ``RLIMIT_NPROC``,
``RLIMIT_NOFILE``, ``RLIMIT_FSIZE`` per process, ``cpu`` not enforced.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import logging
import os
import pwd
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field

from reconciler.core.isolation import (
    IsolationMode,
    cgroup_settings,
    memory_verdict,
    process_rlimits,
)
from reconciler.core.model import Limits, RunSpec

logger = logging.getLogger(__name__)

#: Controllers cgroup mode needs (cpu is used when present).
REQUIRED_CONTROLLERS = ("memory", "pids")
RUN_CGROUP_PREFIX = "reconciler-run-"
#: The leaf the daemon moves itself into when its own group must delegate
#: (cgroup v2: a group with processes cannot enable controllers for its children).
DAEMON_LEAF = "reconciler-daemon"


class IsolationError(Exception):
    """A run's isolation cannot be set up; the message is safe to show."""


# ---------------------------------------------------------------------------- run as


@dataclass(frozen=True, slots=True)
class RunAs:
    """A resolved ``run.user`` / ``run.group``."""

    uid: int
    gid: int
    name: str | None  # None: a uid without a passwd entry
    home: str

    def setpriv_options(self) -> list[str]:
        groups = "--init-groups" if self.name is not None else "--clear-groups"
        return [f"--reuid={self.uid}", f"--regid={self.gid}", groups]

    def env(self) -> dict[str, str]:
        name = self.name or str(self.uid)
        return {"HOME": self.home, "USER": name, "LOGNAME": name}


def resolve_run_as(run: RunSpec) -> RunAs | None:
    """The user and group ``run`` asks for, from the host's user database; None
    without ``run.user``/``run.group``. Raises :class:`IsolationError`."""
    if run.user is None and run.group is None:
        return None
    if os.geteuid() != 0:
        raise IsolationError("run.user/run.group need a daemon running as root")
    entry: pwd.struct_passwd | None
    try:
        user = run.user if run.user is not None else os.geteuid()
        entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    except KeyError:
        if isinstance(run.user, str):
            raise IsolationError(f"run.user: no user {run.user!r} on this host") from None
        entry = None
    uid = entry.pw_uid if entry is not None else int(run.user)  # type: ignore[arg-type]
    gid = entry.pw_gid if entry is not None else uid
    if run.group is not None:
        try:
            gid = (grp.getgrgid(run.group) if isinstance(run.group, int)
                   else grp.getgrnam(run.group)).gr_gid
        except KeyError:
            if isinstance(run.group, str):
                raise IsolationError(f"run.group: no group {run.group!r} on this host") from None
            gid = run.group
    home = entry.pw_dir if entry is not None else "/"
    return RunAs(uid, gid, entry.pw_name if entry is not None else None, home)


# --------------------------------------------------------------------------- cgroups


@dataclass(frozen=True, slots=True)
class ModeReport:
    """The isolation mode of this daemon and why (for ``reconciler status``)."""

    mode: IsolationMode
    detail: str
    parent: str | None = None  # cgroup mode: where run groups are created

    def describe(self) -> str:
        return f"{self.mode}: {self.detail}"


def _cgroup2_mount() -> str | None:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as info:
            for line in info:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split()[4]
    except OSError:
        return None
    return None


def _own_cgroup() -> str | None:
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as own:
            for line in own:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        return None
    return None


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def detect_mode() -> ModeReport:
    """cgroup mode when cgroup v2 with memory and pids can be delegated to runs here,
    else rlimit mode with the reason (never raises)."""
    try:
        return _detect()
    except OSError as exc:
        return ModeReport("rlimit", f"cgroup v2 not usable ({exc.strerror or exc})")


def _detect() -> ModeReport:
    mount, own = _cgroup2_mount(), _own_cgroup()
    if mount is None or own is None:
        return ModeReport("rlimit", "no cgroup v2 hierarchy")
    if os.geteuid() != 0 and not os.access(os.path.join(mount, own.lstrip("/")), os.W_OK):
        return ModeReport("rlimit", "the daemon's cgroup is not writable")
    group = os.path.join(mount, own.lstrip("/"))
    available = _read(os.path.join(group, "cgroup.controllers")).split()
    missing = [c for c in REQUIRED_CONTROLLERS if c not in available]
    if missing:
        return ModeReport("rlimit", f"cgroup v2 at {mount} offers no {', '.join(missing)} "
                          "controller (bound to a cgroup v1 hierarchy, or not delegated)")
    if not os.access(group, os.W_OK):
        return ModeReport("rlimit", f"cgroup {group} is not writable (not delegated)")
    parent = _delegate(group, available)
    return ModeReport("cgroup", f"cgroup v2 under {parent}", parent)


def _delegate(group: str, available: Sequence[str]) -> str:
    """Enable the controllers for the children of ``group``; a non-root group with
    processes first moves them into :data:`DAEMON_LEAF` (no internal processes)."""
    wanted = [c for c in (*REQUIRED_CONTROLLERS, "cpu") if c in available]
    enabled = _read(os.path.join(group, "cgroup.subtree_control")).split()
    if all(c in enabled for c in wanted):
        return group
    procs = _read(os.path.join(group, "cgroup.procs")).split()
    is_root = not os.path.exists(os.path.join(group, "cgroup.type"))
    if procs and not is_root:
        leaf = os.path.join(group, DAEMON_LEAF)
        os.makedirs(leaf, exist_ok=True)
        for pid in procs:
            with contextlib.suppress(OSError):  # exited meanwhile, or a kernel thread
                _write(os.path.join(leaf, "cgroup.procs"), pid)
    _write(os.path.join(group, "cgroup.subtree_control"), " ".join(f"+{c}" for c in wanted))
    return group


@functools.cache
def current_mode() -> ModeReport:
    """:func:`detect_mode`, once per process."""
    report = detect_mode()
    logger.info("isolation of runs with limits: %s", report.describe())
    return report


@dataclass
class RunCgroup:
    """The cgroup of one run (cgroup mode)."""

    path: str
    oom_kills: int = field(default=0)

    @classmethod
    def create(cls, parent: str, run_id: int, limits: Limits) -> RunCgroup:
        path = os.path.join(parent, f"{RUN_CGROUP_PREFIX}{run_id}-{os.getpid()}")
        try:
            os.mkdir(path)
            for name, value in cgroup_settings(limits).items():
                if os.path.exists(os.path.join(path, name)):
                    _write(os.path.join(path, name), value)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            raise IsolationError(f"cannot create the run's cgroup: {exc.strerror}") from None
        return cls(path)

    def enter_argv(self) -> list[str]:
        """Put the process into this group before it execs the rest of the argv."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"',
                os.path.join(self.path, "cgroup.procs")]

    def close(self) -> None:
        """Read the OOM count, kill what is left (grandchildren), remove the group."""
        with contextlib.suppress(OSError, ValueError):
            for line in _read(os.path.join(self.path, "memory.events")).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    self.oom_kills = int(value)
        kill_cgroup(self.path)
        with contextlib.suppress(OSError):
            os.rmdir(self.path)


def kill_cgroup(path: str) -> None:
    """SIGKILL every process in a cgroup (``cgroup.kill``, or one by one before 5.14)."""
    try:
        _write(os.path.join(path, "cgroup.kill"), "1")
        return
    except OSError:
        pass
    with contextlib.suppress(OSError):
        for pid in _read(os.path.join(path, "cgroup.procs")).split():
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)


def sweep_run_cgroups(report: ModeReport) -> int:
    """Kill and remove the run groups a dead daemon left (killed with SIGKILL: the
    grandchildren of its shell tasks are in there); groups of live daemons (named
    ``reconciler-run-<run id>-<daemon pid>``) are left alone. How many were found."""
    if report.parent is None:
        return 0
    found = 0
    with contextlib.suppress(OSError):
        for name in os.listdir(report.parent):
            owner = name.rpartition("-")[2]
            if name.startswith(RUN_CGROUP_PREFIX) and not _alive(owner):
                found += 1
                kill_cgroup(os.path.join(report.parent, name))
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(report.parent, name))
    return found


def _alive(pid: str) -> bool:
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -------------------------------------------------------------------------- launching


@functools.cache
def _prlimit() -> str | None:
    for path in ("/usr/bin/prlimit", "/bin/prlimit"):
        if os.access(path, os.X_OK):
            return path
    return shutil.which("prlimit", path="/usr/sbin:/sbin")


@dataclass
class Launch:
    """How one run's process is started (see the module docstring): the cgroup entry,
    the ``setpriv`` options of the user change, what runs after ``setpriv --pdeathsig``
    (``prlimit``), environment additions, and the run's cgroup (if any)."""

    enter: list[str] = field(default_factory=list)
    run_as: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cgroup: RunCgroup | None = None
    mode: IsolationMode = "rlimit"

    @property
    def needed(self) -> bool:
        return bool(self.enter or self.run_as or self.after)

    def close(self) -> None:
        if self.cgroup is not None:
            self.cgroup.close()

    def memory_error(self, limits: Limits | None, exit_code: int | None,
                     output_tail: str) -> str | None:
        return memory_verdict(limits, self.mode, exit_code=exit_code, output_tail=output_tail,
                              oom_kills=self.cgroup.oom_kills if self.cgroup else 0)


def prepare_launch(run: RunSpec, limits: Limits | None, run_id: int) -> Launch:
    """The :class:`Launch` of a run (nothing to do without user and limits)."""
    launch = Launch()
    run_as = resolve_run_as(run)
    if run_as is not None:
        launch.run_as = run_as.setpriv_options()
        launch.env = {k: v for k, v in run_as.env().items() if k not in run.env}
    if limits is None:
        return launch
    report = current_mode()
    launch.mode = report.mode
    if report.parent is not None and cgroup_settings(limits):
        launch.cgroup = RunCgroup.create(report.parent, run_id, limits)
        launch.enter = launch.cgroup.enter_argv()
    values = process_rlimits(limits, report.mode)
    if values:
        prlimit = _prlimit()
        if prlimit is None:
            launch.close()
            raise IsolationError("spec.limits: util-linux prlimit not found")
        launch.after = [prlimit, *(f"--{name}={value}" for name, value in values.items()), "--"]
    return launch

"""Running one task process to completion: spawn, capture, time out, cancel, clean up.

Shared by the command, shell and python executors.

Process groups. Every task process is started with ``start_new_session=True``: it
leads a new session *and* a new process group whose id is its pid. Signals go to
the whole group (``killpg``), so a timeout also stops the shell's children and
grandchildren instead of orphaning them. On Linux the session is also swept via
``/proc``: a member that moved itself into another process group (GNU ``timeout``
does that, and so does a shell with job control) is signalled too. A member that
called ``setsid()`` itself is found by :mod:`reconciler.executors.tree`: as a
descendant of the live leader, or, when the daemon is a child subreaper, as an orphan
re-parented to the daemon that carries the run's ``RECONCILER_*`` marker; see there
for what still escapes, and use a cgroup (systemd, a container) when that matters.

Termination (timeout or the cancel event): SIGTERM to the tree, then wait until
the leader has exited and the output pipe is closed, for at most
``request.kill_grace``; then SIGKILL to the tree, unconditionally, so that a
grandchild that ignores SIGTERM does not survive its task.

Leftovers after a normal exit: when the leader exits, the run is over. Anything still
in its group or session (``cmd &`` in a shell script) gets SIGTERM and, once the
output pipe closes or ``kill_grace`` passes, SIGKILL - the way Kubernetes and systemd
end a job. This is also what keeps the executor from hanging: an orphaned grandchild
holding the stdout pipe open would otherwise keep us waiting for end-of-file forever.
(Python 3.11's ``Process.wait()`` has exactly that problem, which is why this module
uses ``loop.subprocess_exec`` with its own protocol and learns about the leader's exit
from ``process_exited`` instead.) If the pipe is still open a short while after
everything was killed (a process escaped with ``setsid``), reading stops anyway.

Daemon death: a task must not outlive a daemon killed with SIGKILL (or OOM-killed),
or a restarted daemon would mark its run ``abandoned`` and a retry could run beside a
survivor. On Linux every task process is started through util-linux ``setpriv
--pdeathsig KILL`` (:func:`die_with_daemon`), which asks the kernel for ``SIGKILL``
when the daemon dies (``PR_SET_PDEATHSIG``) and then execs the program. The signal
reaches the direct child only: a shell task's grandchildren are reparented and
survive a daemon SIGKILL (a graceful stop kills the whole tree). Run the daemon as
PID 1 of a container or under systemd (``KillMode=control-group``) when that matters.
Without ``setpriv`` (not Linux, or util-linux missing) tasks are started directly.

Reaping: the leader is reaped by asyncio's child watcher. Grandchildren are reparented
to the nearest subreaper: the daemon itself (it makes itself a child subreaper,
``PR_SET_CHILD_SUBREAPER``, or is PID 1 of a container), else init. When they become
the daemon's children, after killing a tree this module also reaps the tree's members
(``waitpid(-pgid)`` and the pids it signalled), and at the end of every run the
zombies of orphans that exited on their own (:func:`~reconciler.executors.tree.reap_orphans`);
otherwise those calls find nothing to do.

Output: stdout and stderr share one pipe (so they interleave in the order written),
stdin is ``/dev/null``. Chunks go to :class:`~reconciler.executors.output.OutputSink`
(bounded tail, ``::progress`` lines, ``events.output``) as they arrive.

All waiting is ``asyncio.wait`` on futures (process exit, end of output, the cancel
event) with timeouts measured by the event loop's monotonic clock; nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from reconciler.core.durations import format_duration
from reconciler.core.protocols import ExecutionEvents, ExecutionRequest, ExecutionResult
from reconciler.core.runtime import RunStatus
from reconciler.executors.environment import SecretResolutionError, build_run_env
from reconciler.executors.isolation import IsolationError, Launch, prepare_launch
from reconciler.executors.output import OutputSink
from reconciler.executors.tree import LEADERS, orphans, reap_orphans, run_marker, run_members

logger = logging.getLogger(__name__)

#: After the tree was killed, how long to wait for the output pipe to reach EOF.
DRAIN_TIMEOUT = 2.0
#: After SIGKILL, how long to wait for the leader to be reaped before giving up.
KILL_WAIT = 10.0
#: How long to wait for killed orphans to be reaped (subreaper / PID 1 only).
REAP_WAIT = 5.0

_PROC_SWEEP = sys.platform.startswith("linux") and os.path.isdir("/proc")

@functools.cache
def _setpriv() -> str | None:
    """util-linux ``setpriv`` if it has ``--pdeathsig`` (2.33 and later), looked up in
    fixed places, never through a task's PATH; checked once, with one run."""
    if not sys.platform.startswith("linux"):
        return None
    for path in ("/usr/bin/setpriv", "/bin/setpriv"):
        if not os.access(path, os.X_OK):
            continue
        try:
            probe = subprocess.run(  # nosec B603 - fixed argv, no shell
                [path, "--pdeathsig", "KILL", "--", path, "--version"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return path
    logger.warning("util-linux setpriv with --pdeathsig not found: task processes will "
                   "not be killed when the daemon is killed with SIGKILL")
    return None


def _resolve_program(program: str, env: dict[str, str], cwd: str | None) -> str:
    """The file ``program`` names, found as ``execvp`` would, for the ``setpriv``
    wrapper; raises the ``OSError`` a direct spawn would have raised."""
    if "/" in program:
        path = program if os.path.isabs(program) else os.path.join(cwd or os.getcwd(), program)
        if not os.path.exists(path):
            raise FileNotFoundError(2, "No such file or directory", program)
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise PermissionError(13, "Permission denied", program)
        return path
    # as execvp: relative PATH entries (and empty ones) are relative to the task's cwd
    base = cwd or os.getcwd()
    search = os.pathsep.join(d if os.path.isabs(d) else os.path.join(base, d)
                             for d in env.get("PATH", os.defpath).split(os.pathsep))
    key = (program, search)
    known = _FOUND.get(key)
    if known is not None and os.access(known, os.X_OK) and not os.path.isdir(known):
        return known  # one check instead of a walk of PATH at every run
    found = shutil.which(program, path=search)
    if found is None:
        _FOUND.pop(key, None)
        raise FileNotFoundError(2, "No such file or directory", program)
    if len(_FOUND) >= 512:
        _FOUND.clear()
    _FOUND[key] = found
    return found


#: (program, search path) -> the file found: tasks run the same programs again and again.
#: A program that went away is looked up again; one put earlier in PATH later is found
#: once the cached one is gone (execvp would pick it at once).
_FOUND: dict[tuple[str, str], str] = {}


def die_with_daemon(argv: Sequence[str], env: dict[str, str], cwd: str | None,
                    launch: Launch | None = None) -> list[str]:
    """``argv`` started so that the kernel kills it when the daemon dies (Linux).

    ``setpriv --pdeathsig KILL`` sets ``PR_SET_PDEATHSIG`` and execs the program: one
    extra exec (about 0.8 ms). A ``preexec_fn`` would do the same in-process but
    forces a full ``fork()`` instead of ``vfork()``: about 15 ms per spawn for a
    daemon of 150 MB. The program is resolved here so that "command not found" stays
    our own message; it therefore sees its full path as ``argv[0]``. Without
    ``setpriv`` the argv is returned unchanged.

    Differences from a direct exec, all rare: a script without a ``#!`` line runs
    under ``/bin/sh`` (``execvp``'s fallback) instead of failing with "exec format
    error"; a script whose interpreter is missing fails with exit code 127 and
    setpriv's message in its output; setuid and file-capability programs (``sudo``,
    ``ping``) lose the death signal at exec, as the kernel wants.
    ``launch`` adds the run's isolation around it
    (:mod:`reconciler.executors.isolation`); that needs ``setpriv``.
    """
    setpriv = _setpriv()
    if setpriv is None:
        if launch is not None and launch.needed:
            raise SpawnError("run.user, run.group and spec.limits need util-linux setpriv")
        return list(argv)
    program = _resolve_program(argv[0], env, cwd)
    if launch is None:
        return [setpriv, "--pdeathsig", "KILL", "--", program, *argv[1:]]
    run_as = [setpriv, *launch.run_as, "--"] if launch.run_as else []
    return [*launch.enter, *run_as, setpriv, "--pdeathsig", "KILL", "--", *launch.after,
            program, *argv[1:]]


@dataclass(frozen=True, slots=True)
class ProcessOutcome:
    """How a supervised process ended (before it is turned into a result)."""

    reason: str  # "exited", "timeout" or "cancelled"
    returncode: int | None
    output: str
    truncated: bool = False  # the output was longer than the tail kept
    memory_error: str | None = None  # "memory limit 64Mi exceeded": why it failed


class SpawnError(Exception):
    """The process could not be started; the message is safe to show."""


def failed(error: str, output: str = "", exit_code: int | None = None) -> ExecutionResult:
    return ExecutionResult(RunStatus.FAILED, exit_code=exit_code, error=error, output_tail=output)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def result_for(
    request: ExecutionRequest, outcome: ProcessOutcome, *, error: str | None = None
) -> ExecutionResult:
    """Map an outcome to a result; ``error`` (if given) explains a non-zero exit."""
    result = _result_for(request, outcome, error)
    return replace(result, output_truncated=outcome.truncated) if outcome.truncated else result


def _result_for(
    request: ExecutionRequest, outcome: ProcessOutcome, error: str | None
) -> ExecutionResult:
    code = outcome.returncode
    if outcome.reason == "timeout":
        assert request.timeout is not None
        return ExecutionResult(
            RunStatus.TIMED_OUT,
            exit_code=code,
            error=f"timed out after {format_duration(request.timeout)}",
            output_tail=outcome.output,
        )
    if outcome.reason == "cancelled":
        return ExecutionResult(
            RunStatus.CANCELLED, exit_code=code, error="cancelled", output_tail=outcome.output
        )
    if code == 0:
        return ExecutionResult(RunStatus.SUCCEEDED, exit_code=0, output_tail=outcome.output)
    if outcome.memory_error is not None:
        return failed(outcome.memory_error, outcome.output, code)
    if code is None:
        return failed(error or "the process did not exit after SIGKILL", outcome.output)
    if code < 0:
        reason = f"killed by signal {signal_name(-code)}"
        return failed(f"{error} ({reason})" if error else reason, outcome.output, code)
    return failed(error or f"exited with code {code}", outcome.output, code)


def check_working_dir(path: str | None) -> str | None:
    """An error message when ``path`` is set but not an existing directory."""
    if path is None:
        return None
    if not os.path.exists(path):
        return f"working directory {path} does not exist"
    if not os.path.isdir(path):
        return f"working directory {path} is not a directory"
    return None


async def run_process(
    argv: Sequence[str],
    request: ExecutionRequest,
    events: ExecutionEvents,
    cancel: asyncio.Event,
    *,
    pass_fds: Collection[int] = (),
    describe: str | None = None,
    now: datetime | None = None,
) -> tuple[ProcessOutcome | ExecutionResult, tuple[str, ...]]:
    """Run ``argv`` for ``request``; return the outcome (or an early failed result).

    The second item holds the secret values of the run's environment, for redaction.
    ``describe`` names the program in spawn errors (default ``argv[0]``); ``now`` is
    the start instant used for ``RECONCILER_DEADLINE``.
    """
    try:
        resolved = build_run_env(request, now)
    except SecretResolutionError as exc:
        logger.warning("run %s of task %s: %s", request.run_id, request.task, exc)
        return failed(str(exc)), ()
    cwd = request.run.working_dir
    problem = check_working_dir(cwd)
    if problem is not None:
        return failed(problem), resolved.secrets
    if cancel.is_set():
        return ExecutionResult(RunStatus.CANCELLED, error="cancelled"), resolved.secrets
    try:
        launch = prepare_launch(request.run, request.limits, request.run_id)
    except IsolationError as exc:
        logger.warning("run %s of task %s: %s", request.run_id, request.task, exc)
        return failed(str(exc)), resolved.secrets
    supervisor = _Supervisor(request, events, cancel, resolved.secrets)
    try:
        outcome = await supervisor.run(argv, env={**resolved.env, **launch.env}, cwd=cwd,
                                       pass_fds=pass_fds, describe=describe, launch=launch)
    except SpawnError as exc:
        logger.warning("run %s of task %s: %s", request.run_id, request.task, exc)
        return failed(str(exc)), resolved.secrets
    finally:
        launch.close()  # cgroup mode: kills what is left, reads the OOM count
    if outcome.reason == "exited":
        problem = launch.memory_error(request.limits, outcome.returncode, outcome.output)
        outcome = replace(outcome, memory_error=problem)
    return outcome, resolved.secrets


class _Protocol(asyncio.SubprocessProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, sink: OutputSink) -> None:
        self.sink = sink
        self.exited: asyncio.Future[None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.sink.feed(data.encode() if isinstance(data, str) else data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.sink.close()
            if not self.eof.done():
                self.eof.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


class _Supervisor:
    def __init__(
        self,
        request: ExecutionRequest,
        events: ExecutionEvents,
        cancel: asyncio.Event,
        secrets: Sequence[str] = (),
    ) -> None:
        self.request = request
        self.secrets = secrets
        self.events = events
        self.cancel = cancel
        self.grace = max(0.0, request.kill_grace.total_seconds())
        self.pgid = 0
        self.swept: set[int] = set()  # members outside the group we signalled
        self.marker: frozenset[bytes] = frozenset()

    async def run(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        cwd: str | None,
        pass_fds: Collection[int],
        describe: str | None,
        launch: Launch | None = None,
    ) -> ProcessOutcome:
        loop = asyncio.get_running_loop()
        started = loop.time()
        timeout = self.request.timeout
        deadline = None if timeout is None else started + timeout.total_seconds()
        sink = OutputSink(self.events, self.request.output_limit, secrets=self.secrets)
        protocol = _Protocol(loop, sink)
        self.marker = run_marker(env)
        # :func:`orphans` as read when the run ended cleanly: reused for the last reaping.
        adopted_at_exit: list[int] | None = None
        LEADERS.begin_spawn()
        try:
            transport = await self._spawn(loop, protocol, argv, env, cwd, pass_fds, describe,
                                          launch)
        except BaseException:
            LEADERS.end_spawn(None)
            raise
        self.pgid = transport.get_pid()
        LEADERS.end_spawn(self.pgid)
        logger.debug(
            "run %s of task %s: started pid %s", self.request.run_id, self.request.task, self.pgid
        )
        cancel_waiter: asyncio.Future[Any] = asyncio.ensure_future(self.cancel.wait())
        waiters: set[asyncio.Future[Any]] = {protocol.exited, cancel_waiter}
        reason = "exited"
        try:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            await asyncio.wait(
                waiters,
                timeout=remaining,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if protocol.exited.done():
                adopted_at_exit = await self._clean_up_after_exit(protocol)
            else:
                reason = "cancelled" if self.cancel.is_set() else "timeout"
                logger.info(
                    "run %s of task %s: %s, terminating process group %s",
                    self.request.run_id,
                    self.request.task,
                    "cancel requested" if reason == "cancelled" else "timeout",
                    self.pgid,
                )
                await self._terminate(protocol)
            await self._drain(protocol, transport)
        except BaseException:
            # The daemon cancelled the coroutine itself (e.g. on shutdown), or something
            # broke: kill at once, no grace period, but still wait for the exit and reap
            # before re-raising, so nothing is left running.
            self._signal_tree(signal.SIGKILL)
            with contextlib.suppress(asyncio.CancelledError):
                if await _wait_all([protocol.exited], KILL_WAIT):
                    await _wait_all([protocol.eof], DRAIN_TIMEOUT)
                    transport.close()
                    await self._reap()
            raise
        finally:
            cancel_waiter.cancel()
            transport.close()
            if protocol.exited.done():  # reaped by asyncio: no longer a leader of ours
                LEADERS.discard(self.pgid)
        if protocol.exited.done():
            await self._reap()
        reap_orphans(adopted_at_exit)
        return ProcessOutcome(reason, transport.get_returncode(), sink.text(),
                              sink.tail.truncated)

    async def _spawn(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol: _Protocol,
        argv: Sequence[str],
        env: dict[str, str],
        cwd: str | None,
        pass_fds: Collection[int],
        describe: str | None,
        launch: Launch | None,
    ) -> asyncio.SubprocessTransport:
        program = describe or argv[0]
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: protocol,
                *die_with_daemon(argv, env, cwd, launch),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
                pass_fds=tuple(pass_fds),
            )
        except FileNotFoundError as exc:
            if cwd is not None and exc.filename == cwd:
                raise SpawnError(f"working directory {cwd} does not exist") from None
            raise SpawnError(
                f"cannot run {program!r}: command not found (exit status 127 in a shell)"
            ) from None
        except PermissionError as exc:
            if cwd is not None and exc.filename == cwd:
                raise SpawnError(f"working directory {cwd} is not accessible") from None
            raise SpawnError(
                f"cannot run {program!r}: permission denied (exit status 126 in a shell)"
            ) from None
        except OSError as exc:
            raise SpawnError(
                f"cannot run {program!r}: {exc.strerror or type(exc).__name__}"
            ) from None
        except ValueError:
            raise SpawnError(
                f"cannot run {program!r}: an argument contains a NUL character"
            ) from None
        return transport

    async def _terminate(self, protocol: _Protocol) -> None:
        if self._signal_tree(signal.SIGTERM):
            await _wait_all([protocol.exited, protocol.eof], self.grace)
        self._signal_tree(signal.SIGKILL)
        if not await _wait_all([protocol.exited], KILL_WAIT):
            logger.error(
                "run %s of task %s: pid %s did not exit %ss after SIGKILL",
                self.request.run_id,
                self.request.task,
                self.pgid,
                KILL_WAIT,
            )

    async def _clean_up_after_exit(self, protocol: _Protocol) -> list[int] | None:
        """Kill what the run left behind; the :func:`orphans` read in the usual case
        (nothing left), else None."""
        adopted_now = orphans()
        if (protocol.eof.done() and not _group_alive(self.pgid)
                and not run_members(self.pgid, self.marker, adopted_now)):
            # The usual case, checked cheaply: the group is empty, nobody holds the
            # output pipe (so no session member is left worth a /proc sweep) and no
            # orphan of the run came back to us.
            return adopted_now
        if not self._signal_tree(signal.SIGTERM):
            return None  # the usual case: nothing left
        logger.info(
            "run %s of task %s: the task left processes behind; terminating them",
            self.request.run_id,
            self.request.task,
        )
        await _wait_all([protocol.eof], self.grace)
        self._signal_tree(signal.SIGKILL)
        return None

    async def _drain(self, protocol: _Protocol, transport: asyncio.SubprocessTransport) -> None:
        if await _wait_all([protocol.eof], DRAIN_TIMEOUT):
            return
        logger.warning(
            "run %s of task %s: output pipe still open after the task's processes ended "
            "(a process left the session?); no longer reading it",
            self.request.run_id,
            self.request.task,
        )
        pipe = transport.get_pipe_transport(1)
        if pipe is not None:
            pipe.close()
        await _wait_all([protocol.eof], DRAIN_TIMEOUT)
        protocol.sink.close()

    def _signal_tree(self, sig: signal.Signals) -> bool:
        """Signal the process group, the rest of the session and the run's members that
        left it (:mod:`.tree`); True if anyone got it."""
        delivered = False
        members = run_members(self.pgid, self.marker)  # before the leader dies
        try:
            os.killpg(self.pgid, sig)
            delivered = True
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover - only if the pgid was reused
            logger.warning("not allowed to signal process group %s", self.pgid)
        for pid in dict.fromkeys([*_session_members(self.pgid), *members]):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                continue
            self.swept.add(pid)
            delivered = True
        return delivered

    async def _reap(self) -> None:
        """Reap killed members that became our children (PID 1 or subreaper only)."""
        if _reap_nonblocking(self.pgid, self.swept):
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        def worker() -> None:
            _reap_blocking(self.pgid, self.swept)
            with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                loop.call_soon_threadsafe(finished)

        # A daemon thread, not the default executor: a member stuck in the kernel would
        # otherwise block asyncio.run()'s executor shutdown.
        threading.Thread(target=worker, name=f"reap-{self.pgid}", daemon=True).start()
        if not await _wait_all([done], REAP_WAIT):
            logger.warning("process group %s: members not reaped after %ss", self.pgid, REAP_WAIT)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a reused pgid owned by someone else
        return True
    return True


async def _wait_all(futures: Sequence[asyncio.Future[None]], timeout: float) -> bool:
    """Wait until every future is done or ``timeout`` passes; True when all are done."""
    pending = [f for f in futures if not f.done()]
    if not pending:
        return True
    _, still = await asyncio.wait(pending, timeout=timeout)
    return not still


def _session_members(sid: int) -> list[int]:
    """Pids in session ``sid`` but outside process group ``sid`` (Linux, else empty)."""
    if not _PROC_SWEEP:
        return []
    members = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat_file:
                data = stat_file.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may contain spaces or parens.
        fields = data[data.rfind(b")") + 2 :].split()
        try:
            state, pgrp, session = fields[0], int(fields[2]), int(fields[3])
        except (IndexError, ValueError):
            continue
        if session == sid and pgrp != sid and state != b"Z":
            members.append(int(name))
    return members


def _reap_nonblocking(pgid: int, pids: Collection[int]) -> bool:
    """Reap what is already dead; True when nothing of ours can remain to be reaped."""
    finished = True
    for target in (-pgid, *pids):
        while True:
            try:
                pid, _ = os.waitpid(target, os.WNOHANG)
            except ChildProcessError:
                if target > 0 and _dying_elsewhere(target, pids):
                    finished = False  # re-parented to us once its killed parent is gone
                break  # none of our children (the normal case when we are not a subreaper)
            if pid == 0:
                finished = False  # a child of ours in there is still dying
                break
    return finished


def _reap_blocking(pgid: int, pids: Collection[int]) -> None:
    for target in (-pgid, *pids):
        while True:
            try:
                os.waitpid(target, 0)
            except ChildProcessError:
                parent = _dying_elsewhere(target, pids) if target > 0 else None
                if parent is None or not _wait_exit(parent, REAP_WAIT):
                    break
                continue  # its parent is gone: it is ours now (subreaper)
            if target > 0:
                break


def _dying_elsewhere(pid: int, killed: Collection[int]) -> int | None:
    """The parent of ``pid`` when that parent is another process we killed."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            data = stat_file.read()
        ppid = int(data[data.rfind(b")") + 2 :].split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return ppid if ppid in killed and ppid != os.getpid() else None


def _wait_exit(pid: int, timeout: float) -> bool:
    """Block until ``pid`` has exited (a pidfd turns readable); False on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (OSError, AttributeError):  # pragma: no cover - Linux before 5.3
        return False
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)

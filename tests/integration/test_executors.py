"""Executors: command, shell, http and python runs (real subprocesses, mock HTTP).

No pytest-asyncio: each test drives its coroutine with ``asyncio.run``. Tests never
sleep to wait for something; they wait for results, and react to output through the
events callback (e.g. set the cancel event once the task printed "started").

Tests that check that orphaned grandchildren are gone make the test process a child
subreaper for their duration (Linux): otherwise the orphans are reparented to PID 1,
and whether that reaps them is up to the machine (some container inits do not).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from reconciler.core.errors import ReconcilerError
from reconciler.core.model import FromEnv, FromFile, HttpTarget, RunSpec
from reconciler.core.protocols import ExecutionRequest, ExecutionResult, Executor
from reconciler.core.runtime import RunStatus
from reconciler.executors import (
    CommandExecutor,
    DispatchExecutor,
    HttpExecutor,
    PythonExecutor,
    RunContext,
    SecretResolutionError,
    ShellExecutor,
    executor_for,
    resolve_env,
)
from reconciler.executors.http_executor import status_matches
from reconciler.executors.output import (
    OutputSink,
    ProgressParser,
    TailBuffer,
    parse_progress_line,
)
from tests.services.ci import unavailable

DATA = Path(__file__).resolve().parent.parent / "data" / "executors"
SLOT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PY = sys.executable
LINUX = sys.platform.startswith("linux")


# ----------------------------------------------------------------------------- helpers


class Recorder:
    """ExecutionEvents that keeps everything (or only counts, for huge outputs)."""

    def __init__(
        self, on_output: Callable[[Recorder], None] | None = None, *, keep: bool = True
    ) -> None:
        self.chunks: list[str] = []
        self.progress_events: list[tuple[float | None, str | None]] = []
        self.chars = 0
        self.calls = 0
        self._keep = keep
        self._on_output = on_output

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def output(self, text: str) -> None:
        self.calls += 1
        self.chars += len(text)
        if self._keep:
            self.chunks.append(text)
        if self._on_output is not None:
            self._on_output(self)

    def progress(self, percent: float | None, message: str | None) -> None:
        self.progress_events.append((percent, message))


def request(run: RunSpec, **overrides: Any) -> ExecutionRequest:
    values: dict[str, Any] = {
        "task": "demo",
        "run_id": 7,
        "slot": SLOT,
        "attempt": 2,
        "run": run,
        "kill_grace": timedelta(seconds=0.3),
    }
    values.update(overrides)
    return ExecutionRequest(**values)


def execute(
    run: RunSpec,
    *,
    executor: Executor | None = None,
    events: Recorder | None = None,
    cancel: asyncio.Event | None = None,
    **overrides: Any,
) -> ExecutionResult:
    async def main() -> ExecutionResult:
        chosen = executor or executor_for(run)
        return await chosen.execute(
            request(run, **overrides), events or Recorder(), cancel or asyncio.Event()
        )

    return asyncio.run(main())


def cancel_when(needle: str, cancel: asyncio.Event) -> Recorder:
    """A recorder that sets ``cancel`` once ``needle`` appeared in the output."""

    def check(recorder: Recorder) -> None:
        if needle in recorder.text:
            cancel.set()

    return Recorder(check)


def py_run(function: str, **env: str | FromEnv | FromFile) -> RunSpec:
    return RunSpec(python=f"executor_tasks:{function}", env={"PYTHONPATH": str(DATA), **env})


def pid_exists(pid: int) -> bool:
    """True for a live process *or* a zombie (kill(pid, 0) succeeds on both)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def our_zombies() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def number_after(label: str, text: str) -> int:
    match = re.search(rf"{label}=(\d+)", text)
    assert match, f"{label}= not found in {text!r}"
    return int(match.group(1))


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Make this process the reaper of orphaned descendants (PR_SET_CHILD_SUBREAPER)."""
    if not LINUX:
        unavailable("child subreapers are Linux only")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:
        unavailable("prctl(PR_SET_CHILD_SUBREAPER) failed")
    try:
        yield
    finally:
        libc.prctl(36, 0, 0, 0, 0)


# ------------------------------------------------------------------- command and shell


def test_command_success() -> None:
    result = execute(RunSpec(command=["echo", "hello", "world"]))
    assert result == ExecutionResult(RunStatus.SUCCEEDED, exit_code=0, output_tail="hello world\n")


def test_command_failure_keeps_exit_code_and_output() -> None:
    result = execute(RunSpec(command=[PY, "-c", "import sys; print('partial'); sys.exit(3)"]))
    assert result.status is RunStatus.FAILED
    assert result.exit_code == 3
    assert result.error == "exited with code 3"
    assert result.output_tail == "partial\n"


def test_command_arguments_are_not_interpreted_by_a_shell(tmp_path: Path) -> None:
    victim = tmp_path / "x"
    victim.mkdir()
    args = [f"; rm -rf {victim}", "$(whoami)", "`id`", "a b", "*", "$HOME", "x > y"]
    script = "import json, sys; print(json.dumps(sys.argv[1:]))"
    result = execute(RunSpec(command=[PY, "-c", script, *args]))
    assert result.status is RunStatus.SUCCEEDED
    assert json.loads(result.output_tail) == args
    assert victim.is_dir()


def test_shell_pipeline_and_dollar_zero() -> None:
    result = execute(RunSpec(shell="printf 'b\\na\\nc\\n' | sort | tr '\\n' ' '; echo \"[$0]\""))
    assert result.status is RunStatus.SUCCEEDED
    assert result.output_tail == "a b c [demo]\n"


def test_stdout_and_stderr_are_merged_in_order() -> None:
    result = execute(RunSpec(shell="echo one; echo two >&2; echo three"))
    assert result.output_tail == "one\ntwo\nthree\n"


def test_stdin_is_dev_null() -> None:
    result = execute(RunSpec(shell="cat; echo done"), timeout=timedelta(seconds=20))
    assert result.status is RunStatus.SUCCEEDED
    assert result.output_tail == "done\n"


def test_shell_failure() -> None:
    result = execute(RunSpec(shell="echo oops >&2; exit 42"))
    assert (result.status, result.exit_code, result.error) == (
        RunStatus.FAILED,
        42,
        "exited with code 42",
    )


def test_killed_by_a_signal() -> None:
    result = execute(RunSpec(shell="kill -KILL $$"))
    assert result.status is RunStatus.FAILED
    assert result.exit_code == -9
    assert result.error is not None and "SIGKILL" in result.error


@pytest.mark.parametrize("program", ["no-such-binary-for-reconciler", "/nonexistent/dir/tool"])
def test_spawn_failure_nonexistent_binary(program: str) -> None:
    result = execute(RunSpec(command=[program, "arg"]))
    assert result.status is RunStatus.FAILED
    assert result.exit_code is None
    assert result.error is not None
    assert program in result.error and "not found" in result.error


def test_spawn_failure_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    result = execute(RunSpec(command=[str(script)]))
    assert result.status is RunStatus.FAILED
    assert result.exit_code is None
    assert result.error is not None and "permission denied" in result.error


def test_working_dir(tmp_path: Path) -> None:
    ok = execute(RunSpec(command=["pwd"], working_dir=str(tmp_path)))
    assert ok.status is RunStatus.SUCCEEDED
    assert ok.output_tail.strip() == str(tmp_path)

    missing = execute(RunSpec(command=["pwd"], working_dir=str(tmp_path / "missing")))
    assert missing.status is RunStatus.FAILED
    assert missing.error == f"working directory {tmp_path / 'missing'} does not exist"

    a_file = tmp_path / "file"
    a_file.write_text("")
    not_dir = execute(RunSpec(shell="pwd", working_dir=str(a_file)))
    assert not_dir.status is RunStatus.FAILED
    assert not_dir.error == f"working directory {a_file} is not a directory"


def test_wrong_run_kind_is_a_failed_result() -> None:
    result = execute(RunSpec(shell="true"), executor=CommandExecutor())
    assert result.status is RunStatus.FAILED
    assert result.error is not None and "not a command run" in result.error


# ------------------------------------------------------------- timeouts, cancel, groups

# The grandchild ignores SIGTERM (and so does the sleep it execs into), prints its pid
# and holds the output pipe open: only SIGKILL to the whole group ends it.
TERM_IGNORING_GRANDCHILD = "sh -c 'trap \"\" TERM; echo gc=$$; exec sleep 30' & wait"


def test_timeout_kills_the_whole_group_including_a_term_ignoring_grandchild(
    subreaper: None,
) -> None:
    started = time.monotonic()
    result = execute(
        RunSpec(shell=TERM_IGNORING_GRANDCHILD),
        timeout=timedelta(milliseconds=500),
        kill_grace=timedelta(milliseconds=300),
    )
    elapsed = time.monotonic() - started
    assert result.status is RunStatus.TIMED_OUT
    assert result.error == "timed out after 500ms"
    assert result.exit_code == -15  # the leader shell died of SIGTERM
    grandchild = number_after("gc", result.output_tail)
    assert not pid_exists(grandchild)  # killed *and* reaped
    assert our_zombies() == []
    assert 0.75 <= elapsed < 10  # timeout + grace (the grandchild ignored SIGTERM), not 30s


def test_cancel_event_stops_the_run() -> None:
    cancel = asyncio.Event()
    started = time.monotonic()
    result = execute(
        RunSpec(shell="echo started; sleep 30; echo never"),
        events=cancel_when("started", cancel),
        cancel=cancel,
    )
    assert result.status is RunStatus.CANCELLED
    assert result.error == "cancelled"
    assert result.output_tail == "started\n"
    assert time.monotonic() - started < 10


def test_cancel_kills_grandchildren(subreaper: None) -> None:
    cancel = asyncio.Event()
    result = execute(
        RunSpec(shell=TERM_IGNORING_GRANDCHILD),
        events=cancel_when("gc=", cancel),
        cancel=cancel,
    )
    assert result.status is RunStatus.CANCELLED
    assert not pid_exists(number_after("gc", result.output_tail))
    assert our_zombies() == []


def test_cancel_set_before_start_does_not_spawn(tmp_path: Path) -> None:
    cancel = asyncio.Event()
    cancel.set()
    marker = tmp_path / "ran"
    result = execute(RunSpec(command=["touch", str(marker)]), cancel=cancel)
    assert result.status is RunStatus.CANCELLED
    assert not marker.exists()


def test_leftover_background_process_is_killed_after_a_normal_exit(subreaper: None) -> None:
    started = time.monotonic()
    result = execute(
        RunSpec(shell="sleep 30 & echo bg=$!"),
        timeout=timedelta(seconds=60),
        kill_grace=timedelta(seconds=20),
    )
    assert result.status is RunStatus.SUCCEEDED
    assert not pid_exists(number_after("bg", result.output_tail))
    assert our_zombies() == []
    assert time.monotonic() - started < 10  # the sleep died of SIGTERM: no grace needed


def test_leftover_holding_the_pipe_and_ignoring_term_does_not_hang_the_run(
    subreaper: None,
) -> None:
    started = time.monotonic()
    result = execute(
        RunSpec(shell="sh -c 'trap \"\" TERM; exec sleep 30' & echo bg=$!"),
        kill_grace=timedelta(milliseconds=300),
    )
    assert result.status is RunStatus.SUCCEEDED
    assert not pid_exists(number_after("bg", result.output_tail))
    assert our_zombies() == []
    assert time.monotonic() - started < 10


@pytest.mark.skipif(not LINUX, reason="the session sweep uses /proc")
def test_process_that_left_the_group_is_killed_via_the_session(subreaper: None) -> None:
    escape = (
        "import os, time; os.setpgid(0, 0); "
        "print('esc=%d' % os.getpid(), flush=True); time.sleep(30)"
    )
    cancel = asyncio.Event()
    result = execute(
        RunSpec(shell=f'{PY} -c "{escape}" & wait'),
        events=cancel_when("esc=", cancel),
        cancel=cancel,
    )
    assert result.status is RunStatus.CANCELLED
    assert not pid_exists(number_after("esc", result.output_tail))
    assert our_zombies() == []


def test_cancelling_the_coroutine_kills_the_tree(subreaper: None) -> None:
    run = RunSpec(shell=TERM_IGNORING_GRANDCHILD)
    events = Recorder()

    async def main() -> None:
        ready = asyncio.Event()
        events._on_output = lambda rec: ready.set() if "gc=" in rec.text else None
        task = asyncio.ensure_future(ShellExecutor().execute(request(run), events, asyncio.Event()))
        await ready.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert not pid_exists(number_after("gc", events.text))
    assert our_zombies() == []


# A process that calls setsid() leaves the task's session and process group. The
# daemon (a child subreaper) still finds it: as a descendant of the live leader, or as
# an orphan re-parented to it that carries the run's RECONCILER_* marker.


def unique_sleep() -> str:
    """A sleep argument no other process on the machine has (found by its cmdline)."""
    return f"300.{random.randrange(10**8):08d}"


def escape_with_setsid(arg: str, fifo: Path, *, double_fork: bool = False) -> str:
    """Shell that starts ``sleep <arg>`` in a session of its own and waits until it is."""
    child = (f'setsid sh -c "echo ready > {fifo}; exec sleep {arg}" '
             "</dev/null >/dev/null 2>&1 &")
    return f"mkfifo {fifo}; {f'({child});' if double_fork else child} read line < {fifo}; "


def sleeping(arg: str) -> list[psutil.Process]:
    """Our live descendants running ``sleep <arg>`` (orphans come back to us)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and arg in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.skipif(not LINUX, reason="child subreapers and /proc are Linux only")
def test_timeout_kills_a_grandchild_that_called_setsid(subreaper: None) -> None:
    arg = unique_sleep()
    result = execute(
        RunSpec(shell=f'setsid sh -c "sleep {arg}" </dev/null >/dev/null 2>&1 & sleep 30'),
        timeout=timedelta(milliseconds=500),
    )
    assert result.status is RunStatus.TIMED_OUT
    assert sleeping(arg) == []
    assert our_zombies() == []


@pytest.mark.skipif(not LINUX, reason="child subreapers and /proc are Linux only")
def test_cancel_kills_a_grandchild_that_called_setsid(subreaper: None, tmp_path: Path) -> None:
    arg = unique_sleep()
    cancel = asyncio.Event()
    result = execute(
        RunSpec(shell=escape_with_setsid(arg, tmp_path / "f") + "echo started; sleep 30"),
        events=cancel_when("started", cancel),
        cancel=cancel,
    )
    assert result.status is RunStatus.CANCELLED
    assert sleeping(arg) == []
    assert our_zombies() == []


@pytest.mark.skipif(not LINUX, reason="child subreapers and /proc are Linux only")
@pytest.mark.parametrize("double_fork", [False, True])  # orphaned with the leader / at once
def test_normal_exit_kills_an_orphan_that_called_setsid(
    subreaper: None, tmp_path: Path, double_fork: bool
) -> None:
    arg = unique_sleep()
    script = escape_with_setsid(arg, tmp_path / "f", double_fork=double_fork) + "exit 0"
    result = execute(RunSpec(shell=script), kill_grace=timedelta(seconds=20))
    assert result.status is RunStatus.SUCCEEDED
    assert sleeping(arg) == []
    assert our_zombies() == []


@pytest.mark.skipif(not LINUX, reason="child subreapers and /proc are Linux only")
def test_orphans_that_exit_on_their_own_are_reaped(subreaper: None) -> None:
    # the setsid'd shell is re-parented to us at once and exits while the run goes on
    result = execute(RunSpec(shell="(setsid sh -c 'exit 0' </dev/null >/dev/null 2>&1 &); "
                                   "sleep 0.5"))
    assert result.status is RunStatus.SUCCEEDED
    assert our_zombies() == []


@pytest.mark.skipif(not LINUX, reason="child subreapers and /proc are Linux only")
def test_the_end_of_one_run_spares_the_orphans_of_another(
    subreaper: None, tmp_path: Path
) -> None:
    mine, theirs = unique_sleep(), unique_sleep()
    cancel = asyncio.Event()

    async def main() -> tuple[ExecutionResult, ExecutionResult, int]:
        started = asyncio.Event()
        events = Recorder(lambda rec: started.set() if "up" in rec.text else None)
        executor = ShellExecutor()
        long_run = asyncio.ensure_future(executor.execute(
            request(RunSpec(shell=escape_with_setsid(theirs, tmp_path / "a", double_fork=True)
                            + "echo up; sleep 30"), run_id=1),
            events, cancel))
        await asyncio.wait_for(started.wait(), 20)
        short = await executor.execute(
            request(RunSpec(shell=escape_with_setsid(mine, tmp_path / "b", double_fork=True)
                            + "exit 0"), run_id=2),
            Recorder(), asyncio.Event())
        survivors = len(sleeping(theirs))
        cancel.set()
        return short, await long_run, survivors

    short, long_result, survivors = asyncio.run(main())
    assert short.status is RunStatus.SUCCEEDED and sleeping(mine) == []
    assert survivors == 1  # run 1's orphan outlived the end of run 2 ...
    assert long_result.status is RunStatus.CANCELLED
    assert sleeping(theirs) == []  # ... and ended with run 1
    assert our_zombies() == []


def test_concurrent_runs_are_independent() -> None:
    run = RunSpec(shell='echo "run $RECONCILER_RUN_ID"; exit $((RECONCILER_RUN_ID % 2))')

    async def main() -> list[ExecutionResult]:
        executor = ShellExecutor()
        return list(
            await asyncio.gather(
                *(
                    executor.execute(request(run, run_id=i), Recorder(), asyncio.Event())
                    for i in range(8)
                )
            )
        )

    results = asyncio.run(main())
    assert [r.output_tail for r in results] == [f"run {i}\n" for i in range(8)]
    assert [r.exit_code for r in results] == [i % 2 for i in range(8)]


# ---------------------------------------------------------------------------- output


def test_output_tail_is_bounded_for_a_50_mb_task() -> None:
    total = 50 * 1024 * 1024
    limit = 64 * 1024
    events = Recorder(keep=False)
    result = execute(
        RunSpec(shell=f"yes abcdefghi | head -c {total}"), events=events, output_limit=limit
    )
    assert result.status is RunStatus.SUCCEEDED
    assert len(result.output_tail) == limit
    assert result.output_tail == ("abcdefghi\n" * (limit // 10 + 2))[-limit:]
    assert events.chars == total  # every byte was streamed live


@pytest.mark.parametrize("limit", [99, 100, 101])
def test_multibyte_character_cut_at_the_tail_boundary(limit: int) -> None:
    result = execute(
        RunSpec(command=[PY, "-c", "import sys; sys.stdout.write('€' * 1000)"]),
        output_limit=limit,
    )
    assert "\ufffd" not in result.output_tail
    assert result.output_tail == "€" * (limit // 3)


def test_live_output_decodes_characters_split_across_chunks() -> None:
    script = (
        "import sys, time; out = sys.stdout.buffer; "
        "out.write(b'caf\\xc3'); out.flush(); time.sleep(0.2); out.write(b'\\xa9!\\n')"
    )
    events = Recorder()
    result = execute(RunSpec(command=[PY, "-c", script]), events=events)
    assert result.output_tail == "café!\n"
    assert events.text == "café!\n"


def test_tail_buffer() -> None:
    buf = TailBuffer(10)
    for piece in (b"abc", b"defgh", b"ijklmnop", b"q"):
        buf.append(piece)
    assert buf.getvalue() == b"hijklmnopq"
    assert buf.total_bytes == 17 and buf.truncated
    buf.append(b"0123456789ABCDEF")
    assert buf.getvalue() == b"6789ABCDEF"
    small = TailBuffer(10)
    small.append(b"abc")
    assert (small.getvalue(), small.truncated, small.text()) == (b"abc", False, "abc")
    nothing = TailBuffer(0)
    nothing.append(b"abc")
    assert nothing.getvalue() == b"" and nothing.total_bytes == 3
    # invalid UTF-8 that is not caused by the cut is replaced, not dropped
    raw = TailBuffer(10)
    raw.append(b"\xa9ok")
    assert raw.text() == "\ufffdok"


def test_tail_buffer_memory_stays_bounded() -> None:
    buf = TailBuffer(1000)
    for _ in range(10_000):
        buf.append(b"x" * 333)
        assert len(buf._buf) <= 2 * 1000 + 333
    assert len(buf.getvalue()) == 1000


# -------------------------------------------------------------------------- progress


def test_progress_lines_from_a_shell_task() -> None:
    script = (
        "printf '::progress 1'; sleep 0.2; printf '0 ten percent\\n'; "
        "echo '::progress - waiting for the lock'; "
        "echo 'not ::progress 5'; "
        "echo '::progress 150 too much'; "
        "echo '::progressive 5'; "
        "echo '::progress abc'; "
        "printf '::progress 99.5%% almost\\r\\n'; "
        "printf '::progress 100 done'"
    )
    events = Recorder()
    result = execute(RunSpec(shell=script), events=events)
    assert result.status is RunStatus.SUCCEEDED
    assert events.progress_events == [
        (10.0, "ten percent"),
        (None, "waiting for the lock"),
        (99.5, "almost"),
        (100.0, "done"),
    ]
    assert "::progress 10 ten percent\n" in result.output_tail  # kept in the output


def _feed_in_pieces(data: bytes, cuts: list[int]) -> list[tuple[float | None, str | None]]:
    seen: list[tuple[float | None, str | None]] = []
    parser = ProgressParser(lambda p, m: seen.append((p, m)))
    previous = 0
    for cut in [*cuts, len(data)]:
        parser.feed(data[previous:cut])
        previous = cut
    parser.close()
    return seen


def test_progress_parser_handles_every_chunk_boundary() -> None:
    data = (
        b"hello\n::progress 5 first\nx ::progress 6 no\n::progress - msg only\n"
        b"::prog\n::progress 7\n\xe2\x82\xac\n::progress 8 caf\xc3\xa9\n::progress 9 last"
    )
    expected = [(5.0, "first"), (None, "msg only"), (7.0, None), (8.0, "café"), (9.0, "last")]
    assert _feed_in_pieces(data, []) == expected
    for i in range(len(data) + 1):
        assert _feed_in_pieces(data, [i]) == expected, i
    for i in range(0, len(data), 3):
        assert _feed_in_pieces(data, list(range(i, len(data), 7))) == expected, i
    one_byte_at_a_time = _feed_in_pieces(data, list(range(1, len(data))))
    assert one_byte_at_a_time == expected


def test_progress_parser_ignores_over_long_lines() -> None:
    long_line = b"::progress 50 " + b"m" * 5000 + b"\n::progress 60 ok\n"
    assert _feed_in_pieces(long_line, []) == [(60.0, "ok")]
    assert _feed_in_pieces(long_line, list(range(100, len(long_line), 1000))) == [(60.0, "ok")]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"::progress 0", (0.0, None)),
        (b"::progress 12.5 doing things", (12.5, "doing things")),
        (b"::progress\t40%\tx", (40.0, "x")),
        (b"::progress - only a message", (None, "only a message")),
        (b"::progress -1 x", None),
        (b"::progress nan", None),
        (b"::progress inf", None),
        (b"::progress", None),
        (b"::progress ", None),
        (b"::progressive 5", None),
        (b" ::progress 5", None),
    ],
)
def test_parse_progress_line(line: bytes, expected: object) -> None:
    assert parse_progress_line(line) == expected


# ---------------------------------------------------------------------- environment

CANARY = "canary-secret-value-6f1d2c"


def _env_lines(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def test_environment_is_minimal_and_secrets_are_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXECUTOR_TEST_SOURCE", "from-the-daemon")
    monkeypatch.setenv("EXECUTOR_TEST_DAEMON_ONLY", "must-not-leak")
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    run = RunSpec(
        command=["env"],
        env={
            "PLAIN": "plain value",
            "FROM_ENV": FromEnv(from_env="EXECUTOR_TEST_SOURCE"),
            "FROM_FILE": FromFile(from_file=str(secret_file)),
            "RECONCILER_TASK": "task env cannot override this",
        },
    )
    result = execute(run, extra_env={"FROM_DAEMON": "extra", "RECONCILER_SLOT": "daemon-slot"})
    env = _env_lines(result.output_tail)
    assert env["PLAIN"] == "plain value"
    # secrets arrive (the task printed them) and are masked in what the daemon keeps
    assert env["FROM_ENV"] == "***"
    assert env["FROM_FILE"] == "***"
    assert "from-the-daemon" not in result.output_tail
    check = RunSpec(
        command=["sh", "-c", 'test "$A" = from-the-daemon && test "$B" = from-a-file && echo ok'],
        env={
            "A": FromEnv(from_env="EXECUTOR_TEST_SOURCE"),
            "B": FromFile(from_file=str(secret_file)),  # one trailing newline stripped
        },
    )
    assert execute(check).output_tail == "ok\n"
    assert env["FROM_DAEMON"] == "extra"
    assert env["RECONCILER_TASK"] == "demo"
    assert env["RECONCILER_RUN_ID"] == "7"
    assert env["RECONCILER_ATTEMPT"] == "2"
    assert env["RECONCILER_SLOT"] == "daemon-slot"  # extra_env wins
    assert "EXECUTOR_TEST_DAEMON_ONLY" not in env
    assert "PATH" in env
    assert set(env) <= {
        "PLAIN", "FROM_ENV", "FROM_FILE", "FROM_DAEMON", "PATH", "HOME", "LANG", "TZ",
        "RECONCILER_TASK", "RECONCILER_RUN_ID", "RECONCILER_SLOT", "RECONCILER_ATTEMPT",
        "RECONCILER_IDEMPOTENCY_KEY",
        "PWD", "SHLVL", "_",
    }  # fmt: skip


def test_reconciler_variables_come_from_the_request() -> None:
    result = execute(RunSpec(command=["env"]), timeout=timedelta(minutes=5))
    env = _env_lines(result.output_tail)
    assert env["RECONCILER_TASK"] == "demo"
    assert env["RECONCILER_RUN_ID"] == "7"
    assert env["RECONCILER_SLOT"] == SLOT.isoformat()
    assert env["RECONCILER_ATTEMPT"] == "2"
    deadline = datetime.fromisoformat(env["RECONCILER_DEADLINE"])
    assert timedelta(minutes=4) < deadline - datetime.now(UTC) <= timedelta(minutes=5)


def test_missing_secret_fails_the_run_without_leaking_values(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("EXECUTOR_TEST_CANARY", CANARY)
    monkeypatch.delenv("EXECUTOR_TEST_MISSING", raising=False)
    marker = tmp_path / "ran"
    run = RunSpec(
        command=["touch", str(marker)],
        env={
            "TOKEN": FromEnv(from_env="EXECUTOR_TEST_CANARY"),
            "PASSWORD": FromEnv(from_env="EXECUTOR_TEST_MISSING"),
        },
    )
    result = execute(run)
    assert result.status is RunStatus.FAILED
    assert result.exit_code is None
    assert result.error is not None
    assert "EXECUTOR_TEST_MISSING" in result.error and "PASSWORD" in result.error
    assert CANARY not in result.error
    assert CANARY not in caplog.text
    assert not marker.exists()


def test_missing_secret_file_fails_the_run(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    result = execute(RunSpec(shell="true", env={"K": FromFile(from_file=str(path))}))
    assert result.status is RunStatus.FAILED
    assert result.error == f"env K: secret file {path} does not exist"


def test_resolve_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTOR_TEST_A", "a-value")
    two_newlines = tmp_path / "two"
    two_newlines.write_bytes(b"value\n\n")
    crlf = tmp_path / "crlf"
    crlf.write_bytes(b"value\r\n")
    assert resolve_env(
        {
            "X": "plain",
            "A": FromEnv(from_env="EXECUTOR_TEST_A"),
            "T": FromFile(from_file=str(two_newlines)),
            "C": FromFile(from_file=str(crlf)),
        }
    ) == {"X": "plain", "A": "a-value", "T": "value\n", "C": "value"}


def test_resolve_env_errors_never_contain_the_value(tmp_path: Path) -> None:
    bad_utf8 = tmp_path / "bad"
    bad_utf8.write_bytes(CANARY.encode() + b"\xff")
    with pytest.raises(SecretResolutionError) as info:
        resolve_env({"K": FromFile(from_file=str(bad_utf8))})
    assert str(info.value) == f"env K: secret file {bad_utf8} is not valid UTF-8"
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert isinstance(info.value, ReconcilerError)

    with pytest.raises(SecretResolutionError, match="not a regular file"):
        resolve_env({"K": FromFile(from_file=str(tmp_path))})
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(SecretResolutionError, match="not a regular file"):
        resolve_env({"K": FromFile(from_file=str(fifo))})  # must not block
    nul = tmp_path / "nul"
    nul.write_bytes(b"a\x00" + CANARY.encode())
    with pytest.raises(SecretResolutionError) as info:
        resolve_env({"K": FromFile(from_file=str(nul))})
    assert CANARY not in str(info.value)


# ------------------------------------------------------------------------------ http


def http_run(**target: Any) -> RunSpec:
    target.setdefault("url", "https://hooks.example.test/run")
    return RunSpec(http=HttpTarget(**target))


def mock(handler: Callable[[httpx.Request], Any], **options: Any) -> HttpExecutor:
    return HttpExecutor(httpx.MockTransport(handler), **options)


def test_http_success_with_headers_and_body(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EXECUTOR_TEST_TOKEN", "Bearer abc123")
    key_file = tmp_path / "key"
    key_file.write_text("file-key\n")
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(201, text="created it")

    events = Recorder()
    result = execute(
        http_run(
            method="PUT",
            headers={
                "Authorization": FromEnv(from_env="EXECUTOR_TEST_TOKEN"),
                "X-Key": FromFile(from_file=str(key_file)),
                "X-Plain": "p",
            },
            body='{"a": 1}',
        ),
        executor=mock(handler),
        events=events,
    )
    assert result == ExecutionResult(RunStatus.SUCCEEDED, output_tail="created it")
    assert events.text == "created it"
    [sent] = seen
    assert sent.method == "PUT"
    assert str(sent.url) == "https://hooks.example.test/run"
    assert sent.headers["authorization"] == "Bearer abc123"
    assert sent.headers["x-key"] == "file-key"
    assert sent.headers["x-plain"] == "p"
    assert sent.content == b'{"a": 1}'


def test_http_failure_status() -> None:
    result = execute(http_run(), executor=mock(lambda req: httpx.Response(503, text="try later")))
    assert result == ExecutionResult(
        RunStatus.FAILED, exit_code=None, error="HTTP 503", output_tail="try later"
    )


@pytest.mark.parametrize(
    ("status", "success_status", "expected"),
    [
        (302, "200,3xx", RunStatus.SUCCEEDED),
        (200, "200,3xx", RunStatus.SUCCEEDED),
        (204, "200,3xx", RunStatus.FAILED),
        (302, "2xx", RunStatus.FAILED),  # redirects are not followed by default
        (404, "404", RunStatus.SUCCEEDED),
    ],
)
def test_http_success_status(status: int, success_status: str, expected: RunStatus) -> None:
    calls: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(str(req.url))
        return httpx.Response(status, headers={"Location": "https://elsewhere.test/"})

    result = execute(http_run(success_status=success_status), executor=mock(handler))
    assert result.status is expected
    assert calls == ["https://hooks.example.test/run"]
    if expected is RunStatus.FAILED:
        assert result.error == f"HTTP {status}"


def test_status_matches() -> None:
    assert status_matches(200, "2xx")
    assert status_matches(299, "2xx")
    assert not status_matches(300, "2xx")
    assert status_matches(204, "200,204")
    assert status_matches(301, "200,3xx")
    assert not status_matches(500, "200,3xx,404")


def test_http_body_tail_is_bounded() -> None:
    body = bytes(range(48, 58)) * 100_000  # 1 MB of digits

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    events = Recorder(keep=False)
    result = execute(http_run(), executor=mock(handler), events=events, output_limit=1000)
    assert result.status is RunStatus.SUCCEEDED
    assert result.output_tail == body[-1000:].decode()
    assert events.chars == len(body)


def test_http_timeout() -> None:
    async def handler(req: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")

    result = execute(http_run(), executor=mock(handler), timeout=timedelta(milliseconds=200))
    assert result.status is RunStatus.TIMED_OUT
    assert result.error == "timed out after 200ms"


def test_http_default_timeout() -> None:
    async def handler(req: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    executor = HttpExecutor(
        httpx.MockTransport(handler), default_timeout=timedelta(milliseconds=100)
    )
    result = execute(http_run(), executor=executor)
    assert (result.status, result.error) == (RunStatus.TIMED_OUT, "timed out after 100ms")


def test_http_cancel() -> None:
    cancel = asyncio.Event()

    async def handler(req: httpx.Request) -> httpx.Response:
        cancel.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    result = execute(http_run(), executor=mock(handler), cancel=cancel)
    assert (result.status, result.error) == (RunStatus.CANCELLED, "cancelled")


def test_http_missing_header_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXECUTOR_TEST_NO_TOKEN", raising=False)
    calls: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return httpx.Response(200)

    result = execute(
        http_run(headers={"Authorization": FromEnv(from_env="EXECUTOR_TEST_NO_TOKEN")}),
        executor=mock(handler),
    )
    assert result.status is RunStatus.FAILED
    assert result.error is not None and "EXECUTOR_TEST_NO_TOKEN" in result.error
    assert calls == []


def test_http_header_secret_with_line_break_is_refused_without_leaking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXECUTOR_TEST_BAD", f"{CANARY}\r\nX-Injected: 1")
    result = execute(
        http_run(headers={"Authorization": FromEnv(from_env="EXECUTOR_TEST_BAD")}),
        executor=mock(lambda req: httpx.Response(200)),
    )
    assert result.status is RunStatus.FAILED
    assert result.error == "header Authorization: value contains a line break"


def test_http_transport_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTOR_TEST_TOKEN", CANARY)

    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"connection refused (sent {req.headers['x-token']})")

    result = execute(
        http_run(headers={"X-Token": FromEnv(from_env="EXECUTOR_TEST_TOKEN")}),
        executor=mock(handler),
    )
    assert result.status is RunStatus.FAILED
    assert result.exit_code is None
    assert result.error == "HTTP request failed: ConnectError: connection refused (sent ***)"


# ---------------------------------------------------------------------------- python


def test_python_success_with_progress_and_logger() -> None:
    events = Recorder()
    result = execute(py_run("succeed"), events=events)
    assert result.status is RunStatus.SUCCEEDED, result
    assert result.exit_code == 0
    assert "hello from demo\n" in result.output_tail
    assert "logged via ctx.logger" in result.output_tail
    assert events.progress_events == [(25.0, "a quarter"), (None, "just a message")]


def test_python_context_fields_and_own_process_group(tmp_path: Path) -> None:
    run = RunSpec(
        python="executor_tasks:describe",
        env={"PYTHONPATH": str(DATA)},
        working_dir=str(tmp_path),
    )
    result = execute(run, timeout=timedelta(minutes=10))
    assert result.status is RunStatus.SUCCEEDED, result
    info = json.loads(result.output_tail)
    assert info["task"] == "demo"
    assert info["run_id"] == 7
    assert info["attempt"] == 2
    assert info["slot"] == SLOT.isoformat()
    assert info["cancelled"] is False
    assert info["pid"] == info["pgid"] != os.getpgid(0)
    assert info["cwd"] == str(tmp_path)
    deadline = datetime.fromisoformat(info["deadline"])
    assert deadline.tzinfo is not None
    assert info["env"]["RECONCILER_DEADLINE"] == info["deadline"]
    assert info["env"]["RECONCILER_RUN_ID"] == "7"


def test_python_exception_fails_with_message_and_traceback() -> None:
    result = execute(py_run("fail"))
    assert result.status is RunStatus.FAILED
    assert result.exit_code == 1
    assert result.error == "ValueError: boom: the widget is broken"
    assert "about to fail" in result.output_tail
    assert "Traceback (most recent call last)" in result.output_tail
    assert "_pyrunner" not in result.output_tail  # the traceback starts in task code


def test_python_error_is_redacted_of_secret_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTOR_TEST_CANARY", CANARY)
    result = execute(py_run("leak_secret", API_TOKEN=FromEnv(from_env="EXECUTOR_TEST_CANARY")))
    assert result.status is RunStatus.FAILED
    assert result.error == "RuntimeError: token was ***"
    assert CANARY not in result.output_tail  # the traceback in the output is masked too
    assert "token was ***" in result.output_tail


def test_output_sink_masks_secrets_split_at_every_point() -> None:
    secrets = ("s3cr3t-value", "other-secret-longer-one", "abc")  # "abc" is too short
    text = "x s3cr3t-value y other-secret-longer-one abc s3cr3t-value"
    expected = "x *** y *** abc ***"
    data = text.encode()
    for cut in range(len(data) + 1):
        for second in (cut, min(len(data), cut + 5)):
            events = Recorder()
            sink = OutputSink(events, 1000, secrets=secrets)
            for piece in (data[:cut], data[cut:second], data[second:]):
                sink.feed(piece)
            sink.close()
            assert events.text == expected, cut
            assert sink.text() == expected
    plain = Recorder()
    sink = OutputSink(plain, 1000)
    sink.feed(b"abc")
    assert plain.text == "abc"  # no secrets: nothing held back


def test_python_import_errors() -> None:
    missing = execute(RunSpec(python="no_such_module_xyz:run"))
    assert missing.status is RunStatus.FAILED
    assert missing.error is not None
    assert missing.error.startswith("cannot load no_such_module_xyz:run: ModuleNotFoundError")
    no_attr = execute(py_run("does_not_exist"))
    assert no_attr.error is not None and "has no attribute 'does_not_exist'" in no_attr.error
    not_callable = execute(py_run("not_callable"))
    assert not_callable.error is not None and "is not callable" in not_callable.error


def test_python_async_function() -> None:
    events = Recorder()
    result = execute(py_run("async_ok"), events=events)
    assert result.status is RunStatus.SUCCEEDED
    assert "async function ran" in result.output_tail
    assert events.progress_events == [(100.0, "async done")]


def test_python_sys_exit() -> None:
    result = execute(py_run("exit_three"))
    assert (result.status, result.exit_code, result.error) == (
        RunStatus.FAILED,
        3,
        "exited with code 3",
    )


def test_python_cancellation_sets_the_flag() -> None:
    cancel = asyncio.Event()
    result = execute(py_run("wait_for_cancel"), events=cancel_when("ready", cancel), cancel=cancel)
    assert result.status is RunStatus.CANCELLED
    assert "cancelled flag: True True" in result.output_tail
    assert result.exit_code == 0  # it stopped cooperatively


def test_python_function_ignoring_cancellation_is_killed() -> None:
    cancel = asyncio.Event()
    result = execute(
        py_run("ignore_cancel"),
        events=cancel_when("ready", cancel),
        cancel=cancel,
        kill_grace=timedelta(milliseconds=200),
    )
    assert result.status is RunStatus.CANCELLED
    assert result.exit_code == -9
    assert "ignoring the cancel request" in result.output_tail


def test_run_context_in_process() -> None:
    import io

    stream = io.StringIO()
    ctx = RunContext(task="t", run_id=1, slot=SLOT, attempt=1, stream=stream)
    try:
        ctx.progress(12.5, "multi\nline  message")
        ctx.progress(None)
        with pytest.raises(ValueError):
            ctx.progress(101)
        assert stream.getvalue() == "::progress 12.5 multi line message\n::progress -\n"
        assert not ctx.cancelled and not ctx.wait(0)
        ctx.request_cancel()
        assert ctx.cancelled and ctx.is_cancelled() and ctx.wait(None)
    finally:
        ctx.close()


# -------------------------------------------------------------------------- dispatch


def test_executor_for_each_kind() -> None:
    assert isinstance(executor_for(RunSpec(command=["true"])), CommandExecutor)
    assert isinstance(executor_for(RunSpec(shell="true")), ShellExecutor)
    assert isinstance(executor_for(RunSpec(http=HttpTarget(url="http://x.test/"))), HttpExecutor)
    assert isinstance(executor_for(RunSpec(python="m:f")), PythonExecutor)


def test_dispatch_executor_routes_by_kind() -> None:
    dispatch = DispatchExecutor(http=mock(lambda req: httpx.Response(200, text="mocked")))
    http_result = execute(http_run(), executor=dispatch)
    assert http_result.output_tail == "mocked"
    shell_result = execute(RunSpec(shell="echo routed"), executor=dispatch)
    assert shell_result.output_tail == "routed\n"


def test_callback_errors_do_not_break_the_run() -> None:
    class Broken(Recorder):
        def output(self, text: str) -> None:
            raise RuntimeError("sink down")

        def progress(self, percent: float | None, message: str | None) -> None:
            raise RuntimeError("sink down")

    result = execute(RunSpec(shell="echo '::progress 5 x'; echo fine"), events=Broken())
    assert result.status is RunStatus.SUCCEEDED
    assert result.output_tail == "::progress 5 x\nfine\n"


def test_package_imports_no_forbidden_modules() -> None:
    code = (
        "import sys, reconciler, reconciler.core.model, reconciler.core.protocols\n"
        "before = set(sys.modules)\n"
        "import reconciler.executors as e\n"
        "for name in e.__all__: getattr(e, name)\n"
        "import reconciler.executors._pyrunner\n"
        "new = set(sys.modules) - before\n"
        "bad = sorted(m for m in new if m.split('.')[0] in "
        "{'sqlalchemy', 'kazoo', 'watchfiles', 'fastapi', 'starlette', 'alembic'})\n"
        "print(bad)\n"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_python_child_does_not_import_httpx_or_pydantic() -> None:
    code = (
        "import sys\n"
        "import reconciler.executors._pyrunner\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'httpx', 'pydantic'}))\n"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_program_removed_between_runs_is_not_found_again(tmp_path: Path) -> None:
    """Program lookups are remembered between runs; one that went away is looked up
    again and reported as not found, as at its first run."""
    program = tmp_path / "bin" / "reconciler-test-tool"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\necho tool ran\n")
    program.chmod(0o755)
    path = f"{program.parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
    run = RunSpec(command=["reconciler-test-tool"], env={"PATH": path})
    assert execute(run).output_tail == "tool ran\n"
    program.unlink()
    gone = execute(run)
    assert gone.status is RunStatus.FAILED
    assert "command not found" in (gone.error or ""), gone

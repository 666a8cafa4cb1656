"""Shared helpers of the hostile-manifest suite (see README.md in this directory).

A *scene* is a manifests directory plus a SQLite runtime table in ``tmp_path``:

1. ``00-bystander.yaml`` (an unrelated valid task) and a valid version of the file
   under attack are applied with ``reconcile`` (the table now holds their tasks);
2. the test puts the hostile version in place (or breaks the file system around it);
3. ``load_directory`` / ``load_paths`` must report a clear error, and a second
   ``reconcile`` must leave the table exactly as it was (the GitOps safety rule: a
   file that fails to load freezes its tasks; nothing is deleted or changed).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from reconciler.core.model import DesiredState, ManifestError
from reconciler.core.plan import Action
from reconciler.service import ReconcileResult, reconcile
from reconciler.store import SQLStore, create_store

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
REPO = HERE.parent.parent
RECONCILER = Path(sys.executable).with_name("reconciler")

BYSTANDER_FILE = "00-bystander.yaml"
BYSTANDER = "bystander"

#: Upper bounds (generous for a shared 2-core machine; typical figures are 100x lower).
LOAD_SECONDS = 2.0
ALIAS_BOMB_SECONDS = 0.5
CLI_SECONDS = 8.0  # a fresh interpreter importing pydantic, SQLAlchemy, ...
SMALL_PEAK_BYTES = 32 << 20  # traced Python allocations while loading a small file
BIG_PEAK_BYTES = 200 << 20  # ... and for the 10 MB / 1 MiB / thousands-of-documents ones
# Peak RSS of one `reconciler validate` child (wait4), whole corpus at once included;
# measured about 250 MiB under load, most of it the interpreter and its imports.
CLI_MAX_RSS_BYTES = 384 << 20
#: Longest error line we accept: a 5,000-character value must not be echoed whole.
MAX_ERROR_CHARS = 2_000


def valid_task(name: str, schedule: str = "30 2 * * *") -> str:
    """A valid Task document (the shape most corpus files are a broken version of)."""
    return (
        "apiVersion: reconciler/v1\n"
        "kind: Task\n"
        "metadata:\n"
        f"  name: {name}\n"
        "spec:\n"
        f'  schedule: "{schedule}"\n'
        "  timeZone: Europe/Berlin\n"
        "  run:\n"
        '    command: ["/usr/bin/report", "--full"]\n'
        "  timeout: 10m\n"
    )


def valid_file(names: Iterable[str]) -> str:
    return "---\n".join(valid_task(n) for n in names)


@dataclass(frozen=True)
class Expect:
    """What the error about one hostile input must say.

    ``fragment`` must be in the message; ``line`` and ``field`` must be exactly these
    (``None``: the input has no line, e.g. a file that cannot be read, or the error is
    about YAML text rather than a field). ``names`` are the tasks the valid version of
    the file declares (they must be kept). ``whole_dir``: the error only exists next to
    the other files (a duplicate name across files).
    """

    line: int | None
    field: str | None
    fragment: str
    names: tuple[str, ...] = ("victim",)
    whole_dir: bool = False
    file: str | None = None  # the file named in the error, when not the case's own


T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def traced_peak(fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()`` and the peak of Python allocations while it ran (tracemalloc)."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        value = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return value, peak


def snapshot(store: SQLStore) -> dict[str, tuple[str, int, str, str]]:
    """name -> (hash, generation, source file, canonical document) of every live task."""
    return {
        t.name: (t.hash, t.generation, t.source_file, json.dumps(t.document, sort_keys=True))
        for t in store.load_tasks()
    }


def make_template_db(directory: Path) -> Path:
    """A migrated, empty SQLite database to copy per test (migrating takes ~50 ms)."""
    path = directory / "template.db"
    store = create_store(f"sqlite:///{path}")
    try:
        store.upgrade()
    finally:
        store.close()
    return path


@dataclass
class Scene:
    root: Path
    template_db: Path
    manifests: Path = field(init=False)
    store: SQLStore = field(init=False)
    before: dict[str, tuple[str, int, str, str]] = field(default_factory=dict)
    applies_before: int = 0

    def __post_init__(self) -> None:
        self.manifests = self.root / "manifests"
        self.manifests.mkdir()
        db = self.root / "s.db"
        shutil.copyfile(self.template_db, db)
        self.store = create_store(f"sqlite:///{db}")
        self.store.upgrade()

    def close(self) -> None:
        self.store.close()

    def write(self, rel: str, content: str | bytes) -> Path:
        path = self.manifests / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def apply_valid(self, files: dict[str, Sequence[str]]) -> None:
        """Apply the bystander plus a valid version of each file (file -> task names)."""
        self.write(BYSTANDER_FILE, valid_task(BYSTANDER, "0 * * * *"))
        for rel, names in files.items():
            self.write(rel, valid_file(names))
        result = reconcile(self.manifests, self.store, actor="t")
        assert result.desired.ok, result.desired.errors
        assert result.applied is not None
        expected = {BYSTANDER, *(n for names in files.values() for n in names)}
        self.before = snapshot(self.store)
        assert set(self.before) == expected
        self.applies_before = len(self.store.list_applies(limit=1000))

    def remove(self, rel: str) -> None:
        path = self.manifests / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()

    def reconcile_changes_nothing(self) -> ReconcileResult:
        """Reconcile the (now hostile) directory: the table must not move at all."""
        result, _ = timed(lambda: reconcile(self.manifests, self.store, actor="t"))
        the_plan = result.plan
        assert not the_plan.has_changes, [
            (c.name, c.action.value) for c in the_plan.changes if c.action is not Action.UNCHANGED
        ]
        assert result.applied is None
        assert result.desired.errors, "the hostile input was accepted"
        assert snapshot(self.store) == self.before
        assert len(self.store.list_applies(limit=1000)) == self.applies_before
        return result

    def kept(self, result: ReconcileResult) -> set[str]:
        return {c.name for c in result.plan.changes if c.action is Action.KEEP}


def check_errors(
    state: DesiredState,
    label: str,
    expect: Expect,
    *,
    also: Iterable[str] = (),
) -> ManifestError:
    """The common contract for a hostile file, then the case's own expectation.

    Every error must be about ``label`` (or one of the files in ``also``). Returns the
    error that matched ``expect``.
    """
    assert not state.ok
    assert state.errors, "no error reported"
    file = expect.file or label
    allowed = {file, *also}
    for e in state.errors:
        assert isinstance(e, ManifestError)
        assert e.file in allowed, f"error about another file: {e}"
        assert e.message and isinstance(e.message, str)
        assert "internal error" not in e.message, str(e)
        assert "Traceback" not in e.message, str(e)
        assert len(str(e)) <= MAX_ERROR_CHARS, f"{len(str(e))}-character error line"
        if e.line is not None:
            assert e.line >= 1 and e.column is not None and e.column >= 1, str(e)
    assert file in state.failed_files or file.rsplit("/", 1)[0] in state.failed_files
    assert not any(t.source_file == file for t in state.tasks)
    matching = [
        e
        for e in state.errors
        if e.file == file
        and expect.fragment in e.message
        and e.line == expect.line
        and _field_matches(e.field, expect.field)
    ]
    assert matching, (
        f"expected line={expect.line} field={expect.field} {expect.fragment!r}; got:\n"
        + "\n".join(f"  line={e.line} field={e.field} {e}" for e in state.errors)
    )
    return matching[0]


def _field_matches(actual: str | None, expected: str | None) -> bool:
    if expected is not None and expected.endswith("*"):
        return actual is not None and actual.startswith(expected[:-1])
    return actual == expected


# ------------------------------------------------------------------------ the real CLI


@dataclass(frozen=True)
class CliRun:
    code: int
    stdout: str
    stderr: str
    seconds: float
    max_rss: int  # bytes


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the body blocks, e.g. opening a FIFO."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"blocked for more than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def drop_dac_capabilities() -> None:
    """In a child before exec: give up root's right to ignore file permissions
    (``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``), so mode 000 really denies."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_cli(
    args: Sequence[str],
    cwd: Path,
    *,
    preexec: Callable[[], None] | None = None,
    timeout: float = 60,
) -> CliRun:
    """Run ``reconciler ARGS`` in a child process; report its own peak RSS (wait4).

    A child still running after ``timeout`` seconds is killed and the test fails.
    """
    argv = [str(RECONCILER), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=preexec,
        )
        try:
            with deadline(timeout):
                _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return CliRun(proc.returncode, stdout, stderr, seconds, usage.ru_maxrss * scale)


def check_cli_failure(run: CliRun, expected_lines: Sequence[str]) -> None:
    """Exit 1, every expected fragment in the output, no traceback, bounded time and
    memory."""
    assert run.code == 1, (run.code, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr, run.stderr
    assert "Traceback" not in run.stdout, run.stdout
    output = run.stdout + run.stderr
    for fragment in expected_lines:
        assert fragment in output, f"{fragment!r} not in:\n{output}"
    assert run.seconds < CLI_SECONDS, run.seconds
    assert run.max_rss < CLI_MAX_RSS_BYTES, run.max_rss


def cli_line_for(stderr: str, label: str, expect: Expect) -> str:
    """The line of ``reconciler validate``'s output that reports ``expect`` about
    ``label`` (``label:LINE:COLUMN: [task: ][field: ]message``)."""
    start = label + ": " if expect.line is None else f"{label}:{expect.line}:"
    field = expect.field[:-1] if expect.field and expect.field.endswith("*") else expect.field
    for line in stderr.splitlines():
        if (
            line.startswith(start)
            and expect.fragment in line
            and (field is None or f" {field}" in line)
        ):
            return line
    raise AssertionError(f"no line {start}...{field}...{expect.fragment!r} in:\n{stderr}")


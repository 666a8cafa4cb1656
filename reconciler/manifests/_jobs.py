"""The work on each file of a load (read, hash, parse) and the driver that runs it.

A :class:`_Job` names one file (a path to read, or content given); :func:`_run_job`
turns it into an :class:`_Outcome` (the content hash and the parse result, or none when
the content still has the known hash). :func:`_run_jobs` runs the jobs in this process
or forked over the usable cores (from :data:`PARALLEL_MIN_FILES` files, see
``_parallel``), and :func:`_gc_paused` pauses the cyclic GC during a load.
"""

from __future__ import annotations

import gc
import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from reconciler.core.model import ManifestError, TaskDef
from reconciler.manifests._parallel import REDUCERS, can_fork, fork_map, usable_cpus
from reconciler.manifests._parse import FileResult, _file_error, parse_file
from reconciler.manifests._read import _Changed, _NotRegular, _read_error, _TooBig, read_file

#: With ``workers=None``, parsing is spread over processes from this many files up.
PARALLEL_MIN_FILES: Final = 500


@dataclass(slots=True)
class _Job:
    source_file: str
    label: str
    path: str | None = None  # read from here ...
    data: bytes | None = None  # ... or this content is given
    known_digest: bytes | None = None  # skip parsing when the content still hashes to it
    want_digest: bool = False


@dataclass(slots=True)
class _Outcome:
    digest: bytes | None  # None: could not be read (never cached)
    result: FileResult | None  # None: content unchanged (digest == known_digest)
    parsed: bool = False


REDUCERS[TaskDef] = lambda t: (
    TaskDef,
    (t.name, t.document, t.hash, t.source_file, t.source_line),
)
REDUCERS[ManifestError] = lambda e: (
    ManifestError,
    (e.file, e.message, e.line, e.column, e.task, e.field),
)
REDUCERS[FileResult] = lambda r: (FileResult, (r.tasks, r.errors, r.names))
REDUCERS[_Outcome] = lambda o: (_Outcome, (o.digest, o.result, o.parsed))


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _run_job(job: _Job) -> _Outcome:
    data = job.data
    if data is None:
        assert job.path is not None
        try:
            data = read_file(job.path)
        except (OSError, _NotRegular, _TooBig, _Changed) as exc:
            return _Outcome(None, _read_error(job.label, exc))
    digest = _digest(data) if job.want_digest or job.known_digest is not None else None
    if digest is not None and digest == job.known_digest:
        return _Outcome(digest, None)
    try:
        result = parse_file(data, label=job.label, source_file=job.source_file)
    except Exception as exc:  # a bug must not take the other files down
        message = f"internal error while loading: {type(exc).__name__}: {exc}"
        return _Outcome(None, _file_error(job.label, message), parsed=True)
    return _Outcome(digest, result, parsed=True)


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC during a load: it allocates hundreds of thousands of
    (acyclic) objects that mostly survive, and every young collection would scan the
    growing pile again (that alone is ~30% of a 10,000-file load). Collections resume
    afterwards; a long-running process may want ``gc.freeze()`` after its first load."""
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


def _processes(n_jobs: int, workers: int | None) -> int:
    if workers is not None:
        return max(1, min(workers, n_jobs))
    if n_jobs < PARALLEL_MIN_FILES or not can_fork():
        return 1
    return max(1, min(usable_cpus(), 8, n_jobs))


def _run_jobs(jobs: Sequence[_Job], workers: int | None) -> list[_Outcome]:
    if not jobs:
        return []
    return fork_map(_run_job, jobs, _processes(len(jobs), workers))

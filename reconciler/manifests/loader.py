"""Manifest files -> :class:`~reconciler.core.model.DesiredState`.

Which files
    ``*.yaml`` and ``*.yml`` (any letter case) anywhere under the directory, in sorted
    order of their relative POSIX path. Hidden files and folders (``.name``) and editor
    leftovers (``name~``, ``.#name``, ``#name#``, ``*.swp``, ``*.swx``) are skipped.
    ``ManifestError.file``, ``TaskDef.source_file``, ``DesiredState.files`` and
    ``failed_files`` use that relative path (``team/a.yaml``).

Symlinks
    The directory itself may be a symlink (git-sync swaps ``current -> rev-xxxx``): it
    is resolved once, first, and everything is read from that snapshot. Inside it, a
    symlink named like a manifest must resolve to a regular file inside the resolved
    root, otherwise it is an error (as is a symlink loop). A symlinked *directory* is
    never followed: one pointing outside is an error, one pointing inside is skipped
    (its files are loaded from their real location, so they are not loaded twice). A
    symlink to a manifest that is loaded under its own name anyway is skipped for the
    same reason. Other symlinks (``README.md -> ../README.md``) are ignored.

Errors
    Everything wrong with one file (unreadable, vanished, too big, binary, bad
    encoding, YAML syntax, tabs, duplicate keys, custom tags, alias bombs, schema
    errors) becomes a :class:`ManifestError` for that file; nothing escapes as an
    exception. A file with any error contributes no tasks and is listed in
    ``failed_files`` (the plan keeps its tasks unchanged). A task name declared more
    than once is reported once per extra declaration (naming the first one), goes to
    ``frozen_names``, and none of its declarations is in ``tasks``; every file holding
    an extra declaration is failed.

    Only a problem with the directory *itself* is not per-file: a missing directory
    gives ``DesiredState(directory_missing=True)`` and **no** error (the plan turns that
    into its "directory is missing" refusal; ``validate`` can say so itself), and a path
    that is not a directory or cannot be listed raises
    :class:`~reconciler.core.errors.ManifestLoadError` (an empty result would look like
    "delete every task").

    A subdirectory that cannot be listed is reported under its own path (``team``) in
    ``errors`` and ``failed_files``.

YAML
    Safe loading only, YAML 1.1 scalars exactly as ``yaml.safe_load`` resolves them
    (``yes`` is a boolean, ``010`` is 8), one document per ``---``; documents that are
    empty (only comments) are skipped. Refused, each with the line and column:
    any tag other than the standard scalar/list/mapping ones (``!!python/...``, ``!foo``,
    ``!!binary``, ``!!set``), duplicate keys in a mapping (not "last wins"), merge keys
    ``<<`` (refused rather than supported: they hide where a value comes from; write
    the keys out), non-scalar mapping keys, recursive aliases. A document must be a
    mapping with ``kind`` (only ``Task``) and an ``apiVersion`` that kind supports
    (``reconciler/v1``). UTF-8 (with or without BOM) is read as is; UTF-16/UTF-32 with
    a BOM are decoded; NUL bytes (binary, UTF-16 without BOM) are refused.

Limits
    :data:`MAX_FILE_BYTES` (from the size, before reading), :data:`MAX_NODES_PER_DOCUMENT`
    and :data:`MAX_DEPTH` (counted while libyaml composes, so a huge or 10,000-deep
    document stops early), :data:`MAX_ALIAS_EXPANSION` per file (each use of an alias is
    charged the size of what it refers to; a "billion laughs" fails on the first alias
    over budget, in microseconds), :data:`MAX_DOCUMENTS_PER_FILE`, and
    :data:`MAX_ERRORS_PER_FILE` errors reported per file.

Speed
    Parsing is libyaml plus a small constructor (see ``_yaml``); with many files to
    parse (:data:`PARALLEL_MIN_FILES`) the work is forked over the usable cores (see
    ``_parallel``: a child that crashes or hangs is replaced by the parent). The cyclic
    GC is paused for the duration of a load. A :class:`LoadCache` makes reloading
    cheap: a file whose (device, inode, size, mtime, ctime) did not change is not read
    at all, one whose content hash did not change is not parsed again, and when only
    the content of a few valid files changed the previous state is patched instead of
    rebuilt.
"""

from __future__ import annotations

import errno
import fnmatch
import gc
import hashlib
import os
import stat
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Final

from reconciler.core.errors import ManifestLoadError
from reconciler.core.model import DesiredState, ManifestError, TaskDef
from reconciler.manifests._parallel import REDUCERS, can_fork, fork_map, usable_cpus
from reconciler.manifests._validate import KINDS, identify, validate_document
from reconciler.manifests._yaml import (
    MAX_ALIAS_EXPANSION,
    MAX_DEPTH,
    MAX_DOCUMENTS_PER_FILE,
    MAX_NODES_PER_DOCUMENT,
    Constructor,
    YamlProblem,
    compose_documents,
    mark_position,
    may_have_aliases,
    prepare,
)

#: Files larger than this are refused without being read.
MAX_FILE_BYTES: Final = 1 << 20
#: After this many errors in one file the rest of the file is not reported.
MAX_ERRORS_PER_FILE: Final = 100
#: With ``workers=None``, parsing is spread over processes from this many files up.
PARALLEL_MIN_FILES: Final = 500
#: A cached stat is only trusted for a file whose ctime is this much older than the
#: moment the stat was taken (a write in the same clock tick could otherwise go
#: unnoticed: git's "racily clean" problem).
RACY_WINDOW_NS: Final = 50_000_000
#: The same, for file systems with whole-second timestamps.
RACY_WINDOW_COARSE_NS: Final = 2_000_000_000

_SUFFIXES: Final = (".yaml", ".yml")
_OPEN_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in must not block us
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
)

__all__ = [
    "MAX_ALIAS_EXPANSION",
    "MAX_DEPTH",
    "MAX_DOCUMENTS_PER_FILE",
    "MAX_ERRORS_PER_FILE",
    "MAX_FILE_BYTES",
    "MAX_NODES_PER_DOCUMENT",
    "LoadCache",
    "LoadStats",
    "is_manifest_name",
    "load_directory",
    "load_paths",
    "load_tree",
    "parse_file",
]


# ------------------------------------------------------------------------- one file


@dataclass(frozen=True, slots=True)
class FileResult:
    """What one file contributes (picklable: crosses process boundaries)."""

    tasks: tuple[TaskDef, ...] = ()
    errors: tuple[ManifestError, ...] = ()
    #: (name, line, column) of every ``metadata.name`` declared by a Task document,
    #: valid or not: duplicates are detected across all of them.
    names: tuple[tuple[str, int, int], ...] = ()


def _file_error(label: str, message: str) -> FileResult:
    return FileResult(errors=(ManifestError(label, message),))


def _size_text(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _too_big(label: str, size: int) -> FileResult:
    limit = (
        f"{MAX_FILE_BYTES >> 20} MiB"
        if MAX_FILE_BYTES % (1 << 20) == 0
        else _size_text(MAX_FILE_BYTES)
    )
    return _file_error(label, f"file is {_size_text(size)}, larger than the {limit} limit")


def parse_file(data: bytes, *, label: str, source_file: str | None = None) -> FileResult:
    """Parse and validate the content of one manifest file.

    ``label`` is the name used in errors, ``source_file`` the one recorded in each
    :class:`TaskDef` (defaults to ``label``).
    """
    source_file = label if source_file is None else source_file
    if len(data) > MAX_FILE_BYTES:
        return _too_big(label, len(data))
    if not data:
        # The first step of a truncate-then-write save looks exactly like this; treating
        # it as "no tasks" would delete them. A file with only a comment is fine.
        return FileResult(errors=(ManifestError(
            label, "file is empty (a save in progress?); keep a comment in it to declare "
            "no tasks, or delete the file to delete its tasks", 1, 1),))
    errors: list[ManifestError] = []
    tasks: list[TaskDef] = []
    names: list[tuple[str, int, int]] = []
    try:
        source = prepare(data)
        constructor = Constructor(aliases_possible=may_have_aliases(source))
        for root in compose_documents(source):
            if len(errors) >= MAX_ERRORS_PER_FILE:
                line, column = mark_position(root)
                errors.append(
                    ManifestError(
                        label,
                        f"more than {MAX_ERRORS_PER_FILE} errors; the rest of the "
                        "file is not checked",
                        line,
                        column,
                    )
                )
                break
            identity = identify(root)
            name = identity.name
            if name is not None and identity.name_node is not None and identity.kind in KINDS:
                names.append((name, *mark_position(identity.name_node)))
            seen = len(constructor.problems)
            try:
                value = constructor.construct(root)
            except YamlProblem as problem:  # fatal for the file (alias budget, recursion)
                errors.extend(_problem(label, p, name) for p in constructor.problems[seen:])
                errors.append(_problem(label, problem, name))
                break
            if len(constructor.problems) > seen:
                errors.extend(_problem(label, p, name) for p in constructor.problems[seen:])
                continue
            task, found = validate_document(
                root,
                value,
                label=label,
                source_file=source_file,
                task=name,
                max_errors=MAX_ERRORS_PER_FILE + 1 - len(errors),
            )
            if task is not None:
                tasks.append(task)
            errors.extend(found)
    except YamlProblem as problem:
        errors.append(_problem(label, problem, None))
    if errors:
        return FileResult((), _reported(label, errors), tuple(names))
    return FileResult(tuple(tasks), (), tuple(names))


#: Longest message or field path in an error: a value of 5,000 characters that an error
#: quotes (an unknown key, a duration) is shortened in the middle, not repeated whole.
MAX_ERROR_TEXT: Final = 500


def _shorten(text: str) -> str:
    if len(text) <= MAX_ERROR_TEXT:
        return text
    head, tail = MAX_ERROR_TEXT * 2 // 3, MAX_ERROR_TEXT // 4
    omitted = len(text) - head - tail
    return f"{text[:head]}...[{omitted:,} characters]...{text[-tail:]}"


def _reported(label: str, errors: list[ManifestError]) -> tuple[ManifestError, ...]:
    """At most :data:`MAX_ERRORS_PER_FILE` errors (one document can produce thousands),
    then a note where checking stopped; long texts shortened."""
    if len(errors) > MAX_ERRORS_PER_FILE:
        stop = errors[MAX_ERRORS_PER_FILE]
        note = ManifestError(
            label,
            f"more than {MAX_ERRORS_PER_FILE} errors; the rest of the file is not checked",
            stop.line,
            stop.column,
        )
        errors = [*errors[:MAX_ERRORS_PER_FILE], note]
    return tuple(
        replace(e, message=_shorten(e.message), field=e.field and _shorten(e.field))
        if len(e.message) > MAX_ERROR_TEXT or (e.field and len(e.field) > MAX_ERROR_TEXT)
        else e
        for e in errors
    )


def _problem(label: str, problem: YamlProblem, task: str | None) -> ManifestError:
    return ManifestError(label, problem.message, problem.line, problem.column, task)


class _NotRegular(Exception):
    pass


class _TooBig(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class _Changed(Exception):
    """The file was written to while we read it: what we have may be half of it."""


def read_file(path: str) -> bytes:
    """Read a regular file of at most :data:`MAX_FILE_BYTES` (+1 to detect more)."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular
        if st.st_size > MAX_FILE_BYTES:
            raise _TooBig(st.st_size)
        budget = MAX_FILE_BYTES + 1
        data = os.read(fd, min(st.st_size + 1, budget))
        if len(data) <= st.st_size:  # short read or the file grew: read to the end
            parts = [data]
            budget -= len(data)
            while budget > 0:
                chunk = os.read(fd, min(budget, 1 << 16))
                if not chunk:
                    break
                parts.append(chunk)
                budget -= len(chunk)
            data = b"".join(parts)
        if len(data) > MAX_FILE_BYTES:
            raise _TooBig(len(data))
        # A writer that truncates and rewrites the file in place while we read (an editor
        # saving, `cat > x.yaml`) leaves a prefix of the new content: a file that may
        # parse fine and declare fewer tasks. Refuse any read the file changed during.
        after = os.fstat(fd)
        if len(data) != st.st_size or (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
        ):
            raise _Changed
        return data
    finally:
        os.close(fd)


def _read_error(label: str, exc: BaseException) -> FileResult:
    if isinstance(exc, _TooBig):
        return _too_big(label, exc.size)
    if isinstance(exc, _NotRegular):
        return _file_error(label, "not a regular file")
    if isinstance(exc, _Changed):
        return _file_error(label, "file changed while it was being read (is it being written?)")
    if isinstance(exc, FileNotFoundError):
        return _file_error(label, "file disappeared while the manifests were being read")
    if isinstance(exc, PermissionError):
        return _file_error(label, "cannot read file: permission denied")
    if isinstance(exc, IsADirectoryError):
        return _file_error(label, "is a directory, not a manifest file")
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return _file_error(label, "file was replaced by a symlink while being read")
    if isinstance(exc, OSError):
        return _file_error(label, f"cannot read file: {exc.strerror or exc}")
    return _file_error(label, f"cannot read file: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- a job


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


# ------------------------------------------------------------------------ the walk


def is_manifest_name(name: str) -> bool:
    """A non-hidden, non-backup ``*.yaml``/``*.yml`` file name."""
    return name.lower().endswith(_SUFFIXES) and not _is_ignored(name)


def _is_ignored(name: str) -> bool:
    return (
        not name
        or name[0] == "."
        or name.endswith("~")
        or (name[0] == "#" and name.endswith("#"))
        or name.endswith((".swp", ".swx"))
    )


_Signature = tuple[int, int, int, int, int]


def _signature(st: os.stat_result) -> _Signature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(slots=True)
class _Walk:
    found: list[tuple[str, str, _Signature]] = field(default_factory=list)  # rel, path, sig
    links: list[tuple[str, str, _Signature]] = field(default_factory=list)  # the same, symlinks
    errors: list[tuple[str, str]] = field(default_factory=list)  # rel, message

    def files(self) -> list[tuple[str, str, _Signature]]:
        """Regular files, and symlinks to files that are not found under their own name
        (``latest.yaml -> v2.yaml`` would otherwise declare every task twice)."""
        if not self.links:
            return self.found
        real = {(sig[0], sig[1]) for _, _, sig in self.found}
        return self.found + [link for link in self.links if (link[2][0], link[2][1]) not in real]


IGNORE_FILE: Final = ".reconcilerignore"


@dataclass(frozen=True, slots=True)
class _Ignore:
    """Patterns from ``.reconcilerignore`` at the root of the manifests directory.

    One glob per line (``#`` comments): a pattern without ``/`` matches a file or
    folder name at any depth (``*.draft.yaml``); one with ``/`` matches the path from
    the root (``deploy/argocd.yaml``); a trailing ``/`` matches folders only
    (``gitops/``). It lets a manifests directory share a repository with other YAML,
    e.g. Kubernetes objects for Argo CD or Flux.
    """

    names: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    dir_names: tuple[str, ...] = ()
    dir_paths: tuple[str, ...] = ()

    @classmethod
    def read(cls, root: str) -> _Ignore:
        """The rules in ``root``; none when there is no ignore file.

        Read like a manifest (regular files only, never blocking on a FIFO, at most
        :data:`MAX_FILE_BYTES`, a symlink only to a file inside ``root``). An ignore file
        that exists but cannot be used raises :class:`ManifestLoadError`: loading without
        its rules would suddenly declare every file it hides.
        """
        path = os.path.join(root, IGNORE_FILE)
        try:
            os.lstat(path)
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise ManifestLoadError(f"cannot use {path}: {exc.strerror or exc}") from None
        try:
            real = os.path.realpath(path)
            if os.path.islink(real):
                raise ManifestLoadError(f"cannot use {path}: symlink loop")
            if not _inside(real, root):
                raise ManifestLoadError(
                    f"cannot use {path}: symlink points outside the manifests directory"
                )
            text = read_file(real).decode("utf-8")
        except FileNotFoundError:
            what = "broken symlink" if os.path.islink(path) else "it disappeared while read"
            raise ManifestLoadError(f"cannot use {path}: {what}") from None
        except (OSError, _NotRegular, _TooBig, _Changed) as exc:
            message = _read_error(IGNORE_FILE, exc).errors[0].message
            raise ManifestLoadError(f"cannot use {path}: {message}") from None
        except UnicodeDecodeError as exc:
            raise ManifestLoadError(f"cannot use {path}: not UTF-8 text ({exc.reason})") from None
        return cls.parse(text)

    @classmethod
    def parse(cls, text: str) -> _Ignore:
        names: list[str] = []
        paths: list[str] = []
        dir_names: list[str] = []
        dir_paths: list[str] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            is_dir = line.endswith("/")
            line = line.strip("/")
            if not line:
                continue
            if "/" in line:
                (dir_paths if is_dir else paths).append(line)
            else:
                (dir_names if is_dir else names).append(line)
        return cls(tuple(names), tuple(paths), tuple(dir_names), tuple(dir_paths))

    def __bool__(self) -> bool:
        return bool(self.names or self.paths or self.dir_names or self.dir_paths)

    def file(self, rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(name, p) for p in self.names) or any(
            fnmatch.fnmatchcase(rel, p) for p in self.paths
        )

    def folder(self, rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(name, p) for p in (*self.names, *self.dir_names)) or any(
            fnmatch.fnmatchcase(rel, p) for p in (*self.paths, *self.dir_paths)
        )

    def under(self, rel: str) -> bool:
        """``rel`` (a file) or one of its folders is ignored."""
        parts = rel.split("/")
        return self.file(rel) or any(
            self.folder("/".join(parts[:i])) for i in range(1, len(parts))
        )


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


def _walk(root: str) -> _Walk:
    """List manifest files under the resolved directory ``root`` (not sorted)."""
    out = _Walk()
    found = out.found
    ignore = _Ignore.read(root)
    stack = [("", root)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        try:
            it = os.scandir(abs_dir)
        except OSError as exc:
            if not rel_dir:
                raise ManifestLoadError(f"cannot list manifests directory {root}: {exc}") from exc
            out.errors.append((rel_dir[:-1], f"cannot list directory: {exc.strerror or exc}"))
            continue
        with it:
            for entry in it:
                name = entry.name
                if name[0] == ".":
                    continue
                try:
                    # The common case first: a regular file (no stat needed to know).
                    if entry.is_file(follow_symlinks=False):
                        if (
                            name.endswith(_SUFFIXES) or name.lower().endswith(_SUFFIXES)
                        ) and not (ignore and ignore.file(rel_dir + name)):
                            st = entry.stat(follow_symlinks=False)
                            found.append(
                                (
                                    rel_dir + name,
                                    entry.path,
                                    (
                                        st.st_dev,
                                        st.st_ino,
                                        st.st_size,
                                        st.st_mtime_ns,
                                        st.st_ctime_ns,
                                    ),
                                )
                            )
                        continue
                    if _is_ignored(name):
                        continue
                    rel = rel_dir + name
                    is_manifest = name.lower().endswith(_SUFFIXES)
                    if ignore and (ignore.file(rel) or ignore.folder(rel)):
                        continue
                    if entry.is_symlink():
                        _symlink(entry, rel, root, is_manifest, out)
                    elif entry.is_dir(follow_symlinks=False):
                        if is_manifest:
                            out.errors.append((rel, "is a directory, not a manifest file"))
                        stack.append((rel + "/", entry.path))
                    elif is_manifest:
                        out.errors.append((rel, "not a regular file"))
                except OSError as exc:
                    if name.lower().endswith(_SUFFIXES):
                        message = _read_error(name, exc).errors[0].message
                        out.errors.append((rel_dir + name, message))
    return out


def _symlink(entry: os.DirEntry[str], rel: str, root: str, is_manifest: bool, out: _Walk) -> None:
    try:
        st = os.stat(entry.path)
    except OSError as exc:
        if not is_manifest and exc.errno != errno.ELOOP:
            return  # a dangling link that is not a manifest: nothing to load
        if exc.errno == errno.ELOOP:
            out.errors.append((rel, "symlink loop"))
        else:
            out.errors.append((rel, f"broken symlink: {exc.strerror or exc}"))
        return
    is_dir = stat.S_ISDIR(st.st_mode)
    if not is_manifest and not is_dir:
        return
    target = os.path.realpath(entry.path)
    if not _inside(target, root):
        out.errors.append((rel, "symlink points outside the manifests directory"))
        return
    if is_dir:
        if is_manifest:
            out.errors.append((rel, "is a directory, not a manifest file"))
        return  # inside: loaded from its real location
    if not stat.S_ISREG(st.st_mode):
        out.errors.append((rel, "not a regular file"))
        return
    out.links.append((rel, target, _signature(st)))


# ------------------------------------------------------------------------- assembly


def _assemble(
    order: Sequence[str],
    results: Mapping[str, FileResult],
    labels: Mapping[str, str] | None = None,
    offsets: dict[str, tuple[int, int]] | None = None,
) -> DesiredState:
    """Combine per-file results, keyed by source file and visited in ``order`` (sorted).

    ``labels`` maps a source file to the name used in messages (default: itself). When
    ``offsets`` is given it receives, for each file, the slice of ``tasks`` it produced
    (for an incremental update of the same state later).
    """
    first: dict[str, tuple[str, int]] = {}
    frozen: set[str] = set()
    failed: set[str] = set()
    errors: list[ManifestError] = []
    tasks: list[TaskDef] = []
    for source_file in order:
        result = results[source_file]
        if result.errors:
            failed.add(source_file)
            errors.extend(result.errors)
        for name, line, column in result.names:
            seen = first.get(name)
            if seen is None:
                first[name] = (labels[source_file] if labels else source_file, line)
                continue
            frozen.add(name)
            failed.add(source_file)
            label = labels[source_file] if labels else source_file
            errors.append(
                ManifestError(
                    label,
                    f'task name "{name}" is declared more than once '
                    f"(first declared at {seen[0]}:{seen[1]})",
                    line,
                    column,
                    name,
                    "metadata.name",
                )
            )
        if offsets is not None:
            start = len(tasks)
            tasks += result.tasks
            offsets[source_file] = (start, len(tasks))
        else:
            tasks += result.tasks
    if frozen or failed:  # (files with errors have no tasks, but duplicates' files do)
        tasks = [t for t in tasks if t.name not in frozen and t.source_file not in failed]
        if offsets is not None:
            offsets.clear()  # no incremental updates from a state with errors
    errors.sort(key=lambda e: (e.file, e.line or 0, e.column or 0))
    return DesiredState(
        tasks=tuple(tasks),
        errors=tuple(errors),
        failed_files=frozenset(failed),
        frozen_names=frozenset(frozen),
        files=frozenset(results),
    )


# --------------------------------------------------------------------------- cache


@dataclass(frozen=True, slots=True)
class LoadStats:
    """What the last :func:`load_directory` with this cache did."""

    files: int = 0
    stat_hits: int = 0  # reused without reading (unchanged stat)
    hash_hits: int = 0  # read, same content: reused without parsing
    parsed: int = 0  # read and parsed
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class _CacheEntry:
    signature: _Signature
    trusted: bool  # may the signature alone vouch for the content? (see LoadCache)
    digest: bytes
    result: FileResult


def _entry(
    signature: _Signature, stat_taken_ns: int, digest: bytes, result: FileResult
) -> _CacheEntry:
    # Any change to a file sets its ctime to "now" (mtime can be set back, ctime can't),
    # so once the stat was taken well after the ctime, a later change shows in the ctime.
    ctime = signature[4]
    window = RACY_WINDOW_COARSE_NS if ctime % 1_000_000_000 == 0 else RACY_WINDOW_NS
    return _CacheEntry(signature, ctime < stat_taken_ns - window, digest, result)


class LoadCache:
    """Per-file results of :func:`load_directory`, keyed by relative path.

    An entry is reused without reading the file when (device, inode, size, mtime_ns,
    ctime_ns) are unchanged and its ctime was at least :data:`RACY_WINDOW_NS` older than
    the moment that stat was taken (two writes in one clock tick would be invisible);
    otherwise the file is read and hashed (BLAKE2b), and only parsed when the content
    changed. Loads with one cache are serialised; use one cache
    per manifests directory.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _CacheEntry] = {}
        self._lock = threading.Lock()
        self._last: _LastLoad | None = None
        self._found: list[tuple[str, str, _Signature]] | None = None  # the last full walk
        self.stats = LoadStats()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._last = None
            self._found = None


# ----------------------------------------------------------------------- public API


def load_directory(
    path: str | os.PathLike[str],
    *,
    cache: LoadCache | None = None,
    workers: int | None = None,
    hint: Collection[str] | None = None,
) -> DesiredState:
    """Load every manifest under ``path`` (see the module documentation for the rules).

    ``workers``: number of processes to parse with (this one included); ``None`` picks
    the number of usable CPUs when there are at least :data:`PARALLEL_MIN_FILES` files to
    parse, ``1`` never forks.

    ``hint`` (with a warm ``cache``): the paths a file watcher saw change. When every one
    of them is an existing manifest file of the last walk, the directory is not walked
    again: only those files (and any not yet trusted) are looked at. Anything else (a
    file added, deleted, renamed away, a directory, a path outside the root) falls
    back to the full walk, and so does every call without a hint.
    """
    given = os.fspath(path)
    root = os.path.realpath(given)
    try:
        st = os.stat(root)
    except (FileNotFoundError, NotADirectoryError):
        return DesiredState(tasks=(), directory_missing=True)
    except OSError as exc:
        raise ManifestLoadError(f"cannot open manifests directory {given}: {exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ManifestLoadError(f"manifests path {given} is not a directory")
    with _gc_paused():
        if cache is None:
            return _load_directory(root, None, workers)
        with cache._lock:
            return _load_directory(root, cache, workers, hint)


def _hinted(root: str, cache: LoadCache, hint: Collection[str]) -> _Walk | None:
    """The last walk patched with the hinted paths, or None to walk again.

    A hinted manifest file that exists is (re)stat-ed, or added when new; one that is
    gone is dropped. Files not hinted keep their last signature unless their cache entry
    is not yet trusted. Anything unusual (a directory, a symlink anywhere on the path, a
    path outside the root) returns None and the caller walks the whole tree.
    """
    previous = cache._found
    if previous is None or cache._last is None or cache._last.root != root:
        return None
    index = {rel: i for i, (rel, _, _) in enumerate(previous)}
    fresh: set[int] = set()
    gone: set[int] = set()
    added: list[tuple[str, str, _Signature]] = []
    for raw in hint:
        real = os.path.realpath(raw)
        rel = os.path.relpath(real, root).replace(os.sep, "/")
        if rel.startswith("..") or rel == ".":
            return None
        if rel == IGNORE_FILE:
            return None  # the ignore rules changed: walk again
        parts = rel.split("/")
        name = parts[-1]
        if any(part.startswith(".") for part in parts) or _is_ignored(name):
            continue  # hidden, or an editor's temporary or backup file: never a manifest
        if not is_manifest_name(name):
            return None  # a directory, or something we cannot reason about
        path = os.path.join(root, *parts)
        if os.path.realpath(path) != path:
            return None  # a symlink on the way: only the walk applies those rules
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            if rel in index:
                gone.add(index[rel])
            continue
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if rel in index:
            fresh.add(index[rel])
        elif rel not in {r for r, _, _ in added}:
            added.append((rel, path, _signature(st)))
    ignore = _Ignore.read(root)
    if ignore:
        added = [a for a in added if not ignore.under(a[0])]
    entries = cache._entries
    out = _Walk()
    for i, (rel, path, signature) in enumerate(previous):
        if i in gone:
            continue
        entry = entries.get(rel)
        if i in fresh or entry is None or not entry.trusted:
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                return None
            if not stat.S_ISREG(st.st_mode):
                return None
            signature = _signature(st)
        out.found.append((rel, path, signature))
    out.found.extend(added)
    return out


def _load_directory(
    root: str, cache: LoadCache | None, workers: int | None, hint: Collection[str] | None = None
) -> DesiredState:
    started = time.perf_counter()
    scan_ns = time.time_ns()
    walk = (_hinted(root, cache, hint) if cache is not None and hint else None) or _walk(root)
    found = walk.files()
    entries = cache._entries if cache is not None else {}
    new_entries: dict[str, _CacheEntry] = {}
    jobs: list[_Job] = []
    signatures: list[_Signature] = []
    get = entries.get
    for rel, file_path, signature in found:
        entry = get(rel)
        if entry is not None and entry.trusted and entry.signature == signature:
            new_entries[rel] = entry
            continue
        signatures.append(signature)
        jobs.append(
            _Job(
                rel,
                rel,
                path=file_path,
                known_digest=entry.digest if entry is not None else None,
                want_digest=cache is not None,
            )
        )
    hash_hits = parsed = 0
    changed: dict[str, FileResult] = {}  # results that are not the cached ones
    for job, signature, outcome in zip(jobs, signatures, _run_jobs(jobs, workers), strict=True):
        rel = job.source_file
        result = outcome.result
        if result is None:  # read again: the same content as cached
            result = entries[rel].result
            hash_hits += 1
        else:
            parsed += outcome.parsed
            changed[rel] = result
        if cache is not None and outcome.digest is not None:
            new_entries[rel] = _entry(signature, scan_ns, outcome.digest, result)
    for rel, message in walk.errors:
        old = changed.get(rel) or (new_entries[rel].result if rel in new_entries else None)
        changed[rel] = _merge_error(old, rel, message)
        new_entries.pop(rel, None)

    def all_results() -> dict[str, FileResult]:
        results = {rel: entry.result for rel, entry in new_entries.items()}
        results.update(changed)
        return results

    if cache is None:
        results = all_results()
        return _assemble(sorted(results), results)

    listing = [rel for rel, _, _ in found]
    last = cache._last
    same_files = (
        last is not None and last.root == root and not walk.errors and last.listing == listing
    )
    state: DesiredState | None = None
    if same_files and last is not None:
        if not changed:  # nothing new at all: the very same state
            state = last.state
        elif last.offsets:
            state = _updated(last, changed, entries)
    if state is None:
        results = all_results()
        order = last.order if same_files and last is not None else sorted(results)
        offsets: dict[str, tuple[int, int]] = {}
        state = _assemble(order, results, offsets=offsets)
        last = _LastLoad(root, listing, order, state, offsets) if not walk.errors else None
    elif last is not None and changed:
        last = _LastLoad(root, listing, last.order, state, last.offsets)
    cache._entries = new_entries
    cache._last = last
    cache._found = found if not walk.errors and not walk.links else None
    unreadable = sum(1 for rel in changed if rel not in new_entries)
    cache.stats = LoadStats(
        len(new_entries) + unreadable,
        len(found) - len(jobs),
        hash_hits,
        parsed,
        time.perf_counter() - started,
    )
    return state


@dataclass(frozen=True, slots=True)
class _LastLoad:
    root: str
    listing: list[str]  # relative paths in walk order
    order: list[str]  # the same, sorted
    state: DesiredState
    offsets: dict[str, tuple[int, int]]  # file -> its slice of state.tasks; {} if unusable


def _updated(
    last: _LastLoad, changed: Mapping[str, FileResult], old_entries: Mapping[str, _CacheEntry]
) -> DesiredState | None:
    """The last state with the tasks of a few edited files replaced, when that is all
    that changed: no errors before or after, and each file still declares the same
    names in the same order (so no duplicate can have appeared or disappeared)."""
    tasks = list(last.state.tasks)
    for rel, result in changed.items():
        span = last.offsets.get(rel)
        old = old_entries.get(rel)
        if result.errors or span is None or old is None:
            return None
        if [t.name for t in result.tasks] != [t.name for t in old.result.tasks]:
            return None
        tasks[span[0] : span[1]] = result.tasks
    return replace(last.state, tasks=tuple(tasks))


def _merge_error(result: FileResult | None, label: str, message: str) -> FileResult:
    error = ManifestError(label, message)
    if result is None:
        return FileResult(errors=(error,))
    return FileResult((), (error, *result.errors), result.names)


def load_tree(files: Mapping[str, bytes], *, label_prefix: str = "") -> DesiredState:
    """Load manifests given as ``{relative posix path: content}`` (e.g. from ``git show``).

    The same rules as :func:`load_directory`, without touching the file system. Paths
    that are hidden, not ``*.yaml``/``*.yml`` or editor leftovers are ignored; an
    absolute path or one with ``..`` is an error. ``label_prefix`` is put in front of
    the file name in every :class:`ManifestError` (``"origin/main:"`` gives
    ``origin/main:team/a.yaml:3:1: ...``); ``source_file``, ``files`` and
    ``failed_files`` keep the plain relative path, so the result plans like a
    :func:`load_directory` of the same tree.
    """
    jobs: list[_Job] = []
    bad: list[tuple[str, FileResult]] = []
    raw_ignore = files.get(IGNORE_FILE)
    ignore = _Ignore.parse(bytes(raw_ignore).decode("utf-8", "replace")) if raw_ignore else None
    for key in files:
        rel = key.replace("\\", "/")
        while rel.startswith("./"):
            rel = rel[2:]
        parts = rel.split("/")
        if any(_is_ignored(part) for part in parts[:-1] if part not in ("", "..")):
            continue
        if ignore and ignore.under(rel):
            continue
        if not is_manifest_name(parts[-1]):
            continue
        if rel.startswith("/") or ".." in parts or "" in parts:
            bad.append((rel, _file_error(label_prefix + rel, "invalid path in the tree")))
            continue
        jobs.append(_Job(rel, label_prefix + rel, data=bytes(files[key])))
    with _gc_paused():
        outcomes = _run_jobs(jobs, None)
        results = {job.source_file: o.result for job, o in zip(jobs, outcomes, strict=True)}
        for rel, result in bad:
            results[rel] = result
        clean = {rel: r for rel, r in results.items() if r is not None}
        return _assemble(sorted(clean), clean, {rel: label_prefix + rel for rel in clean})


def load_paths(paths: Sequence[str]) -> DesiredState:
    """Load the files and directories given on a command line (``reconciler validate``).

    A file is loaded whatever its name; a directory like :func:`load_directory`. Every
    name (errors, ``source_file``, ``files``) is the path as typed joined with the
    file's path inside it (``examples/`` + ``team/a.yaml``). A path that does not exist
    is an error for that path. The same file reached twice is loaded once.
    """
    entries: list[tuple[str, str, _Signature]] = []  # label, path to open, signature
    errors: list[tuple[str, str]] = []
    for typed in paths:
        try:
            st = os.stat(typed)
        except FileNotFoundError:
            kind = "broken symlink" if os.path.islink(typed) else "no such file or directory"
            errors.append((typed, kind))
            continue
        except OSError as exc:
            errors.append((typed, f"cannot open: {exc.strerror or exc}"))
            continue
        if stat.S_ISDIR(st.st_mode):
            root = os.path.realpath(typed)
            try:
                walk = _walk(root)
            except ManifestLoadError as exc:
                errors.append((typed, str(exc)))
                continue
            for rel, file_path, signature in sorted(walk.files()):
                entries.append((os.path.join(typed, rel), file_path, signature))
            errors.extend((os.path.join(typed, rel), m) for rel, m in walk.errors)
        else:
            entries.append((typed, os.path.realpath(typed), _signature(st)))
    jobs: list[_Job] = []
    seen: set[tuple[int, int]] = set()
    for label, file_path, signature in entries:
        identity = (signature[0], signature[1])
        if identity in seen:
            continue
        seen.add(identity)
        jobs.append(_Job(label, label, path=file_path))
    results: dict[str, FileResult] = {}
    with _gc_paused():
        for job, outcome in zip(jobs, _run_jobs(jobs, None), strict=True):
            assert outcome.result is not None
            results[job.source_file] = outcome.result
        for label, message in errors:
            results[label] = _merge_error(results.get(label), label, message)
        return _assemble(sorted(results), results)

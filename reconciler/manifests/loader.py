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
    mapping with ``kind`` (``Task``, ``Channel`` or ``Calendar``) and an ``apiVersion``
    that kind supports (``reconciler/v1``). UTF-8 (with or without BOM) is read as is;
    UTF-16/UTF-32 with a BOM are decoded; NUL bytes (binary, UTF-16 without BOM) are
    refused.

Limits
    :data:`MAX_FILE_BYTES` (from the size, before reading), :data:`MAX_NODES_PER_DOCUMENT`
    and :data:`MAX_DEPTH` (counted while libyaml composes, so a huge or 10,000-deep
    document stops early), :data:`MAX_ALIAS_EXPANSION` per file (each use of an alias is
    charged the size of what it refers to; a "billion laughs" fails on the first alias
    over budget, in microseconds), :data:`MAX_DOCUMENTS_PER_FILE`, and
    :data:`MAX_ERRORS_PER_FILE` errors reported per file.

Speed
    Parsing is libyaml plus a small constructor (see ``_yaml``); with many files to
    parse (:data:`~reconciler.manifests._jobs.PARALLEL_MIN_FILES`) the work is forked
    over the usable cores (see ``_parallel``: a child that crashes or hangs is replaced
    by the parent). The cyclic GC is paused for the duration of a load. A
    :class:`LoadCache` makes reloading cheap: a file whose (device, inode, size, mtime,
    ctime) did not change is not read at all, one whose content hash did not change is
    not parsed again, and when only the content of a few valid files changed the
    previous state is patched instead of rebuilt.

Where the parts live
    This module holds the public API and the assembly of per-file results into one
    state. The walk and ``.reconcilerignore`` are in ``_scan``; reading one file in
    ``_read``; parsing one file into tasks in ``_parse`` (each document checked by
    ``_validate``); the per-file jobs, their parallel driver and the GC pause in
    ``_jobs``; :class:`LoadCache` and the incremental reloads in ``_cache``.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Collection, Mapping, Sequence

from reconciler.core.errors import ManifestLoadError
from reconciler.core.model import DesiredState, ManifestError, NamedDef, TaskDef
from reconciler.manifests._cache import (
    LoadCache,
    LoadStats,
    _CacheEntry,
    _entry,
    _hinted,
    _LastLoad,
    _updated,
)
from reconciler.manifests._jobs import _gc_paused, _Job, _run_jobs
from reconciler.manifests._parse import (
    MAX_ERRORS_PER_FILE,
    MAX_FILE_BYTES,
    FileResult,
    _file_error,
    parse_file,
)
from reconciler.manifests._scan import (
    IGNORE_FILE,
    _Ignore,
    _is_ignored,
    _Signature,
    _signature,
    _walk,
    is_manifest_name,
)
from reconciler.manifests._yaml import (
    MAX_ALIAS_EXPANSION,
    MAX_DEPTH,
    MAX_DOCUMENTS_PER_FILE,
    MAX_NODES_PER_DOCUMENT,
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


# ------------------------------------------------------------------------- assembly


def _duplicates(
    declared: Sequence[tuple[str, int, int]],
    label: str,
    first: dict[str, tuple[str, int]],
    what: str,
) -> list[ManifestError]:
    """Errors for the names in ``declared`` already in ``first`` (which learns the rest)."""
    errors = []
    for name, line, column in declared:
        seen = first.get(name)
        if seen is None:
            first[name] = (label, line)
            continue
        errors.append(
            ManifestError(
                label,
                f'{what} name "{name}" is declared more than once '
                f"(first declared at {seen[0]}:{seen[1]})",
                line,
                column,
                name,
                "metadata.name",
            )
        )
    return errors


def _channel_refs(result: FileResult) -> Sequence[tuple[str, str, int, int, str]]:
    return result.references


def _calendar_refs(result: FileResult) -> Sequence[tuple[str, str, int, int, str]]:
    return result.calendar_references


def _unknown(
    order: Sequence[str],
    results: Mapping[str, FileResult],
    labels: Mapping[str, str] | None,
    declared: Collection[str],
    refs: Callable[[FileResult], Sequence[tuple[str, str, int, int, str]]],
    kind: str,
) -> tuple[list[ManifestError], set[str]]:
    """References (``spec.notify``, ``spec.calendars``) to a channel or calendar that no
    manifest declares (one declared in a file with errors counts as declared: the table
    keeps it); the errors and the files they are in."""
    errors = []
    files = set()
    for source_file in order:
        for task, name, line, column, field in refs(results[source_file]):
            if name not in declared:
                label = labels[source_file] if labels else source_file
                known = ", ".join(sorted(declared)[:10]) or "none"
                errors.append(ManifestError(
                    label, f'unknown {kind.lower()} "{name}" (no kind: {kind} manifest '
                    f"declares it; declared: {known})", line, column, task, field))
                files.add(source_file)
    return errors, files


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
    first_channel: dict[str, tuple[str, int]] = {}
    first_calendar: dict[str, tuple[str, int]] = {}
    frozen: set[str] = set()
    frozen_channels: set[str] = set()
    frozen_calendars: set[str] = set()
    failed: set[str] = set()
    errors: list[ManifestError] = []
    tasks: list[TaskDef] = []
    channels: list[NamedDef] = []
    calendars: list[NamedDef] = []
    for source_file in order:
        result = results[source_file]
        if result.errors:
            failed.add(source_file)
            errors.extend(result.errors)
        label = labels[source_file] if labels else source_file
        for found, names in (
            (_duplicates(result.names, label, first, "task"), frozen),
            (_duplicates(result.channel_names, label, first_channel, "channel"),
             frozen_channels),
            (_duplicates(result.calendar_names, label, first_calendar, "calendar"),
             frozen_calendars),
        ):
            if found:
                failed.add(source_file)
                errors += found
                names.update(e.task for e in found if e.task)
        channels += result.channels
        calendars += result.calendars
        if offsets is not None:
            start = len(tasks)
            tasks += result.tasks
            offsets[source_file] = (start, len(tasks))
        else:
            tasks += result.tasks
    for declared, refs, kind in ((first_channel, _channel_refs, "Channel"),
                                 (first_calendar, _calendar_refs, "Calendar")):
        unknown, files = _unknown(order, results, labels, declared.keys(), refs, kind)
        errors += unknown
        failed |= files
    if frozen or frozen_channels or frozen_calendars or failed:
        # files with errors have none, duplicates' do
        tasks = [t for t in tasks if t.name not in frozen and t.source_file not in failed]
        channels = [c for c in channels
                    if c.name not in frozen_channels and c.source_file not in failed]
        calendars = [c for c in calendars
                     if c.name not in frozen_calendars and c.source_file not in failed]
        if offsets is not None:
            offsets.clear()  # no incremental updates from a state with errors
    errors.sort(key=lambda e: (e.file, e.line or 0, e.column or 0))
    return DesiredState(
        tasks=tuple(tasks),
        errors=tuple(errors),
        channels=tuple(channels),
        failed_files=frozenset(failed),
        frozen_names=frozenset(frozen),
        frozen_channels=frozenset(frozen_channels),
        calendars=tuple(calendars),
        frozen_calendars=frozenset(frozen_calendars),
        files=frozenset(results),
    )


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
    the number of usable CPUs when there are at least
    :data:`~reconciler.manifests._jobs.PARALLEL_MIN_FILES` files to parse, ``1`` never forks.

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

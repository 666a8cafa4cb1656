"""The cache that makes reloading a manifests directory cheap.

:class:`LoadCache` keeps, per file, the signature it had, whether that signature may
vouch for the content (:data:`RACY_WINDOW_NS`), the content hash and the parse result,
plus the last walk and the last state. :func:`_hinted` patches the last walk with the
paths a file watcher saw change; :func:`_updated` patches the last state when only the
content of a few valid files changed.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Final

from reconciler.core.model import DesiredState
from reconciler.manifests._parse import FileResult
from reconciler.manifests._scan import (
    IGNORE_FILE,
    _Ignore,
    _is_ignored,
    _Signature,
    _signature,
    _Walk,
    is_manifest_name,
)

#: A cached stat is only trusted for a file whose ctime is this much older than the
#: moment the stat was taken (a write in the same clock tick could otherwise go
#: unnoticed: git's "racily clean" problem).
RACY_WINDOW_NS: Final = 50_000_000
#: The same, for file systems with whole-second timestamps.
RACY_WINDOW_COARSE_NS: Final = 2_000_000_000


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
        if (result.channels or old.result.channels or result.references or result.calendars
                or old.result.calendars or result.calendar_references):
            return None  # channels, calendars and references are checked across files
        if [t.name for t in result.tasks] != [t.name for t in old.result.tasks]:
            return None
        tasks[span[0] : span[1]] = result.tasks
    return replace(last.state, tasks=tuple(tasks))


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

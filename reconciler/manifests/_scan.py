"""Which files of a manifests directory are manifests: the walk and the ignore rules.

:func:`_walk` lists the ``*.yaml``/``*.yml`` files under a resolved root (hidden files
and editor leftovers skipped, symlinks checked: see the ``loader`` documentation), with
the signature (device, inode, size, mtime, ctime) of each; ``.reconcilerignore``
(:class:`_Ignore`) excludes more names and paths.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from dataclasses import dataclass, field
from typing import Final

from reconciler.core.errors import ManifestLoadError
from reconciler.manifests._read import _Changed, _NotRegular, _read_error, _TooBig, read_file

_SUFFIXES: Final = (".yaml", ".yml")


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

"""Git awareness for manifests directories.

Two jobs, both done by running the ``git`` binary (no library dependency):

* :func:`detect_revision` records which commit the manifests were read at, plus a
  dirty flag when the work tree has uncommitted edits under the directory, so every
  applied change can be traced back to a commit;
* :func:`read_tree_at` reads the manifests as they are at another ref, which is what
  lets ``reconciler diff --against-ref origin/main`` run in a pull-request check with
  nothing but the checkout (no database).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from reconciler.core.errors import GitError
from reconciler.core.runtime import GitRevision

_TIMEOUT = 30


def _git(cwd: Path, *args: str, stdin: bytes | None = None) -> bytes:
    exe = shutil.which("git")
    if exe is None:
        raise GitError("git is not installed")
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    try:
        proc = subprocess.run(  # fixed argv, no shell  # nosec B603
            [exe, *args],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            timeout=_TIMEOUT,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git {args[0]} failed: {exc}") from None
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"git {' '.join(args[:2])}: {msg[-1] if msg else 'failed'}")
    return proc.stdout


def _existing_dir(path: str | os.PathLike[str]) -> Path | None:
    p = Path(path)
    while not p.is_dir():
        if p.parent == p:
            return None
        p = p.parent
    return p


def detect_revision(path: str | os.PathLike[str]) -> GitRevision | None:
    """The HEAD commit of the work tree containing ``path``, or None outside git."""
    cwd = _existing_dir(path)
    if cwd is None or shutil.which("git") is None:
        return None
    try:
        sha = _git(cwd, "rev-parse", "--verify", "-q", "HEAD").decode().strip()
        status = _git(cwd, "status", "--porcelain", "--untracked-files=normal", "--", ".")
    except GitError:
        return None
    return GitRevision(sha=sha, dirty=bool(status.strip())) if sha else None


def read_tree_at(path: str | os.PathLike[str], ref: str) -> dict[str, bytes]:
    """The files under ``path`` as they are at ``ref``: relative posix path -> content.

    Raises :class:`GitError` when ``path`` is not in a git work tree or the ref is unknown.
    A directory that does not exist at ``ref`` gives an empty mapping.
    """
    if ref.startswith("-"):
        raise GitError(f"invalid ref {ref!r}")
    directory = Path(path).resolve()
    cwd = _existing_dir(directory)
    if cwd is None:
        raise GitError(f"{path}: no such directory")
    top = Path(_git(cwd, "rev-parse", "--show-toplevel").decode().strip()).resolve()
    try:
        prefix = directory.relative_to(top).as_posix()
    except ValueError:
        raise GitError(f"{path} is not inside the git work tree {top}") from None
    _git(top, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
    spec = f"{ref}:{prefix}" if prefix != "." else f"{ref}:"
    try:
        listing = _git(top, "ls-tree", "-r", "-z", "--full-tree", spec)
    except GitError:
        return {}  # the directory does not exist at that ref
    names: list[str] = []
    objects: list[bytes] = []
    for entry in listing.split(b"\0"):
        if not entry:
            continue
        meta, _, name = entry.partition(b"\t")
        mode, kind, obj = meta.split()
        if kind != b"blob" or mode == b"120000":  # skip submodules and symlinks
            continue
        names.append(name.decode())
        objects.append(obj)
    if not objects:
        return {}
    # One `git cat-file --batch` for all blobs: a process per file would dominate.
    raw = _git(top, "cat-file", "--batch", stdin=b"\n".join(objects) + b"\n")
    out: dict[str, bytes] = {}
    pos = 0
    for rel in names:
        header_end = raw.index(b"\n", pos)
        size = int(raw[pos:header_end].split()[2])
        start = header_end + 1
        out[rel] = raw[start : start + size]
        pos = start + size + 1
    return out

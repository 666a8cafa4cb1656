"""Reading one manifest file from disk, safely, and what a failed read reports.

:func:`read_file` never follows a symlink, never blocks on a FIFO, refuses anything
but a regular file of at most :data:`~reconciler.manifests._parse.MAX_FILE_BYTES`, and
refuses a read during which the file changed; :func:`_read_error` turns each of those
failures into the :class:`~reconciler.manifests._parse.FileResult` of that file.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Final

from reconciler.manifests._parse import MAX_FILE_BYTES, FileResult, _file_error, _too_big

_OPEN_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in must not block us
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
)


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

"""Database faults for ``test_database_faults.py``: what breaks under the daemon.

* :func:`private_postgres` - a PostgreSQL cluster of its own (``pg_createcluster`` on a
  free port, trust authentication), stopped and started with ``pg_ctlcluster`` and
  dropped at the end. The machine's main cluster is never touched: other test sessions
  use it.
* :func:`tmpfs` - a size-limited tmpfs (the disk that fills up).
* :func:`ext4_image` - an ext4 file system in a loop file (the file made read-only with
  ``chattr +i``: see :func:`read_only`).
* :func:`fill` - a filler file that takes every free block of a file system;
* :func:`open_modes` - how a process holds a file open (read-only or read-write).

Everything is named ``<kind>_<pid>_<random>``. A run that crashed (SIGKILL, power cut of
the test process) leaves a cluster or a mount behind; the next run removes those whose
process is gone, and leaves alone those of a test session still running.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.cluster import unavailable
from tests.e2e.conftest import free_port, wait_until

#: mount points and loop images of these tests live here (never under pytest's tmp_path,
#: whose old directories pytest deletes without unmounting anything)
MOUNT_ROOT = Path("/tmp/reconciler-dbfaults")
CLUSTER_PREFIX = "faults"


def sh(*cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}: "
                             f"{(result.stderr or result.stdout).strip()}")
    return result


def _unique(kind: str) -> str:
    return f"{kind}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def _owner_gone(name: str) -> bool:
    """True for a ``<kind>_<pid>_<random>`` name whose process no longer exists."""
    match = re.fullmatch(r"[a-z]+_(\d+)_[0-9a-f]+", name)
    if match is None:
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        unavailable(f"{what} needs root (mount, pg_createcluster)")


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class PrivatePostgres:
    version: str
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, action: str) -> None:
        extra = ["--mode", "fast"] if action == "stop" else []
        sh("pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action, *extra)

    def ready(self) -> bool:
        return sh("pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port),
                  check=False, timeout=10).returncode == 0

    def stop(self) -> None:
        self.ctl("stop")
        assert not self.ready(), "PostgreSQL still answers after pg_ctlcluster stop"

    def start(self) -> None:
        self.ctl("start")
        wait_until(self.ready, timeout=30, what=f"PostgreSQL cluster {self.name} to accept "
                                                "connections")

    def drop(self) -> None:
        sh("pg_dropcluster", "--stop", self.version, self.name, check=False)


def _pg_clusters() -> list[tuple[str, str]]:
    out = sh("pg_lsclusters", "--no-header", check=False).stdout
    return [(f[0], f[1]) for f in (line.split() for line in out.splitlines()) if len(f) >= 2]


def _drop_leftover_clusters() -> None:
    for version, name in _pg_clusters():
        if name.startswith(f"{CLUSTER_PREFIX}_") and _owner_gone(name):
            sh("pg_dropcluster", "--stop", version, name, check=False)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running PostgreSQL cluster of its own; dropped at the end, whatever happens."""
    require_root("a private PostgreSQL cluster")
    tools = ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "pg_lsclusters",
             "pg_isready")
    missing = [t for t in tools if shutil.which(t) is None]
    conf = Path("/etc/postgresql")
    versions = sorted((p.name for p in conf.iterdir() if p.is_dir()), key=_version_key) \
        if conf.is_dir() else []
    if missing or not versions:
        unavailable(f"PostgreSQL server tools are not installed (missing: "
                    f"{', '.join(missing) or '/etc/postgresql/<version>'})")
    _drop_leftover_clusters()
    pg = PrivatePostgres(versions[-1], _unique(CLUSTER_PREFIX), free_port())
    try:
        sh("pg_createcluster", "--start-conf=manual", pg.version, pg.name, "-p", str(pg.port),
           "-o", "fsync=off",
           "--", "--auth=trust", timeout=120)
        pg.start()
        yield pg
    finally:
        pg.drop()


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


# ------------------------------------------------------------------------- file systems


def _unmount(path: Path) -> None:
    if sh("umount", str(path), check=False).returncode != 0:
        # still busy (a process of a crashed run): detach it now, it goes when they do
        sh("umount", "-l", str(path), check=False)


def _mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)


def _remove_leftover_mounts() -> None:
    if not MOUNT_ROOT.is_dir():
        return
    for entry in MOUNT_ROOT.iterdir():
        if not _owner_gone(entry.name):
            continue
        if _mounted(entry / "mnt"):
            _unmount(entry / "mnt")
        shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def _fault_dir(kind: str) -> Iterator[Path]:
    require_root(f"a {kind} file system")
    _remove_leftover_mounts()
    base = MOUNT_ROOT / _unique(kind)
    (base / "mnt").mkdir(parents=True)
    try:
        yield base
    finally:
        if _mounted(base / "mnt"):
            _unmount(base / "mnt")
        shutil.rmtree(base, ignore_errors=True)


def _mount(*args: str) -> None:
    result = sh("mount", *args, check=False)
    if result.returncode != 0:
        unavailable(f"cannot mount here ({' '.join(args)}): {result.stderr.strip()}")


@contextlib.contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=``); yields its mount point."""
    with _fault_dir("tmpfs") as base:
        mnt = base / "mnt"
        _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mnt))
        yield mnt


@contextlib.contextmanager
def ext4_image(size_mb: int) -> Iterator[Path]:
    """An ext4 file system in a ``size_mb`` loop file; yields its mount point."""
    if shutil.which("mkfs.ext4") is None or shutil.which("chattr") is None:
        unavailable("e2fsprogs (mkfs.ext4, chattr) is not installed")
    with _fault_dir("ext") as base:
        image, mnt = base / "fs.img", base / "mnt"
        with open(image, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        sh("mkfs.ext4", "-q", "-F", "-E", "nodiscard", str(image))
        _mount("-o", "loop", str(image), str(mnt))
        yield mnt


@contextlib.contextmanager
def read_only(*files: Path) -> Iterator[None]:
    """Make ``files`` read-only for everyone, root and already open descriptors included.

    ``chmod`` stops neither root nor a descriptor opened before it, and ``mount -o
    remount,ro`` is refused (EBUSY) while a process holds a file of the file system open
    for writing, which the daemon's connection pool always does. The immutable attribute
    on ext4 does it: every later ``write()`` fails with EPERM, which SQLite reports as
    "disk I/O error", and a connection opened meanwhile is read-only ("attempt to write a
    readonly database").
    """
    names = [str(f) for f in files]
    sh("chattr", "+i", *names)
    try:
        yield
    finally:
        sh("chattr", "-i", *names)


@contextlib.contextmanager
def fill(directory: Path) -> Iterator[int]:
    """Take every free block of ``directory``'s file system; yields the bytes taken."""
    filler = directory / ".filler"
    taken = 0
    chunk = b"\0" * (256 * 1024)
    try:
        with open(filler, "wb", buffering=0) as f:
            while True:
                try:
                    taken += f.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    if len(chunk) == 512:
                        break
                    chunk = chunk[: len(chunk) // 2]
        st = os.statvfs(directory)
        assert st.f_bavail * st.f_frsize < 64 * 1024, "the file system is not full"
        yield taken
    finally:
        filler.unlink(missing_ok=True)


def open_modes(pid: int, path: Path) -> Counter[str]:
    """How process ``pid`` holds ``path`` open: ``{"rw": n, "ro": m}`` (from /proc)."""
    modes: Counter[str] = Counter()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) != str(path):
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue  # closed meanwhile
        flags = int(info.split("flags:", 1)[1].split()[0], 8)
        modes["ro" if flags & os.O_ACCMODE == os.O_RDONLY else "rw"] += 1
    return modes

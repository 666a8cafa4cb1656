"""Run a built image the way a container runtime would, without one.

podman's OCI runtime cannot start containers on this machine (it fails to set rlimits),
so the image's root filesystem is mounted with ``buildah mount`` and a process is started
in it by ``unshare`` + ``chroot``, following the image's own configuration (entrypoint,
command, user, environment, working directory), in its own mount and PID namespaces:

- the root filesystem is mounted **read-only**, as the chart's
  ``readOnlyRootFilesystem: true`` has it (or, to see what a program tries to write
  there, writable through an overlay whose upper layer is inspected afterwards);
  ``/tmp`` and ``/dev/shm`` are fresh tmpfs, the state directory
  (``/var/lib/reconciler``) is a host directory owned by the image's user, the
  manifests are bound read-only at ``/manifests``;
- the entrypoint (tini) is PID 1 of the new PID namespace, with a fresh ``/proc``;
- the network is the host's, so the test reaches the daemon on a loopback port.

:meth:`Contained.close` kills PID 1 of the namespace, and with it every process in it:
nothing outlives a failed test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.services.image import tool_env

# $1 root, $2 state dir, $3 manifests, $4 uid:gid, $5 working directory, $6 an empty
# scratch directory for the overlay root or "" for a read-only root; then the command.
NAMESPACE_SCRIPT = r"""
set -eu
root=$1 state=$2 manifests=$3 user=$4 workdir=$5 scratch=$6
shift 6
mount --make-rprivate /
if [ -n "$scratch" ]; then
  mkdir "$scratch/upper" "$scratch/work" "$scratch/root"
  mount -t overlay overlay \
    -o "lowerdir=$root,upperdir=$scratch/upper,workdir=$scratch/work" "$scratch/root"
  root=$scratch/root
else
  mount --bind "$root" "$root"
  mount -o remount,bind,ro "$root"
fi
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
mount --bind "$state" "$root/var/lib/reconciler"
mount --bind "$manifests" "$root/manifests"
mount -o remount,bind,ro "$root/manifests"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t tmpfs -o mode=755,nosuid tmpfs "$root/dev"
for d in null zero full random urandom tty; do
  touch "$root/dev/$d"
  mount --bind "/dev/$d" "$root/dev/$d"
done
mkdir "$root/dev/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
exec chroot --userspec="$user" "$root" /usr/bin/env -i -C "$workdir" "$@"
"""


@dataclass(frozen=True)
class ImageConfig:
    """What a runtime reads from the image to start it."""

    entrypoint: list[str]
    cmd: list[str]
    user: str
    env: dict[str, str]
    workdir: str
    volumes: list[str]
    healthcheck: list[str]

    @classmethod
    def inspect(cls, ref: str) -> ImageConfig:
        out = subprocess.run(["buildah", "inspect", "--type", "image", ref], check=True,
                             capture_output=True, text=True, timeout=60).stdout
        doc: dict[str, Any] = json.loads(out)
        oci = doc["OCIv1"]["config"]
        check = (doc.get("Docker", {}).get("config") or {}).get("Healthcheck") or {}
        env = dict(pair.partition("=")[::2] for pair in oci.get("Env", []))
        return cls(entrypoint=oci.get("Entrypoint") or [], cmd=oci.get("Cmd") or [],
                   user=oci.get("User", ""), env=env, workdir=oci.get("WorkingDir", "/"),
                   volumes=sorted(oci.get("Volumes") or {}), healthcheck=check.get("Test", []))


@dataclass
class WorkingContainer:
    """``buildah from`` + ``buildah mount``: the image's root filesystem on the host."""

    name: str
    rootfs: Path

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """``buildah run --isolation chroot``: the image's user, env and working dir."""
        return subprocess.run(["buildah", "run", "--isolation", "chroot", self.name, "--",
                               *argv], capture_output=True, text=True, timeout=60, check=False)


@contextmanager
def working_container(ref: str) -> Iterator[WorkingContainer]:
    name = subprocess.run(["buildah", "from", "--quiet", ref], check=True, capture_output=True,
                          text=True, timeout=120).stdout.strip()
    try:
        mount = subprocess.run(["buildah", "mount", name], check=True, capture_output=True,
                               text=True, timeout=60).stdout.strip()
        yield WorkingContainer(name, Path(mount))
    finally:
        for argv in (["buildah", "umount", name], ["buildah", "rm", name]):
            subprocess.run(argv, capture_output=True, timeout=60, check=False)


def contained_argv(container: WorkingContainer, config: ImageConfig, argv: Sequence[str], *,
                   state: Path, manifests: Path, env: Mapping[str, str],
                   overlay: Path | None = None) -> list[str]:
    """The host command that runs ``argv`` in the image with a read-only root.

    With ``overlay`` (an empty directory) the root is writable instead, through an
    overlay whose upper layer is ``overlay/upper``: every write to the root, even one whose
    error a read-only root would make the program swallow, leaves a file there.
    """
    variables = [f"{k}={v}" for k, v in {**config.env, **env}.items()]
    return ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--",
            "sh", "-c", NAMESPACE_SCRIPT, "namespace", str(container.rootfs), str(state),
            str(manifests), config.user, config.workdir, str(overlay or ""), *variables, *argv]


class Contained:
    """A process started by :func:`contained_argv`; :meth:`close` always ends it."""

    def __init__(self, argv: list[str], output: IO[bytes]) -> None:
        self.proc = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=tool_env())

    def children(self, pid: int) -> list[int]:
        found: list[int] = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with suppress(OSError):  # the task ended meanwhile
                found += [int(p) for p in (task / "children").read_text().split()]
        return found

    def pid_one(self) -> int | None:
        """The host PID of PID 1 in the namespace (the entrypoint, tini)."""
        kids = self.children(self.proc.pid)
        return kids[0] if kids else None

    def terminate(self, timeout: float) -> int:
        """SIGTERM to the namespace's PID 1 (like ``docker stop``); the exit status."""
        pid = self.pid_one()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        """SIGKILL to PID 1 of the namespace: the kernel then kills every process in it.

        ``--kill-child`` alone is not enough: the parent-death signal it sets is cleared
        when chroot drops to the image's user, so the entrypoint would outlive ``unshare``.
        """
        if self.proc.poll() is not None:
            return
        pid = self.pid_one()
        if pid is not None:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}

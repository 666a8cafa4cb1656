#!/usr/bin/env python3
"""Build reconciler's container image here: buildah, on a Debian base made locally.

No registry is reachable from the project's machines, so the Dockerfile's default base
(``python:3.11-slim``) cannot be pulled. Instead:

1. **The base.** ``image-base.sh`` (beside this file) runs ``debootstrap --variant=minbase``
   of Debian SUITE with PACKAGES (python3, venv support, git, tini, ca-certificates) and
   the root filesystem is tarred and imported into buildah's storage as
   ``localhost/reconciler-base:KEY``. KEY is a hash of SUITE, PACKAGES and the script, so
   a change to any of them makes a new base. Cached three ways, looked up in this order:
   the tagged image in buildah's storage (``/var/lib/containers``, shared by every checkout
   on the machine), the tarball in the checkout's ``.cache/image/``, the tarball in the
   shared cache outside the checkout (``$RECONCILER_IMAGE_CACHE``, else
   ``${XDG_CACHE_HOME:-~/.cache}/reconciler/image``). A fresh clone thus finds the base in
   seconds; only the first build on a machine (or after the inputs change) runs
   debootstrap. A lock file in the shared cache keeps concurrent builders from racing.
2. **The image.** ``buildah bud --isolation chroot`` of the Dockerfile with
   ``PYTHON_IMAGE`` set to that base. The build stage pip-installs from PyPI; the host's
   CA bundle is mounted over the base's for the RUN steps only (the machine reaches PyPI
   through a TLS-inspecting proxy), so it is not part of any layer.

Output goes to a log file; a failure raises :class:`ImageError` with the log's tail.

    python3 tests/services/image.py                   # builds reconciler:VERSION (`make image`)
    python3 tests/services/image.py --tag my/reconciler:dev
    python3 tests/services/image.py --base-only       # prints the base image's name
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_SCRIPT = Path(__file__).resolve().with_name("image-base.sh")
SUITE = "bookworm"  # Debian 12: Python 3.11, like python:3.11-slim
PACKAGES = ("python3", "python3-venv", "git", "tini", "ca-certificates")
BASE_REPOSITORY = "localhost/reconciler-base"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BASE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # where Debian's pip looks
DEBOOTSTRAP_TIMEOUT = 900.0
BUILD_TIMEOUT = 900.0


class ImageError(RuntimeError):
    """The base or the image could not be built; the message says why."""


class ToolMissing(ImageError):
    """A tool the build needs is not installed."""


def version() -> str:
    text = (REPO_ROOT / "reconciler" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise ImageError("no __version__ in reconciler/__init__.py")
    return match.group(1)


def tool_env() -> dict[str, str]:
    """The environment for the tools: PATH with the sbin directories (chroot, debootstrap)."""
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep)
    extra = [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin") if d not in path]
    return {**os.environ, "PATH": os.pathsep.join(path + extra)}


def which(tool: str) -> str | None:
    return shutil.which(tool, path=tool_env()["PATH"])


def why_not_buildable() -> str | None:
    """Why the image cannot be built on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "building the image needs root (buildah --isolation chroot, debootstrap)"
    if which("buildah") is None:
        return "buildah is not installed (apt-get install buildah)"
    return None


def base_key() -> str:
    """A hash of what makes the base: the suite, the packages and the script."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"suite": SUITE, "packages": sorted(PACKAGES)}).encode())
    digest.update(BASE_SCRIPT.read_bytes())
    return digest.hexdigest()[:16]


def cache_dirs() -> tuple[Path, Path]:
    """The checkout's ``.cache/image`` and the shared cache outside the checkout."""
    shared = os.environ.get("RECONCILER_IMAGE_CACHE")
    if not shared:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        shared = str(Path(xdg) / "reconciler" / "image")
    return REPO_ROOT / ".cache" / "image", Path(shared)


def _tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run(argv: list[str], what: str, log: Path, timeout: float = 120.0) -> str:
    """Run a command quietly: its output goes to ``log``; returns stdout, stripped."""
    with open(log, "a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=out, text=True,
                                  env=tool_env(), timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ImageError(f"{what}: no result after {timeout:.0f} s; log {log}") from None
        out.write(proc.stdout)
    if proc.returncode != 0:
        raise ImageError(f"{what} failed (exit {proc.returncode}); the end of {log}:\n"
                         f"{_tail(log)}")
    return proc.stdout.strip()


def image_id(ref: str) -> str | None:
    """The ID of the image ``ref`` names in buildah's storage, or None."""
    proc = subprocess.run(["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}",
                           ref], capture_output=True, text=True, timeout=60, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _unmount_under(root: Path) -> None:
    """Unmount what a killed debootstrap left mounted in its target (proc, sys)."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)


def _debootstrap(key: str, into: Path, log: Path) -> Path:
    if which("debootstrap") is None:
        raise ToolMissing("the base image is not cached and debootstrap is not installed "
                         "(apt-get install debootstrap)")
    mirror = os.environ.get("RECONCILER_DEBIAN_MIRROR", DEFAULT_MIRROR)
    tmp = Path(tempfile.mkdtemp(prefix=f"base-{key}-", dir=into))
    try:
        rootfs = tmp / "rootfs"
        run(["bash", str(BASE_SCRIPT), str(rootfs), SUITE, mirror, *PACKAGES],
            "debootstrap of the base", log, DEBOOTSTRAP_TIMEOUT)
        staged = tmp / "base.tar"
        run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(staged), "."],
            "tar of the base", log, 300)
        target = into / f"base-{key}.tar"
        os.replace(staged, target)  # atomic: a reader sees all of it or nothing
        return target
    finally:
        _unmount_under(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _share(name: str, dirs: tuple[Path, ...]) -> Path | None:
    """The first cached copy of ``name``, linked (else copied) into every other dir."""
    found = next((d / name for d in dirs if (d / name).is_file()), None)
    if found is None:
        return None
    for d in dirs:
        if not (d / name).exists():
            try:
                os.link(found, d / name)
            except OSError:
                shutil.copyfile(found, d / name)
    return found


def _import(tarball: Path, ref: str, log: Path) -> None:
    ctr = run(["buildah", "from", "--quiet", "scratch"], "buildah from scratch", log)
    try:
        mnt = run(["buildah", "mount", ctr], "buildah mount", log)
        run(["tar", "-C", mnt, "--numeric-owner", "-xpf", str(tarball)], "untar the base", log)
        run(["buildah", "umount", ctr], "buildah umount", log)
        config = ["buildah", "config", "--cmd", "/bin/bash",
                  "--label", f"org.opencontainers.image.description=Debian {SUITE} minbase "
                  f"with {' '.join(PACKAGES)} (reconciler's local base)"]
        for pair in BASE_ENV:
            config += ["--env", pair]
        run([*config, ctr], "buildah config", log)
        run(["buildah", "commit", "--quiet", "--rm", ctr, ref], "buildah commit", log)
    except BaseException:
        subprocess.run(["buildah", "rm", ctr], capture_output=True, timeout=60, check=False)
        raise


def ensure_base(log: Path, timings: dict[str, float] | None = None) -> str:
    """The local base image's name, building and importing it first when needed."""
    timings = {} if timings is None else timings
    key = base_key()
    ref = f"{BASE_REPOSITORY}:{key}"
    local, shared = cache_dirs()
    for d in (local, shared):
        d.mkdir(parents=True, exist_ok=True)
    name = f"base-{key}.tar"
    with _locked(shared / ".lock"):
        if image_id(ref) is not None:
            _share(name, (local, shared))
            return ref
        start = time.monotonic()
        tarball = _share(name, (local, shared))
        if tarball is None:
            _debootstrap(key, shared, log)
            timings["debootstrap"] = time.monotonic() - start
            tarball = _share(name, (shared, local))
            assert tarball is not None
        start = time.monotonic()
        _import(tarball, ref, log)
        timings["import"] = time.monotonic() - start
    return ref


def host_ca_bundle() -> str | None:
    for candidate in (os.environ.get("SSL_CERT_FILE"), CA_BUNDLE):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def build_image(tag: str, log: Path, timings: dict[str, float] | None = None) -> str:
    """Build the Dockerfile on the local base as ``tag``; returns the image ID."""
    timings = {} if timings is None else timings
    base = ensure_base(log, timings)
    previous = image_id(tag)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="reconciler-image-") as tmp:
        iidfile = Path(tmp) / "iid"
        argv = ["buildah", "bud", "--isolation", "chroot", "--format", "docker",
                "--pull=never", "--iidfile", str(iidfile),
                "--build-arg", f"PYTHON_IMAGE={base}", "--build-arg", f"VERSION={version()}",
                "--tag", tag, "--file", str(REPO_ROOT / "Dockerfile")]
        bundle = host_ca_bundle()
        if bundle is not None:
            argv += ["--volume", f"{bundle}:{CA_BUNDLE}:ro"]
        run([*argv, str(REPO_ROOT)], f"buildah bud -t {tag}", log, BUILD_TIMEOUT)
        new_id = iidfile.read_text().strip().removeprefix("sha256:")
    timings["build"] = time.monotonic() - start
    if previous is not None and previous != new_id:  # the old image would linger untagged
        remove_image(previous)
    return new_id


def remove_image(ref: str) -> None:
    subprocess.run(["buildah", "rmi", ref], capture_output=True, timeout=120, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tag", default=f"reconciler:{version()}")
    parser.add_argument("--base-only", action="store_true", help="build the base only")
    parser.add_argument("--log", type=Path, default=None,
                        help="build log (default .cache/image/build.log)")
    args = parser.parse_args(argv)
    why = why_not_buildable()
    if why is not None:
        print(f"image: {why}", file=sys.stderr)
        return 1
    log = args.log or cache_dirs()[0] / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    timings: dict[str, float] = {}
    try:
        result = ensure_base(log, timings) if args.base_only else build_image(
            args.tag, log, timings)
    except (ImageError, OSError, subprocess.SubprocessError) as exc:
        print(f"image: {exc}", file=sys.stderr)
        return 1
    spent = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) or "base cached"
    print(f"image: {args.tag if not args.base_only else result} ({spent}; log {log})",
          file=sys.stderr)
    print(result if args.base_only else args.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())

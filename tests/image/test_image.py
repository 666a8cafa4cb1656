"""The real image: built from the Dockerfile with buildah, then started and probed.

The build (``tests/services/image.py``) runs the Dockerfile with ``buildah bud
--isolation chroot`` on a Debian base made here with debootstrap (cached by a hash of its
inputs, see ``docs/deploy.md``). The image is then run as a runtime would run it
(``container.py``): its entrypoint, user, environment and working directory, with the
root filesystem read-only and only ``/tmp`` and the state directory writable.

Needs root and buildah (and debootstrap when the base is not cached yet):
``tests/services/ensure-services.sh`` installs them. Without them the tests are skipped,
except with ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import reconciler
from tests.image.container import (
    Contained,
    ImageConfig,
    WorkingContainer,
    contained_argv,
    proc_status,
    working_container,
)
from tests.services import image as builder
from tests.services.aio import wait_until
from tests.services.ci import require
from tests.services.zookeeper import free_ports

REPO = Path(__file__).resolve().parents[2]
UID = GID = 10001

# A cold build (debootstrap of the base, then the image) takes one to two minutes.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The image built from the Dockerfile under a tag of its own, removed afterwards."""
    require(builder.why_not_buildable())
    tag = f"localhost/reconciler-test:{uuid.uuid4().hex[:12]}"
    log = tmp_path_factory.mktemp("image") / "build.log"
    try:
        builder.build_image(tag, log)
    except builder.ToolMissing as exc:
        require(str(exc))
    try:
        yield tag
    finally:
        builder.remove_image(tag)


@pytest.fixture(scope="module")
def config(image: str) -> ImageConfig:
    return ImageConfig.inspect(image)


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[WorkingContainer]:
    with working_container(image) as c:
        yield c


def make_state(parent: Path) -> Path:
    """The state volume: a host directory owned by the image's user (fsGroup's job)."""
    path = parent / "state"
    path.mkdir()
    os.chown(path, UID, GID)
    return path


@pytest.fixture()
def state(tmp_path: Path) -> Path:
    return make_state(tmp_path)


def run_once(container: WorkingContainer, config: ImageConfig, argv: list[str],
             state: Path, tmp_path: Path) -> tuple[int, str]:
    out = tmp_path / "out.log"
    with open(out, "wb") as output:
        proc = Contained(contained_argv(container, config, argv, state=state,
                                        manifests=REPO / "examples", env={}), output)
        try:
            code = proc.proc.wait(timeout=60)
        finally:
            proc.close()
    return code, out.read_text(errors="replace")


def test_version_through_the_entrypoint_on_a_read_only_root(
    container: WorkingContainer, config: ImageConfig, state: Path, tmp_path: Path
) -> None:
    assert config.entrypoint == ["/usr/bin/tini", "--", "reconciler"]
    assert config.cmd == ["run"]
    code, out = run_once(container, config, [*config.entrypoint, "--version"], state, tmp_path)
    assert code == 0, out
    assert out.strip() == f"reconciler {reconciler.__version__}"


def test_runs_as_10001_with_home_in_tmp_and_git_installed(
    container: WorkingContainer, config: ImageConfig
) -> None:
    assert config.user == f"{UID}:{GID}"
    assert config.workdir == "/var/lib/reconciler"
    assert config.volumes == ["/tmp", "/var/lib/reconciler"]
    probe = container.run("sh", "-c", "id -u; id -g; pwd; getent passwd 10001; git --version")
    assert probe.returncode == 0, probe.stderr
    uid, gid, cwd, passwd, git = probe.stdout.splitlines()
    assert (uid, gid, cwd) == (str(UID), str(GID), "/var/lib/reconciler")
    assert passwd.split(":")[5] == "/tmp"  # HOME of the user is writable
    assert git.startswith("git version ")


def api(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        body = resp.read()
    return json.loads(body) if resp.headers.get_content_type() == "application/json" else body


def healthy(port: int) -> bool:
    try:
        return bool(api(port, "/healthz"))
    except (OSError, urllib.error.URLError, ValueError):
        return False


def api_or_none(port: int, path: str) -> Any:
    """``api``, or None for the answers that mean "not yet": 404 before the first apply
    of the manifests (``/healthz`` answers before it), 503 while the SQLite database is
    busy (the API says "try again")."""
    try:
        return api(port, path)
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 503):
            return None
        raise


def succeeded_heartbeat(port: int) -> dict[str, Any] | None:
    runs = api_or_none(port, "/api/v1/tasks/heartbeat/runs")
    return next((r for r in runs["items"] if r["status"] == "succeeded"), None) if runs else None


ROOTS = ("read-only", "overlay")


@dataclass
class Daemon:
    """``reconciler run`` in the image: the image's entrypoint and command, on ``examples/``."""

    process: Contained
    port: int
    log: Path
    state: Path
    overlay: Path | None


@pytest.fixture(scope="module")
def daemons(container: WorkingContainer, config: ImageConfig,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Daemon]]:
    """One daemon per kind of root, started together: each waits about one heartbeat
    period (10 s) for its first run, so side by side they take that time once."""
    started: dict[str, Daemon] = {}
    with ExitStack() as stack:
        for root, port in zip(ROOTS, free_ports(len(ROOTS)), strict=True):
            tmp = tmp_path_factory.mktemp(f"daemon-{root}")
            state = make_state(tmp)
            overlay = tmp / "overlay" if root == "overlay" else None
            if overlay is not None:
                overlay.mkdir()
            log = tmp / "daemon.log"
            output = stack.enter_context(open(log, "wb"))
            argv = contained_argv(container, config, [*config.entrypoint, *config.cmd],
                                  state=state, manifests=REPO / "examples",
                                  env={"RECONCILER_LISTEN": f"127.0.0.1:{port}"},
                                  overlay=overlay)
            started[root] = Daemon(Contained(argv, output), port, log, state, overlay)
            stack.callback(started[root].process.close)
        yield started


@pytest.mark.parametrize("root", ROOTS)
def test_the_daemon_serves_and_runs_the_examples_writing_only_to_its_volumes(
    daemons: dict[str, Daemon], container: WorkingContainer, config: ImageConfig, root: str
) -> None:
    """``read-only``: the root is mounted read-only and the daemon works regardless.
    ``overlay``: the root is writable through an overlay, and afterwards its upper layer
    must be empty: the daemon did not even try to write outside /tmp and the state volume
    (a read-only root would hide a write whose error the code swallows)."""
    daemon = daemons[root]
    try:
        _check_serving_daemon(daemon.process, container, config, daemon.port, daemon.log)
        assert daemon.process.terminate(timeout=30) == 0, daemon.log.read_text()
    finally:
        daemon.process.close()
    text = daemon.log.read_text(errors="replace")
    for symptom in ("Read-only file system", "Permission denied", "Traceback"):
        assert symptom not in text, text
    db = daemon.state / ".reconciler" / "state.db"
    assert db.is_file() and db.stat().st_uid == UID  # the state lives in the volume
    if daemon.overlay is not None:
        upper = daemon.overlay / "upper"
        written = sorted(str(p.relative_to(upper)) for p in upper.rglob("*"))
        assert written == [], f"written outside /tmp and the state volume: {written}"


def _check_serving_daemon(daemon: Contained, container: WorkingContainer, config: ImageConfig,
                          port: int, log: Path) -> None:
    def up() -> bool:
        assert daemon.proc.poll() is None, log.read_text()
        return healthy(port)

    wait_until(up, timeout=60, what="/healthz of the daemon in the image", interval=0.2)
    tini = daemon.pid_one()
    assert tini is not None
    assert Path(f"/proc/{tini}/comm").read_text().strip() == "tini"
    assert proc_status(tini)["NSpid"].split()[-1] == "1"  # PID 1 of its namespace
    (server,) = daemon.children(tini)
    for pid in (tini, server):
        status = proc_status(pid)
        assert status["Uid"].split() == [str(UID)] * 4, status
        assert status["Gid"].split() == [str(GID)] * 4, status
    # The heartbeat (@every 10s) runs within one or two periods.
    run = wait_until(lambda: succeeded_heartbeat(port), timeout=60,
                     what="a succeeded run of heartbeat", interval=0.5)
    output = wait_until(lambda: api_or_none(port, f"/api/v1/runs/{run['id']}/log?follow=false"),
                        timeout=30, what="the heartbeat run's output", interval=0.5)
    assert b"tick for slot" in output
    # The image's own HEALTHCHECK command, run in the image with its environment.
    check = config.healthcheck
    assert check[0] == "CMD"
    env = [f"{k}={v}" for k, v in {**config.env, "RECONCILER_LISTEN": f"0.0.0.0:{port}"}.items()]
    probe = subprocess.run(["chroot", "--userspec", config.user, str(container.rootfs),
                            "/usr/bin/env", "-i", *env, *check[1:]],
                           capture_output=True, text=True, timeout=30, check=False,
                           env=builder.tool_env())
    assert probe.returncode == 0, probe.stderr

"""The Dockerfile and the chart agree: user, paths, port, entrypoint, health check, version.

The Dockerfile is parsed and every fact the chart relies on is checked against the
rendered objects, and the HEALTHCHECK command is run against a local HTTP server. The
image itself is built and run by tests/image/ (buildah, on a local Debian base).
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chartlib import CHART, REPO, Helm, Rendered, load_yaml

DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Instruction:
    cmd: str
    args: str

    def exec_form(self) -> list[str] | None:
        text = self.args.strip()
        return json.loads(text) if text.startswith("[") else None


def parse_dockerfile(path: Path) -> list[list[Instruction]]:
    """Instructions grouped by stage (joined continuation lines, comments dropped)."""
    logical: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[list[Instruction]] = [[]]
    for text in logical:
        cmd, _, args = text.partition(" ")
        ins = Instruction(cmd.upper(), args.strip())
        if ins.cmd == "FROM":
            stages.append([])
        stages[-1].append(ins)
    return stages


def args_of(stages: list[list[Instruction]]) -> dict[str, str]:
    found = {}
    for stage in stages:
        for ins in stage:
            if ins.cmd == "ARG" and "=" in ins.args:
                key, _, value = ins.args.partition("=")
                found[key] = value
    return found


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.cmd == "ENV":
            for token in shlex.split(ins.args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def only(stage: list[Instruction], cmd: str) -> Instruction:
    found = [i for i in stage if i.cmd == cmd]
    assert len(found) == 1, f"expected one {cmd}, got {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse_dockerfile(DOCKERFILE)[1:]  # [0] holds the global ARGs


@pytest.fixture(scope="module")
def final(stages: list[list[Instruction]]) -> list[Instruction]:
    return stages[-1]


@pytest.fixture(scope="module")
def rendered(helm: Helm) -> Rendered:
    return helm.template(CHART / "ci" / "single-sqlite-values.yaml")


def test_multi_stage_on_python_311_slim(stages: list[list[Instruction]]) -> None:
    assert len(stages) >= 2
    base = args_of(parse_dockerfile(DOCKERFILE))["PYTHON_IMAGE"]
    assert base == "python:3.11-slim"
    for stage in stages:
        assert stage[0].cmd == "FROM" and stage[0].args.split()[0] == "${PYTHON_IMAGE}"
    # The runtime stage copies the installed virtualenv, not the sources.
    copies = [i.args for i in stages[-1] if i.cmd == "COPY"]
    assert copies and all(c.startswith("--from=build") for c in copies), copies


def test_user_is_fixed_non_root_and_matches_the_chart(
    final: list[Instruction], rendered: Rendered
) -> None:
    user = only(final, "USER").args
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) >= 10000, user
    build_args = args_of(parse_dockerfile(DOCKERFILE))
    assert (build_args["UID"], build_args["GID"]) == (uid, gid)
    psc = rendered.pod["securityContext"]
    assert (psc["runAsUser"], psc["runAsGroup"], psc["fsGroup"]) == (int(uid), int(gid), int(gid))
    sc = rendered.container()["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"]) == (int(uid), int(gid))
    run = " ".join(i.args for i in final if i.cmd == "RUN")
    assert '--uid "${UID}"' in run and '--gid "${GID}"' in run


def test_paths_and_volumes_match_the_chart(final: list[Instruction], rendered: Rendered) -> None:
    workdir = only(final, "WORKDIR").args
    volumes = set(only(final, "VOLUME").exec_form() or [])
    container = rendered.container()
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert container["workingDir"] == workdir == "/var/lib/reconciler"
    assert volumes == {workdir, "/tmp"}
    for path in volumes:  # every image volume is a real volume in the pod
        assert path in mounts, path
    env = env_of(final)
    assert env["HOME"] == "/tmp" and env["XDG_CACHE_HOME"].startswith("/tmp/")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    chart_env = {e["name"]: e.get("value") for e in container["env"]}
    assert chart_env["HOME"] == env["HOME"]
    assert chart_env["XDG_CACHE_HOME"] == env["XDG_CACHE_HOME"]
    # The default manifests directory of the image exists and is the chart's mount path.
    assert env["RECONCILER_MANIFESTS"] == load_yaml(CHART / "values.yaml")["manifests"]["mountPath"]


def test_port_matches_the_chart(final: list[Instruction], rendered: Rendered) -> None:
    exposed = only(final, "EXPOSE").args
    listen = env_of(final)["RECONCILER_LISTEN"]
    assert listen.startswith("0.0.0.0:")  # reachable from the Service, not just loopback
    assert exposed == listen.rsplit(":", 1)[1]
    ports = {p["name"]: p["containerPort"] for p in rendered.container()["ports"]}
    assert ports["http"] == int(exposed)
    values = load_yaml(CHART / "values.yaml")
    assert values["reconciler"]["port"] == values["service"]["port"] == int(exposed)


def test_entrypoint_is_reconciler_and_the_chart_only_passes_args(
    final: list[Instruction], rendered: Rendered
) -> None:
    entrypoint = only(final, "ENTRYPOINT").exec_form()
    assert entrypoint is not None and entrypoint[-1] == "reconciler"
    assert entrypoint[0] == "/usr/bin/tini"  # PID 1 reaps the orphans of task processes
    assert only(final, "CMD").exec_form() == ["run"]
    container = rendered.container()
    assert "command" not in container
    assert container["args"][0] == "run"


def test_git_and_tini_are_installed_and_no_curl(final: list[Instruction]) -> None:
    run = " ".join(i.args for i in final if i.cmd == "RUN")
    install = re.search(r"apt-get install ([^&]*)", run)
    assert install is not None
    packages = set(install.group(1).split())
    assert {"git", "tini"} <= packages
    assert "curl" not in packages and "wget" not in packages
    assert "rm -rf /var/lib/apt/lists/*" in run


def test_build_installs_the_database_drivers(stages: list[list[Instruction]]) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    run = " ".join(i.args for i in stages[0] if i.cmd == "RUN")
    match = re.search(r'pip install "\.\[([a-z,]+)\]"', run)
    assert match is not None, run
    assert set(match.group(1).split(",")) <= extras
    assert {"postgres", "mysql"} <= set(match.group(1).split(","))


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; '!' re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pat) or fnmatch.fnmatchcase(p, pat.replace("**/", ""))
               for p in prefixes):
            result = not negate
    return result


def test_dockerignore_keeps_what_the_build_copies(stages: list[list[Instruction]]) -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = []
    for ins in stages[0]:
        if ins.cmd == "COPY":
            sources.extend(ins.args.split()[:-1])
    assert sources
    for src in sources:
        assert (REPO / src).exists(), src
        assert not _ignored(src, patterns), f"{src} is excluded by .dockerignore"
    # Package data the daemon needs at run time is inside the copied package.
    assert not _ignored("reconciler/store/migrations/env.py", patterns)
    for heavy in (".venv/bin/python", ".git/config", "tests/unit/test_plan.py", ".cache/helm"):
        assert _ignored(heavy, patterns), heavy


def test_versions_agree(final: list[Instruction]) -> None:
    import reconciler  # pyproject.toml reads its version from here (dynamic)

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    version = project.get("version", reconciler.__version__)
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["appVersion"] == version
    assert args_of(parse_dockerfile(DOCKERFILE))["VERSION"] == version


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[tuple[int, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"status": 200, "paths": []})
    httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], handler
    httpd.shutdown()
    httpd.server_close()


def test_healthcheck_calls_healthz_with_python(
    final: list[Instruction], server: tuple[int, type[_Handler]], rendered: Rendered
) -> None:
    check = only(final, "HEALTHCHECK").args
    options, _, command = check.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    port, handler = server
    env = dict(os.environ, RECONCILER_LISTEN=f"0.0.0.0:{port}")
    run = [sys.executable, "-c", argv[2]]
    assert subprocess.run(run, env=env, timeout=20, check=False).returncode == 0
    assert handler.paths == ["/healthz"]
    assert rendered.container()["livenessProbe"]["httpGet"]["path"] == "/healthz"
    handler.status = 503
    assert subprocess.run(run, env=env, timeout=20, check=False,
                          capture_output=True).returncode != 0


def test_every_data_file_of_the_package_ships_in_the_image() -> None:
    """The image pip-installs the package: files setuptools leaves out are not in it.

    Every non-Python file under reconciler/ (migrations, dashboard assets...) must match
    pyproject.toml's [tool.setuptools.package-data] globs.
    """
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["reconciler"]
    package = REPO / "reconciler"
    missing = []
    for path in package.rglob("*"):
        rel = path.relative_to(package).as_posix()
        if path.is_dir() or "__pycache__" in rel or path.suffix in (".py", ".pyc"):
            continue
        if not any(fnmatch.fnmatchcase(rel, g) for g in globs):
            missing.append(rel)
    assert not missing, f"not in package-data (so not in the image): {missing}"

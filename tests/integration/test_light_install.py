"""`make run` installs what running needs (the runtime and the database drivers) and no
test or lint tool; `make test` installs the rest. Checked on what make would run
(``make -n``, every target out of date) and on pyproject.toml's extras."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def planned(target: str, tmp_path: Path) -> list[str]:
    """The pip installs `make TARGET` would run in a clean clone (a fresh venv path)."""
    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    proc = subprocess.run(["make", "-n", "-B", target, f"VENV={tmp_path / 'venv'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return re.findall(r"pip install .*?-e '\.\[([a-z,]+)\]'", proc.stdout)


def extra(name: str) -> set[str]:
    """Requirement names of an extra, following self-references (reconciler[a,b])."""
    names: set[str] = set()
    for req in PROJECT["optional-dependencies"][name]:
        m = re.match(r"([A-Za-z0-9_.-]+)(?:\[([a-z,]+)\])?", req)
        assert m is not None, req
        if m.group(1) == PROJECT["name"]:
            for inner in (m.group(2) or "").split(","):
                names |= extra(inner)
        else:
            names.add(m.group(1).lower())
    return names


def test_make_run_installs_the_runtime_and_the_drivers_only(tmp_path: Path) -> None:
    installs = planned("run", tmp_path)
    assert installs, "make run installs nothing"
    assert all("dev" not in group.split(",") for group in installs), installs
    drivers = set().union(*(extra(e) for g in installs for e in g.split(",")))
    assert {"psycopg", "pymysql"} <= drivers, drivers
    assert not drivers & {"pytest", "mypy", "ruff", "playwright"}, drivers


def test_make_test_installs_the_test_and_lint_tools(tmp_path: Path) -> None:
    groups = {e for g in planned("test", tmp_path) for e in g.split(",")}
    assert "dev" in groups, groups
    assert {"pytest", "mypy", "ruff", "psycopg", "pymysql"} <= extra("dev")

"""The CI flag is read one way everywhere: `CI=true` and `CI=1` both make a missing
service a failure (tests/services/ci.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import ci

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", " true "])
def test_ci_values(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert ci.in_ci()
    with pytest.raises(pytest.fail.Exception):
        ci.unavailable("no such service")


@pytest.mark.parametrize("value", ["", "false", "0", "no"])
def test_not_ci_skips(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert not ci.in_ci()
    with pytest.raises(pytest.skip.Exception):
        ci.unavailable("no such service")
    ci.require(None)  # nothing missing: nothing happens


def test_a_declared_capability_skips_in_ci_only_when_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv(ci.DECLARED_VARIABLE, "zookeeper, cgroup2")
    with pytest.raises(pytest.skip.Exception, match="declared unavailable"):
        ci.require_capability("cgroup2", "no cgroup v2 memory controller")
    ci.require_capability("cgroup2", None)  # there after all: the test runs
    monkeypatch.setenv(ci.DECLARED_VARIABLE, "cgroup")  # a name, not a prefix
    with pytest.raises(pytest.fail.Exception):
        ci.require_capability("cgroup2", "no cgroup v2 memory controller")


def test_no_other_reading_of_the_ci_variable() -> None:
    """Every test module asks tests/services/ci.py: another reading of the variable
    (an equality with "true") would skip under CI=1 again."""
    found = subprocess.run(
        ["grep", "-rnE", r"environ(\.get)?[(\[]\s*[\"']CI[\"']", "tests"],
        cwd=ROOT, capture_output=True, text=True, check=False).stdout.splitlines()
    assert [line for line in found if not line.startswith("tests/services/ci.py")] == []


def test_skips_become_failures_under_ci_1(tmp_path: Path) -> None:
    """A test that needs a missing service fails, not skips, with CI=1."""
    test = tmp_path / "test_needs_service.py"
    test.write_text("from tests.services.ci import require\n\n"
                    "def test_it():\n    require('the service is missing')\n")
    for value, expect in (("1", "1 failed"), ("", "1 skipped")):
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test),
             "--rootdir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
            env={"PATH": "/usr/bin:/bin", "CI": value, "PYTHONPATH": str(ROOT)}, timeout=60)
        assert expect in out.stdout, out.stdout + out.stderr

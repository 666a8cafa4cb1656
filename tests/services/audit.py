"""Audit the installed Python packages for known vulnerabilities (``make lint``).

Usage: ``.venv/bin/python -m tests.services.audit`` (run with the project's venv: it
audits the environment it runs in, the project itself excluded).

1. ``pip-audit --skip-editable`` against PyPI's vulnerability data (the per-release
   JSON API, OSV-backed).
2. Packages pip-audit could not audit (an index mirror that serves project pages but
   not per-release data answers "not found") are checked against PyPI's project JSON,
   whose ``vulnerabilities`` list applies to the *latest* release: a package installed
   at its latest release is covered that way; an older one stays unaudited and is
   listed.

Outcome and exit status:

* a known vulnerability in an installed package: exit 1, always (the ids, the package,
  the fixed versions are printed). Ignore one only by adding it to :data:`IGNORED` with
  the reason it does not apply.
* no vulnerability database reachable at all (offline): exit 1 when ``CI=true`` (an
  audit that silently did not happen must not pass CI), otherwise a warning and 0.
* some packages unaudited (listed), the rest clean: a warning and 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from tests.services.ci import in_ci

PYPI_JSON = os.environ.get("RECONCILER_AUDIT_PYPI_URL", "https://pypi.org/pypi")
TIMEOUT_S = 15.0

#: Vulnerability ids (PYSEC-/GHSA-/CVE-) known not to apply, each with the reason.
IGNORED: dict[str, str] = {}


@dataclass
class Report:
    installed: dict[str, str]  # canonical name -> version (the project itself excluded)
    vulnerable: dict[str, list[str]] = field(default_factory=dict)  # name -> vuln lines
    audited: set[str] = field(default_factory=set)
    unaudited: dict[str, str] = field(default_factory=dict)  # name -> why


def installed_distributions() -> dict[str, str]:
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        direct = dist.read_text("direct_url.json")
        if direct and json.loads(direct).get("dir_info", {}).get("editable"):
            continue  # the project itself (pip install -e .)
        out[canonicalize_name(name)] = dist.version
    return out


def run_pip_audit(report: Report) -> None:
    """Fill ``report`` from pip-audit; what it could not audit is left for the fallback."""
    exe = Path(sys.executable).with_name("pip-audit")
    argv = [str(exe), "--skip-editable", "--progress-spinner", "off", "--format", "json",
            "--timeout", str(int(TIMEOUT_S))]
    for vuln in IGNORED:
        argv += ["--ignore-vuln", vuln]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"audit: pip-audit did not run: {exc}", file=sys.stderr)
        return
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"audit: pip-audit failed (exit {proc.returncode}): {tail}", file=sys.stderr)
        return
    for dep in doc.get("dependencies", []):
        name = canonicalize_name(dep.get("name", ""))
        if name not in report.installed or dep.get("skip_reason"):
            continue
        report.audited.add(name)
        lines = [f"{v['id']} ({', '.join(v.get('aliases') or []) or 'no alias'}); fixed in "
                 f"{', '.join(v.get('fix_versions') or []) or 'no release'}"
                 for v in dep.get("vulns", []) if v.get("id") not in IGNORED]
        if lines:
            report.vulnerable[name] = lines


def _project_json(name: str) -> dict[str, Any] | None:
    url = f"{PYPI_JSON}/{name}/json"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            data: dict[str, Any] = json.load(response)
            return data
    except (urllib.error.URLError, OSError, ValueError):
        return None


def run_fallback(report: Report) -> None:
    """Packages pip-audit skipped: PyPI's project JSON covers those at their latest release."""
    todo = sorted(set(report.installed) - report.audited)
    with ThreadPoolExecutor(max_workers=16) as pool:
        docs = dict(zip(todo, pool.map(_project_json, todo), strict=True))
    for name in todo:
        doc = docs[name]
        version = report.installed[name]
        if doc is None:
            report.unaudited[name] = "no answer from the vulnerability database"
            continue
        latest = str(doc.get("info", {}).get("version", ""))
        try:
            same = Version(latest) == Version(version)
        except InvalidVersion:
            same = latest == version
        if not same:
            report.unaudited[name] = (f"{version} installed, {latest or '?'} is the latest; "
                                      "no per-release data from this index")
            continue
        report.audited.add(name)
        lines = [f"{v.get('id')} ({', '.join(v.get('aliases') or []) or 'no alias'}); fixed in "
                 f"{', '.join(v.get('fixed_in') or []) or 'no release'}"
                 for v in doc.get("vulnerabilities") or []
                 if not v.get("withdrawn") and v.get("id") not in IGNORED
                 and not set(v.get("aliases") or []) & set(IGNORED)]
        if lines:
            report.vulnerable[name] = lines


def main() -> int:
    report = Report(installed_distributions())
    run_pip_audit(report)
    run_fallback(report)
    total = len(report.installed)
    for name, lines in sorted(report.vulnerable.items()):
        for line in lines:
            print(f"audit: VULNERABLE {name} {report.installed[name]}: {line}")
    if report.vulnerable:
        print(f"audit: {len(report.vulnerable)} vulnerable package(s); upgrade them, or add "
              "the id to IGNORED in tests/services/audit.py with the reason it does not apply")
        return 1
    if not report.audited:
        message = (f"audit: no vulnerability database reachable; none of {total} packages "
                   "was audited")
        if in_ci():
            print(message + " (CI=true: failing)", file=sys.stderr)
            return 1
        print(message + " (warning only outside CI)", file=sys.stderr)
        return 0
    if report.unaudited:
        print(f"audit: warning: {len(report.unaudited)} of {total} package(s) not audited:",
              file=sys.stderr)
        for name, why in sorted(report.unaudited.items()):
            print(f"audit:   {name}: {why}", file=sys.stderr)
    print(f"audit: {len(report.audited)} of {total} installed packages audited, no known "
          "vulnerabilities")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""docs/alerts.yaml: every metric it uses exists; promtool checks and unit-tests it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from reconciler.api.metrics import Metrics
from tests.services.ci import unavailable

DOCS = Path(__file__).resolve().parents[2] / "docs"


def exported_names() -> set[str]:
    m = Metrics()
    names = set()
    for metric in m.registry.collect():
        for sample in metric.samples:
            names.add(sample.name)
        names.add(metric.name)
    # Series that exist once something happened (histograms and counters with labels):
    for name in ("reconciler_runs_total", "reconciler_missed_slots_total",
                 "reconciler_run_duration_seconds_bucket",
                 "reconciler_run_lateness_seconds_bucket",
                 "reconciler_last_success_timestamp_seconds",
                 "reconciler_schedule_interval_seconds",
                 "reconciler_next_fire_timestamp_seconds"):
        names.add(name)
    return names


def test_rules_use_only_metrics_the_daemon_exports() -> None:
    rules = yaml.safe_load((DOCS / "alerts.yaml").read_text())
    used = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            used |= set(re.findall(r"reconciler_[a-z_]+", rule["expr"]))
    assert used, "no metrics found in the rules"
    assert used <= exported_names(), used - exported_names()


def test_promtool_checks_and_unit_tests_pass() -> None:
    if shutil.which("promtool") is None:
        unavailable("promtool not installed (apt-get install prometheus; make services)")
    check = subprocess.run(["promtool", "check", "rules", "alerts.yaml"], cwd=DOCS,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(["promtool", "test", "rules", "alerts.test.yaml"], cwd=DOCS,
                          capture_output=True, text=True, timeout=60)
    assert unit.returncode == 0, unit.stdout + unit.stderr

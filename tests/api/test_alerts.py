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
                 "reconciler_task_created_timestamp_seconds",
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


def first_values(values: str) -> list[str]:
    """The first value of each stretch of samples in a promtool ``values`` string: at its
    start and after each gap (``_``, ``stale``): a counter must start each at 0."""
    firsts, gap = [], True
    for token in values.split():
        if token.startswith("_") or token == "stale":
            gap = True
        elif gap:
            gap = False
            number = re.match(r"-?[0-9.e]+", token)
            assert number is not None, token
            firsts.append(number[0])
    return firsts


def test_the_rule_tests_input_series_look_scraped_from_the_daemon() -> None:
    """The daemon creates a task's counters at 0 when it loads the task (and again after
    a restart): a unit test whose counter appears at 1 tests a series that never exists.
    Every series carries the ``instance`` and ``job`` labels a scrape adds: without
    ``job``, a rule that matches ``on (instance, task)`` and then combines with ``or``
    passed promtool and misfired in a real Prometheus."""
    assert first_values("_ _ 0 1 2 _ 0x3 stale 0+1x4") == ["0", "0", "0"]
    assert first_values("1 2 3") == ["1"] and first_values("-10800x20") == ["-10800"]
    tests = yaml.safe_load((DOCS / "alerts.test.yaml").read_text())["tests"]
    inputs = [s for t in tests for s in t["input_series"]]
    counters = [s for s in inputs if s["series"].split("{")[0].endswith("_total")]
    assert len(counters) >= 5
    for series in counters:
        assert all(float(v) == 0 for v in first_values(series["values"])), series
    for series in inputs:
        assert re.search(r'\binstance="', series["series"]), series
        assert re.search(r'\bjob="', series["series"]), series


def test_promtool_checks_and_unit_tests_pass() -> None:
    if shutil.which("promtool") is None:
        unavailable("promtool not installed (apt-get install prometheus; make services)")
    check = subprocess.run(["promtool", "check", "rules", "alerts.yaml"], cwd=DOCS,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(["promtool", "test", "rules", "alerts.test.yaml"], cwd=DOCS,
                          capture_output=True, text=True, timeout=60)
    assert unit.returncode == 0, unit.stdout + unit.stderr

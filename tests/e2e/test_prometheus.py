"""docs/alerts.yaml in a real Prometheus (Debian's ``prometheus``) scraping the real daemon.

The promtool unit tests (docs/alerts.test.yaml) check the rules against series written by
hand; this test checks them against the series the daemon really exports, scraped and
evaluated by Prometheus itself: which alerts reach ``firing`` (``GET /api/v1/alerts``)
for four tasks.

========================  ==================================  ===========================
task                      what it does                        must fire
========================  ==================================  ===========================
``failing``               fails its first 3 runs, then        ReconcilerTaskFailing
                          succeeds (every 3 s)
``never-succeeds``        always fails (every 2 s)            ReconcilerNoRecentSuccess
``skipping``              Forbid; its first run outlasts      ReconcilerMissedSlots
                          the next slot: one skipped slot     (reason ``concurrency``)
``healthy``               succeeds (every 2 s)                nothing, at any time
========================  ==================================  ===========================

``failing`` and ``skipping`` hit their threshold exactly (three failures, one missed
slot), so their alerts fire only if Prometheus saw their counters at 0 before the
first failure or skip: ``increase()`` reads nothing from a series that appears at 1
(and with failures 3 s apart, its extrapolation of 1 -> 3 stays below 3). To be sure
of that sample the two start suspended in git; they are resumed once Prometheus has
scraped the loaded tasks.

**The test-only rewrite** (:data:`SHORTER`): the rules are the shipped ones with their
waiting times cut from minutes and hours to seconds: every ``for:`` becomes ``1s``,
the ``increase()``/``rate()`` windows (``[1h]``, ``[30m]``, ``[10m]``) become ``[2m]``
(longer than the test, so no sample falls out), and ReconcilerNoRecentSuccess' slack of
10 minutes (``+ 600``) becomes 4 s. Nothing else changes; each pattern must match, so a
rule edited past the rewrite fails here rather than being run unshortened.

Then the deleted task's series leave the scrape and Prometheus (staleness), and
``HEAD /metrics`` on the real server answers 200 without a body. Scrape and
evaluation every second; every wait is bounded.
"""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import DaemonProcess, free_port, task_yaml, wait_until
from tests.services.ci import unavailable

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parents[2] / "docs"

#: (pattern, replacement) applied to docs/alerts.yaml; see the module docstring.
SHORTER = (
    (r"for: \d+[smh]\b", "for: 1s"),
    (r"\[(?:1h|30m|10m)\]", "[2m]"),
    (r"\+ 600\)", "+ 4)"),
)

EXPECTED = {
    "failing": {"ReconcilerTaskFailing"},
    "never-succeeds": {"ReconcilerNoRecentSuccess"},
    "skipping": {"ReconcilerMissedSlots"},
}


def shortened_rules() -> str:
    text = (DOCS / "alerts.yaml").read_text()
    for pattern, replacement in SHORTER:
        text, count = re.subn(pattern, replacement, text)
        assert count, f"the test-only rewrite {pattern!r} no longer matches docs/alerts.yaml"
    return text


class Prometheus:
    """Debian's ``prometheus`` on a loopback port with a private data directory."""

    def __init__(self, root: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            unavailable("prometheus not installed (apt-get install prometheus; make services)")
        root.mkdir()
        (root / "alerts.yaml").write_text(shortened_rules())
        (root / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            "rule_files: [alerts.yaml]\n"
            "scrape_configs:\n"
            f"  - job_name: reconciler\n    static_configs: [{{targets: ['{target}']}}]\n")
        self.log = root / "prometheus.log"
        self.url = f"http://127.0.0.1:{free_port()}"
        self.command = [binary, f"--config.file={root / 'prometheus.yml'}",
                        f"--storage.tsdb.path={root / 'data'}",
                        f"--web.listen-address={self.url.removeprefix('http://')}"]
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=5)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.root)
        wait_until(self.ready, what="prometheus ready")

    def ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
        try:
            return self.http.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.http.get("/api/v1/query", params={"query": expr}).json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def alerts(self) -> list[dict[str, Any]]:
        body = self.http.get("/api/v1/alerts").json()
        assert body["status"] == "success", body
        return list(body["data"]["alerts"])

    def stop(self) -> None:
        self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def prometheus(daemon: DaemonProcess, tmp_path: Path) -> Iterator[Prometheus]:
    p = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{daemon.port}")
    try:
        p.start()
        yield p
    finally:
        p.stop()


def tasks(root: Path, *, suspended: bool) -> dict[str, str]:
    counter, marker = root / "failing.count", root / "skipping.first"
    gate = {"suspend": "true"} if suspended else {}
    return {
        "failing": task_yaml(
            "failing", "@every 3s",
            f"shell: 'n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); "
            f"echo $n > {counter}; [ $n -gt 3 ]'", **gate),
        "never-succeeds": task_yaml("never-succeeds", "@every 2s", "shell: 'exit 1'"),
        "skipping": task_yaml(
            "skipping", "@every 2s",
            f"shell: 'test -e {marker} || {{ touch {marker}; sleep 3; }}'",
            concurrencyPolicy="Forbid", **gate),
        "healthy": task_yaml("healthy", "@every 2s", "shell: 'true'"),
    }


def firing_by_task(prometheus: Prometheus) -> dict[str, set[str]]:
    """Firing alerts per task; fails at once if the healthy task has any alert at all."""
    out: dict[str, set[str]] = {}
    for alert in prometheus.alerts():
        labels = alert["labels"]
        assert labels.get("task") != "healthy", alert
        if alert["state"] == "firing" and "task" in labels:
            out.setdefault(labels["task"], set()).add(labels["alertname"])
    return out


def test_the_alert_rules_fire_in_a_real_prometheus(daemon: DaemonProcess,
                                                    prometheus: Prometheus) -> None:
    for name, text in tasks(daemon.root, suspended=True).items():
        daemon.write(f"{name}.yaml", text)
    daemon.start()
    # Prometheus has scraped every task loaded (their counters at 0 in the same scrape)
    wait_until(lambda: prometheus.query("count(reconciler_task_created_timestamp_seconds) == 4"),
               what="the loaded tasks in Prometheus")
    for name in ("failing", "skipping"):
        daemon.write(f"{name}.yaml", tasks(daemon.root, suspended=False)[name])

    def expected_firing() -> bool:
        firing = firing_by_task(prometheus)
        return all(alerts <= firing.get(task, set()) for task, alerts in EXPECTED.items())

    try:
        wait_until(expected_firing, timeout=45, what="the expected alerts to fire")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; firing: {firing_by_task(prometheus)}; "
                             f"alerts: {prometheus.alerts()}") from None
    (missed,) = [a for a in prometheus.alerts() if a["labels"]["alertname"]
                 == "ReconcilerMissedSlots" and a["labels"].get("task") == "skipping"]
    assert missed["labels"]["reason"] == "concurrency" and missed["state"] == "firing"
    assert "ReconcilerTaskFailing" not in firing_by_task(prometheus).get("skipping", set())

    # A deleted task's series leave the scrape, and Prometheus marks them stale at once.
    (daemon.manifests / "failing.yaml").unlink()
    scrape = f"http://127.0.0.1:{daemon.port}/metrics"
    wait_until(lambda: 'task="failing"' not in httpx.get(scrape, timeout=5).text,
               what="the deleted task's series to leave /metrics")
    wait_until(lambda: not prometheus.query('{__name__=~"reconciler_.+", task="failing"}'),
               what="the deleted task's series to go stale in Prometheus")
    assert prometheus.query('reconciler_runs_total{task="healthy", status="succeeded"} > 0')

    # HEAD /metrics on the real server: the GET's status and headers, no body.
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=5)
    try:
        conn.request("HEAD", "/metrics")
        head = conn.getresponse()
        assert (head.status, head.read()) == (200, b"")
        assert head.getheader("content-type", "").startswith("text/plain")
    finally:
        conn.close()

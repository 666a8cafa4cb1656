"""The dashboard in a real browser (Debian's chromium via Playwright) on the real daemon.

Load the page, see the example tasks, suspend one with a note and see the badge,
trigger one and watch its run appear (live, through the event stream), follow a
running run's output, and check that task output and notes are shown as text.
Screenshots of the main pages go to a temporary directory, or to docs/screenshots/ when
``RECONCILER_REFRESH_SCREENSHOTS=1`` (``make screenshots``), so a test run never
changes tracked files. Also: the CLI over HTTP.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DaemonProcess, wait_until
from tests.services.ci import unavailable

expect: Any
try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser fixture skips then
    expect = None

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
DOC_SCREENSHOTS = ROOT / "docs" / "screenshots"
TOKEN = "ops-token-0123456789abcdef"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

EXTRA = {
    "slow.yaml": """\
apiVersion: reconciler/v1
kind: Task
metadata:
  name: slow-export
  labels: {team: data}
spec:
  schedule: "0 4 * * *"
  run:
    shell: 'for i in 1 2 3 4; do echo "exported batch $i"; sleep 0.4; done'
""",
    "broken.yaml": """\
apiVersion: reconciler/v1
kind: Task
metadata:
  name: broken-report
spec:
  schedule: "30 25 * * *"
  run: {shell: "true"}
""",
    "xss.yaml": """\
apiVersion: reconciler/v1
kind: Task
metadata:
  name: markup-output
  labels: {team: demo}
spec:
  schedule: "0 5 * * *"
  run:
    shell: 'echo "<b id=injected>bold</b><script>window.pwned=1</script>"'
""",
}


def api(base: str, path: str, method: str = "GET", body: Any = None,
        token: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:  # local daemon only
        return json.loads(response.read())


@pytest.fixture
def dashboard(daemon: DaemonProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for manifest in sorted((ROOT / "examples").glob("*.yaml")):
        shutil.copy(manifest, daemon.manifests / manifest.name)
    for name, text in EXTRA.items():
        daemon.write(name, text)
    monkeypatch.setenv("RECONCILER_API_TOKEN", f"ops:{TOKEN}")
    daemon.start()
    base = f"http://127.0.0.1:{daemon.port}"

    def ready() -> bool:
        try:
            return bool(api(base, "/readyz")["ready"])
        except OSError:
            return False

    wait_until(ready, what="the API to be ready")
    yield base


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright  # here: only when chromium exists

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the screenshots go: docs/screenshots/ only when a refresh is asked for."""
    if os.environ.get("RECONCILER_REFRESH_SCREENSHOTS") == "1":
        return DOC_SCREENSHOTS
    return tmp_path / "screenshots"


def test_dashboard_suspend_trigger_and_live_runs(dashboard: str, browser: Any,
                                                 screenshots: Path) -> None:
    base = dashboard
    screenshots.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(base + "/")

    # The example tasks, with the schedule in words, zone, next run and source.
    rows = page.locator("#tasks tbody tr")
    page.wait_for_selector('tr[data-task="nightly-report"]')
    names = [rows.nth(i).get_attribute("data-task") for i in range(rows.count())]
    for name in ("heartbeat", "nightly-backup", "nightly-report", "weekly-summary",
                 "tmp-cleanup", "health-ping"):
        assert name in names
    report = page.locator('tr[data-task="nightly-report"]')
    assert "at 02:30 every day" in report.inner_text()
    assert "Europe/Berlin" in report.inner_text()
    assert "in " in report.locator(".rel").inner_text()
    page.wait_for_selector("#conn.on")  # the event stream is connected
    # heartbeat (@every 10s) has run by itself: its last run shows.
    page.wait_for_selector('tr[data-task="heartbeat"] .last-run .badge', timeout=20_000)

    # Suspend with a note: the token is asked for once, then the note.
    page.click('tr[data-task="nightly-backup"] button[data-action="suspend"]')
    page.wait_for_selector("#token-dialog[open]")
    page.fill("#token-input", TOKEN)
    page.click("#token-ok")
    page.wait_for_selector("#suspend-dialog[open]")
    page.fill("#suspend-note", "storage migration <b>until Friday</b>")
    page.click("#suspend-ok")
    backup = page.locator('tr[data-task="nightly-backup"]')
    backup.locator('[data-badge="suspended"]').wait_for()
    assert backup.locator(".note").inner_text() == "storage migration <b>until Friday</b>"
    assert backup.locator("b").count() == 0  # the note is text, not markup
    task = api(base, "/api/v1/tasks/nightly-backup")
    assert task["suspended"] and task["suspension"]["actor"] == "ops"
    backup.locator('button[data-action="resume"]').wait_for()

    # Trigger: the run appears in the row through the event stream (no reload).
    before = api(base, "/api/v1/tasks/nightly-report")["lastRun"]
    assert before is None
    page.click('tr[data-task="nightly-report"] button[data-action="trigger"]')
    report.locator('.last-run .badge[data-status="succeeded"]').wait_for(timeout=20_000)
    page.screenshot(path=str(screenshots / "tasks.png"), full_page=True)

    # The task page: history, duration chart, output.
    page.click('tr[data-task="nightly-report"] .name-cell a')
    page.wait_for_selector("#runs tbody tr[data-run]")
    assert page.locator("#task-name").inner_text() == "nightly-report"
    assert "succeeded" in page.locator("#runs tbody").inner_text()
    expect(page.locator("#task-output")).to_contain_text("report for slot")
    assert page.locator("#task-chart svg rect.bar").count() >= 1

    # A slow run: its output streams in while it runs, and shows up in the history.
    page.goto(base + "/#/tasks/slow-export")
    page.wait_for_selector("#task-actions button[data-action=trigger]")
    page.click("#task-actions button[data-action=trigger]")
    expect(page.locator("#task-output")).to_contain_text("exported batch 1", timeout=15_000)
    live = page.locator("#output-title").inner_text()
    assert "live" in live
    assert "exported batch 4" not in page.locator("#task-output").inner_text()
    expect(page.locator("#task-output")).to_contain_text("exported batch 4", timeout=15_000)
    page.locator('#runs tbody .badge[data-status="succeeded"]').wait_for(timeout=15_000)
    for _ in range(2):  # a few more runs for the chart
        api(base, "/api/v1/tasks/slow-export/trigger", "POST", token=TOKEN)
        wait_until(lambda: not api(base, "/api/v1/tasks/slow-export")["running"],
                   what="the slow run to finish")
    page.locator("#runs tbody tr[data-run]").nth(2).wait_for(timeout=15_000)
    expect(page.locator("#task-chart rect.bar")).to_have_count(3, timeout=15_000)
    expect(page.locator("#output-title")).to_have_text(re.compile(r"^run \d+$"))
    page.screenshot(path=str(screenshots / "task.png"), full_page=True)

    # Output is text: markup printed by a task is shown, never run.
    run = api(base, "/api/v1/tasks/markup-output/trigger", "POST", token=TOKEN)["run"]
    wait_until(lambda: api(base, f"/api/v1/runs/{run['id']}")["status"] == "succeeded",
               what="the markup run")
    page.goto(base + "/#/tasks/markup-output")
    expect(page.locator("#task-output")).to_contain_text("<script>window.pwned=1</script>")
    assert page.locator("#task-output b").count() == 0
    assert page.locator("#injected").count() == 0
    assert page.evaluate("window.pwned") is None

    # Plan and status: replicas and the writer.
    page.goto(base + "/#/status")
    page.wait_for_selector("#replicas tbody tr[data-replica]")
    assert "writer" in page.locator("#replicas tbody").inner_text()
    assert "no pending changes" in page.locator("#plan-summary").inner_text()
    expect(page.locator("#plan-errors")).to_contain_text("broken.yaml:6: broken-report")
    assert "1 manifest error" in page.locator("#errors-banner").inner_text()
    assert "nightly-backup" in page.locator("#plan-drift").inner_text()
    page.screenshot(path=str(screenshots / "status.png"), full_page=True)
    assert errors == [], errors


def test_dashboard_trigger_dialog_with_params(dashboard: str, browser: Any) -> None:
    """Trigger of a task with parameters (examples/params.yaml): a form built from the
    declarations; a wrong value is refused naming the parameter (the daemon's check);
    the values given are on the run and in the history."""
    base = dashboard
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(base + "/#/tasks/region-report")
    page.wait_for_selector("#task-actions button[data-action=trigger]")
    page.click("#task-actions button[data-action=trigger]")
    page.wait_for_selector("#token-dialog[open]")
    page.fill("#token-input", TOKEN)
    page.click("#token-ok")
    page.wait_for_selector("#trigger-dialog[open]")
    fields = page.locator("#trigger-fields [data-param]")
    assert [fields.nth(i).get_attribute("data-param") for i in range(fields.count())] == [
        "region", "dryRun", "days"]
    assert page.locator("#param-region").input_value() == "eu"  # the default
    options = page.locator("#param-region option")
    assert [options.nth(i).inner_text() for i in range(options.count())] == ["eu", "us", "apac"]
    assert page.locator("#param-days").get_attribute("type") == "number"
    assert "which region's numbers" in page.locator("#trigger-fields").inner_text()

    # A value the daemon refuses: nothing runs, the message names the parameter.
    page.evaluate("document.getElementById('param-days').type = 'text'")
    page.fill("#param-days", "two")
    page.click("#trigger-ok")
    expect(page.locator("#toast.error")).to_contain_text("parameter 'days'")
    assert api(base, "/api/v1/tasks/region-report/runs")["items"] == []

    page.click("#task-actions button[data-action=trigger]")
    page.wait_for_selector("#trigger-dialog[open]")
    page.select_option("#param-region", "us")
    page.select_option("#param-dryRun", "false")
    page.fill("#param-days", "7")
    page.click("#trigger-ok")
    page.locator('#runs tbody .badge[data-status="succeeded"]').wait_for(timeout=20_000)
    (run,) = api(base, "/api/v1/tasks/region-report/runs")["items"]
    assert run["params"] == {"region": "us", "dryRun": False, "days": 7}
    assert run["trigger"] == "manual"
    expect(page.locator("#runs tbody [data-params]")).to_have_text(
        "region=us, dryRun=false, days=7")
    output = api(base, f"/api/v1/runs/{run['id']}")["outputTail"]
    assert output == "report for us over 7 day(s)\n"
    assert errors == [], errors


def test_dashboard_asks_for_a_token_when_reads_need_one(
    daemon: DaemonProcess, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(ROOT / "examples" / "heartbeat.yaml", daemon.manifests / "heartbeat.yaml")
    monkeypatch.setenv("RECONCILER_API_TOKEN", f"ops:{TOKEN}")
    daemon.start("--auth-reads")
    base = f"http://127.0.0.1:{daemon.port}"
    wait_until(lambda: _ready(base), what="the API to be ready")
    page = browser.new_page()
    page.goto(base + "/")
    page.wait_for_selector("#token-dialog[open]")
    assert page.locator('tr[data-task="heartbeat"]').count() == 0
    page.fill("#token-input", "wrong-token-000000000000")
    page.click("#token-ok")
    page.wait_for_selector("#token-dialog[open]")  # refused: asked again
    page.fill("#token-input", TOKEN)
    page.click("#token-ok")
    page.wait_for_selector('tr[data-task="heartbeat"]')
    page.wait_for_selector("#conn.on")


def _ready(base: str) -> bool:
    try:
        return bool(api(base, "/readyz")["ready"])
    except OSError:
        return False


def test_cli_over_http(dashboard: str, daemon: DaemonProcess) -> None:
    """A few commands through real processes and sockets (the formats are unit-tested)."""
    env = {"RECONCILER_SERVER": dashboard,
           "RECONCILER_DATABASE_URL": "sqlite:////nonexistent/dir/state.db"}
    old = dict(os.environ)
    os.environ.update(env)  # daemon.cli() passes os.environ on
    try:
        out = daemon.cli("get", "tasks")
        assert out.returncode == 0, out.stderr
        assert "nightly-report" in out.stdout and "Europe/Berlin" in out.stdout
        out = daemon.cli("trigger", "nightly-report", "--token", TOKEN)
        assert out.returncode == 0 and "started" in out.stdout, out.stderr
        run_id = out.stdout.split()[1]
        wait_until(lambda: api(dashboard, f"/api/v1/runs/{run_id}")["status"] == "succeeded",
                   what="the triggered run")
        out = daemon.cli("logs", run_id)
        assert out.stdout.startswith("report for slot")
        out = daemon.cli("suspend", "weekly-summary", "--note", "holiday", "--token", TOKEN)
        assert out.stdout.strip() == "weekly-summary suspended: holiday"
        out = daemon.cli("status")  # exit 1: a manifest has an error
        assert "writer" in out.stdout and out.returncode == 1, out.stdout + out.stderr
        assert "broken.yaml:6: broken-report" in out.stdout
        audit = api(dashboard, "/api/v1/audit")["items"]
        assert [(a["action"], a["actor"]) for a in audit[:2]] == [("suspend", "ops"),
                                                                  ("trigger", "ops")]
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_the_task_page_shows_a_backfills_progress(dashboard: str, browser: Any) -> None:
    """A backfill made through the API shows on its task's page with its state and n/m."""
    made = api(dashboard, "/api/v1/tasks/weekly-summary/backfill", "POST",
               {"from": "2026-01-01", "to": "2026-01-15", "parallel": 2}, token=TOKEN)
    backfill = made["backfill"]
    assert backfill["total"] == 2
    wait_until(lambda: api(dashboard, f"/api/v1/backfills/{backfill['id']}")["backfill"]
               ["state"] == "succeeded", what="the backfill to finish")
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(dashboard + "/#/tasks/weekly-summary")
    item = page.locator(f'#task-backfills li[data-backfill="{backfill["id"]}"]')
    item.wait_for()
    assert "2/2" in item.inner_text()
    assert item.locator('.badge[data-status="succeeded"]').count() == 1
    assert item.locator("progress").get_attribute("value") == "2"
    assert errors == []

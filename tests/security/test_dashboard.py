"""The dashboard cannot be made to run a script by what it displays.

Task names, labels, annotations, suspend notes, errors and run output are attacker-
influenced text (a manifest writer, a task's output, an API caller's note). Three
layers keep them text, and each is tested here without a browser:

1. The page's code never turns data into markup: a static scan of
   reconciler/api/static finds no HTML sink (innerHTML, insertAdjacentHTML,
   document.write, eval, string timers, ...), no inline script or handler in the
   HTML, and links built only from fixed ``#`` fragments.
2. The API hands such text out only as JSON strings (or text/plain for logs), with
   ``nosniff`` and a CSP without 'unsafe-inline', so neither the API nor a response
   opened directly is ever rendered as HTML.
3. Names and label values cannot carry markup at all: the manifest schema refuses
   ``<`` there, and the refusal itself reaches the dashboard as JSON.

The browser test tests/e2e/test_dashboard.py shows the rendered result in Chromium: a
task printing ``<b id=injected>`` and ``<script>window.pwned=1</script>`` is shown as
literal text, no element is created and no script runs.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from reconciler.api.app import STATIC
from reconciler.core.protocols import ExecutionEvents, ExecutionRequest, ExecutionResult
from reconciler.core.runtime import RunStatus
from tests.api.conftest import AUTH, FakeExecutor, harness, run

pytestmark = [pytest.mark.security]

SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'
MARKUP = f"{SCRIPT}{IMG}</pre><b>"

#: Ways JavaScript turns a string into markup or code.
SINKS = {
    "innerHTML": r"\.innerHTML\b",
    "outerHTML": r"\.outerHTML\b",
    "insertAdjacentHTML": r"\binsertAdjacentHTML\b",
    "document.write": r"\bdocument\s*\.\s*write(ln)?\b",
    "eval": r"(?<![\w.])eval\s*\(",
    "Function constructor": r"\bnew\s+Function\b|(?<![\w.])Function\s*\(",
    "string timer": r"\bset(Timeout|Interval)\s*\(\s*[`'\"]",
    "DOMParser": r"\bDOMParser\b",
    "createContextualFragment": r"\bcreateContextualFragment\b",
    "srcdoc": r"\bsrcdoc\b",
    "javascript: URL": r"javascript:",
    "jQuery-style html()": r"\.html\s*\(",
    "outer/inner text as HTML": r"\.setHTML(Unsafe)?\b|\bparseHTMLUnsafe\b",
}


def static_files(suffix: str) -> list[Path]:
    files = sorted(STATIC.glob(f"*{suffix}"))
    assert files, f"no {suffix} files in {STATIC}"
    return files


def test_dashboard_code_has_no_html_sinks() -> None:
    """No static JavaScript file uses an API that parses a string as HTML or code."""
    found = []
    for path in static_files(".js"):
        source = path.read_text()
        for number, line in enumerate(source.splitlines(), start=1):
            code = line.split("//", 1)[0] if not line.lstrip().startswith("*") else ""
            for name, pattern in SINKS.items():
                if re.search(pattern, code):
                    found.append(f"{path.name}:{number}: {name}: {line.strip()}")
    assert found == [], "\n".join(found)


def test_dashboard_builds_elements_with_text_and_fixed_links() -> None:
    """The element helper puts text through textContent, event handlers through
    addEventListener (never as attributes), and every link target is a literal ``#``
    fragment (names inside it go through encodeURIComponent): no ``javascript:`` or
    external URL can be built from data."""
    source = (STATIC / "app.js").read_text()
    helper = re.search(r"function el\(tag, attrs, \.\.\.children\) \{.*?\n\}", source, re.S)
    assert helper, "the el() helper changed: re-check how it treats attributes"
    body = helper.group(0)
    assert 'key === "text") node.textContent = value' in body
    assert 'key.startsWith("on")) node.addEventListener' in body
    assert "document.createTextNode(String(child))" in body
    links = re.findall(r"\bhref:\s*([`'\"])(.)", source)
    assert links, "no links found: the scan is not looking at the right code"
    assert all(first == "#" for _, first in links), links
    for name in ("src", "action", "formaction", "data", "style"):
        assert not re.search(rf"[{{,]\s*{name}:\s", source), name
    dynamic = re.findall(r"\$\{([^}]*)\}", " ".join(re.findall(r"href:\s*`[^`]*`", source)))
    assert all(d.startswith("encodeURIComponent(") for d in dynamic), dynamic


def test_dashboard_html_has_no_inline_script_or_handlers() -> None:
    """index.html loads its script from /static (so the CSP's script-src 'self' can
    forbid inline code) and has no inline event handler or javascript: URL."""
    for path in static_files(".html"):
        html = path.read_text()
        scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S | re.I)
        assert scripts, path
        for attrs, body in scripts:
            assert 'src="/static/' in attrs and body.strip() == "", (path, attrs)
        assert not re.search(r"\son[a-z]+\s*=", html, re.I), path
        assert "javascript:" not in html.lower(), path
    svg = (STATIC / "favicon.svg").read_text()
    assert "<script" not in svg.lower() and not re.search(r"\son[a-z]+\s*=", svg, re.I)


class MarkupExecutor(FakeExecutor):
    """Runs print markup and fail with markup in their error."""

    async def execute(self, request: ExecutionRequest, events: ExecutionEvents,
                      cancel: asyncio.Event) -> ExecutionResult:
        self.started.append(request)
        events.output(MARKUP + "\n")
        return ExecutionResult(RunStatus.FAILED, exit_code=1, error=f"bad {SCRIPT}",
                               output_tail=MARKUP + "\n")


MANIFESTS = {
    "ok.yaml": f"""\
apiVersion: reconciler/v1
kind: Task
metadata:
  name: annotated
  labels: {{team: web}}
  annotations: {{owner: {json.dumps(MARKUP)}}}
spec:
  schedule: "@yearly"
  run: {{command: [/bin/true]}}
""",
    "bad-name.yaml": f"""\
apiVersion: reconciler/v1
kind: Task
metadata:
  name: {json.dumps(SCRIPT)}
spec:
  schedule: "@yearly"
  run: {{command: [/bin/true]}}
""",
    "bad-label.yaml": f"""\
apiVersion: reconciler/v1
kind: Task
metadata:
  name: bad-label
  labels: {{team: {json.dumps(SCRIPT)}}}
spec:
  schedule: "@yearly"
  run: {{command: [/bin/true]}}
""",
}


def test_markup_comes_back_as_json_strings_never_html(tmp_path: Path) -> None:
    """Markup in an annotation, a suspend note, a run's output and error, and in the
    manifest errors of a task *named* ``<script>...`` or labelled so, is returned
    byte-exact inside JSON strings (application/json, nosniff, a CSP without
    'unsafe-inline'), or as text/plain for the log; such names and labels are refused
    by the schema, so no task carries them."""

    async def scenario() -> None:
        markup = MarkupExecutor()
        async with harness(tmp_path, manifests=MANIFESTS, executor=markup) as h:
            r = await h.client.post("/api/v1/tasks/annotated/suspend", headers=AUTH,
                                    json={"note": MARKUP})
            assert r.status_code == 200
            await h.client.post("/api/v1/tasks/annotated/resume", headers=AUTH)
            r = await h.client.post("/api/v1/tasks/annotated/trigger", headers=AUTH)
            run_id = r.json()["run"]["id"]
            await h.settle()

            async def get_json(path: str) -> Any:
                r = await h.client.get(path)
                assert r.status_code == 200, r.text
                assert r.headers["content-type"].startswith("application/json"), path
                assert r.headers["x-content-type-options"] == "nosniff"
                assert "'unsafe-inline'" not in r.headers["content-security-policy"]
                return r.json()

            detail = await get_json("/api/v1/tasks/annotated")
            assert detail["annotations"] == {"owner": MARKUP}
            run_doc = await get_json(f"/api/v1/runs/{run_id}")
            assert run_doc["outputTail"] == MARKUP + "\n"
            assert run_doc["error"] == f"bad {SCRIPT}"
            audit = await get_json("/api/v1/audit")
            notes = [a["detail"].get("note") for a in audit["items"] if a["detail"]]
            assert MARKUP in notes
            log = await h.client.get(f"/api/v1/runs/{run_id}/log", params={"follow": "false"})
            assert log.headers["content-type"].startswith("text/plain")
            assert log.headers["x-content-type-options"] == "nosniff"
            assert log.text == MARKUP + "\n"

            tasks = await get_json("/api/v1/tasks")
            assert [t["name"] for t in tasks["items"]] == ["annotated"]
            errors = (await get_json("/api/v1/status"))["manifestErrors"]
            assert {e["file"].rsplit("/", 1)[-1] for e in errors} >= {"bad-name.yaml",
                                                                     "bad-label.yaml"}, errors
            assert SCRIPT in json.dumps(errors, ensure_ascii=False)  # shown, as text
            plan = await get_json("/api/v1/plan")
            assert SCRIPT in json.dumps(plan, ensure_ascii=False)

    run(scenario)

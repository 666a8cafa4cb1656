"""The GitOps workflow around the chart: pre-commit hooks, the PR workflow, Argo CD, Flux.

The sample manifests repository (examples/gitops/tasks-repo) is validated with
reconciler's own loader; the pull-request workflow's plan step is run for real against a
git repository with an ``origin/main``, and its comment script is run with Node.js
against a fake GitHub client; the chart values in the Argo CD Application and the Flux
HelmRelease are rendered with helm and validated like the CI values files.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import REPO, Helm, load_yaml, validation_failures

from reconciler.cli.main import build_parser
from reconciler.manifests import load_paths
from tests.services.ci import unavailable

GITOPS = REPO / "examples" / "gitops"
TASKS_REPO = GITOPS / "tasks-repo"
WORKFLOW = TASKS_REPO / ".github" / "workflows" / "reconciler.yaml"


def reconciler_commands(script: str, env: dict[str, str]) -> list[list[str]]:
    """The `reconciler ...` command lines of a shell script, split like the shell would."""
    commands = []
    for line in script.splitlines():
        line = line.strip()
        if not line.startswith("reconciler "):
            continue
        for name, value in env.items():
            line = line.replace(f'"${name}"', value).replace(f"${name}", value)
        line = re.split(r"\s(?:>|2>|\|)", line)[0]
        commands.append(shlex.split(line)[1:])
    return commands


# ----------------------------------------------------------------- pre-commit


def test_pre_commit_hooks_run_reconciler_validate() -> None:
    hooks = {h["id"]: h for h in load_yaml(REPO / ".pre-commit-hooks.yaml")}
    assert {"reconciler-validate", "reconciler-validate-files"} <= set(hooks)
    for hook in hooks.values():
        assert hook["language"] == "python"  # installs this repository's package
        assert hook["entry"] == "reconciler validate"
        assert re.search(hook["files"], "manifests/team/backup.yaml")
        assert re.search(hook["files"], "manifests/a.yml")
        assert not re.search(hook["files"], "README.md")
        args = build_parser().parse_args([*hook["entry"].split()[1:], "manifests/"])
        assert args.command == "validate" and args.paths == ["manifests/"]
    # The whole-directory hook checks cross-file rules (duplicate names), once per commit.
    assert hooks["reconciler-validate"]["pass_filenames"] is False
    assert (REPO / "pyproject.toml").is_file()
    config = load_yaml(TASKS_REPO / ".pre-commit-config.yaml")
    used = {h["id"] for repo in config["repos"] for h in repo["hooks"]}
    assert used <= set(hooks)


# ------------------------------------------------------- sample manifests repo


def test_sample_manifests_repo_is_valid() -> None:
    desired = load_paths([str(TASKS_REPO / "manifests")])
    assert desired.ok, [str(e) for e in desired.errors]
    assert len(desired.tasks) == 3
    assert {Path(t.source_file).parent.name for t in desired.tasks} == {"platform", "data"}


def test_sample_task_names_do_not_clash_with_the_demo_examples() -> None:
    demo_files = [p for p in (REPO / "examples").rglob("*.y*ml") if GITOPS not in p.parents]
    demo = load_paths(sorted(str(p) for p in demo_files))
    assert demo.tasks
    sample = load_paths([str(TASKS_REPO / "manifests")])
    assert not {t.name for t in demo.tasks} & {t.name for t in sample.tasks}


# ------------------------------------------------------------ the PR workflow


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return load_yaml(WORKFLOW)


def _step(workflow: dict[str, Any], step_id: str) -> dict[str, Any]:
    (job,) = workflow["jobs"].values()
    return next(s for s in job["steps"] if s.get("id") == step_id)


def test_workflow_runs_on_pull_requests_with_full_history(workflow: dict[str, Any]) -> None:
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on".
    triggers = workflow.get("on", workflow.get(True))
    assert "pull_request" in triggers
    assert workflow["permissions"]["pull-requests"] == "write"
    (job,) = workflow["jobs"].values()
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0


def test_workflow_commands_are_real_cli_invocations(workflow: dict[str, Any]) -> None:
    (job,) = workflow["jobs"].values()
    env = {"MANIFESTS": workflow["env"]["MANIFESTS"]}
    commands = [c for s in job["steps"] if "run" in s for c in reconciler_commands(s["run"], env)]
    parsed = [build_parser().parse_args(c) for c in commands]
    assert any(a.command == "validate" and a.paths == ["manifests"] for a in parsed)
    diffs = [a for a in parsed if a.command == "diff"]
    assert {a.output for a in diffs} == {"json", "text"}
    for a in diffs:
        assert a.against_ref == "origin/main" and a.manifests == "manifests"


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci",
                    "-c", "init.defaultBranch=main", *args],
                   cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture()
def pull_request(tmp_path: Path) -> Path:
    """A clone whose branch changes one task and deletes another, against origin/main."""
    origin = tmp_path / "origin.git"
    work = tmp_path / "work"
    _git(tmp_path, "init", "-q", "--bare", str(origin))
    _git(tmp_path, "clone", "-q", str(origin), str(work))
    shutil.copytree(TASKS_REPO / "manifests", work / "manifests")
    _git(work, "checkout", "-q", "-b", "main")
    _git(work, "add", ".")
    _git(work, "commit", "-q", "-m", "tasks")
    _git(work, "push", "-q", "origin", "main")
    _git(work, "checkout", "-q", "-b", "change")
    exports = work / "manifests" / "data" / "exports.yaml"
    exports.write_text(exports.read_text().replace('"5 * * * *"', '"10 * * * *"'))
    _git(work, "rm", "-q", "manifests/platform/db-vacuum.yaml")
    _git(work, "commit", "-q", "-am", "change")
    return work


def test_workflow_plan_step_produces_the_json_and_text_plans(
    workflow: dict[str, Any], pull_request: Path, tmp_path: Path
) -> None:
    script = _step(workflow, "plan")["run"]
    outputs, summary = tmp_path / "outputs", tmp_path / "summary"
    env = dict(os.environ, MANIFESTS=workflow["env"]["MANIFESTS"],
               GITHUB_OUTPUT=str(outputs), GITHUB_STEP_SUMMARY=str(summary),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=pull_request, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert outputs.read_text().split() == ["json_code=2", "text_code=2"]  # changes pending
    plan = json.loads((pull_request / "plan.json").read_text())
    assert plan["kind"] == "Plan" and plan["hasChanges"] is True
    assert plan["summary"]["update"] == 1 and plan["summary"]["delete"] == 1
    text = (pull_request / "plan.txt").read_text()
    assert "gitops-demo-db-vacuum" in text and "spec.schedule" in text
    # the comment shows when the change runs: slots moved, and the load after the merge
    assert "    slots in the next 30 days: +720 -720" in text
    assert text.rstrip().splitlines()[-1].startswith("Load: peak ")
    assert plan["load"]["maxConcurrentRuns"] == 16 and plan["load"]["after"]["starts"] >= 1
    assert "### reconciler plan" in summary.read_text()


def test_workflow_comment_script_posts_then_updates_one_comment(
    workflow: dict[str, Any], tmp_path: Path
) -> None:
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed (it runs the workflow's comment script)")
    (job,) = workflow["jobs"].values()
    step = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/github-script"))
    plan_text = '~ task-a\n    ~ spec.schedule: "5 * * * *" -> "1 * * * *"\n'
    (tmp_path / "plan.txt").write_text(plan_text)
    (tmp_path / "plan.json").write_text(json.dumps({
        "refused": False, "refusals": [],
        "summary": {"create": 0, "update": 1, "delete": 0, "errors": 0}}))
    harness = """
const calls = [];
let existing = [];
const github = {
  paginate: async (fn, args) => existing,
  rest: { issues: {
    listComments: () => {},
    createComment: async (a) => {
      calls.push(["create", a]);
      existing = [{ id: 7, body: a.body }];
    },
    updateComment: async (a) => { calls.push(["update", a]); },
  } },
};
const context = { repo: { owner: "o", repo: "r" }, issue: { number: 12 } };
const run = async () => { SCRIPT };
(async () => { await run(); await run(); console.log(JSON.stringify(calls)); })()
  .catch((e) => { console.error(e); process.exit(1); });
""".replace("SCRIPT", step["with"]["script"])
    (tmp_path / "harness.js").write_text(harness)
    proc = subprocess.run([node, "harness.js"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False,
                          env=dict(os.environ, JSON_CODE="2"))
    assert proc.returncode == 0, proc.stderr
    calls = json.loads(proc.stdout)
    assert [c[0] for c in calls] == ["create", "update"]
    body = calls[0][1]["body"]
    assert body.startswith("<!-- reconciler-plan -->")
    assert "0 to create, 1 to update, 0 to delete" in body
    assert "spec.schedule" in body and calls[0][1]["issue_number"] == 12
    assert calls[1][1]["comment_id"] == 7


# ---------------------------------------------------------- Argo CD and Flux


def test_argocd_application_deploys_the_chart(helm: Helm, tmp_path: Path) -> None:
    app = load_yaml(GITOPS / "argocd" / "application.yaml")
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    source = app["spec"]["source"]
    assert (REPO / source["path"] / "Chart.yaml").is_file()
    values = source["helm"]["valuesObject"]
    # helm template (which Argo CD runs) cannot look up the generated token.
    assert values["apiToken"]["existingSecret"]
    path = tmp_path / "argocd-values.yaml"
    path.write_text(yaml.safe_dump(values))
    rendered = helm.template(path)
    assert rendered.deployment["spec"]["replicas"] == 3
    assert not validation_failures(rendered.docs, "1.28.0")
    hooks = [d for d in rendered.docs if "helm.sh/hook" in d["metadata"].get("annotations", {})]
    assert any(d["kind"] == "Job" for d in hooks)  # Argo CD runs it as a PreSync hook


def test_flux_helmrelease_deploys_the_chart(helm: Helm, tmp_path: Path) -> None:
    docs = [d for d in yaml.safe_load_all((GITOPS / "flux" / "helmrelease.yaml").read_text())
            if d]
    kinds = {d["kind"]: d for d in docs}
    source, release = kinds["GitRepository"], kinds["HelmRelease"]
    assert source["apiVersion"] == "source.toolkit.fluxcd.io/v1"
    assert release["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
    chart = release["spec"]["chart"]["spec"]
    assert (REPO / chart["chart"] / "Chart.yaml").is_file()
    assert chart["sourceRef"] == {"kind": "GitRepository",
                                  "name": source["metadata"]["name"],
                                  "namespace": source["metadata"]["namespace"]}
    path = tmp_path / "flux-values.yaml"
    path.write_text(yaml.safe_dump(release["spec"]["values"]))
    rendered = helm.template(path)
    assert rendered.has("ServiceMonitor") and rendered.has("PrometheusRule")
    assert rendered.container("git-sync")
    assert not validation_failures(rendered.docs, "1.28.0")

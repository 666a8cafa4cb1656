"""`helm install NAME charts/reconciler` with no values: what it installs, and how far
high availability is (one values file, refused with a message when incomplete).

The example tasks the defaults ship live in ``charts/reconciler/files/examples/`` (Helm
reads only files inside the chart); they must stay identical to ``examples/*.yaml``.
"""

from __future__ import annotations

import re
from pathlib import Path

from chartlib import CHART, NAMESPACE, RELEASE, REPO, Helm, flag

from reconciler.manifests import load_paths

FULLNAME = f"{RELEASE}-reconciler"
EXAMPLES = REPO / "examples"
CHART_EXAMPLES = CHART / "files" / "examples"


def example_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.yaml"))}


def test_chart_examples_are_the_repository_examples() -> None:
    repository = example_files(EXAMPLES)
    assert repository, "examples/ has no task files"
    chart = example_files(CHART_EXAMPLES)
    assert set(chart) == set(repository), (
        "charts/reconciler/files/examples/ must hold exactly examples/*.yaml: "
        f"copy them again (differing: {sorted(set(chart) ^ set(repository))})")
    stale = [name for name in repository if chart[name] != repository[name]]
    assert not stale, f"charts/reconciler/files/examples/ differs from examples/: {stale}"


def test_defaults_are_one_replica_on_sqlite_with_a_claim(helm: Helm) -> None:
    rendered = helm.template()
    assert rendered.deployment["spec"]["replicas"] == 1
    args = rendered.container()["args"]
    assert flag(args, "--zookeeper") is None
    assert "RECONCILER_DATABASE_URL" not in {e["name"] for e in rendered.container()["env"]}
    pvc = rendered.one("PersistentVolumeClaim", f"{FULLNAME}-state")
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert rendered.deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not rendered.has("Job")
    assert all(c["name"] != "git-sync" for c in rendered.pod["containers"])


def test_defaults_run_the_example_tasks_from_a_configmap(helm: Helm, tmp_path: Path) -> None:
    rendered = helm.template()
    cm = rendered.one("ConfigMap", f"{FULLNAME}-manifests")
    repository = example_files(EXAMPLES)
    assert {name: text.encode() for name, text in cm["data"].items()} == repository
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    assert volumes["manifests"]["configMap"]["name"] == cm["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in rendered.container()["volumeMounts"]}
    assert flag(rendered.container()["args"], "--manifests") == mounts["manifests"]
    for name, text in cm["data"].items():
        (tmp_path / name).write_text(text)
    mounted = load_paths([str(tmp_path)])  # reconciler's own loader and validation
    assert mounted.ok, [str(e) for e in mounted.errors]
    expected = load_paths([str(EXAMPLES / name) for name in repository])
    assert sorted(t.name for t in mounted.tasks) == sorted(t.name for t in expected.tasks)
    assert "heartbeat" in {t.name for t in mounted.tasks}


def test_inline_tasks_replace_the_examples(helm: Helm, tmp_path: Path) -> None:
    values = tmp_path / "mine.yaml"
    values.write_text("manifests:\n  configMap:\n    tasks:\n      - {apiVersion: reconciler/v1,"
                      " kind: Task, metadata: {name: mine},"
                      " spec: {schedule: '@every 1m', run: {shell: 'true'}}}\n")
    cm = helm.template(values).one("ConfigMap")
    assert set(cm["data"]) == {"mine.yaml"}


def test_default_install_succeeds_and_its_notes_name_the_examples(helm: Helm) -> None:
    proc = helm.run("install", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=client")
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "(1 replica, database: sqlite, manifests: configMap)" in notes
    assert "the example tasks shipped with the chart" in notes
    assert "manifests.gitSync.repo" in notes


def test_setting_the_git_repository_selects_the_gitsync_source(helm: Helm) -> None:
    rendered = helm.template(sets={"manifests.gitSync.repo": "https://git.example/tasks.git"})
    assert not rendered.has("ConfigMap")
    sidecar = rendered.container("git-sync")
    assert flag(sidecar["args"], "--repo") == "https://git.example/tasks.git"
    assert rendered.container("git-sync-init")
    assert flag(rendered.container()["args"], "--manifests") == "/git/repo"
    assert rendered.deployment["spec"]["replicas"] == 1  # still SQLite, one replica


def test_high_availability_is_one_values_file_away(helm: Helm, ha_values: Path) -> None:
    rendered = helm.template(ha_values)
    assert rendered.deployment["spec"]["replicas"] == 3
    assert flag(rendered.container()["args"], "--zookeeper")
    assert not rendered.has("PersistentVolumeClaim")


def test_replicas_alone_are_refused_with_what_is_missing(helm: Helm) -> None:
    sets = {"replicaCount": 2}
    err = helm.template_error(sets=sets)
    assert "/database/type" in err and "/zookeeper/hosts" in err, err
    err = helm.template_error(sets=sets, extra=("--skip-schema-validation",))
    assert "replicaCount=2 needs a shared database" in err
    assert "or set replicaCount=1" in err


def test_the_deploy_guide_installs_with_no_values() -> None:
    """docs/deploy.md: the install section starts with the bare install command."""
    doc = (REPO / "docs" / "deploy.md").read_text()
    section = doc.split("## Install in five minutes", 1)[1]
    first_block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert first_block, "no command block in the install section"
    commands = first_block.group(1).strip().splitlines()
    assert re.fullmatch(r"helm install [a-z0-9-]+ charts/reconciler", commands[0]), commands
    assert len(commands) == 1, commands

"""What the chart renders, checked on the objects: the rules of issue 6, one by one.

Every test renders with the real helm binary (`helm template`), so the templates, the
values schema and the `fail` checks are what is exercised.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from chartlib import CHART, CI_VALUES, NAMESPACE, RELEASE, Helm, Rendered, flag, load_yaml

from reconciler.core.durations import parse_duration
from reconciler.manifests import load_paths

FULLNAME = f"{RELEASE}-reconciler"
SKIP_SCHEMA = ("--skip-schema-validation",)
EXTERNAL = {
    "database.type": "external",
    "database.url": "postgresql://app:Sup3r-Secret-PW@pg.db.svc:5432/reconciler",
}


def workloads(rendered: Rendered) -> list[tuple[str, dict[str, Any]]]:
    """(label, pod spec) of everything that runs containers."""
    out = []
    for doc in rendered.docs:
        if doc["kind"] in ("Deployment", "Job"):
            label = f"{doc['kind']}/{doc['metadata']['name']}"
            out.append((label, doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "Pod":
            out.append((f"Pod/{doc['metadata']['name']}", doc["spec"]))
    return out


def all_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# ------------------------------------------------------------------ invalid values


def test_three_replicas_with_sqlite_fail_in_schema_and_template(helm: Helm) -> None:
    sets = {"replicaCount": 3, "zookeeper.hosts": "zk:2181"}
    err = helm.template_error(sets=sets)
    assert "values don't meet the specifications of the schema" in err
    assert "/database/type" in err and "external" in err
    err = helm.template_error(sets=sets, extra=SKIP_SCHEMA)
    assert 'replicaCount=3 needs a shared database, but database.type is "sqlite"' in err
    assert "SQLite is a file that only one replica may use" in err


def test_replicas_without_zookeeper_fail_in_schema_and_template(helm: Helm) -> None:
    sets = {"replicaCount": 3, **EXTERNAL}
    err = helm.template_error(sets=sets)
    assert "/zookeeper/hosts" in err
    err = helm.template_error(sets=sets, extra=SKIP_SCHEMA)
    assert "replicaCount=3 needs zookeeper.hosts" in err
    assert "elect the writer" in err


def test_one_replica_needs_no_zookeeper_and_may_use_sqlite(helm: Helm) -> None:
    rendered = helm.template(sets={"replicaCount": 1})
    assert rendered.deployment["spec"]["replicas"] == 1
    assert flag(rendered.container()["args"], "--zookeeper") is None


@pytest.mark.parametrize(
    ("sets", "schema_says", "template_says"),
    [
        ({"replicaCount": 1, "database.type": "external"}, "/database",
         "needs database.url or database.existingSecret"),
        ({"replicaCount": 1, "database.type": "external", "database.url": "sqlite:///x.db"},
         "/database/url", "is a SQLite URL"),
        ({"replicaCount": 1, "database.url": "postgresql://u:p@h/d"}, "/database/url",
         "database.type is sqlite"),
        ({"replicaCount": 1, "manifests.source": "gitSync"}, "/manifests/gitSync/repo",
         "needs manifests.gitSync.repo"),
        ({"replicaCount": 1, "manifests.source": "gitSync",
          "manifests.gitSync.repo": "https://x/y", "manifests.gitSync.auth.type": "ssh"},
         "/manifests/gitSync/auth/existingSecret", "needs manifests.gitSync.auth.existingSecret"),
        ({"replicaCount": 1, "manifests.source": "existingConfigMap"},
         "/manifests/existingConfigMap/name", "needs manifests.existingConfigMap.name"),
        ({"replicaCount": 1, "manifests.source": "existingClaim"},
         "/manifests/existingClaim/name", "needs manifests.existingClaim.name"),
        ({"manifests.source": "configMap", "manifests.gitSync.repo": "https://x/y"},
         "/manifests/gitSync/repo", "manifests.gitSync.repo is set but manifests.source is"),
        ({"replicaCount": 1, "manifests.source": "nfs"}, "/manifests/source",
         "manifests.source must be one of"),
        ({"replicaCount": 1, "ingress.enabled": True}, "/ingress/hosts",
         "ingress.enabled needs at least one entry"),
    ],
)
def test_invalid_combinations_fail_with_a_clear_message(
    helm: Helm, sets: dict[str, Any], schema_says: str | None, template_says: str
) -> None:
    err = helm.template_error(sets=sets)
    if schema_says:
        assert schema_says in err, err
    err = helm.template_error(sets=sets, extra=SKIP_SCHEMA)
    assert template_says in err, err


@pytest.mark.parametrize(
    "sets",
    [
        {"replicaCounts": 1},  # a typo
        {"replicaCount": 0},
        {"reconciler.logLevel": "verbose"},
        {"reconciler.resyncInterval": "60"},
        {"manifests.gitSync.period": "often"},
        {"database.type": "postgres"},
        {"apiToken.name": "admin token"},
    ],
)
def test_schema_rejects_bad_values(helm: Helm, sets: dict[str, Any]) -> None:
    values = {"replicaCount": 1, **sets}
    err = helm.template_error(sets=values)
    assert "schema" in err, err


def test_duplicate_inline_task_names_fail(helm: Helm, tmp_path: Path) -> None:
    values = tmp_path / "dup.yaml"
    task = ("{apiVersion: reconciler/v1, kind: Task, metadata: {name: twice},"
            " spec: {schedule: '@every 1m', run: {shell: 'true'}}}")
    values.write_text(f"replicaCount: 1\nmanifests:\n  configMap:\n    tasks:\n"
                      f"      - {task}\n      - {task}\n")
    assert 'two tasks named "twice"' in helm.template_error(values)


# -------------------------------------------------------------------- the pod spec


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_probes_point_at_healthz_and_readyz_on_the_listening_port(
    helm: Helm, values: Path
) -> None:
    container = helm.template(values).container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    listen = flag(container["args"], "--listen")
    assert listen is not None and ports["http"] == int(listen.rsplit(":", 1)[1])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_every_container_is_locked_down(helm: Helm, values: Path) -> None:
    rendered = helm.template(values)
    assert workloads(rendered)
    for label, pod in workloads(rendered):
        assert pod["automountServiceAccountToken"] is False, label
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True, label
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, label
        for c in all_containers(pod):
            where = f"{label} container {c['name']}"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert c["resources"]["requests"] and c["resources"]["limits"], where
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), where
            # A read-only root needs a writable /tmp (HOME and caches live there).
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            if c["name"] != "readyz":
                assert "/tmp" in mounts, where


def test_service_account_mounts_no_token(helm: Helm, sqlite_values: Path) -> None:
    rendered = helm.template(sqlite_values)
    sa = rendered.one("ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    assert rendered.pod["serviceAccountName"] == sa["metadata"]["name"] == FULLNAME


def test_termination_grace_outlasts_the_shutdown_grace(helm: Helm, sqlite_values: Path) -> None:
    rendered = helm.template(sqlite_values)
    grace = parse_duration(flag(rendered.container()["args"], "--shutdown-grace"))
    assert rendered.pod["terminationGracePeriodSeconds"] >= grace.total_seconds() + 10


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_pdb_and_spread_select_the_scheduler_pods(helm: Helm, values: Path) -> None:
    rendered = helm.template(values)
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    selector = rendered.deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["maxUnavailable"] == 1
    (spread,) = rendered.pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == selector
    assert spread["maxSkew"] == 1


def test_custom_affinity_and_spread_replace_the_default(helm: Helm, sqlite_values: Path) -> None:
    custom = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
               "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "reconciler"}}}]
    rendered = helm.template(sqlite_values, sets={
        "topologySpreadConstraints[0].maxSkew": 1,
        "topologySpreadConstraints[0].topologyKey": custom[0]["topologyKey"],
        "topologySpreadConstraints[0].whenUnsatisfiable": "DoNotSchedule",
        "topologySpreadConstraints[0].labelSelector.matchLabels.app\\.kubernetes\\.io/name":
            "reconciler",
    })
    assert rendered.pod["topologySpreadConstraints"] == custom
    rendered = helm.template(sqlite_values, sets={"spreadAcrossNodes": False})
    assert "topologySpreadConstraints" not in rendered.pod


def test_the_service_selects_the_pods_and_exposes_http(helm: Helm, sqlite_values: Path) -> None:
    rendered = helm.template(sqlite_values)
    service = rendered.one("Service")
    assert service["spec"]["selector"] == rendered.deployment["spec"]["selector"]["matchLabels"]
    (port,) = service["spec"]["ports"]
    assert port["name"] == "http" and port["targetPort"] == "http"


# ---------------------------------------------------------- database and secrets


def _secret_values(rendered: Rendered) -> list[str]:
    found = []
    for secret in rendered.all("Secret"):
        for value in (secret.get("data") or {}).values():
            found.append(base64.b64decode(value).decode())
        found.extend((secret.get("stringData") or {}).values())
    return found


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_secrets_never_appear_in_plain_text(helm: Helm, values: Path) -> None:
    rendered = helm.template(values)
    secrets = [s for s in _secret_values(rendered) if len(s.strip()) >= 8]
    plain_docs = [d for d in rendered.docs if d["kind"] != "Secret"]
    import yaml  # the rendered objects other than Secrets, as text

    plain = yaml.safe_dump_all(plain_docs)
    for secret in secrets:
        for line in secret.strip().splitlines():
            assert line not in plain, f"secret value in plain text: {line[:12]}..."
    for cm in rendered.all("ConfigMap"):
        for text in (cm.get("data") or {}).values():
            assert "PASSWORD" not in text.upper() or "fromEnv" in text


def test_database_url_goes_to_a_secret_not_a_configmap(helm: Helm, sqlite_values: Path) -> None:
    # One replica on PostgreSQL with tasks in a ConfigMap: the URL has a password.
    rendered = helm.template(sqlite_values, sets={"database.type": "external",
                                                  "database.url": EXTERNAL["database.url"],
                                                  "persistence.enabled": False})
    assert "Sup3r-Secret-PW" not in rendered.text
    secret = rendered.one("Secret", f"{FULLNAME}-database")
    assert base64.b64decode(secret["data"]["url"]).decode() == EXTERNAL["database.url"]
    env = env_of(rendered.container())
    assert env["RECONCILER_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{FULLNAME}-database", "key": "url"}
    assert "--database" not in rendered.container()["args"]
    assert rendered.has("ConfigMap")


def test_existing_database_secret_is_used_as_is(helm: Helm, monitoring_values: Path) -> None:
    rendered = helm.template(monitoring_values)
    assert not [s for s in rendered.all("Secret") if "database" in s["metadata"]["name"]]
    ref = env_of(rendered.container())["RECONCILER_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "reconciler-database", "key": "url"}
    job = rendered.one("Job")
    job_env = env_of(job["spec"]["template"]["spec"]["containers"][0])
    assert job_env["RECONCILER_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == ref


def test_sqlite_state_is_persistent_and_single_writer(helm: Helm, sqlite_values: Path) -> None:
    rendered = helm.template(sqlite_values)
    pvc = rendered.one("PersistentVolumeClaim", f"{FULLNAME}-state")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in rendered.container()["volumeMounts"]}
    assert mounts["state"] == rendered.container()["workingDir"] == "/var/lib/reconciler"
    assert rendered.deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "RECONCILER_DATABASE_URL" not in env_of(rendered.container())
    assert not rendered.has("Job")  # the pod upgrades its own SQLite file


def test_persistence_existing_claim(helm: Helm, sqlite_values: Path) -> None:
    rendered = helm.template(sqlite_values, sets={"persistence.existingClaim": "my-state"})
    assert not rendered.has("PersistentVolumeClaim")
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "my-state"


def test_external_database_rolls_and_keeps_no_claim(helm: Helm, ha_values: Path) -> None:
    rendered = helm.template(ha_values)
    assert not rendered.has("PersistentVolumeClaim")
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {}}
    assert rendered.deployment["spec"]["strategy"]["rollingUpdate"] == {
        "maxSurge": 1, "maxUnavailable": 0}


def test_one_daemon_without_zookeeper_is_recreated_not_rolled(helm: Helm,
                                                             ha_values: Path) -> None:
    """Without ZooKeeper a daemon holds its database's lock: a rolling update would start
    the new pod beside the old one, which it refuses, and never become ready."""
    rendered = helm.template(ha_values, sets={"replicaCount": 1, "zookeeper.hosts": ""})
    assert rendered.deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_db_upgrade_hook_job(helm: Helm, ha_values: Path) -> None:
    from reconciler.cli.main import build_parser

    rendered = helm.template(ha_values)
    job = rendered.one("Job", f"{FULLNAME}-db-upgrade")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == rendered.container()["image"]
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.action) == ("db", "upgrade")
    # At pre-install the release's Secret does not exist yet: the Job reads a hook copy
    # created before it (a lower weight) and deleted after it.
    ref = env_of(container)["RECONCILER_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    hook_secret = rendered.one("Secret", ref["name"])
    h = hook_secret["metadata"]["annotations"]
    assert h["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(h["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    assert "hook-succeeded" in h["helm.sh/hook-delete-policy"]
    assert pod["restartPolicy"] == "Never"
    assert "serviceAccountName" not in pod  # the chart's SA does not exist at pre-install
    # The Job pod is not selected by the Deployment, the PDB or the Service.
    selector = rendered.deployment["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= job["spec"]["template"]["metadata"]["labels"].items()


def test_no_db_upgrade_job_when_disabled(helm: Helm, ha_values: Path) -> None:
    assert not helm.template(ha_values, sets={"migrations.enabled": False}).has("Job")


# --------------------------------------------------------------------- API token


def test_api_token_is_generated_once_with_lookup(helm: Helm, sqlite_values: Path) -> None:
    template = (CHART / "templates" / "secret-api-token.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in template
    first = helm.template(sqlite_values).one("Secret", f"{FULLNAME}-api-token")
    token = base64.b64decode(first["data"]["token"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{48}", token)
    assert base64.b64decode(first["data"]["tokens"]).decode() == f"admin:{token}\n"
    # Without a cluster to look up (helm template), every render generates a new one.
    again = helm.template(sqlite_values, sets={"apiToken.name": "admin"})
    assert again.one("Secret", f"{FULLNAME}-api-token")["data"]["token"] != first["data"]["token"]


def test_api_token_file_is_mounted_and_passed(helm: Helm, ha_values: Path) -> None:
    rendered = helm.template(ha_values)
    secret = rendered.one("Secret", f"{FULLNAME}-api-token")
    assert base64.b64decode(secret["data"]["token"]).decode() == "ci-fixed-token-for-tests"
    path = flag(rendered.container()["args"], "--api-token-file")
    mounts = {m["name"]: m for m in rendered.container()["volumeMounts"]}
    assert path == mounts["api-token"]["mountPath"] + "/tokens"
    assert mounts["api-token"]["readOnly"] is True
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    assert volumes["api-token"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert volumes["api-token"]["secret"]["items"] == [{"key": "tokens", "path": "tokens"}]


def test_existing_api_token_secret(helm: Helm, monitoring_values: Path) -> None:
    rendered = helm.template(monitoring_values)
    assert not [s for s in rendered.all("Secret") if "api-token" in s["metadata"]["name"]]
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    assert volumes["api-token"]["secret"]["secretName"] == "reconciler-api-tokens"


def test_api_token_can_be_switched_off(helm: Helm, sqlite_values: Path) -> None:
    rendered = helm.template(sqlite_values, sets={"apiToken.enabled": False})
    assert "--api-token-file" not in rendered.container()["args"]
    assert not rendered.all("Secret")


# ------------------------------------------------------------- manifests sources


def test_gitsync_sidecar_and_reconciler_share_the_link(helm: Helm, ha_values: Path) -> None:
    rendered = helm.template(ha_values)
    sidecar = rendered.container("git-sync")
    assert re.fullmatch(r"registry\.k8s\.io/git-sync/git-sync:v4\.\d+\.\d+", sidecar["image"])
    args = sidecar["args"]
    root, link = flag(args, "--root"), flag(args, "--link")
    assert flag(args, "--repo") == "git@github.com:example/scheduled-tasks.git"
    assert flag(args, "--ref") == "main"
    assert flag(args, "--period") == "20s"
    assert flag(args, "--ssh-key-file") == "/etc/git-secret/ssh"
    assert flag(args, "--ssh-known-hosts-file") == "/etc/git-secret/known_hosts"
    # reconciler watches the link (atomically swapped by git-sync), not a worktree.
    assert flag(rendered.container()["args"], "--manifests") == f"{root}/{link}/manifests"
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    assert volumes["git"] == {"name": "git", "emptyDir": {}}
    mine = {m["name"]: m for m in rendered.container()["volumeMounts"]}
    theirs = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mine["git"]["mountPath"] == theirs["git"]["mountPath"] == root
    assert mine["git"]["readOnly"] is True
    assert theirs["git-credentials"]["mountPath"] == "/etc/git-secret"
    assert volumes["git-credentials"]["secret"]["secretName"] == "scheduled-tasks-deploy-key"
    # The first clone happens before reconciler starts.
    init = rendered.container("git-sync-init")
    assert "--one-time" in init["args"] and flag(init["args"], "--link") == link
    # git must accept a checkout owned by git-sync's user.
    env = env_of(rendered.container())
    assert env["GIT_CONFIG_KEY_0"]["value"] == "safe.directory"
    assert sidecar["securityContext"]["runAsUser"] != rendered.pod["securityContext"]["runAsUser"]
    assert not rendered.has("ConfigMap")


def test_gitsync_with_a_token(helm: Helm) -> None:
    rendered = helm.template(sets={
        "replicaCount": 1, "manifests.source": "gitSync",
        "manifests.gitSync.repo": "https://git.example.com/ops/tasks.git",
        "manifests.gitSync.auth.type": "token",
        "manifests.gitSync.auth.existingSecret": "tasks-token",
        "manifests.gitSync.initialClone": False,
    })
    sidecar = rendered.container("git-sync")
    assert flag(sidecar["args"], "--password-file") == "/etc/git-secret/password"
    ref = env_of(sidecar)["GITSYNC_USERNAME"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "tasks-token", "key": "username"}
    assert "initContainers" not in rendered.pod
    assert flag(rendered.container()["args"], "--manifests") == "/git/repo"


def test_configmap_tasks_are_valid_manifests_for_reconciler(
    helm: Helm, sqlite_values: Path, tmp_path: Path
) -> None:
    rendered = helm.template(sqlite_values)
    cm = rendered.one("ConfigMap", f"{FULLNAME}-manifests")
    assert set(cm["data"]) == {"heartbeat.yaml", "nightly-report.yaml", "health.yaml"}
    for name, text in cm["data"].items():
        (tmp_path / name).write_text(text)
    desired = load_paths([str(tmp_path)])  # reconciler's own loader and validation
    assert desired.ok, [str(e) for e in desired.errors]
    assert sorted(t.name for t in desired.tasks) == ["health-ping", "heartbeat", "nightly-report"]
    assert "# Call the daemon's own health endpoint" in cm["data"]["health.yaml"]
    mounts = {m["name"]: m for m in rendered.container()["volumeMounts"]}
    assert mounts["manifests"]["readOnly"] is True
    assert flag(rendered.container()["args"], "--manifests") == mounts["manifests"]["mountPath"]
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    assert volumes["manifests"]["configMap"]["name"] == cm["metadata"]["name"]


def test_existing_configmap(helm: Helm, monitoring_values: Path) -> None:
    rendered = helm.template(monitoring_values)
    assert not rendered.has("ConfigMap")
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    assert volumes["manifests"]["configMap"]["name"] == "team-tasks"


def test_existing_claim(helm: Helm) -> None:
    rendered = helm.template(sets={
        "replicaCount": 1, "manifests.source": "existingClaim",
        "manifests.existingClaim.name": "tasks-nfs", "manifests.existingClaim.subPath": "prod",
    })
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    assert volumes["manifests"]["persistentVolumeClaim"] == {"claimName": "tasks-nfs",
                                                             "readOnly": True}
    mounts = {m["name"]: m for m in rendered.container()["volumeMounts"]}
    assert mounts["manifests"]["subPath"] == "prod" and mounts["manifests"]["readOnly"] is True


# ---------------------------------------------------------------- CLI agreement


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_container_args_are_real_cli_flags(helm: Helm, values: Path) -> None:
    """The Deployment's args parse with the CLI's own parser, to the intended values."""
    from reconciler.cli.main import build_parser

    rendered = helm.template(values)
    container = rendered.container()
    assert "command" not in container  # the image's entrypoint is `reconciler`
    argv = container["args"]
    parser = build_parser()
    try:
        _, unknown = parser.parse_known_args(argv)
    except SystemExit as exc:  # argparse printed why on stderr
        pytest.fail(f"`reconciler {' '.join(argv)}` is refused by the CLI parser ({exc})")
    assert not unknown, f"flags the CLI does not know: {unknown}"
    args = parser.parse_args(argv)
    assert args.command == "run"
    assert args.manifests == flag(argv, "--manifests")
    assert str(args.listen) == flag(argv, "--listen")
    assert args.max_concurrent_runs == 16
    assert parse_duration(args.resync_interval) and parse_duration(args.shutdown_grace)
    assert args.log_level == "info"
    values_doc = load_yaml(values)
    zk = (values_doc.get("zookeeper") or {}).get("hosts")
    assert args.zookeeper == (zk or None)
    if zk:
        assert args.namespace
    assert args.api_token_file == "/etc/reconciler/api-token/tokens"


# ----------------------------------------------------- ingress and monitoring


def test_ingress_routes_to_the_service(helm: Helm, monitoring_values: Path) -> None:
    rendered = helm.template(monitoring_values)
    ingress = rendered.one("Ingress")
    service = rendered.one("Service")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "scheduler-tls",
                                       "hosts": ["scheduler.example.com"]}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "scheduler.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["number"] == service["spec"]["ports"][0]["port"]


def test_no_optional_objects_by_default(helm: Helm, sqlite_values: Path) -> None:
    rendered = helm.template(sqlite_values)
    for kind in ("Ingress", "ServiceMonitor", "PrometheusRule", "NetworkPolicy"):
        assert not rendered.has(kind), kind


def test_service_monitor_scrapes_metrics(helm: Helm, monitoring_values: Path) -> None:
    rendered = helm.template(monitoring_values)
    monitor = rendered.one("ServiceMonitor")
    service = rendered.one("Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def exported_metrics() -> set[str]:
    """The metric names the daemon really exports (its own registry, as scraped)."""
    from reconciler.api.metrics import Metrics

    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_prometheus_rule_has_the_alerts_on_real_metrics(
    helm: Helm, monitoring_values: Path
) -> None:
    rendered = helm.template(monitoring_values)
    rule = rendered.one("PrometheusRule")
    service = rendered.one("Service")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    metrics_known = exported_metrics()
    assert {
        "ReconcilerTaskFailing",  # a task failing N times
        "ReconcilerMissedSlots",  # missed slots
        "ReconcilerNoRecentSuccess",  # no success within its expected interval
        "ReconcilerManifestErrors",  # manifest errors
        "ReconcilerNoWriter",  # no writer
    } <= set(alerts)
    used: set[str] = set()
    for name, alert in alerts.items():
        expr = alert["expr"]
        metrics = set(re.findall(r"\breconciler_[a-z_]+", expr))
        assert metrics and metrics <= metrics_known, (name, metrics - metrics_known)
        used |= metrics
        # Scoped to this installation: the ServiceMonitor's job label is the Service name.
        for selector in re.findall(r"reconciler_[a-z_]+\{([^}]*)\}", expr):
            assert f'namespace="{NAMESPACE}"' in selector, (name, selector)
            assert f'job="{service["metadata"]["name"]}"' in selector, (name, selector)
        for open_, close in ("()", "{}", "[]"):
            assert expr.count(open_) == expr.count(close), (name, expr)
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["labels"]["team"] == "platform"  # alertLabels
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert "{{ $labels" in alert["annotations"]["summary"] or name.startswith(
            ("ReconcilerManifest", "ReconcilerNoWriter", "ReconcilerMultiple", "ReconcilerRec"))
    assert {"reconciler_runs_total", "reconciler_missed_slots_total",
            "reconciler_manifest_errors", "reconciler_is_writer",
            "reconciler_last_reconcile_timestamp_seconds",
            "reconciler_next_fire_timestamp_seconds"} <= used
    failing = alerts["ReconcilerTaskFailing"]["expr"]
    assert 'status=~"failed|timed_out"' in failing and failing.rstrip().endswith(">= 3")
    assert 'task!~"weekly-.*"' in alerts["ReconcilerNoRecentSuccess"]["expr"]


# -------------------------------------------------------------------- network


def test_network_policy(helm: Helm, ha_values: Path) -> None:
    rendered = helm.template(ha_values)
    policy = rendered.one("NetworkPolicy")
    selector = rendered.deployment["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    peers = ingress["from"]
    assert {"podSelector": {"matchLabels": {f"{FULLNAME}-client": "true"}}} in peers
    # `helm test` and the db-upgrade Job carry the client label.
    test_pod = rendered.one("Pod")
    assert test_pod["metadata"]["labels"][f"{FULLNAME}-client"] == "true"
    egress = policy["spec"]["egress"]
    assert {"port": 53, "protocol": "UDP"} in egress[0]["ports"]
    assert any(p == {"port": 5432, "protocol": "TCP"} for r in egress for p in r.get("ports", []))


def test_helm_test_pod_checks_readyz_through_the_service(helm: Helm, sqlite_values: Path) -> None:
    rendered = helm.template(sqlite_values)
    pod = rendered.one("Pod", f"{FULLNAME}-test-readyz")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    service = rendered.one("Service")
    assert f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/readyz" \
        in script


# ------------------------------------------------------------------ NOTES.txt


def test_notes_tell_how_to_reach_the_dashboard_and_run_diff(
    helm: Helm, sqlite_values: Path
) -> None:
    proc = helm.run("install", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(sqlite_values),
                    "--dry-run=client")
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"port-forward service/{FULLNAME} 8080:8080" in notes
    assert "http://127.0.0.1:8080/" in notes
    assert "reconciler diff --manifests /manifests" in notes
    assert "--against-ref origin/main" in notes
    assert f"secret {FULLNAME}-api-token" in notes


# ---------------------------------------------------------------- values.yaml


def test_every_key_in_values_yaml_is_commented() -> None:
    """Each key has a comment above it, or sits in the default value of a `# --` key."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    stack: list[tuple[int, bool]] = []  # (indent, documented with "# --") of open keys
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(- )?([A-Za-z][\w.-]*):", line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent = len(m.group(1)) + (2 if m.group(2) else 0)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith(
                "# --"):
            j -= 1
        has_dash_doc = j >= 0 and lines[j].strip().startswith("# --")
        has_comment = i > 0 and lines[i - 1].strip().startswith("#")
        inherited = any(doc for _, doc in stack)
        if not (has_comment or inherited) and not m.group(2):
            undocumented.append(f"values.yaml:{i + 1}: {m.group(3)}")
        stack.append((indent, has_dash_doc))
    assert not undocumented, "\n".join(undocumented)


def test_values_yaml_matches_its_schema_sections() -> None:
    """Every top-level key of values.yaml is typed in values.schema.json and vice versa."""
    import json

    values = load_yaml(CHART / "values.yaml")
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) == set(schema["properties"]) - {"global"}

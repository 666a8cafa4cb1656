"""`helm lint --strict` and Kubernetes schema validation of every CI values file.

Every object rendered from ``charts/reconciler/ci/*.yaml`` is validated with
kubernetes-validate in strict mode (unknown fields are errors) against the oldest
Kubernetes version the chart supports (1.28, see Chart.yaml's kubeVersion) and the newest
one kubernetes-validate ships. The Prometheus Operator kinds are not in Kubernetes'
schemas: they are validated against the JSON schemas in ``tests/helm/schemas/`` (a
strict subset of the operator's CRDs).
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import kubernetes_validate.utils as kv
import pytest
from chartlib import CHART, CI_VALUES, Helm, Rendered, validate_crd, validation_failures

OLDEST = "1.28.0"
NEWEST = kv.latest_version()
VERSIONS = sorted({OLDEST, NEWEST})

def test_there_are_the_three_ci_values_files() -> None:
    names = {p.name for p in CI_VALUES}
    assert {
        "single-sqlite-values.yaml",
        "ha-postgres-zookeeper-gitsync-values.yaml",
        "ingress-monitoring-values.yaml",
    } <= names


def test_supported_versions_are_shipped_by_kubernetes_validate() -> None:
    shipped = kv.all_versions()
    assert OLDEST in shipped, shipped
    assert NEWEST != OLDEST


# The chart's defaults (no values file at all), then every CI values file.
DEFAULTS_AND_CI = [None, *CI_VALUES]


def values_id(values: Path | None) -> str:
    return "defaults" if values is None else values.stem


@pytest.mark.parametrize("values", DEFAULTS_AND_CI, ids=values_id)
def test_helm_lint_strict(helm: Helm, values: Path | None) -> None:
    files = [] if values is None else ["-f", str(values)]
    proc = helm.run("lint", "--strict", str(CHART), *files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("values", DEFAULTS_AND_CI, ids=values_id)
def test_rendered_objects_validate_strictly(helm: Helm, values: Path | None, version: str
                                            ) -> None:
    rendered = helm.template() if values is None else helm.template(values)
    assert rendered.docs
    failures = validation_failures(rendered.docs, version)
    assert not failures, "\n".join(failures)


def test_crd_kinds_are_rendered_and_their_schemas_have_teeth(
    helm: Helm, monitoring_values: Path
) -> None:
    """The CRD check is not vacuous: both kinds render, and a misspelt field fails."""
    rendered: Rendered = helm.template(monitoring_values)
    monitor = rendered.one("ServiceMonitor")
    rule = rendered.one("PrometheusRule")
    for doc in (monitor, rule):
        validate_crd(doc)
    bad = json.loads(json.dumps(monitor))
    bad["spec"]["endpoints"][0]["scrapeTimout"] = "10s"
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(bad)
    bad = json.loads(json.dumps(rule))
    bad["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(bad)


def test_strict_kubernetes_validation_has_teeth(helm: Helm, sqlite_values: Path) -> None:
    deployment = json.loads(json.dumps(helm.template(sqlite_values).deployment))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/"
    with pytest.raises(jsonschema.ValidationError):
        kv.validate(deployment, OLDEST, strict=True)

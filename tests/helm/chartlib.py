"""Helpers of the Helm chart tests: run a real ``helm``, parse what it renders."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "reconciler"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
RELEASE = "r"
NAMESPACE = "sched"


def load_fetcher() -> Any:
    spec = importlib.util.spec_from_file_location("_helm_fetch", REPO / "tests/services/helm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Rendered:
    """The documents of one `helm template` run, with lookups by kind and name."""

    docs: list[dict[str, Any]]
    text: str

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    def has(self, kind: str) -> bool:
        return bool(self.all(kind))

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    def container(self, name: str = "reconciler") -> dict[str, Any]:
        pod = self.pod
        for c in pod["containers"] + pod.get("initContainers", []):
            if c["name"] == name:
                return c
        raise AssertionError(f"no container {name}")


@dataclass
class Helm:
    binary: Path
    _cache: dict[tuple[Any, ...], Rendered] = field(default_factory=dict)

    def run(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        # Keep helm away from the user's configuration and caches.
        for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"),
                         ("HELM_DATA_HOME", "data")):
            env[var] = str(self.binary.parent / "home" / sub)
        proc = subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                              timeout=60, env=env, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    @staticmethod
    def _args(values: Iterable[Path | str], sets: Mapping[str, Any], extra: Iterable[str]
              ) -> list[str]:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        for v in values:
            args += ["-f", str(v)]
        for key, value in sets.items():
            flag = "--set-string" if isinstance(value, str) else "--set"
            if isinstance(value, bool):
                value = "true" if value else "false"
            args += [flag, f"{key}={value}"]
        return args + list(extra)

    def template(self, *values: Path | str, sets: Mapping[str, Any] | None = None,
                 extra: Iterable[str] = ()) -> Rendered:
        key = (tuple(map(str, values)), tuple(sorted((sets or {}).items())), tuple(extra))
        if key not in self._cache:
            proc = self.run(*self._args(values, sets or {}, extra), check=True)
            docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
            self._cache[key] = Rendered(docs, proc.stdout)
        return self._cache[key]

    def template_error(self, *values: Path | str, sets: Mapping[str, Any] | None = None,
                       extra: Iterable[str] = ()) -> str:
        """Render expecting a failure; return helm's error output."""
        proc = self.run(*self._args(values, sets or {}, extra))
        assert proc.returncode != 0, f"rendering unexpectedly succeeded:\n{proc.stdout[:2000]}"
        return proc.stderr


def flag(args: list[str], name: str) -> str | None:
    """The value of ``name`` in an argv using ``--flag value`` or ``--flag=value``."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def load_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


# ------------------------------------------------------------------ validation

SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): SCHEMAS / "prometheusrule-monitoring-v1.json",
}


def validate_crd(doc: dict[str, Any]) -> None:
    """Validate a Prometheus Operator object against its schema in tests/helm/schemas/."""
    import json

    import jsonschema

    schema = json.loads(CRD_SCHEMAS[(doc["apiVersion"], doc["kind"])].read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)


def validation_failures(docs: Iterable[dict[str, Any]], version: str) -> list[str]:
    """Strict validation of rendered objects: Kubernetes kinds with kubernetes-validate,
    CRD kinds with their own schemas. Returns one message per invalid object."""
    import jsonschema
    import kubernetes_validate.utils as kv

    failures = []
    for doc in docs:
        label = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            if (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS:
                validate_crd(doc)
            else:
                kv.validate(doc, version, strict=True)
        except kv.SchemaNotFoundError as exc:
            failures.append(f"{label}: no schema ({exc.message})")
        except jsonschema.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path)
            failures.append(f"{label}: {path}: {exc.message}")
    return failures

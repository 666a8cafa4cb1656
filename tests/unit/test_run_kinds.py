"""The executor kinds are declared once (core.model.RunKind); every place that lists
them derives from that declaration, so a new kind cannot be added half-way."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.api.views import run_type
from reconciler.core.model import RUN_TARGETS, RunSpec
from reconciler.executors.dispatch import EXECUTORS, DispatchExecutor

SPECS = Path(__file__).resolve().parents[2] / "specs"


def test_every_kind_is_a_run_field_with_an_executor() -> None:
    assert set(RUN_TARGETS) <= set(RunSpec.model_fields)
    assert list(EXECUTORS) == list(RUN_TARGETS)
    assert set(DispatchExecutor().executors) == set(RUN_TARGETS)


def test_the_views_and_the_published_documents_follow_the_declaration() -> None:
    for kind in RUN_TARGETS:
        assert run_type({"spec": {"run": {kind: "x"}}}) == kind
    schema = json.loads((SPECS / "task.schema.json").read_text())
    text = json.dumps(schema)
    assert all(f'"{kind}"' in text for kind in RUN_TARGETS)
    openapi = json.loads((SPECS / "openapi.json").read_text())
    run_type_schema = openapi["components"]["schemas"]["TaskSummary"]["properties"]["runType"]
    enums = [v for option in run_type_schema.get("anyOf", [run_type_schema])
             for v in option.get("enum", [])]
    assert enums == list(RUN_TARGETS)

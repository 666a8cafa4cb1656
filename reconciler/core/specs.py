"""Machine-readable contracts generated from the code (``specs/*.json``).

``make specs`` (or ``reconciler schema``) writes them; a test regenerates them and
fails when the committed files are stale, so the published schema can never drift
from what the validator actually accepts.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler.core.model import TaskManifest
from reconciler.core.plan_document import PlanDocument

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE = "https://reconciler.dev/schemas/v1/"


def task_schema() -> dict[str, Any]:
    schema = TaskManifest.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": SCHEMA_DIALECT, "$id": SCHEMA_BASE + "task.schema.json", **schema}


def plan_schema() -> dict[str, Any]:
    schema = PlanDocument.model_json_schema(by_alias=True, mode="serialization")
    return {"$schema": SCHEMA_DIALECT, "$id": SCHEMA_BASE + "plan.schema.json", **schema}


SPECS = {"task.schema.json": task_schema, "plan.schema.json": plan_schema}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

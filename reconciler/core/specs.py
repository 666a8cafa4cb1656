"""Machine-readable contracts generated from the code (``specs/*.json``).

``make specs`` (or ``reconciler schema``) writes them; a test regenerates them and
fails when the committed files are stale, so the published schema can never drift
from what the validator actually accepts.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from reconciler.core.calendars import CalendarManifest
from reconciler.core.channels import ChannelManifest
from reconciler.core.model import TaskManifest
from reconciler.core.notify import NotificationEvent
from reconciler.core.plan_document import PlanDocument

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE = "https://reconciler.dev/schemas/v1/"


def close_keyed_maps(node: Any) -> Any:
    """Add ``additionalProperties: false`` to every map whose keys must match a pattern.

    Pydantic writes a dict with constrained keys (``env``, ``labels``, ``annotations``,
    http ``headers``) as ``patternProperties`` alone, which lets any key that does not
    match through unchecked; the validator refuses such a key ("invalid key").
    """
    if isinstance(node, dict):
        if "patternProperties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            close_keyed_maps(value)
    elif isinstance(node, list):
        for value in node:
            close_keyed_maps(value)
    return node


def task_schema() -> dict[str, Any]:
    schema = close_keyed_maps(TaskManifest.model_json_schema(by_alias=True, mode="validation"))
    return {"$schema": SCHEMA_DIALECT, "$id": SCHEMA_BASE + "task.schema.json", **schema}


def plan_schema() -> dict[str, Any]:
    schema = PlanDocument.model_json_schema(by_alias=True, mode="serialization")
    return {"$schema": SCHEMA_DIALECT, "$id": SCHEMA_BASE + "plan.schema.json", **schema}


def _manifest_schema(model: type[BaseModel], file: str) -> dict[str, Any]:
    schema = close_keyed_maps(model.model_json_schema(by_alias=True, mode="validation"))
    return {"$schema": SCHEMA_DIALECT, "$id": SCHEMA_BASE + file, **schema}


def channel_schema() -> dict[str, Any]:
    return _manifest_schema(ChannelManifest, "channel.schema.json")


def calendar_schema() -> dict[str, Any]:
    return _manifest_schema(CalendarManifest, "calendar.schema.json")


def notification_schema() -> dict[str, Any]:
    schema = NotificationEvent.model_json_schema(by_alias=True, mode="serialization")
    return {"$schema": SCHEMA_DIALECT, "$id": SCHEMA_BASE + "notification.schema.json",
            **schema}


SPECS = {"task.schema.json": task_schema, "plan.schema.json": plan_schema,
         "channel.schema.json": channel_schema, "notification.schema.json": notification_schema,
         "calendar.schema.json": calendar_schema}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

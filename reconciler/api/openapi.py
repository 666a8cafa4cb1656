"""``specs/openapi.json``: the OpenAPI document of the HTTP API, generated from the app."""

from __future__ import annotations

from typing import Any


def openapi_document() -> dict[str, Any]:
    from reconciler.api.app import create_app

    document: dict[str, Any] = create_app(None).openapi()
    return document

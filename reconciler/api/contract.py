"""Which statuses each operation of the OpenAPI document declares, derived from its route.

A route declares in its decorator only what its own handler decides: its success
status(es) and the errors its handler raises itself (409 on a conflicting trigger, the
202 of a cancel that a live run still has to honour). Everything else a route can answer
follows from how it is built, and :func:`install` adds it to the document, with the one
error body (:class:`~reconciler.api.models.ErrorResponse`) and the one description per
status in :data:`ERRORS`:

* every route: 400 (``Host`` not allowed, invalid ``Content-Length``, or a parameter
  value the handler refuses), 405 (another method on this path), 413 (body over the
  limit), 500 (an unexpected error, logged);
* a route with parameters or a body: 422; with path parameters: 404;
* a route that depends on the bearer-token check: the statuses of that dependency
  (401 for a reader, plus 403 for a writer, 503 when the daemon or its database is
  unavailable).

The served ``/api/v1/openapi.json`` and ``specs/openapi.json`` are the same document.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from reconciler.api.models import ErrorResponse

ERRORS: Mapping[int, str] = {
    400: "Bad request: a parameter value the endpoint refuses (a label selector, a run "
         "status), an invalid Content-Length, or a Host that is not allowed (DNS "
         "rebinding protection).",
    401: "A token is required (a mutation, or reads with --auth-reads) or the token is "
         "invalid, expired or removed.",
    403: "Mutations are disabled: no API token is configured.",
    404: "Not found.",
    405: "Method not allowed: this path does not answer the method used (see Allow).",
    409: "Conflict with the task's or run's current state.",
    413: "Request body too large.",
    422: "Invalid parameters or body.",
    500: "Internal error (the daemon logged the details).",
    503: "The database is unavailable, or the daemon is shutting down.",
}
EVERY_ROUTE = (400, 405, 413, 500)
HEADERS: Mapping[int, Mapping[str, str]] = {
    401: {"WWW-Authenticate": "The Bearer challenge."},
    405: {"Allow": "The methods this path answers."},
}
ERROR_REF = "#/components/schemas/" + ErrorResponse.__name__
_FASTAPI_DEFAULTS = ("HTTPValidationError", "ValidationError")


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for errors a handler raises itself (the rest are derived)."""
    return {s: {"model": ErrorResponse, "description": ERRORS[s]} for s in statuses}


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _calls(dep)


def derived_statuses(route: APIRoute, operation: Mapping[str, Any],
                     dependencies: Mapping[Callable[..., Any], Sequence[int]]) -> set[int]:
    """The error statuses ``route`` can answer by how it is built (see the module)."""
    statuses = set(EVERY_ROUTE)
    parameters = operation.get("parameters", [])
    if parameters or "requestBody" in operation:
        statuses.add(422)
    if any(p.get("in") == "path" for p in parameters):
        statuses.add(404)
    for call in _calls(route.dependant):
        statuses.update(dependencies.get(call, ()))
    return statuses


def flat_routes(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """``app.routes`` with each included router replaced by its own routes, in order.

    Older FastAPI versions copy an included router's routes into ``app.routes``; newer
    ones keep the router whole there, and ``iter_route_contexts`` walks into it. The
    app includes its routers with no prefix and no dependencies of their own, so a
    router's route is the app's route as it is.
    """
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:
        return list(routes)
    return [context.original_route for context in contexts(routes)]


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": ERRORS[status],
        "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
    }
    if status in HEADERS:
        response["headers"] = {
            name: {"description": text, "required": True, "schema": {"type": "string"}}
            for name, text in HEADERS[status].items()
        }
    return response


def complete(document: dict[str, Any], routes: Sequence[BaseRoute],
             dependencies: Mapping[Callable[..., Any], Sequence[int]]) -> dict[str, Any]:
    """Add the derived error responses of every route to ``document`` (in place)."""
    for route in flat_routes(routes):
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = document["paths"][route.path_format][method.lower()]
            responses = operation["responses"]
            for status in sorted(derived_statuses(route, operation, dependencies)):
                if status not in route.responses:  # a route's own declaration wins
                    responses[str(status)] = _error_response(status)
            operation["responses"] = dict(sorted(responses.items()))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    if ErrorResponse.__name__ not in schemas:  # no route declared an error of its own
        error_schema = ErrorResponse.model_json_schema(
            mode="serialization", ref_template="#/components/schemas/{model}")
        for name, schema in error_schema.pop("$defs", {}).items():
            schemas.setdefault(name, schema)
        schemas[ErrorResponse.__name__] = error_schema
    text = json.dumps(document["paths"])
    for name in _FASTAPI_DEFAULTS:  # FastAPI's own 422 body, replaced above
        if f'"#/components/schemas/{name}"' not in text:
            schemas.pop(name, None)
    return document


def install(app: FastAPI, dependencies: Mapping[Callable[..., Any], Sequence[int]]) -> None:
    """Make ``app.openapi()`` return the completed document.

    ``dependencies`` maps a dependency (the token check of readers, of writers) to the
    statuses it can answer with.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate(), app.routes, dependencies)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

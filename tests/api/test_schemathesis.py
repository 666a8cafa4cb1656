"""Property-based run of ``specs/openapi.json`` against the API: no 5xx, responses conform.

The app runs in-process on one event loop in a background thread (a real daemon on
SQLite with a fake executor, as in conftest.py); schemathesis generates requests from
the committed OpenAPI document and every response is checked against it. Requests carry
a valid token so the mutations are exercised too; the endless ``/api/v1/events`` stream
is left out. Examples are bounded so the whole run stays well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import AUTH, LoopServer

SPEC = Path(__file__).resolve().parents[2] / "specs" / "openapi.json"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

schema = schemathesis.openapi.from_path(SPEC)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopServer]:
    s = LoopServer(tmp_path_factory.mktemp("schemathesis"))
    yield s
    s.close()


@schema.exclude(path="/api/v1/events").parametrize()
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_openapi_document_holds(case: Any, server: LoopServer) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=dict(AUTH))
    response = server.call(kwargs)
    case.validate_response(response, checks=CHECKS, headers=kwargs["headers"])

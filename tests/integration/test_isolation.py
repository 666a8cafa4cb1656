"""Executors with isolation settings, on real processes and a real HTTP receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from reconciler.core.isolation import idempotency_key
from reconciler.core.model import HttpTarget, RunSpec
from reconciler.core.runtime import RunStatus
from tests.integration.test_executors import SLOT, execute

pytestmark = pytest.mark.integration


class _Receiver(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        self.seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_Receiver,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_receiver_of_an_http_task_sees_the_key(
    receiver: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = receiver
    for attempt in (1, 2):
        result = execute(RunSpec(http=HttpTarget(url=url)), attempt=attempt)
        assert result.status is RunStatus.SUCCEEDED, result
    result = execute(RunSpec(http=HttpTarget(url=url, idempotency_key=False)))
    assert result.status is RunStatus.SUCCEEDED, result
    first, retry, opted_out = seen
    assert first["idempotency-key"] == retry["idempotency-key"] == idempotency_key("demo", SLOT)
    assert "idempotency-key" not in opted_out


def test_a_process_gets_the_key_in_its_environment() -> None:
    result = execute(RunSpec(shell="echo $RECONCILER_IDEMPOTENCY_KEY"))
    assert result.output_tail == idempotency_key("demo", SLOT) + "\n"

"""Per-address refusals are decided from the request line, before the app runs.

A real :class:`ApiServer` on an ephemeral port with small limits and an app that counts
the requests it is handed: a request refused for its address's rate (``429``) or
connection cap (``503``) never reaches the app (the daemon's loop); ``/healthz`` and
``/readyz`` always do; other addresses are served. The token bucket itself is checked
with explicit times.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from starlette.types import Receive, Scope, Send

from reconciler.api.limits import (
    BUSY_SWITCH_INTERVAL_S,
    Limits,
    LoadState,
    SwitchInterval,
    TickGate,
)
from reconciler.api.server import ApiServer
from tests.api.conftest import harness, run

T = TypeVar("T")


def test_the_bucket_allows_a_burst_then_the_rate_per_address() -> None:
    state = LoadState(Limits(rate_per_client=2.0, burst_per_client=3))
    assert [state.take("a", now=100.0) for _ in range(4)] == [True, True, True, False]
    assert state.take("b", now=100.0)  # another address has its own bucket
    assert not state.take("a", now=100.2)  # 0.4 of a request refilled
    assert state.take("a", now=100.5)  # one refilled
    assert not state.take("a", now=100.5)
    assert [state.take("a", now=200.0) for _ in range(4)] == [True, True, True, False]


def test_a_rate_of_zero_is_no_limit() -> None:
    state = LoadState(Limits(rate_per_client=0, burst_per_client=1))
    assert all(state.take("a", now=1.0) for _ in range(100))


def test_refilled_buckets_are_forgotten() -> None:
    state = LoadState(Limits(rate_per_client=1.0, burst_per_client=2, max_connections=1))
    for n in range(5):
        assert state.take(f"10.0.0.{n}", now=0.0)
    assert state.take("10.0.0.9", now=10.0)  # the others have refilled: dropped
    assert set(state._buckets) == {"10.0.0.9"}


def exchange(port: int, chunks: list[bytes], source: str = "127.0.0.1") -> bytes:
    """Send ``chunks`` on one connection (``Connection: close`` requests); all it gets."""
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        data = b""
        while piece := sock.recv(65536):
            data += piece
    return data


def get(path: str, close: bool = True) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n").encode()


def serve(limits: Limits, body: Callable[[ApiServer], T],
          gate: TickGate | None = None) -> tuple[T, list[str]]:
    """Run ``body(server)`` on a thread against a server with ``limits``; what it
    returned and the paths the app was handed."""
    handed: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        handed.append(scope["path"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main() -> T:
        server = ApiServer(app, "127.0.0.1:0", limits=limits, gate=gate)
        server.start()
        try:
            return await asyncio.to_thread(body, server)
        finally:
            await server.stop()

    return asyncio.run(main()), handed


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def test_past_its_rate_an_address_gets_429_before_the_app_probes_still_pass() -> None:
    def body(server: ApiServer) -> list[int]:
        answers = [exchange(server.port, [get("/api/v1/tasks")]) for _ in range(3)]
        answers.append(exchange(server.port, [get("/healthz")]))
        answers.append(exchange(server.port, [b"HEAD /readyz?x=1 HTTP/1.1\r\n",
                                              b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n"]))
        answers.append(exchange(server.port, [get("/api/v1/tasks")], source="127.0.0.2"))
        assert answers[2].endswith(b"too many requests from this address")
        return [status(a) for a in answers]

    statuses, handed = serve(Limits(rate_per_client=0.001, burst_per_client=2), body)
    assert statuses == [200, 200, 429, 200, 200, 200]
    assert handed == ["/api/v1/tasks", "/api/v1/tasks", "/healthz", "/readyz",
                      "/api/v1/tasks"]


def test_each_request_on_a_kept_alive_connection_is_counted() -> None:
    def body(server: ApiServer) -> bytes:
        return exchange(server.port, [get("/a", close=False) + get("/b", close=False)
                                      + get("/c")])

    answer, handed = serve(Limits(rate_per_client=0.001, burst_per_client=2), body)
    assert answer.count(b"HTTP/1.1 200") == 2
    assert b"HTTP/1.1 429" in answer
    assert handed == ["/a", "/b"]


def test_past_its_connection_cap_an_address_is_refused_before_the_app() -> None:
    def body(server: ApiServer) -> list[int]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10):
            # a request line split across packets is screened whole
            answers = [exchange(server.port, [b"GET /api/v1/ta", b"sks HTTP/1.1\r\n",
                                              b"Host: 127.0.0.1\r\n\r\n"]),
                       exchange(server.port, [b"GET /heal", b"thz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                              b"Connection: close\r\n\r\n"])]
        assert answers[0].endswith(b"too many connections from this address")
        return [status(a) for a in answers]

    statuses, handed = serve(Limits(per_client=1, rate_per_client=0), body)
    assert statuses == [503, 200]
    assert handed == ["/healthz"]


def test_the_switch_interval_is_short_only_while_connections_are_open() -> None:
    before = sys.getswitchinterval()
    switch = SwitchInterval(busy=before / 4)
    try:
        switch.opened()
        switch.opened()
        assert sys.getswitchinterval() == before / 4  # the scheduler waits less for the GIL
        switch.closed()
        assert sys.getswitchinterval() == before / 4  # one is still open
        switch.closed()
        assert sys.getswitchinterval() == before  # idle: fewer switches, less CPU
    finally:
        sys.setswitchinterval(before)


def test_a_real_connection_shortens_the_switch_interval_until_it_closes() -> None:
    idle = sys.getswitchinterval()

    def body(server: ApiServer) -> list[float]:
        seen = []
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(get("/a", close=False))
            assert b"200" in sock.recv(65536)
            seen.append(sys.getswitchinterval())
        deadline = time.monotonic() + 10
        while sys.getswitchinterval() != idle and time.monotonic() < deadline:
            time.sleep(0.01)  # the server notices the close on its own thread
        seen.append(sys.getswitchinterval())
        return seen

    seen, _ = serve(Limits(rate_per_client=0), body)
    assert seen == [min(idle, BUSY_SWITCH_INTERVAL_S), idle]


def test_the_api_holds_back_while_the_scheduler_starts_a_tick() -> None:
    gate = TickGate(max_yield=30.0)

    def body(server: ApiServer) -> tuple[float, int]:
        gate.busy(True)
        threading.Timer(0.3, gate.busy, args=(False,)).start()
        start = time.monotonic()
        answer = exchange(server.port, [get("/api/v1/tasks")])
        return time.monotonic() - start, status(answer)

    (took, code), handed = serve(Limits(rate_per_client=0), body, gate)
    assert code == 200 and handed == ["/api/v1/tasks"]
    assert 0.25 <= took < 10  # held until the tick's end, not the 30 s bound
    assert gate.waits >= 1


def test_a_tick_that_never_ends_holds_the_api_back_only_briefly() -> None:
    gate = TickGate(max_yield=0.2)

    def body(server: ApiServer) -> tuple[float, int]:
        gate.busy(True)  # and never False: a tick stuck on the database
        start = time.monotonic()
        codes = [status(exchange(server.port, [get("/healthz")])) for _ in range(5)]
        assert codes == [200] * 5
        return time.monotonic() - start, gate.waits

    (took, waits), _ = serve(Limits(rate_per_client=0), body, gate)
    assert took < 5 and waits >= 1  # the bound counts from the tick's start


def test_the_daemon_wires_its_scheduler_ticks_to_its_api_server(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            gate = h.daemon.api.gate
            assert isinstance(gate, TickGate) and gate.max_yield > 0
            seen: list[bool] = []
            real_tick = h.daemon.scheduler._tick

            async def tick(due: Any, now: Any) -> int:
                seen.append(gate._clear.is_set())
                result: int = await real_tick(due, now)
                return result

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(h.daemon.scheduler, "_tick", tick)
                await h.advance(60)  # nightly-report's schedule and others come due
            assert False in seen  # a tick with slots held the API back
            assert gate._clear.is_set()  # and let it go

    run(scenario)

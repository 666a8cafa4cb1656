"""Connection and request limits of the API server, and probes that answer under load.

Enforced before the app sees a request (all on the server's event loop):

* **Request-head timeout**: a connection must deliver a complete request head within
  ``head_timeout`` of being opened or of its previous response (keep-alive); otherwise
  it is closed. Idle sockets and slowly dripped headers cannot pile up.
* **Connections per client address**: past ``per_client`` open connections from one
  address, a new connection from it is answered only for ``/healthz`` and ``/readyz``;
  any other request on it gets ``503`` and the connection is closed.
* **Request rate per client address**: each address has a token bucket of
  ``burst_per_client`` requests refilled at ``rate_per_client`` a second; a request
  past it gets ``429`` and the connection is closed (``rate_per_client`` 0: no limit).
* **Connections in all**: past ``max_connections`` a new connection is answered
  ``503`` at once, without reading it, and closed.
* **Requests in flight**: past ``max_requests`` requests being answered (probes not
  counted), a request gets ``503``.
* **Streams**: the event stream and followed run logs count against ``max_streams``
  in all and ``streams_per_client`` per address; past either, ``503``.

``/healthz`` and ``/readyz`` are never refused by the request, rate and stream limits,
and a client over its connection cap may still ask them, so a liveness probe keeps
passing while the limits turn an attacker away.

The per-address refusals are decided from the request line alone, before the request
is parsed or handed to the app (:meth:`GuardedProtocol.data_received`): a refused
request costs the server a few microseconds and never reaches the daemon's loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import h11
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("reconciler.api")

PROBES = frozenset({"/healthz", "/readyz"})
PROBE_LINES = frozenset(f"{method} {path}".encode() for method in ("GET", "HEAD")
                        for path in PROBES)
MAX_REQUEST_LINE = 8192
LINGER_S = 1.0  # a refused connection is read and dropped this long before closing


def refusal(status: bytes, message: bytes) -> bytes:
    """A complete ``connection: close`` response, written without the app."""
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(message)).encode() + b"\r\nretry-after: 1\r\n"
            b"connection: close\r\n\r\n" + message)


REFUSAL = refusal(b"503 Service Unavailable", b"too many connections")
REFUSALS = {
    "connections per client": refusal(b"503 Service Unavailable",
                                      b"too many connections from this address"),
    "request rate": refusal(b"429 Too Many Requests",
                            b"too many requests from this address"),
}


@dataclass(frozen=True)
class Limits:
    head_timeout: float = 5.0
    max_connections: int = 4096
    per_client: int = 64
    max_requests: int = 256
    max_streams: int = 128
    streams_per_client: int = 8
    rate_per_client: float = 100.0
    burst_per_client: int = 200

    @classmethod
    def of(cls, head_timeout: float, per_client: int, rate_per_client: float) -> Limits:
        """The daemon's flags: the burst is two seconds' worth of the rate."""
        return cls(head_timeout=max(0.1, head_timeout), per_client=max(1, per_client),
                   rate_per_client=rate_per_client,
                   burst_per_client=max(1, round(2 * rate_per_client)))


def is_stream(path: str) -> bool:
    """The event stream and a run's followed log (``/api/v1/runs/<id>/log``)."""
    return path == "/api/v1/events" or (path.startswith("/api/v1/runs/")
                                        and path.endswith("/log"))


#: While the API has connections open, the interpreter lock changes hands at least
#: this often: a busy API thread otherwise holds it for up to the default 5 ms before
#: the scheduler's thread gets it. With no connection open the default is kept: a
#: shorter interval costs every thread more switches (the firing benchmark saw +4% CPU).
BUSY_SWITCH_INTERVAL_S = 0.001


class SwitchInterval:
    """``sys.setswitchinterval`` shortened while any API connection is open (every
    server of the process counts), restored when the last one closes."""

    def __init__(self, busy: float = BUSY_SWITCH_INTERVAL_S) -> None:
        self.busy = busy
        self.open = 0
        self._idle = sys.getswitchinterval()
        self._lock = threading.Lock()

    def opened(self) -> None:
        with self._lock:
            self.open += 1
            if self.open == 1:
                self._idle = sys.getswitchinterval()
                sys.setswitchinterval(min(self._idle, self.busy))

    def closed(self) -> None:
        with self._lock:
            self.open -= 1
            if self.open == 0:
                sys.setswitchinterval(self._idle)


SWITCH = SwitchInterval()

#: How long the API thread may hold back for one tick of the scheduler, at most.
TICK_YIELD_S = 0.1


class TickGate:
    """The scheduler's ticks before the API's connections.

    The scheduler marks a tick (the runs of a second being decided, claimed and
    started) with :meth:`busy`; meanwhile the API thread, before it takes a new
    connection or a request's bytes, waits for the tick's end, blocked on an event
    (the interpreter lock is free for the scheduler's thread). It waits at most
    ``max_yield`` from the tick's start, so a tick stuck on a slow database never
    stops the API, and probes are answered late by at most that.
    """

    def __init__(self, max_yield: float = TICK_YIELD_S) -> None:
        self.max_yield = max_yield
        self._clear = threading.Event()
        self._clear.set()
        self._since = 0.0
        self.waits = 0  # how many times the API thread held back (tests, figures)

    def busy(self, on: bool) -> None:
        if on:
            self._since = time.monotonic()
            self._clear.clear()
        else:
            self._clear.set()

    def wait(self) -> None:
        """On the API thread: hold back while a tick is under way (bounded)."""
        if self._clear.is_set():
            return
        left = self.max_yield - (time.monotonic() - self._since)
        if left > 0:
            self.waits += 1
            self._clear.wait(left)


class LoadState:
    """What is open right now, shared by the protocol and :class:`LoadGuard`."""

    def __init__(self, limits: Limits, gate: TickGate | None = None) -> None:
        self.limits = limits
        self.gate = gate or TickGate(max_yield=0.0)
        self.connections: Counter[str] = Counter()
        self.streams: Counter[str] = Counter()
        self.requests = 0
        self.refused: Counter[str] = Counter()
        self._warned = 0.0
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def take(self, client: str, now: float | None = None) -> bool:
        """Take one request from ``client``'s bucket; ``False`` when it is empty."""
        rate, burst = self.limits.rate_per_client, self.limits.burst_per_client
        if rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(client, (float(burst), now))
        tokens = min(float(burst), tokens + (now - at) * rate)
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1, now)
        if len(self._buckets) > 4 * self.limits.max_connections:
            self._forget_full(now)
        return True

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled (they read as full when absent)."""
        rate, burst = self.limits.rate_per_client, self.limits.burst_per_client
        self._buckets = {client: (tokens, at) for client, (tokens, at) in self._buckets.items()
                         if tokens + (now - at) * rate < burst}

    def refuse(self, why: str, client: str) -> None:
        """Count a refusal; log at most one warning every 10 s."""
        self.refused[why] += 1
        now = time.monotonic()
        if now - self._warned >= 10:
            self._warned = now
            log.warning("API: refusing connections or requests (%s, from %s); refused so "
                        "far: %s", why, client, dict(self.refused))


async def unavailable(send: Send, message: bytes) -> None:
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"1"),
        (b"connection", b"close"), (b"content-length", str(len(message)).encode())]})
    await send({"type": "http.response.body", "body": message})


class LoadGuard:
    """Pure ASGI: the request, stream and per-connection probe-only limits."""

    def __init__(self, app: ASGIApp, state: LoadState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        state, limits = self.state, self.state.limits
        client = scope["client"][0] if scope.get("client") else ""
        if state.requests >= limits.max_requests:
            state.refuse("requests in flight", client)
            await unavailable(send, b"too many requests in flight")
            return
        stream = is_stream(scope["path"])
        if stream and (sum(state.streams.values()) >= limits.max_streams
                       or state.streams[client] >= limits.streams_per_client):
            state.refuse("streams", client)
            await unavailable(send, b"too many open streams")
            return
        state.requests += 1
        if stream:
            state.streams[client] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            state.requests -= 1
            if stream:
                state.streams[client] -= 1
                if state.streams[client] <= 0:
                    del state.streams[client]


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with the head timeout and the connection caps.

    ``load`` is set on a subclass per server (:func:`protocol_for`).
    """

    load: LoadState

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._address = ""
        self._counted = False
        self._over_cap = False
        self._screened = False  # the request being received has been screened
        self._refusing = False  # answered by the screen: the rest is read and dropped

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.load.gate.wait()
        super().connection_made(transport)
        load = self.load
        self._address = self.client[0] if self.client else ""
        if len(self.connections) > load.limits.max_connections:
            load.refuse("connections in all", self._address)
            transport.write(REFUSAL)
            transport.close()
            return
        self._counted = True
        SWITCH.opened()
        load.connections[self._address] += 1
        self._over_cap = load.connections[self._address] > load.limits.per_client
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._counted:
            self._counted = False
            SWITCH.closed()
            counts = self.load.connections
            counts[self._address] -= 1
            if counts[self._address] <= 0:
                del counts[self._address]
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusing:
            return
        self.load.gate.wait()
        if (not self._screened and self.conn.their_state is h11.IDLE
                and self._screen(self.conn.trailing_data[0] + data)):
            return
        super().data_received(data)

    def _screen(self, head: bytes) -> bool:
        """Screen a request by its request line, once it is complete and before the
        request is parsed: a probe passes; anything else from an address over its
        connection cap or request rate is answered here and the connection closed
        (``True``)."""
        end = head.find(b"\n")
        if self._screened or (end < 0 and len(head) < MAX_REQUEST_LINE):
            return False
        self._screened = True
        why = self._refused(head[:end] if end >= 0 else head)
        if why is None:
            return False
        self.load.refuse(why, self._address)
        self._refusing = True
        self.transport.write(REFUSALS[why])
        # Half-close and drop what else the client sends for a moment: closing with
        # unread bytes would reset the connection and could lose the answer.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(LINGER_S, self.transport.close)
        return True

    def _refused(self, request_line: bytes) -> str | None:
        """Why the request starting with ``request_line`` is refused, or ``None``."""
        method, _, rest = request_line.partition(b" ")
        target = rest.partition(b" ")[0].partition(b"?")[0]
        if method + b" " + target in PROBE_LINES:
            return None
        if self._over_cap:
            return "connections per client"
        if not self.load.take(self._address):
            return "request rate"
        return None

    def handle_events(self) -> None:
        if self._refusing:
            return
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a complete request head arrived
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        self._screened = False
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self._screen(self.conn.trailing_data[0])  # a pipelined request, if any
        super().on_response_complete()
        if (not self.transport.is_closing() and not self._refusing
                and self.conn.their_state is h11.IDLE):
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.load.limits.head_timeout,
                                                self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def protocol_for(load: LoadState) -> type[GuardedProtocol]:
    """A protocol class bound to one server's :class:`LoadState`."""
    return type("GuardedProtocol", (GuardedProtocol,), {"load": load})

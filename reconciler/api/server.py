"""Serve the API with uvicorn on the daemon's own event loop.

The daemon owns SIGTERM/SIGINT (it drains runs first), so uvicorn's signal handlers are
disabled; the daemon stops the server itself. The listening socket is bound before the
daemon starts anything else, so "address already in use" is a clean start-up error.

The served app is wrapped in :class:`~reconciler.api.app.HostGuard`: on a loopback
address only loopback names (``localhost``, ``127.0.0.1``, ``[::1]``), IP literals and
the configured ``allowed_hosts`` are answered, which defeats DNS rebinding from a web
page in the operator's browser. On other addresses any Host is answered unless
``allowed_hosts`` is given (``["*"]`` allows any, explicitly).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import uvicorn

from reconciler.api.app import HostGuard, HostPolicy
from reconciler.core.errors import ReconcilerError

log = logging.getLogger("reconciler.api")
DEFAULT_LISTEN = "127.0.0.1:8080"


class ListenError(ReconcilerError):
    """The API cannot listen on the requested address."""


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (= 127.0.0.1) -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ListenError(f"--listen {text!r}: expected [ipv6]:port")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ListenError(f"--listen {text!r}: expected host:port, e.g. 127.0.0.1:8080")
        host = host or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise ListenError(f"--listen {text!r}: {port!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise ListenError(f"--listen {text!r}: port out of range")
    return host, number


def bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the daemon handles signals
        yield


class ApiServer:
    """A bound socket and a uvicorn server for ``app``; :meth:`serve` runs until :meth:`stop`."""

    def __init__(self, app: Any, listen: str = DEFAULT_LISTEN,
                 allowed_hosts: Sequence[str] | None = None) -> None:
        host, port = parse_listen(listen)
        self.sock = bind(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        self.host_policy = HostPolicy.for_listen(host, allowed_hosts)
        served = app if self.host_policy is None else HostGuard(app, self.host_policy)
        config = uvicorn.Config(
            served,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=3,
            timeout_keep_alive=5,
            limit_concurrency=512,
            h11_max_incomplete_event_size=16 * 1024,
        )
        self.server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self.server.serve([self.sock]))
        log.info("API and dashboard on %s", self.url)
        return self._task

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sock.close()

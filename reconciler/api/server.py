"""Serve the API with uvicorn on a thread of its own; the app runs on the daemon's loop.

uvicorn (accepting, parsing, timeouts, the limits of :mod:`reconciler.api.limits`) runs
on its own event loop in the ``reconciler-api`` thread, so a flood of connections is
handled there and never lengthens the scheduler's loop iterations. Each admitted
request is handed to the app on the daemon's loop (:class:`LoopBridge`): every route,
every :class:`~reconciler.api.control.Operations` call and the event hub run on that
loop exactly as before; only the ASGI messages cross between the loops.

The daemon owns SIGTERM/SIGINT (it drains runs first), so uvicorn's signal handlers are
disabled; the daemon stops the server itself. The listening socket is bound before the
daemon starts anything else, so "address already in use" is a clean start-up error.

The served app is wrapped in :class:`~reconciler.api.security.HostGuard`: on a loopback
address only loopback names (``localhost``, ``127.0.0.1``, ``[::1]``), IP literals and
the configured ``allowed_hosts`` are answered, which defeats DNS rebinding from a web
page in the operator's browser. On other addresses any Host is answered unless
``allowed_hosts`` is given (``["*"]`` allows any, explicitly).

In front of that, :mod:`reconciler.api.limits` closes connections that send no request
head in time and bounds connections, requests and streams, with the probes exempt.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import resource
import socket
import threading
from collections.abc import Awaitable, Iterator, Sequence
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconciler.api.limits import Limits, LoadGuard, LoadState, TickGate, protocol_for
from reconciler.api.security import HostGuard, HostPolicy
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


def _fd_room(limits: Limits, spare: int = 256) -> Limits:
    """Raise the soft open-files limit so ``max_connections`` fits (up to the hard
    limit); if it still does not, lower the cap so accepting never fails for lack of
    descriptors (the probes need one too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.max_connections + spare
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft != resource.RLIM_INFINITY and soft < wanted:
        cap = max(16, soft - spare)
        log.warning("API: the open-files limit is %d: at most %d connections", soft, cap)
        return dataclasses.replace(limits, max_connections=cap)
    return limits


T = TypeVar("T")


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def _on(loop: asyncio.AbstractEventLoop, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` on ``loop`` (another thread's) and wait for it here;
    cancelling the wait cancels it there."""
    future = asyncio.run_coroutine_threadsafe(_await(awaitable), loop)
    return await asyncio.wrap_future(future)


class LoopBridge:
    """Pure ASGI, called on the server's loop: run ``app`` on the daemon's loop.

    ``receive`` and ``send`` are called back on the server's loop, where uvicorn's
    connection lives. ``target`` is set by :meth:`ApiServer.start`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.target: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        here, target = asyncio.get_running_loop(), self.target
        if target is None or target is here:
            await self.app(scope, receive, send)
            return

        async def receive_here() -> Message:
            return await _on(here, receive())

        async def send_here(message: Message) -> None:
            await _on(here, send(message))

        await _on(target, self.app(scope, receive_here, send_here))


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the daemon handles signals
        yield


class ApiServer:
    """A bound socket and a uvicorn server for ``app``; :meth:`serve` runs until :meth:`stop`."""

    def __init__(self, app: Any, listen: str = DEFAULT_LISTEN,
                 allowed_hosts: Sequence[str] | None = None,
                 limits: Limits | None = None, gate: TickGate | None = None) -> None:
        host, port = parse_listen(listen)
        self.sock = bind(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        self.host_policy = HostPolicy.for_listen(host, allowed_hosts)
        self.bridge = LoopBridge(app)
        #: what the limits hand admitted requests to: the Host guard, or the bridge
        self.served: ASGIApp = self.bridge
        if self.host_policy is not None:
            self.served = HostGuard(self.bridge, self.host_policy)
        self.load = LoadState(_fd_room(limits or Limits()), gate)
        config = uvicorn.Config(
            LoadGuard(self.served, self.load),
            http=protocol_for(self.load),
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=3,
            timeout_keep_alive=5,
            h11_max_incomplete_event_size=16 * 1024,
        )
        self.server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> asyncio.Task[None]:
        """Serve on the ``reconciler-api`` thread; the app runs on the calling loop."""
        loop = asyncio.get_running_loop()
        self.bridge.target = loop
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def serve() -> None:
            try:
                asyncio.run(self.server.serve([self.sock]))
            except BaseException as exc:  # handed to the daemon's loop
                done.set_exception(exc)
            else:
                done.set_result(None)

        self._thread = threading.Thread(target=serve, name="reconciler-api", daemon=True)
        self._thread.start()
        self._task = loop.create_task(self._served(done))
        log.info("API and dashboard on %s", self.url)
        return self._task

    @staticmethod
    async def _served(done: concurrent.futures.Future[None]) -> None:
        try:
            await asyncio.wrap_future(done)
        except Exception:
            log.exception("the API server failed")

    async def stop(self) -> None:
        self.server.should_exit = True  # uvicorn looks every 0.1 s
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sock.close()

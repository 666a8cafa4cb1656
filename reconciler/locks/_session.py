"""The ZooKeeper session of a coordinator: its state, connection state and lease.

Holds :class:`_Session`, the base of :class:`~reconciler.locks.coordinator.ZooKeeperCoordinator`:
every attribute of a coordinator (its parts in ``_election``, ``_membership`` and
``_changes`` only add behaviour), the connection state and session as each side saw it
last, the lease and its heartbeat thread; plus the client helpers (:func:`parse_hosts`,
:func:`namespace_root`, :func:`make_client`) and the types shared by the parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from kazoo.client import KazooClient
from kazoo.recipe.watchers import DataWatch
from kazoo.retry import KazooRetry

from reconciler.locks._bridge import InlineCallbackHandler

log = logging.getLogger("reconciler.zookeeper")

ENV_VAR = "RECONCILER_ZOOKEEPER"
DEFAULT_CHROOT = "/reconciler"
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class ConnectionState(StrEnum):
    CONNECTING = "connecting"  # before the first session
    CONNECTED = "connected"
    SUSPENDED = "suspended"  # disconnected; the session may still be alive
    LOST = "lost"  # the session expired; its ephemeral nodes (locks, membership) are gone
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """The change-notification znode moved on: ``version`` counts the bumps."""

    version: int
    info: dict[str, Any]


def parse_hosts(hosts: str) -> tuple[str, str]:
    """Split ``"zk-0:2181,zk-1:2181/chroot"`` into the server list and the chroot."""
    text = hosts.strip()
    servers, _, chroot = text.partition("/")
    servers = servers.strip().strip(",")
    if not servers or any(not part.strip() for part in servers.split(",")):
        raise ValueError(f"invalid ZooKeeper hosts {hosts!r} (expected host:port,host:port/chroot)")
    chroot = "/" + chroot.strip("/") if chroot.strip("/") else ""
    return servers, chroot


def namespace_root(chroot: str, namespace: str) -> str:
    """``<chroot>/<namespace>``; without a chroot, ``/reconciler/<namespace>``."""
    if not NAMESPACE_PATTERN.match(namespace) or namespace in (".", ".."):
        raise ValueError(
            f"invalid namespace {namespace!r} (letters, digits, '.', '_', '-'; at most 63)"
        )
    return f"{chroot or DEFAULT_CHROOT}/{namespace}"


def _package_version() -> str:
    # importlib.metadata rather than ``reconciler.__version__``: importing the root
    # package would make this adapter depend (for import-linter) on everything it names.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("reconciler")
    except PackageNotFoundError:
        return "unknown"


def make_client(hosts: str, *, session_timeout: float = 10.0,
                max_retry_delay: float = 0.5) -> KazooClient:
    """A KazooClient with a bounded reconnect backoff (kazoo's default grows to minutes)."""
    servers, _ = parse_hosts(hosts)
    return KazooClient(
        hosts=servers,
        timeout=session_timeout,
        handler=InlineCallbackHandler(),
        connection_retry=KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_jitter=0.2,
                                    max_delay=max_retry_delay),
        command_retry=KazooRetry(max_tries=10, delay=0.05, backoff=2, max_jitter=0.2,
                                 max_delay=max_retry_delay, deadline=session_timeout),
    )


StateListener = Callable[[ConnectionState], None]
WriterListener = Callable[[bool], None]
ChangeListener = Callable[[ChangeEvent], None]


class _Session:
    """The state of one coordinator, its connection state and its lease."""

    def __init__(
        self,
        hosts: str,
        *,
        namespace: str = "default",
        replica: str | None = None,
        version: str | None = None,
        session_timeout: float = 10.0,
        max_retry_delay: float = 0.5,
        lease_fraction: float = 0.75,
        op_timeout: float | None = None,
        elect: bool = True,
    ) -> None:
        if not 0 < lease_fraction < 1:
            raise ValueError("lease_fraction must be between 0 and 1")
        _, chroot = parse_hosts(hosts)
        self.hosts = hosts
        self.namespace = namespace
        self.root = namespace_root(chroot, namespace)
        self.replica = replica or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        if "/" in self.replica or not self.replica.strip():
            raise ValueError(f"invalid replica id {self.replica!r}")
        self.version = version if version is not None else _package_version()
        self.session_timeout = session_timeout
        self.lease_seconds = lease_fraction * session_timeout
        self.op_timeout = op_timeout if op_timeout is not None else max(0.5, session_timeout / 3)
        self.elect = elect
        self.started_at = datetime.now(UTC)
        self.client = make_client(hosts, session_timeout=session_timeout,
                                  max_retry_delay=max_retry_delay)
        self.members_path = f"{self.root}/members"
        self.election_path = f"{self.root}/election"
        self.changes_path = f"{self.root}/changes"
        self.locks_path = f"{self.root}/locks"

        # written by kazoo's threads (state listener, heartbeat), read anywhere
        self._thread_state = ConnectionState.CONNECTING
        self._session_id: int | None = None
        self._session_gen = 0
        self._closing = False
        self._lease_lock = threading.Lock()
        self._lease_until = 0.0
        self._lease_gen = 0
        self._kick_heartbeat = threading.Event()
        self._heartbeat: threading.Thread | None = None

        # loop side
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = ConnectionState.CONNECTING
        self._handled_gen = 0
        self._state_listeners: list[StateListener] = []
        self._writer_listeners: list[WriterListener] = []
        self._change_listeners: list[ChangeListener] = []
        self.connected = asyncio.Event()
        self._writer = False
        self._election_prefix = f"{uuid.uuid4().hex}__n_"
        self._election_node: str | None = None
        self._election_gen = -1
        self._election_kick = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._change_version: int | None = None
        self._change_info: dict[str, Any] = {}
        self._data_watch: DataWatch | None = None
        self._member_data = b""

    # ------------------------------------------------------------------- properties

    @property
    def state(self) -> ConnectionState:
        """The connection state as the loop last handled it."""
        return self._state

    @property
    def live_state(self) -> ConnectionState:
        """The connection state as kazoo's thread last reported it (may run ahead)."""
        return self._thread_state

    @property
    def session_id(self) -> int | None:
        return self._session_id

    @property
    def session_generation(self) -> int:
        """Bumped at every new session (the first one is 1)."""
        return self._session_gen

    @property
    def lease_remaining(self) -> float:
        """Seconds the session is still known to be alive (<= 0: maybe expired)."""
        if self._thread_state in (ConnectionState.LOST, ConnectionState.CLOSED):
            return 0.0
        with self._lease_lock:
            if self._lease_gen != self._session_gen:
                return 0.0
            return self._lease_until - time.monotonic()

    @property
    def lease_valid(self) -> bool:
        return self.lease_remaining > 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the coordinator is not started")
        return self._loop

    def add_state_listener(self, listener: StateListener) -> None:
        """``listener(state)`` on the event loop at every state change."""
        self._state_listeners.append(listener)

    def confirm(self, sent_at: float, generation: int) -> None:
        """A request sent at ``sent_at`` (monotonic) in session ``generation`` was answered."""
        with self._lease_lock:
            if generation != self._session_gen:
                return
            until = sent_at + self.lease_seconds
            if self._lease_gen != generation:
                self._lease_gen, self._lease_until = generation, until
            elif until > self._lease_until:
                self._lease_until = until

    async def wait_state(self, state: ConnectionState, timeout: float) -> None:
        """Wait (on the loop's view) until the state is ``state``; TimeoutError after."""
        deadline = time.monotonic() + timeout
        while self._state is not state:
            if time.monotonic() > deadline:
                raise TimeoutError(f"state is {self._state}, not {state} after {timeout}s")
            await asyncio.sleep(0.01)

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    def _heartbeat_loop(self) -> None:
        """Keep the lease fresh: one cheap request every T/4 while connected."""
        interval = self.session_timeout / 4
        while not self._closing:
            self._kick_heartbeat.wait(interval)
            self._kick_heartbeat.clear()
            if self._closing:
                return
            if self._thread_state is not ConnectionState.CONNECTED:
                continue
            gen, sent = self._session_gen, time.monotonic()
            try:
                self.client.exists_async(self.root).get(timeout=self.op_timeout)
            except Exception:  # noqa: S112 - any failure: the lease is not renewed  # nosec B112
                continue
            self.confirm(sent, gen)


def _stop(client: KazooClient) -> None:
    with contextlib.suppress(Exception):
        client.stop()
    with contextlib.suppress(Exception):
        client.close()

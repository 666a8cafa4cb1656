"""One ZooKeeper session per daemon: connection state, lease, membership, writer, changes.

Layout under the namespace root (``<chroot or /reconciler>/<namespace>``)::

    members/<replica>              ephemeral, JSON {id, host, pid, version, started_at}
    election/<prefix>__n_<seq>     ephemeral sequential: the lowest one is the writer
    changes                        persistent; the writer bumps it after applying
    locks/<task>                   ephemeral, one per claimed task (see claims.py)

Threads: kazoo runs its connection and callbacks on its own threads. The state
listener records the new state and session there (so ``lease_valid`` and claim
validity are right even before the loop runs again) and hands everything else to
the event loop with ``call_soon_threadsafe``: every listener of this module is
called on the loop.

Lease: the session is known to be alive at the server until ``T`` (the session
timeout) after the last request that got an answer was *sent*. A heartbeat thread
sends one every ``T/4``; ``lease_valid`` is False once ``lease_fraction * T`` passed
without one. It turns False on its own, without any event: after a SIGSTOP, a GC
pause or a silent network, the first thing the process sees is an expired lease, well
before kazoo reports LOST (which it only does after reconnecting).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from kazoo.exceptions import (
    KazooException,
    NodeExistsError,
    NoNodeError,
)
from kazoo.protocol.states import KazooState
from kazoo.recipe.watchers import DataWatch
from kazoo.retry import KazooRetry

from reconciler.core.errors import ReconcilerError
from reconciler.locks._bridge import InlineCallbackHandler, wait

log = logging.getLogger("reconciler.zookeeper")

ENV_VAR = "RECONCILER_ZOOKEEPER"
DEFAULT_CHROOT = "/reconciler"
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_SEQ_DIGITS = 10


class ConnectionState(StrEnum):
    CONNECTING = "connecting"  # before the first session
    CONNECTED = "connected"
    SUSPENDED = "suspended"  # disconnected; the session may still be alive
    LOST = "lost"  # the session expired; its ephemeral nodes (locks, membership) are gone
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    host: str | None
    pid: int | None
    version: str | None
    started_at: datetime | None
    session: str | None = None
    writer: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "session": self.session,
            "writer": self.writer,
        }


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


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _sequence(name: str) -> int:
    tail = name[-_SEQ_DIGITS:]
    return int(tail) if tail.isdigit() else -1


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


class ZooKeeperCoordinator:
    """One per daemon process. ``await start()``, use, ``await close()``.

    ``hosts`` is ``host:port[,host:port...][/chroot]``; everything lives under
    ``root`` = ``<chroot or /reconciler>/<namespace>``.
    """

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
    def is_writer(self) -> bool:
        """This replica leads the election and its session is certainly alive."""
        return self._writer and self._thread_state is ConnectionState.CONNECTED and (
            self.lease_valid
        )

    @property
    def change_version(self) -> int | None:
        return self._change_version

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the coordinator is not started")
        return self._loop

    def add_state_listener(self, listener: StateListener) -> None:
        """``listener(state)`` on the event loop at every state change."""
        self._state_listeners.append(listener)

    def add_writer_listener(self, listener: WriterListener) -> None:
        """``listener(is_writer)`` on the event loop when this replica gains/loses writing."""
        self._writer_listeners.append(listener)

    def add_change_listener(self, listener: ChangeListener) -> None:
        """``listener(event)`` on the event loop when the change znode was bumped."""
        self._change_listeners.append(listener)

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

    # -------------------------------------------------------------------- lifecycle

    async def start(self, timeout: float = 15.0) -> None:
        """Connect, create the namespace, register this member and join the election."""
        self._loop = asyncio.get_running_loop()
        self.client.add_listener(self._kazoo_listener)
        await asyncio.to_thread(self._start_blocking, timeout)
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, daemon=True,
                                           name=f"zk-lease-{self.replica}")
        self._heartbeat.start()
        self._tasks.append(self._loop.create_task(self._election_loop()))
        # The CONNECTED of the first session may have reached the loop before the
        # namespace existed; set the session up now (idempotent per generation).
        await self._on_new_session(self._session_gen)

    def _start_blocking(self, timeout: float) -> None:
        try:
            self.client.start(timeout=timeout)
        except Exception as exc:
            with contextlib.suppress(Exception):
                self.client.stop()
                self.client.close()
            raise ReconcilerError(
                f"cannot connect to ZooKeeper at {self.hosts} within {timeout:g}s: "
                f"{exc or type(exc).__name__}"
            ) from exc
        for path in (self.members_path, self.election_path, self.locks_path):
            self.client.retry(self.client.ensure_path, path)
        with contextlib.suppress(NodeExistsError):
            self.client.retry(self.client.create, self.changes_path, b"{}")
        self._data_watch = DataWatch(self.client, self.changes_path, self._on_change_data)

    async def close(self) -> None:
        """End the session: membership, election node and locks disappear at once."""
        if self._closing:
            return
        self._closing = True
        self._kick_heartbeat.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._set_writer(False)
        await asyncio.to_thread(self._close_blocking)
        self._thread_state = ConnectionState.CLOSED
        self._apply_state(ConnectionState.CLOSED, self._session_gen)

    def _close_blocking(self) -> None:
        with contextlib.suppress(Exception):
            self.client.stop()
        with contextlib.suppress(Exception):
            self.client.close()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)

    async def __aenter__(self) -> ZooKeeperCoordinator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_state(self, state: ConnectionState, timeout: float) -> None:
        """Wait (on the loop's view) until the state is ``state``; TimeoutError after."""
        deadline = time.monotonic() + timeout
        while self._state is not state:
            if time.monotonic() > deadline:
                raise TimeoutError(f"state is {self._state}, not {state} after {timeout}s")
            await asyncio.sleep(0.01)

    # --------------------------------------------------------- connection tracking

    def _kazoo_listener(self, kstate: str) -> None:
        """kazoo's connection thread: record, then hand over to the loop."""
        if self._closing:
            state = ConnectionState.CLOSED
        elif kstate == KazooState.CONNECTED:
            client_id = self.client.client_id
            session = client_id[0] if client_id else None
            if session != self._session_id or self._thread_state is ConnectionState.LOST or (
                self._session_gen == 0
            ):
                self._session_id = session
                self._session_gen += 1
            state = ConnectionState.CONNECTED
            self._kick_heartbeat.set()
        elif kstate == KazooState.SUSPENDED:
            state = ConnectionState.SUSPENDED
        else:
            state = ConnectionState.LOST
        self._thread_state = state
        gen = self._session_gen
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._apply_state, state, gen)

    def _apply_state(self, state: ConnectionState, gen: int) -> None:
        if self._state is ConnectionState.CLOSED:
            return
        previous = self._state
        self._state = state
        if state is ConnectionState.CONNECTED:
            self.connected.set()
        else:
            self.connected.clear()
        if state is not ConnectionState.CONNECTED:
            self._set_writer(False)
        if state is ConnectionState.LOST:
            self._election_node = None
        if state is ConnectionState.CONNECTED and not self._closing:
            if gen != self._handled_gen:
                self._spawn(self._on_new_session(gen))
            else:
                self._election_kick.set()  # same session back: re-check our place
        if state is not previous:
            log.info("ZooKeeper %s (session %s)", state,
                     f"{self._session_id:#x}" if self._session_id else None)
            for listener in list(self._state_listeners):
                try:
                    listener(state)
                except Exception:
                    log.exception("connection state listener failed")

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _on_new_session(self, gen: int) -> None:
        if gen == self._handled_gen or self._data_watch is None:
            return  # already done, or start() has not created the namespace yet
        self._handled_gen = gen
        try:
            await self._register_member()
        except (KazooException, TimeoutError) as exc:
            log.warning("could not register membership: %s", exc)
        self._election_node = None
        self._election_kick.set()

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

    # -------------------------------------------------------------------- membership

    def _member_payload(self) -> bytes:
        return json.dumps({
            "id": self.replica,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": self.version,
            "started_at": self.started_at.isoformat(),
            "session": f"{self._session_id:#x}" if self._session_id else None,
        }).encode()

    async def _register_member(self) -> None:
        path = f"{self.members_path}/{self.replica}"
        data = self._member_payload()
        for _ in range(2):
            try:
                await wait(self.client.create_async(path, data, ephemeral=True), self.loop,
                           self.op_timeout)
                return
            except NodeExistsError:
                stat = await wait(self.client.exists_async(path), self.loop, self.op_timeout)
                if stat is not None and stat.ephemeralOwner == self._session_id:
                    return
                # A previous incarnation with the same id whose session has not expired
                # yet (e.g. a pod restarted under the same name): this process replaces it.
                log.warning("replacing a stale membership node %s", path)
                with contextlib.suppress(NoNodeError):
                    await wait(self.client.delete_async(path), self.loop, self.op_timeout)

    async def members(self) -> list[Member]:
        """Every live replica (its ephemeral membership node), the writer flagged."""
        return await _read_members(self.client, self.root, self.loop, self.op_timeout)

    # ---------------------------------------------------------------------- election

    def _set_writer(self, value: bool) -> None:
        if value == self._writer:
            return
        self._writer = value
        log.info("this replica %s the writer", "is now" if value else "is no longer")
        for listener in list(self._writer_listeners):
            try:
                listener(value)
            except Exception:
                log.exception("writer listener failed")

    async def _election_loop(self) -> None:
        if not self.elect:
            return
        while not self._closing:
            await self._election_kick.wait()
            self._election_kick.clear()
            if self._thread_state is not ConnectionState.CONNECTED or self._data_watch is None:
                continue
            try:
                await self._election_step()
            except (KazooException, TimeoutError) as exc:
                log.debug("election step failed (%s); retrying", exc)
                await asyncio.sleep(0.1)
                self._election_kick.set()

    async def _election_step(self) -> None:
        loop, t = self.loop, self.op_timeout
        gen = self._session_gen
        if self._election_node is None or self._election_gen != gen:
            children = await wait(self.client.get_children_async(self.election_path), loop, t)
            mine = sorted((c for c in children if c.startswith(self._election_prefix)),
                          key=_sequence)
            if mine:  # created earlier in this session, the answer was lost
                node = mine[0]
            else:
                created = await wait(self.client.create_async(
                    f"{self.election_path}/{self._election_prefix}",
                    self.replica.encode(), ephemeral=True, sequence=True,
                ), loop, t)
                node = created.rsplit("/", 1)[1]
            self._election_node, self._election_gen = node, gen
        children = sorted(
            await wait(self.client.get_children_async(self.election_path), loop, t),
            key=_sequence,
        )
        node = self._election_node
        if node not in children:  # our node vanished (session expired): join again
            self._election_node = None
            self._election_kick.set()
            return
        index = children.index(node)
        if index == 0:
            self._set_writer(gen == self._session_gen)
            return
        self._set_writer(False)
        predecessor = f"{self.election_path}/{children[index - 1]}"
        stat = await wait(
            self.client.exists_async(predecessor, watch=self._on_predecessor_event), loop, t
        )
        if stat is None:
            self._election_kick.set()

    def _on_predecessor_event(self, _event: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._election_kick.set)

    async def wait_writer(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_writer:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.replica} did not become the writer in {timeout}s")
            await asyncio.sleep(0.01)

    # ----------------------------------------------------------------------- changes

    async def notify_change(self, **info: Any) -> int | None:
        """Bump the change-notification znode (after an apply); returns its new version.

        None when ZooKeeper could not be reached (logged): replicas still pick the
        change up at their next periodic resync.
        """
        payload = {"by": self.replica, "at": _now_iso(), **info}
        try:
            stat = await wait(
                self.client.set_async(self.changes_path,
                                      json.dumps(payload, default=str).encode()),
                self.loop, self.op_timeout,
            )
        except (KazooException, TimeoutError) as exc:
            log.warning("could not notify the other replicas of a change: %s", exc)
            return None
        return int(stat.version)

    def status(self) -> dict[str, Any]:
        """For the replica's status row (``reconciler status``)."""
        return {
            "zookeeper": self.hosts,
            "namespace": self.namespace,
            "root": self.root,
            "state": str(self._thread_state),
            "session": f"{self._session_id:#x}" if self._session_id else None,
            "session_generation": self._session_gen,
            "lease_remaining_s": round(max(0.0, self.lease_remaining), 3),
            "writer": self.is_writer,
            "change_version": self._change_version,
        }

    def _on_change_data(self, data: bytes | None, stat: Any) -> None:
        """DataWatch callback (a kazoo thread): first call, every bump, every new session."""
        if stat is None:
            return
        try:
            info = json.loads(data or b"{}")
        except ValueError:
            info = {}
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._apply_change, int(stat.version), info)

    def _apply_change(self, version: int, info: dict[str, Any]) -> None:
        previous = self._change_version
        if previous is not None and version <= previous:
            return
        self._change_version, self._change_info = version, info
        if previous is None:
            return  # the value found at start-up is not a change
        event = ChangeEvent(version, info)
        for listener in list(self._change_listeners):
            try:
                listener(event)
            except Exception:
                log.exception("change listener failed")


async def _read_members(
    client: KazooClient, root: str, loop: asyncio.AbstractEventLoop, timeout: float
) -> list[Member]:
    members_path, election_path = f"{root}/members", f"{root}/election"
    try:
        names = await wait(client.get_children_async(members_path), loop, timeout)
        contenders = await wait(client.get_children_async(election_path), loop, timeout)
    except NoNodeError:
        return []
    writer: str | None = None
    if contenders:
        first = min(contenders, key=_sequence)
        with contextlib.suppress(NoNodeError):
            data, _ = await wait(client.get_async(f"{election_path}/{first}"), loop, timeout)
            writer = data.decode()
    futures = [wait(client.get_async(f"{members_path}/{n}"), loop, timeout) for n in names]
    out: list[Member] = []
    for name, result in zip(names, await asyncio.gather(*futures, return_exceptions=True),
                            strict=True):
        if isinstance(result, NoNodeError):
            continue  # left meanwhile
        if isinstance(result, BaseException):
            raise result
        try:
            doc = json.loads(result[0] or b"{}")
        except ValueError:
            doc = {}
        out.append(Member(
            id=name,
            host=doc.get("host"),
            pid=doc.get("pid"),
            version=doc.get("version"),
            started_at=_parse_time(doc.get("started_at")),
            session=doc.get("session"),
            writer=name == writer,
        ))
    out.sort(key=lambda m: (not m.writer, m.id))
    return out


# ------------------------------------------------------- one-shot helpers for the CLI


def read_cluster(hosts: str, namespace: str = "default", timeout: float = 5.0) -> list[Member]:
    """The live members (for ``reconciler status``), with a short-lived connection."""
    _, chroot = parse_hosts(hosts)
    root = namespace_root(chroot, namespace)

    async def main() -> list[Member]:
        client = make_client(hosts, session_timeout=max(timeout, 4.0))
        await asyncio.to_thread(client.start, timeout)
        try:
            return await _read_members(client, root, asyncio.get_running_loop(), timeout)
        finally:
            await asyncio.to_thread(_stop, client)

    return asyncio.run(main())


def notify_change_now(hosts: str, namespace: str = "default", timeout: float = 5.0,
                      **info: Any) -> int:
    """Bump the change znode from outside a daemon (e.g. after ``reconciler apply``)."""
    _, chroot = parse_hosts(hosts)
    path = f"{namespace_root(chroot, namespace)}/changes"
    client = make_client(hosts, session_timeout=max(timeout, 4.0))
    client.start(timeout)
    try:
        payload = json.dumps({"by": "cli", "at": _now_iso(), **info}, default=str).encode()
        try:
            stat = client.set(path, payload)
        except NoNodeError:
            client.ensure_path(path)
            stat = client.set(path, payload)
        return int(stat.version)
    finally:
        _stop(client)


def _stop(client: KazooClient) -> None:
    with contextlib.suppress(Exception):
        client.stop()
    with contextlib.suppress(Exception):
        client.close()

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

Parts: the session, its state and lease (``_session``), writer election
(``_election``), membership (``_membership``) and change notification (``_changes``)
are in their own modules; this one puts them together, starts and stops them, and
follows the connection. Every public name is importable from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from kazoo.exceptions import KazooException, NodeExistsError
from kazoo.protocol.states import KazooState
from kazoo.recipe.watchers import DataWatch

from reconciler.core.errors import ReconcilerError
from reconciler.locks._changes import _Changes, notify_change_now
from reconciler.locks._election import _Election
from reconciler.locks._membership import Member, _Membership, read_cluster
from reconciler.locks._session import (
    DEFAULT_CHROOT,
    ENV_VAR,
    NAMESPACE_PATTERN,
    ChangeEvent,
    ChangeListener,
    ConnectionState,
    StateListener,
    WriterListener,
    log,
    make_client,
    namespace_root,
    parse_hosts,
)

__all__ = [
    "DEFAULT_CHROOT",
    "ENV_VAR",
    "NAMESPACE_PATTERN",
    "ChangeEvent",
    "ChangeListener",
    "ConnectionState",
    "Member",
    "StateListener",
    "WriterListener",
    "ZooKeeperCoordinator",
    "make_client",
    "namespace_root",
    "notify_change_now",
    "parse_hosts",
    "read_cluster",
]


class ZooKeeperCoordinator(_Membership, _Election, _Changes):
    """One per daemon process. ``await start()``, use, ``await close()``.

    ``hosts`` is ``host:port[,host:port...][/chroot]``; everything lives under
    ``root`` = ``<chroot or /reconciler>/<namespace>``.
    """

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

    # ------------------------------------------------------------------------ status

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

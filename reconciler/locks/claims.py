"""Claims across replicas: one ephemeral znode per task, czxid as the fencing token.

``claim(task, slot, attempt)`` is one request: ``create <root>/locks/<task>`` as an
ephemeral node (``Create2``, so the answer carries the node's stat). Success means
this replica holds the task; ``NodeExists`` means another one does and the claim is
``None`` at once (the loser does nothing). There is no queue of contenders: nobody
waits for a per-task lock at a slot, so kazoo's ``Lock`` recipe (create a sequential
node, list the children, watch the predecessor: three round trips and a node left
behind when an answer is lost) buys nothing here.

Fencing token
    The token is the zxid of the transaction that granted the claim: the node's
    ``czxid``, or the ``mzxid`` of a ``setData`` on our own node when this process
    claims a task it already holds (see *re-entrant* below). zxids only grow in an
    ensemble (even across leader elections: the epoch is the high 32 bits), and a
    grant for a task can only happen after the previous holder's node is gone, so
    tokens grow with every grant of a task. The run row stores the token; the store
    refuses updates from an older token.

Re-entrant
    The lock is held by the *process*: a second claim of a task this process already
    holds (a Replace of its own run, an Allow overlap) is granted with a fresh token
    (one ``setData``) and the node goes when the last claim is released. The daemon's
    own concurrency policy decides what to do with its runs; other replicas get None.

Validity
    A claim is valid while it is not released, its session is the current one and the
    session's lease has not run out (``ZooKeeperCoordinator.lease_valid``). kazoo's own
    view is not enough: after the session expired, kazoo reports LOST only once it
    reconnects, and ``Lock.is_acquired`` would still say True. When claims stop being
    valid, ``on_lost(claim)`` is called on the loop (once per claim).

Refusals: no claim is made while the connection is not CONNECTED (SUSPENDED: "stop
claiming new slots"; after LOST: only in the new session). A claim asked for meanwhile
waits up to ``wait_connected`` (default min(3 s, T/3)) for the connection to come back
and is made then, so a ZooKeeper leader election (every client is disconnected for
about a second) makes slots late, not lost; after that it is refused (None).

Orphans: a create whose answer was lost (connection dropped, timeout) may have made
the node anyway; it would block the task until the session ends. Such tasks are
remembered; a late success is deleted at once, and after every reconnect a sweep
deletes every lock node owned by this session that no claim holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kazoo.exceptions import (
    BadVersionError,
    ConnectionLoss,
    KazooException,
    NodeExistsError,
    NoNodeError,
    SessionExpiredError,
)

from reconciler.locks._bridge import create_ephemeral_async, settled, to_future, wait
from reconciler.locks.coordinator import ConnectionState, ZooKeeperCoordinator

log = logging.getLogger("reconciler.zookeeper.claims")


def lock_name(task: str) -> str:
    """The znode name of a task's lock (task names are DNS labels; anything else is quoted)."""
    name = urllib.parse.quote(task, safe="-_.")
    return f"%{name}" if name in (".", "..", "zookeeper") else name


@dataclass(eq=False)
class _Held:
    task: str
    path: str
    generation: int
    version: int
    claims: set[ZooKeeperClaim] = field(default_factory=set)
    lost: bool = False


class ZooKeeperClaim:
    __slots__ = ("_claimer", "_held", "_lost_reported", "_released", "attempt", "slot",
                 "task", "token")

    def __init__(self, claimer: ZooKeeperClaimer, held: _Held, token: int, slot: datetime,
                 attempt: int) -> None:
        self._claimer = claimer
        self._held = held
        self.task = held.task
        self.token = token
        self.slot = slot
        self.attempt = attempt
        self._released = False
        self._lost_reported = False

    @property
    def valid(self) -> bool:
        if self._released or self._held.lost:
            return False
        coordinator = self._claimer.coordinator
        return self._held.generation == coordinator.session_generation and (
            coordinator.lease_valid
        )

    @property
    def path(self) -> str:
        return self._held.path

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        await self._claimer._release(self)

    def __repr__(self) -> str:
        return (f"ZooKeeperClaim({self.task!r}, token={self.token:#x}, "
                f"valid={self.valid}, released={self._released})")


class ZooKeeperClaimer:
    """:class:`~reconciler.core.protocols.Claimer` on ZooKeeper (see the module docstring).

    ``on_lost(claim)`` is called on the event loop for every claim that stops being
    valid while held (session LOST, or lease ran out while disconnected / stalled).
    """

    def __init__(
        self,
        coordinator: ZooKeeperCoordinator,
        *,
        on_lost: Callable[[ZooKeeperClaim], None] | None = None,
        claim_timeout: float | None = None,
        check_interval: float | None = None,
        wait_connected: float | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.on_lost = on_lost
        # A claim made while disconnected waits this long for the connection before it
        # gives up: a leader election disconnects every client for about a second, and
        # the slots due meanwhile should run late rather than not at all.
        self.wait_connected = wait_connected if wait_connected is not None else min(
            3.0, coordinator.session_timeout / 3
        )
        self.claim_timeout = claim_timeout if claim_timeout is not None else min(
            2.0, coordinator.op_timeout
        )
        self.check_interval = check_interval if check_interval is not None else min(
            0.1, coordinator.session_timeout / 20
        )
        self._held: dict[str, _Held] = {}
        self._lost: dict[str, _Held] = {}  # lost, but a claim is not released yet
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._uncertain: set[str] = set()
        self._sweeps: list[set[str]] = []  # per running sweep: tasks marked uncertain since
        self._closed = False
        self._watchdog: asyncio.Task[None] | None = None
        self._sweeping: asyncio.Task[int] | None = None
        self.stats = {"granted": 0, "busy": 0, "refused": 0, "waited": 0, "errors": 0,
                      "orphans_deleted": 0, "lost": 0}
        coordinator.add_state_listener(self._on_state)

    # ----------------------------------------------------------------------- public

    @property
    def held(self) -> dict[str, list[ZooKeeperClaim]]:
        return {t: sorted(h.claims, key=lambda c: c.token) for t, h in self._held.items()}

    def status(self) -> dict[str, Any]:
        return {"held": len(self._held), "lost_unreleased": len(self._lost),
                "accepting": self.accepting(), **self.stats}

    async def holder(self, task: str) -> dict[str, Any] | None:
        """Who holds ``task`` now (replica, slot, attempt, token), or None: diagnostics,
        and for a daemon that wants to know why a claim was busy."""
        c = self.coordinator
        try:
            data, stat = await wait(c.client.get_async(f"{c.locks_path}/{lock_name(task)}"),
                                    c.loop, c.op_timeout)
        except NoNodeError:
            return None
        try:
            info = json.loads(data or b"{}")
        except ValueError:
            info = {}
        return {**info, "token": int(stat.czxid), "owner_session": f"{stat.ephemeralOwner:#x}"}

    def accepting(self) -> bool:
        c = self.coordinator
        return (not self._closed and c.live_state is ConnectionState.CONNECTED
                and c.state is ConnectionState.CONNECTED)

    async def claim(self, task: str, slot: datetime, attempt: int) -> ZooKeeperClaim | None:
        if not self.accepting() and not await self._await_connection():
            self.stats["refused"] += 1
            return None
        self._ensure_watchdog()
        # One request per task at a time in this process (later ones wait for it):
        # keeps re-entrant grants and the version checks on our own node in order.
        while (pending := self._pending.get(task)) is not None:
            await asyncio.shield(pending)
        if not self.accepting():
            self.stats["refused"] += 1
            return None
        done: asyncio.Future[None] = self.coordinator.loop.create_future()
        self._pending[task] = done
        try:
            held = self._held.get(task)
            if held is not None and not held.lost:
                return await self._reenter(held, slot, attempt)
            return await self._create(task, slot, attempt)
        finally:
            del self._pending[task]
            done.set_result(None)

    async def _await_connection(self) -> bool:
        """Wait up to ``wait_connected`` for CONNECTED; nothing is claimed meanwhile."""
        if self._closed or self.wait_connected <= 0:
            return False
        c = self.coordinator
        if c.state is ConnectionState.CLOSED:
            return False
        deadline = time.monotonic() + self.wait_connected
        while not self.accepting():
            left = deadline - time.monotonic()
            if left <= 0 or self._closed:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(c.connected.wait(), timeout=min(left, 0.1))
        self.stats["waited"] += 1
        return True

    async def close(self) -> None:
        """Release every claim (its lock node goes) and stop watching."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        claims = [c for h in (*self._held.values(), *self._lost.values()) for c in h.claims]
        await asyncio.gather(*(c.release() for c in claims), return_exceptions=True)

    async def cleanup_orphans(self) -> int:
        """Delete lock nodes owned by this session that no claim holds; returns how many."""
        c = self.coordinator
        loop, t = c.loop, c.op_timeout
        session = c.session_id
        before = set(self._uncertain)
        touched: set[str] = set()
        self._sweeps.append(touched)
        try:
            names = await wait(c.client.get_children_async(c.locks_path), loop, t)
            deleted, resolved = await self._sweep_names(names, session)
        finally:
            self._sweeps.remove(touched)
        # Only tasks whose node is known not to be an orphan of ours leave _uncertain,
        # and only if no claim marked them again meanwhile. A task skipped by the sweep
        # (its claim was in flight) keeps the flag, so that claim's NodeExists deletes
        # our own orphan: clearing every flag here left such a task blocked for every
        # replica as long as this session lived (seen after a ZooKeeper leader kill).
        listed = set(names)
        for task in before - touched:
            name = lock_name(task)
            if name not in listed or name in resolved:
                self._uncertain.discard(task)
        self.stats["orphans_deleted"] += deleted
        return deleted

    async def _sweep_names(self, names: list[str], session: int | None) -> tuple[int, set[str]]:
        """Delete our orphans among ``names``; returns (deleted, names resolved)."""
        c = self.coordinator
        loop, t = c.loop, c.op_timeout
        # Nodes of lost claims stay until the daemon releases them (its run may still
        # be stopping): deleting them earlier would let a peer start the task meanwhile.
        held_names = {h.path.rsplit("/", 1)[1]
                      for h in (*self._held.values(), *self._lost.values())}
        pending_names = {lock_name(task) for task in self._pending}
        candidates = [n for n in names if n not in held_names and n not in pending_names]
        stats = await asyncio.gather(
            *(wait(c.client.exists_async(f"{c.locks_path}/{n}"), loop, t) for n in candidates),
            return_exceptions=True,
        )
        deleted = 0
        resolved: set[str] = set()  # known not to be an orphan of ours (any more)
        for name, stat in zip(candidates, stats, strict=True):
            if isinstance(stat, BaseException):
                continue
            if stat is None or stat.ephemeralOwner != session or session is None:
                resolved.add(name)
                continue
            # re-check on the loop right before deleting: a claim may have started since
            if any(lock_name(task) == name
                   for task in (*self._held, *self._lost, *self._pending)):
                continue
            with contextlib.suppress(NoNodeError, BadVersionError):
                await wait(c.client.delete_async(f"{c.locks_path}/{name}", version=stat.version),
                           loop, t)
                deleted += 1
                log.warning("deleted orphaned lock node %s of this session", name)
            resolved.add(name)
        return deleted, resolved

    def _mark_uncertain(self, task: str) -> None:
        """A create or delete of ``task``'s node whose outcome is unknown."""
        self._uncertain.add(task)
        for touched in self._sweeps:
            touched.add(task)

    # ----------------------------------------------------------------------- claims

    def _payload(self, task: str, slot: datetime, attempt: int) -> bytes:
        return json.dumps({"replica": self.coordinator.replica, "task": task,
                           "slot": slot.isoformat(), "attempt": attempt}).encode()

    async def _create(self, task: str, slot: datetime, attempt: int) -> ZooKeeperClaim | None:
        c = self.coordinator
        loop = c.loop
        path = f"{c.locks_path}/{lock_name(task)}"
        # Up to three tries: after our own orphan was deleted, after a dropped connection.
        for tries_left in (2, 1, 0):
            gen, sent = c.session_generation, time.monotonic()
            fut = to_future(create_ephemeral_async(c.client, path,
                                                   self._payload(task, slot, attempt)), loop)
            if not await settled(fut, loop, self.claim_timeout):
                self.stats["errors"] += 1
                self._mark_uncertain(task)
                fut.add_done_callback(functools.partial(self._late_create, task=task,
                                                        path=path, gen=gen))
                return None
            try:
                _, stat = fut.result()
            except NodeExistsError:
                if task in self._uncertain and await self._delete_if_orphan(task, path):
                    continue  # it was our own lost create: try once more
                self.stats["busy"] += 1
                return None
            except (ConnectionLoss, SessionExpiredError) as exc:
                self.stats["errors"] += 1
                if isinstance(exc, ConnectionLoss):
                    self._mark_uncertain(task)
                    # The connection dropped under the claim (a ZooKeeper leader change
                    # drops every client): wait for it as a claim made while disconnected
                    # does and try again, so the slot runs late instead of not at all. A
                    # node our lost create made anyway is ours: deleted on NodeExists.
                    if tries_left and await self._await_connection():
                        continue
                return None
            except KazooException as exc:
                self.stats["errors"] += 1
                log.warning("claim of %s failed: %s", task, exc)
                return None
            if gen != c.session_generation:
                return None  # created in a session that is gone: so is the node
            c.confirm(sent, gen)
            self._uncertain.discard(task)
            held = _Held(task, path, gen, stat.version)
            self._held[task] = held
            return self._grant(held, int(stat.czxid), slot, attempt)
        return None

    async def _reenter(self, held: _Held, slot: datetime, attempt: int) -> ZooKeeperClaim | None:
        c = self.coordinator
        gen, sent = c.session_generation, time.monotonic()
        if held.generation != gen:
            return None
        try:
            stat = await wait(
                c.client.set_async(held.path, self._payload(held.task, slot, attempt),
                                        version=held.version),
                c.loop, self.claim_timeout,
            )
        except (NoNodeError, BadVersionError):
            self._mark_lost(held)  # the node is not ours any more
            return None
        except (KazooException, TimeoutError):
            self.stats["errors"] += 1
            return None
        if held.lost or held.generation != c.session_generation:
            return None
        c.confirm(sent, gen)
        held.version = int(stat.version)
        return self._grant(held, int(stat.mzxid), slot, attempt)

    def _grant(self, held: _Held, token: int, slot: datetime, attempt: int) -> ZooKeeperClaim:
        claim = ZooKeeperClaim(self, held, token, slot, attempt)
        held.claims.add(claim)
        self.stats["granted"] += 1
        return claim

    async def _delete_if_orphan(self, task: str, path: str) -> bool:
        c = self.coordinator
        try:
            stat = await wait(c.client.exists_async(path), c.loop, self.claim_timeout)
            if stat is None:
                return True
            if stat.ephemeralOwner != c.session_id or task in self._held or task in self._lost:
                return False
            await wait(c.client.delete_async(path, version=stat.version), c.loop,
                       self.claim_timeout)
        except NoNodeError:
            return True
        except (KazooException, TimeoutError):
            return False
        self._uncertain.discard(task)
        self.stats["orphans_deleted"] += 1
        log.warning("deleted a lock node of %s that this session owned but no claim held", task)
        return True

    def _late_create(self, fut: asyncio.Future[Any], *, task: str, path: str, gen: int) -> None:
        """A create we gave up on finished after all: if it made the node, delete it."""
        if fut.cancelled() or fut.exception() is not None:
            return
        c = self.coordinator
        if gen != c.session_generation or task in self._held or task in self._pending:
            return
        _, stat = fut.result()

        async def delete() -> None:
            with contextlib.suppress(KazooException, TimeoutError):
                await wait(c.client.delete_async(path, version=stat.version), c.loop,
                           c.op_timeout)
                self.stats["orphans_deleted"] += 1
                self._uncertain.discard(task)
                log.warning("deleted the lock node of %s made by a timed-out claim", task)

        c.loop.create_task(delete())

    async def _release(self, claim: ZooKeeperClaim) -> None:
        held = claim._held
        held.claims.discard(claim)
        if held.claims:
            return  # re-entrant: another claim of this process still holds the task
        c = self.coordinator
        if held.lost:
            if self._lost.get(held.task) is held:
                del self._lost[held.task]
            if held.generation == c.session_generation:
                # The lease ran out but the session may have survived: the node may
                # still be ours; delete it only if it is.
                await self._delete_if_orphan(held.task, held.path)
            return
        if self._held.get(held.task) is held:
            del self._held[held.task]
        if held.generation != c.session_generation:
            return  # the node went with its session
        try:
            await wait(c.client.delete_async(held.path, version=held.version), c.loop,
                       c.op_timeout)
        except (NoNodeError, BadVersionError):
            pass
        except (KazooException, TimeoutError) as exc:
            # Still queued or lost with the connection: the sweep after the reconnect
            # deletes it; a new claim of this task meanwhile finds NodeExists (safe).
            self._mark_uncertain(held.task)
            log.info("release of %s not confirmed (%s); the sweep will finish it",
                     held.task, exc)

    # ------------------------------------------------------------------ lost claims

    def _mark_lost(self, held: _Held) -> None:
        if held.lost:
            return
        held.lost = True
        if self._held.get(held.task) is held:
            del self._held[held.task]
        if any(not cl._released for cl in held.claims):
            self._lost[held.task] = held
        for claim in sorted(held.claims, key=lambda cl: cl.token):
            if claim._released or claim._lost_reported:
                continue
            claim._lost_reported = True
            self.stats["lost"] += 1
            log.warning("lock of %s lost (token %#x)", claim.task, claim.token)
            if self.on_lost is not None:
                try:
                    self.on_lost(claim)
                except Exception:
                    log.exception("on_lost callback failed")

    def check(self) -> int:
        """Report claims that stopped being valid; returns how many tasks were lost."""
        c = self.coordinator
        stale = [h for h in self._held.values()
                 if h.generation != c.session_generation or not c.lease_valid
                 or c.live_state in (ConnectionState.LOST, ConnectionState.CLOSED)]
        for held in stale:
            self._mark_lost(held)
        return len(stale)

    def _ensure_watchdog(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = self.coordinator.loop.create_task(self._watch())

    async def _watch(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.check_interval)
            if self._held:
                self.check()

    def _on_state(self, state: ConnectionState) -> None:
        if state in (ConnectionState.LOST, ConnectionState.CLOSED):
            self.check()
            self._uncertain.clear()  # the old session's nodes are gone with it
        elif state is ConnectionState.CONNECTED:
            self.check()  # a new session invalidates the old one's claims
            if self._sweeping is None or self._sweeping.done():
                self._sweeping = self.coordinator.loop.create_task(self._sweep())

    async def _sweep(self) -> int:
        try:
            return await self.cleanup_orphans()
        except (KazooException, TimeoutError) as exc:
            log.info("orphan sweep failed (%s); next reconnect retries", exc)
            return 0

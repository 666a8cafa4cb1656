"""ZooKeeperClaimer against a real ZooKeeper: exclusivity, fencing, loss, orphans.

Real servers only (tests/services/zookeeper.py). Partitions are made with a TCP proxy
between one client and the server; sessions are expired by attaching a second client
to them and closing it. No test sleeps on the wall clock to wait for something: every
wait polls its condition with a deadline.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from reconciler.locks import ConnectionState, ZooKeeperClaim, ZooKeeperClaimer, lock_name
from tests.services.aio import run
from tests.services.zookeeper import (
    ZooKeeperServer,
    eventually,
    eventually_async,
    expire_session,
    proxy_to,
    running_coordinator,
)

pytestmark = pytest.mark.integration

SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)




def test_only_one_client_wins_each_task(zk: ZooKeeperServer, ns: str) -> None:
    async def scenario() -> None:
        async with (running_coordinator(zk.address, ns, replica="a") as a,
                    running_coordinator(zk.address, ns, replica="b") as b):
            ca, cb = ZooKeeperClaimer(a), ZooKeeperClaimer(b)
            names = [f"task-{i}" for i in range(100)]
            claims = await asyncio.gather(
                *(c.claim(n, SLOT, 1) for n in names for c in (ca, cb))
            )
            for i, name in enumerate(names):
                pair = claims[2 * i: 2 * i + 2]
                assert sum(c is not None for c in pair) == 1, (name, pair)
            assert ca.stats["busy"] + cb.stats["busy"] == 100
            # The loser gets a task once the winner let it go.
            held_by_a = [c for c in claims[0::2] if c is not None]
            assert held_by_a, "a won nothing: the race is not a race"
            claim = held_by_a[0]
            holder = await cb.holder(claim.task)
            assert holder is not None and holder["replica"] == "a"
            assert holder["token"] == claim.token and holder["slot"] == SLOT.isoformat()
            assert await cb.holder("nobody-holds-this") is None
            assert await cb.claim(claim.task, SLOT, 1) is None
            await claim.release()
            assert await cb.claim(claim.task, SLOT, 1) is not None

    run(scenario)


def test_fencing_tokens_grow_across_clients(zk: ZooKeeperServer, ns: str) -> None:
    async def scenario() -> None:
        async with (running_coordinator(zk.address, ns) as a,
                    running_coordinator(zk.address, ns) as b):
            ca, cb = ZooKeeperClaimer(a), ZooKeeperClaimer(b)
            tokens = []
            for i in range(10):
                claim = await (ca if i % 2 else cb).claim("alpha", SLOT, i + 1)
                assert claim is not None
                tokens.append(claim.token)
                if i % 3 == 0:  # a re-entrant grant in between: still growing
                    again = await (ca if i % 2 else cb).claim("alpha", SLOT, 100 + i)
                    assert again is not None
                    tokens.append(again.token)
                    await again.release()
                await claim.release()
            assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)

    run(scenario)


def test_session_expiry_invalidates_the_claim_and_a_peer_takes_over(
    zk: ZooKeeperServer, ns: str,
) -> None:
    async def scenario() -> None:
        async with (running_coordinator(zk.address, ns, replica="a", session_timeout=4) as a,
                    running_coordinator(zk.address, ns, replica="b") as b):
            lost: list[ZooKeeperClaim] = []
            states: list[ConnectionState] = []
            a.add_state_listener(states.append)
            ca, cb = ZooKeeperClaimer(a, on_lost=lost.append), ZooKeeperClaimer(b)
            claim = await ca.claim("alpha", SLOT, 1)
            assert claim is not None and claim.valid
            generation = a.session_generation
            client_id = a.client.client_id
            assert client_id is not None

            await asyncio.to_thread(expire_session, zk.address, client_id)

            await eventually(lambda: lost, 10, "on_lost for the expired session")
            assert lost == [claim]
            assert claim.valid is False
            # kazoo's own Lock would still say "acquired" here; the peer can take it now.
            taken = await eventually_async(lambda: cb.claim("alpha", SLOT, 2), 5, "peer claim")
            assert taken.token > claim.token
            # a: LOST, then CONNECTED in a new session
            await eventually(lambda: a.state is ConnectionState.CONNECTED
                             and a.session_generation == generation + 1, 10, "a new session")
            assert ConnectionState.LOST in states
            # Releasing the lost claim must not touch the peer's lock.
            await claim.release()
            stat = await asyncio.to_thread(b.client.exists, f"{b.locks_path}/alpha")
            assert stat is not None and stat.ephemeralOwner == b.session_id
            assert await ca.claim("alpha", SLOT, 3) is None
            assert taken.valid
            # a claims again in its new session
            other = await ca.claim("beta", SLOT, 1)
            assert other is not None and other.valid

    run(scenario)


def test_partition_lease_runs_out_before_a_peer_can_claim(
    zk: ZooKeeperServer, ns: str,
) -> None:
    """A silent partition: no LOST until a reconnects; the lease ends validity first."""
    timeout = 2.0

    async def scenario() -> None:
        with proxy_to(zk) as proxy:
            async with (
                running_coordinator(proxy.address, ns, replica="a", session_timeout=timeout,
                                    elect=False) as a,
                running_coordinator(zk.address, ns, replica="b", elect=False) as b,
            ):
                lost: list[ZooKeeperClaim] = []
                states: list[ConnectionState] = []
                a.add_state_listener(states.append)
                ca = ZooKeeperClaimer(a, on_lost=lost.append, wait_connected=0)
                cb = ZooKeeperClaimer(b)
                claim = await ca.claim("alpha", SLOT, 1)
                assert claim is not None
                generation = a.session_generation
                started = time.monotonic()
                proxy.block()

                await eventually(lambda: a.state is ConnectionState.SUSPENDED, 5, "SUSPENDED")
                refused, waited = ca.stats["refused"], ca.stats["waited"]
                assert await ca.claim("beta", SLOT, 1) is None  # no new claims when SUSPENDED
                # wait_connected=0: refused at once, without waiting for the connection
                assert ca.stats["refused"] == refused + 1 and ca.stats["waited"] == waited
                await eventually(lambda: not claim.valid, 5, "the lease to run out")
                invalid_after = time.monotonic() - started
                assert invalid_after <= 0.75 * timeout + 0.3
                await eventually(lambda: lost, 2, "on_lost")
                assert ConnectionState.LOST not in states  # kazoo cannot know yet

                taken = await eventually_async(lambda: cb.claim("alpha", SLOT, 2), 10,
                                               "the server to expire a's session")
                taken_after = time.monotonic() - started
                assert taken_after > invalid_after, (invalid_after, taken_after)
                assert taken.token > claim.token

                proxy.unblock()
                await eventually(lambda: a.state is ConnectionState.CONNECTED
                                 and a.session_generation == generation + 1, 10, "reconnect")
                assert ConnectionState.LOST in states
                assert not claim.valid
                assert await ca.claim("alpha", SLOT, 3) is None
                await claim.release()
                assert taken.valid
                assert await ca.claim("beta", SLOT, 1) is not None

    run(scenario)


def test_a_create_whose_answer_was_lost_is_cleaned_up_after_reconnect(
    zk: ZooKeeperServer, ns: str,
) -> None:
    """The kazoo pitfall: the node is made, the answer lost; it would block the task."""

    async def scenario() -> None:
        with proxy_to(zk) as proxy:
            async with (
                running_coordinator(proxy.address, ns, replica="a", session_timeout=3,
                                    elect=False) as a,
                running_coordinator(zk.address, ns, replica="b", elect=False) as b,
            ):
                ca = ZooKeeperClaimer(a, claim_timeout=0.3)
                cb = ZooKeeperClaimer(b)
                generation = a.session_generation
                path = f"{a.locks_path}/{lock_name('orphan')}"
                proxy.drop_responses()
                assert await ca.claim("orphan", SLOT, 1) is None  # no answer in time
                stat = await eventually_async(lambda: asyncio.to_thread(b.client.exists, path),
                                              5, "the node the lost create made")
                assert stat.ephemeralOwner == a.session_id
                assert await cb.claim("orphan", SLOT, 1) is None  # blocked by the orphan

                await eventually(lambda: a.live_state is ConnectionState.SUSPENDED, 10,
                                 "kazoo to give up on the silent connection")
                proxy.unblock()
                await eventually(lambda: a.state is ConnectionState.CONNECTED, 10, "reconnect")
                assert a.session_generation == generation  # same session: its nodes live on
                await eventually_async(
                    lambda: _gone(b, path), 5, "the sweep to delete the orphan")
                assert ca.stats["orphans_deleted"] >= 1
                claim = await cb.claim("orphan", SLOT, 1)
                assert claim is not None

    run(scenario)


async def _gone(coordinator: object, path: str) -> bool:
    from reconciler.locks import ZooKeeperCoordinator

    assert isinstance(coordinator, ZooKeeperCoordinator)
    return await asyncio.to_thread(coordinator.client.exists, path) is None


def test_cleanup_deletes_only_this_sessions_unheld_nodes(zk: ZooKeeperServer, ns: str) -> None:
    async def scenario() -> None:
        async with (running_coordinator(zk.address, ns, elect=False) as a,
                    running_coordinator(zk.address, ns, elect=False) as b):
            ca, cb = ZooKeeperClaimer(a), ZooKeeperClaimer(b)
            mine = await ca.claim("held", SLOT, 1)
            theirs = await cb.claim("theirs", SLOT, 1)
            assert mine is not None and theirs is not None
            # an orphan of a's session (as a lost create would leave it)
            await asyncio.to_thread(a.client.create, f"{a.locks_path}/stray", b"", ephemeral=True)
            assert await ca.cleanup_orphans() == 1
            assert await asyncio.to_thread(a.client.exists, f"{a.locks_path}/stray") is None
            assert mine.valid and theirs.valid
            assert await cb.claim("held", SLOT, 2) is None
            assert await ca.claim("theirs", SLOT, 2) is None

    run(scenario)


def test_an_own_orphan_found_at_claim_time_is_replaced(zk: ZooKeeperServer, ns: str) -> None:
    async def scenario() -> None:
        async with running_coordinator(zk.address, ns, elect=False) as a:
            ca = ZooKeeperClaimer(a)
            path = f"{a.locks_path}/{lock_name('task')}"
            await asyncio.to_thread(a.client.create, path, b"", ephemeral=True)
            orphan = await asyncio.to_thread(a.client.exists, path)
            ca._uncertain.add("task")  # what a claim whose answer was lost records
            claim = await ca.claim("task", SLOT, 1)
            assert claim is not None and claim.token > orphan.czxid

    run(scenario)


def test_state_listeners_run_on_the_event_loop(zk: ZooKeeperServer, ns: str) -> None:
    import threading

    async def scenario() -> None:
        with proxy_to(zk) as proxy:
            async with running_coordinator(proxy.address, ns, session_timeout=4,
                                           elect=False) as a:
                seen: list[tuple[ConnectionState, int]] = []
                a.add_state_listener(lambda s: seen.append((s, threading.get_ident())))
                loop_thread = threading.get_ident()
                proxy.block()
                await eventually(lambda: a.state is ConnectionState.SUSPENDED, 5)
                assert not a.connected.is_set()
                proxy.unblock()
                await asyncio.wait_for(a.connected.wait(), 5)
                assert [s for s, _ in seen] == [ConnectionState.SUSPENDED,
                                                ConnectionState.CONNECTED]
                assert {t for _, t in seen} == {loop_thread}

    run(scenario)


def test_a_claim_asked_for_while_disconnected_is_made_after_the_reconnect(
    zk: ZooKeeperServer, ns: str,
) -> None:
    async def scenario() -> None:
        with proxy_to(zk) as proxy:
            async with running_coordinator(proxy.address, ns, session_timeout=6,
                                           elect=False) as a:
                ca = ZooKeeperClaimer(a, wait_connected=3)
                proxy.block()
                await eventually(lambda: a.state is ConnectionState.SUSPENDED, 5)
                pending = asyncio.ensure_future(ca.claim("alpha", SLOT, 1))
                await asyncio.sleep(0.2)  # the claim is waiting, not made
                assert not pending.done() and ca.stats["granted"] == 0
                proxy.unblock()
                claim = await asyncio.wait_for(pending, 5)
                assert claim is not None and claim.valid and ca.stats["waited"] == 1
                # and a connection that stays away: refused after wait_connected
                proxy.block()
                await eventually(lambda: a.state is ConnectionState.SUSPENDED, 5)
                ca.wait_connected = 0.3
                t0 = time.monotonic()
                assert await ca.claim("beta", SLOT, 1) is None
                assert 0.25 < time.monotonic() - t0 < 1.0
                proxy.unblock()

    run(scenario)

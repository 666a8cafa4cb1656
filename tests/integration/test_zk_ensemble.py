"""Claims and the writer through a ZooKeeper leader change (a real 3-node ensemble)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from reconciler.locks import ConnectionState, ZooKeeperClaim, ZooKeeperClaimer
from tests.services.zookeeper import (
    ZooKeeperEnsemble,
    eventually,
    eventually_async,
    require_zookeeper,
    running_coordinator,
    shared_ensemble,
)

pytestmark = pytest.mark.integration

SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def ensemble() -> ZooKeeperEnsemble:
    """The shared ensemble with all three servers up (restarted if a test killed one)."""
    require_zookeeper()
    return shared_ensemble()


def run(coro: Callable[[], Awaitable[None]], timeout: float = 40) -> None:
    async def main() -> None:
        await asyncio.wait_for(coro(), timeout)

    asyncio.run(main())


def test_a_lock_survives_a_leader_kill(ensemble: ZooKeeperEnsemble) -> None:
    ns = f"e-{uuid.uuid4().hex[:10]}"

    async def scenario() -> None:
        async with (running_coordinator(ensemble.hosts, ns, replica="a") as a,
                    running_coordinator(ensemble.hosts, ns, replica="b") as b):
            lost: list[ZooKeeperClaim] = []
            ca, cb = ZooKeeperClaimer(a, on_lost=lost.append), ZooKeeperClaimer(b)
            claim = await ca.claim("alpha", SLOT, 1)
            assert claim is not None
            sessions = (a.session_id, b.session_id)
            await a.wait_writer(5)

            killed = ensemble.kill_leader()
            started = time.monotonic()
            # writes work again once a new leader is elected
            fresh = await eventually_async(lambda: ca.claim("beta", SLOT, 1), 15,
                                           "writes after the leader kill")
            recovered = time.monotonic() - started
            await eventually(lambda: ensemble.leader() is not None, 10, "a new leader")
            assert ensemble.leader() is not killed

            # same sessions, lock still held, token epochs moved on
            assert (a.session_id, b.session_id) == sessions
            assert a.session_generation == 1 and b.session_generation == 1
            assert claim.valid and not lost
            assert await cb.claim("alpha", SLOT, 2) is None
            assert fresh.token >> 32 > claim.token >> 32  # a new epoch: still larger
            await claim.release()
            taken = await cb.claim("alpha", SLOT, 3)
            assert taken is not None and taken.token > fresh.token > claim.token
            # the writer is unchanged (its session survived)
            await eventually(lambda: a.state is ConnectionState.CONNECTED, 5)
            await a.wait_writer(5)
            assert not b.is_writer
            assert recovered < 10, recovered

    run(scenario)


def test_claims_keep_working_while_a_follower_is_down(ensemble: ZooKeeperEnsemble) -> None:
    ns = f"e-{uuid.uuid4().hex[:10]}"
    follower = ensemble.followers()[0]
    follower.kill()

    async def scenario() -> None:
        async with running_coordinator(ensemble.hosts, ns) as a:
            ca = ZooKeeperClaimer(a)
            claims = await asyncio.gather(*(ca.claim(f"t{i}", SLOT, 1) for i in range(50)))
            assert all(c is not None for c in claims)

    run(scenario)

"""The Claimer/Claim contract, run against every implementation.

* ``inprocess``: :class:`reconciler.daemon.claims.InProcessClaimer` (one replica);
* ``zookeeper``: :class:`reconciler.locks.ZooKeeperClaimer` on a real standalone
  ZooKeeper (one server for the run, a random namespace per test).

What every implementation promises (``reconciler/core/protocols.py``): a grant has an
int fencing token that grows with every grant of the same task; ``valid`` is True
until ``release()`` (idempotent) or ``close()``; a released task can be claimed again;
a claim of a task this claimer already holds is granted (re-entrant) with a larger
token; many tasks can be claimed concurrently. Exclusivity *between* replicas only
exists for the distributed implementation: see ``test_zk_claims.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.core.protocols import Claim, Claimer
from reconciler.daemon.claims import InProcessClaimer
from tests.services.zookeeper import ZooKeeperServer, require_zookeeper, shared_standalone

pytestmark = pytest.mark.integration

SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
IMPLEMENTATIONS = ("inprocess", "zookeeper")

Scenario = Callable[[Claimer], Awaitable[None]]


@pytest.fixture(scope="module")
def zookeeper() -> ZooKeeperServer:
    require_zookeeper()
    return shared_standalone()


@pytest.fixture(params=IMPLEMENTATIONS)
def run(request: pytest.FixtureRequest) -> Callable[[Scenario], None]:
    """``run(scenario)``: a fresh claimer of the implementation, the scenario, clean-up."""
    kind: str = request.param
    hosts = request.getfixturevalue("zookeeper").address if kind == "zookeeper" else None

    @asynccontextmanager
    async def claimer() -> AsyncIterator[Claimer]:
        if hosts is None:
            c = InProcessClaimer()
            try:
                yield c
            finally:
                await c.close()
            return
        from reconciler.locks import ZooKeeperClaimer, ZooKeeperCoordinator

        coordinator = ZooKeeperCoordinator(hosts, namespace=f"contract-{uuid.uuid4().hex[:8]}",
                                           elect=False)
        await coordinator.start()
        zk = ZooKeeperClaimer(coordinator)
        try:
            yield zk
        finally:
            await zk.close()
            await coordinator.close()

    def runner(scenario: Scenario) -> None:
        async def main() -> None:
            async with claimer() as c:
                await asyncio.wait_for(scenario(c), timeout=20)

        asyncio.run(main())

    return runner


async def granted(claimer: Claimer, task: str, slot: datetime = SLOT, attempt: int = 1) -> Claim:
    claim = await claimer.claim(task, slot, attempt)
    assert claim is not None, f"claim of {task} refused"
    return claim


def test_a_grant_carries_an_int_token_and_is_valid(run: Callable[[Scenario], None]) -> None:
    async def scenario(c: Claimer) -> None:
        claim = await granted(c, "alpha")
        assert isinstance(claim.token, int) and not isinstance(claim.token, bool)
        assert claim.token > 0
        assert claim.valid is True

    run(scenario)


def test_release_invalidates_and_is_idempotent(run: Callable[[Scenario], None]) -> None:
    async def scenario(c: Claimer) -> None:
        claim = await granted(c, "alpha")
        await claim.release()
        assert claim.valid is False
        await claim.release()
        assert claim.valid is False

    run(scenario)


def test_a_released_task_can_be_claimed_again_with_a_larger_token(
    run: Callable[[Scenario], None],
) -> None:
    async def scenario(c: Claimer) -> None:
        tokens = []
        for i in range(5):
            claim = await granted(c, "alpha", SLOT + timedelta(minutes=i))
            tokens.append(claim.token)
            await claim.release()
        assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), tokens

    run(scenario)


def test_reentrant_claims_grow_and_release_independently(
    run: Callable[[Scenario], None],
) -> None:
    async def scenario(c: Claimer) -> None:
        first = await granted(c, "alpha", SLOT)
        second = await granted(c, "alpha", SLOT + timedelta(minutes=1))
        assert second.token > first.token
        await first.release()
        assert first.valid is False
        assert second.valid is True
        third = await granted(c, "alpha", SLOT + timedelta(minutes=2))
        assert third.token > second.token
        await second.release()
        await third.release()
        again = await granted(c, "alpha", SLOT + timedelta(minutes=3))
        assert again.token > third.token

    run(scenario)


def test_tasks_are_independent(run: Callable[[Scenario], None]) -> None:
    async def scenario(c: Claimer) -> None:
        a = await granted(c, "alpha")
        b = await granted(c, "beta")
        await a.release()
        assert b.valid is True
        assert a.valid is False

    run(scenario)


def test_many_concurrent_claims_are_all_granted(run: Callable[[Scenario], None]) -> None:
    async def scenario(c: Claimer) -> None:
        names = [f"task-{i}" for i in range(200)]
        claims = await asyncio.gather(*(c.claim(n, SLOT, 1) for n in names))
        assert all(cl is not None for cl in claims)
        tokens = [cl.token for cl in claims if cl is not None]
        assert len(set(tokens)) == len(tokens)
        await asyncio.gather(*(cl.release() for cl in claims if cl is not None))
        assert not any(cl.valid for cl in claims if cl is not None)

    run(scenario)


def test_concurrent_claims_of_one_task_in_one_claimer_all_succeed(
    run: Callable[[Scenario], None],
) -> None:
    async def scenario(c: Claimer) -> None:
        claims = await asyncio.gather(*(c.claim("alpha", SLOT, a) for a in range(1, 6)))
        assert all(cl is not None for cl in claims)
        tokens = [cl.token for cl in claims if cl is not None]
        assert len(set(tokens)) == 5
        for cl in claims:
            assert cl is not None
            await cl.release()
        again = await granted(c, "alpha")
        assert again.token > max(tokens)

    run(scenario)


def test_close_invalidates_every_claim(run: Callable[[Scenario], None]) -> None:
    async def scenario(c: Claimer) -> None:
        claims = [await granted(c, f"task-{i}") for i in range(3)]
        await c.close()
        assert not any(cl.valid for cl in claims)

    run(scenario)

"""ZooKeeperCoordinator on a real ZooKeeper: membership, writer election, change notes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.locks import ChangeEvent, ConnectionState, read_cluster
from reconciler.locks.coordinator import notify_change_now
from tests.services.aio import run
from tests.services.zookeeper import (
    ZooKeeperServer,
    eventually,
    eventually_async,
    proxy_to,
    running_coordinator,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]




VICTIM = textwrap.dedent("""
    import asyncio, sys
    from reconciler.locks import ZooKeeperCoordinator

    async def main():
        c = ZooKeeperCoordinator(sys.argv[1], namespace=sys.argv[2], replica="victim",
                                 session_timeout=float(sys.argv[3]))
        await c.start()
        await c.wait_writer(20)
        print("writer", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
""")


@pytest.fixture
def victim(zk: ZooKeeperServer, ns: str) -> Iterator[subprocess.Popen[str]]:
    """Another daemon-like process that becomes the writer (session timeout 2 s)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", VICTIM, zk.address, ns, "2"], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded: wait_writer(20) exits the child on failure
        assert line.strip() == "writer", f"the victim did not become the writer: {line!r}"
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def test_members_register_with_their_details(zk: ZooKeeperServer, ns: str) -> None:
    async def scenario() -> None:
        async with running_coordinator(zk.address, ns, replica="r1", version="9.9") as a:
            await a.wait_writer(5)
            async with running_coordinator(zk.address, ns, replica="r2") as b:
                members = await b.members()
                assert [m.id for m in members] == ["r1", "r2"]  # the writer first
                r1 = members[0]
                assert r1.writer and not members[1].writer
                assert r1.version == "9.9" and r1.pid == os.getpid() and r1.host
                assert r1.started_at is not None and r1.session == f"{a.session_id:#x}"
                from_cli = await asyncio.to_thread(read_cluster, zk.address, ns)
                assert [(m.id, m.writer) for m in from_cli] == [("r1", True), ("r2", False)]
            await eventually_async(lambda: _member_ids(a, ["r1"]), 5, "r2 to leave")

    run(scenario)


async def _member_ids(coordinator: object, expected: list[str]) -> bool:
    from reconciler.locks import ZooKeeperCoordinator

    assert isinstance(coordinator, ZooKeeperCoordinator)
    return [m.id for m in await coordinator.members()] == expected


def test_exactly_one_writer_and_clean_handover(zk: ZooKeeperServer, ns: str) -> None:
    async def scenario() -> None:
        async with (running_coordinator(zk.address, ns, replica="a") as a,
                    running_coordinator(zk.address, ns, replica="b") as b,
                    running_coordinator(zk.address, ns, replica="c") as c):
            await eventually(lambda: sum(x.is_writer for x in (a, b, c)) == 1, 5, "a writer")
            assert a.is_writer  # the first to join
            changes: list[bool] = []
            b.add_writer_listener(changes.append)
            started = time.monotonic()
            await a.close()  # a clean stop: its session ends at once
            await b.wait_writer(5)
            assert time.monotonic() - started < 2.0
            assert changes == [True] and not c.is_writer
            status = b.status()
            assert status["writer"] is True and status["state"] == "connected"
            assert status["lease_remaining_s"] > 0 and status["root"] == f"/reconciler/{ns}"

    run(scenario)


def test_writer_failover_after_kill_9(
    zk: ZooKeeperServer, ns: str, victim: subprocess.Popen[str],
) -> None:
    async def scenario() -> None:
        async with running_coordinator(zk.address, ns, replica="survivor") as s:
            members = await s.members()
            assert [(m.id, m.writer) for m in members] == [("victim", True),
                                                           ("survivor", False)]
            assert not s.is_writer
            started = time.monotonic()
            victim.send_signal(signal.SIGKILL)
            await s.wait_writer(10)
            took = time.monotonic() - started
            assert took < 2 + 2.0, f"failover took {took:.2f}s with a 2 s session timeout"
            assert [(m.id, m.writer) for m in await s.members()] == [("survivor", True)]

    run(scenario)


def test_a_partitioned_writer_steps_down_before_a_peer_takes_over(
    zk: ZooKeeperServer, ns: str,
) -> None:
    async def scenario() -> None:
        with proxy_to(zk) as proxy:
            async with running_coordinator(proxy.address, ns, replica="a",
                                           session_timeout=2) as a:
                await a.wait_writer(5)
                async with running_coordinator(zk.address, ns, replica="b") as b:
                    proxy.block()
                    overlap = False
                    deadline = time.monotonic() + 10
                    while not b.is_writer and time.monotonic() < deadline:
                        overlap = overlap or (a.is_writer and b.is_writer)
                        await asyncio.sleep(0.005)
                    assert b.is_writer and not a.is_writer and not overlap
                    proxy.unblock()
                    await eventually(lambda: a.state is ConnectionState.CONNECTED
                                     and a.session_generation == 2, 10, "a's new session")
                    await eventually_async(lambda: _member_ids(b, ["b", "a"]), 5,
                                           "a to register again (not the writer)")
                    assert b.is_writer and not a.is_writer

    run(scenario)


def test_a_change_reaches_the_other_replicas_within_a_second(
    zk: ZooKeeperServer, ns: str,
) -> None:
    async def scenario() -> None:
        async with (running_coordinator(zk.address, ns, replica="writer") as w,
                    running_coordinator(zk.address, ns, replica="r1") as r1,
                    running_coordinator(zk.address, ns, replica="r2") as r2):
            got: dict[str, list[tuple[float, ChangeEvent]]] = {"r1": [], "r2": []}
            r1.add_change_listener(lambda e: got["r1"].append((time.monotonic(), e)))
            r2.add_change_listener(lambda e: got["r2"].append((time.monotonic(), e)))
            sent = time.monotonic()
            version = await w.notify_change(revision="abc123", changed=["t1"])
            await eventually(lambda: got["r1"] and got["r2"], 2, "both replicas")
            for name in ("r1", "r2"):
                at, event = got[name][0]
                assert at - sent < 1.0
                assert event.version == version
                assert event.info["revision"] == "abc123" and event.info["by"] == "writer"
            # the CLI can bump it too
            v2 = await asyncio.to_thread(notify_change_now, zk.address, ns, reason="apply")
            await eventually(lambda: len(got["r1"]) == 2, 2, "the CLI's bump")
            assert got["r1"][1][1].version == v2 == version + 1

    run(scenario)


def test_a_change_missed_while_disconnected_arrives_after_reconnect(
    zk: ZooKeeperServer, ns: str,
) -> None:
    async def scenario() -> None:
        with proxy_to(zk) as proxy:
            async with (running_coordinator(zk.address, ns, replica="w") as w,
                        running_coordinator(proxy.address, ns, replica="r",
                                            session_timeout=4) as r):
                got: list[ChangeEvent] = []
                r.add_change_listener(got.append)
                proxy.block()
                await eventually(lambda: r.state is ConnectionState.SUSPENDED, 5)
                await w.notify_change(n=1)
                last = await w.notify_change(n=2)
                assert not got
                proxy.unblock()
                await eventually(lambda: got, 5, "the missed change")
                assert got[-1].version == last and got[-1].info["n"] == 2

    run(scenario)


def test_start_fails_clearly_when_zookeeper_is_unreachable() -> None:
    from reconciler.core.errors import ReconcilerError
    from reconciler.locks import ZooKeeperCoordinator
    from tests.services.zookeeper import free_ports

    port = free_ports(1)[0]

    async def scenario() -> None:
        c = ZooKeeperCoordinator(f"127.0.0.1:{port}/chroot", namespace="x")
        assert c.root == "/chroot/x"
        expected = f"cannot connect to ZooKeeper at 127.0.0.1:{port}"
        with pytest.raises(ReconcilerError, match=expected):
            await c.start(timeout=1)

    run(scenario)

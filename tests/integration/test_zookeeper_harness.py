"""The test harness itself: real servers start, report their mode, stop and restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from tests.services.zookeeper import (
    ZooKeeperEnsemble,
    ZooKeeperServer,
    ZooKeeperStartError,
    four_letter,
    proxy_to,
    require_zookeeper,
    shared_ensemble,
    start_standalone,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    """A standalone server of this module's own (the tests stop and restart it)."""
    require_zookeeper()
    server = start_standalone(tmp_path_factory.mktemp("zk"))
    try:
        yield server
    finally:
        server.kill()


def client(hosts: str, timeout: float = 5) -> KazooClient:
    k = KazooClient(hosts=hosts, timeout=timeout,
                    connection_retry={"max_tries": -1, "delay": 0.05, "max_delay": 0.5})
    k.start(10)
    return k


def test_standalone_serves_and_keeps_data_across_a_restart(private: ZooKeeperServer) -> None:
    assert private.mode() == "standalone" and private.alive
    assert private.config_path.read_text().count("forceSync=no") == 1
    assert (private.directory / "server.log").stat().st_size > 0  # slf4j-simple logs
    k = client(private.address)
    try:
        k.create("/harness", b"kept")
    finally:
        k.stop()
        k.close()
    private.restart()
    assert private.mode() == "standalone"
    k = client(private.address)
    try:
        assert k.get("/harness")[0] == b"kept"
    finally:
        k.stop()
        k.close()


def test_a_second_server_on_a_used_port_is_not_mistaken_for_ready(
    private: ZooKeeperServer, tmp_path: Path,
) -> None:
    # srvr on the port answers (the first server), but the second JVM exits: not ready
    clash = ZooKeeperServer(tmp_path, private.client_port)
    with pytest.raises(ZooKeeperStartError, match="exited"):
        clash.start(timeout=30)
    assert private.mode() == "standalone"


def test_a_client_sees_the_server_go_and_come_back(private: ZooKeeperServer) -> None:
    states: list[str] = []
    k = client(private.address, timeout=30)  # outlives a slow JVM start on a busy machine
    k.add_listener(states.append)
    try:
        private.stop()
        wait_until(lambda: "SUSPENDED" in states, 10, "SUSPENDED")
        private.start()
        ready = time.monotonic()
        wait_until(lambda: states[-1] == "CONNECTED", 10, "CONNECTED")
        # bounded backoff (max 0.5 s): back within about a second of the server's return
        assert time.monotonic() - ready < 2.0
        assert "LOST" not in states  # the restarted server restored the session
    finally:
        k.stop()
        k.close()


def test_the_proxy_partitions_and_heals(private: ZooKeeperServer) -> None:
    with proxy_to(private) as proxy:
        states: list[str] = []
        k = client(proxy.address)
        k.add_listener(states.append)
        try:
            proxy.block()
            wait_until(lambda: "SUSPENDED" in states, 10, "SUSPENDED")
            proxy.unblock()
            wait_until(lambda: states[-1] == "CONNECTED", 10, "CONNECTED")
        finally:
            k.stop()
            k.close()


@pytest.fixture
def ensemble() -> ZooKeeperEnsemble:
    require_zookeeper()
    return shared_ensemble()


def test_ensemble_has_one_leader_and_elects_another_after_a_kill(
    ensemble: ZooKeeperEnsemble,
) -> None:
    modes = sorted(m or "-" for m in ensemble.modes().values())
    assert modes == ["follower", "follower", "leader"]
    old = ensemble.kill_leader()
    new = ensemble.wait_ready(15)
    assert new is not old and new.mode() == "leader"
    ensemble.restore()
    assert old.mode() == "follower"


def test_ruok_answers_before_a_quorum_but_srvr_has_no_mode(ensemble: ZooKeeperEnsemble) -> None:
    leader = ensemble.leader()
    assert leader is not None
    survivor = ensemble.followers()[0]
    for s in ensemble.servers:
        if s is not survivor:
            s.kill()
    # alone, the survivor is alive and says imok, but it serves nothing
    wait_until(lambda: survivor.mode() is None, 10, "the survivor to lose its quorum")
    assert four_letter(survivor.client_port, "ruok") == "imok"
    assert survivor.alive
    ensemble.restore()
    assert sorted(m or "-" for m in ensemble.modes().values()) == [
        "follower", "follower", "leader"]

"""DNS rebinding: the API answers only the host names it is meant to be reached by.

A web page on ``attacker.example`` can re-point its own DNS name to 127.0.0.1 and then
script requests to the daemon's loopback port "same-origin" in the operator's browser
(reading tasks, run output, metrics; and, with a token it learnt elsewhere or a
permissive setup, more). The browser still sends ``Host: attacker.example``. The API
server therefore refuses, on a loopback address, every Host that is not a loopback
name, an IP literal or a configured name (reconciler.api.security.HostPolicy; wired in
reconciler.api.server.ApiServer). On a non-loopback address (0.0.0.0 in a container)
the names clients use cannot be guessed, so any Host is answered unless names are
configured.

Unit tests for the policy, the guard in front of the in-process app, and the real
daemon on 127.0.0.1 answering raw HTTP requests with forged Host headers.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reconciler.api.app import create_app
from reconciler.api.security import HostGuard, HostPolicy
from reconciler.api.server import ApiServer
from tests.api.conftest import AUTH, harness, run
from tests.e2e.conftest import DaemonProcess, task_yaml, wait_until

pytestmark = [pytest.mark.security]

EVIL = ["attacker.example", "attacker.example:8080", "127.0.0.1.attacker.example",
        "localhost.attacker.example", "localhostx", "reconciler.example.com.evil", "[::1"]
ALWAYS = [None, "", "localhost", "localhost:8080", "LOCALHOST.", "app.localhost:9",
          "127.0.0.1", "127.0.0.1:8080", "127.9.9.9", "[::1]:8080", "::1", "10.1.2.3:80",
          "[fd00::1]"]


# ------------------------------------------------------------------------- policy


def test_loopback_listener_answers_only_loopback_names_and_ip_literals() -> None:
    """On a loopback address, by default: localhost, *.localhost, loopback and other IP
    literals, or no Host at all are answered; any other name is refused."""
    for listen in ("127.0.0.1", "::1", "localhost"):
        policy = HostPolicy.for_listen(listen)
        assert policy is not None, listen
        for host in ALWAYS:
            assert policy.allows(host), (listen, host)
        for host in EVIL:
            assert not policy.allows(host), (listen, host)


def test_configured_names_and_wildcards() -> None:
    """Configured names are exact (port ignored, case-insensitive); ``*.suffix`` matches
    subdomains only; ``*`` switches the check off; on 0.0.0.0 the default is off."""
    policy = HostPolicy.for_listen("127.0.0.1", ["reconciler.example.com", "*.corp.example"])
    assert policy is not None
    for host in ("reconciler.example.com", "Reconciler.Example.Com:8443", "a.corp.example",
                 "a.b.corp.example", "localhost"):
        assert policy.allows(host), host
    for host in ("corp.example", "xcorp.example", "reconciler.example.com.evil",
                 "evilreconciler.example.com", "attacker.example"):
        assert not policy.allows(host), host
    assert HostPolicy.for_listen("127.0.0.1", ["*"]) is None
    assert HostPolicy.for_listen("0.0.0.0") is None  # the default off loopback: any
    assert HostPolicy.for_listen("::") is None
    assert HostPolicy.for_listen("10.0.0.5") is None
    restricted = HostPolicy.for_listen("0.0.0.0", ["sched.example.com"])
    assert restricted is not None and not restricted.allows("attacker.example")
    assert restricted.allows("sched.example.com") and restricted.allows("10.0.0.5:8080")


def test_the_api_server_wraps_the_app_by_its_listen_address() -> None:
    """ApiServer guards a loopback listener by default, not a wildcard one, and takes the
    configured names (the daemon's --allowed-hosts)."""
    app = create_app(None)
    servers = [ApiServer(app, "127.0.0.1:0"), ApiServer(app, "0.0.0.0:0"),
               ApiServer(app, "0.0.0.0:0", allowed_hosts=["sched.example.com"])]
    try:
        assert isinstance(servers[0].served, HostGuard)
        assert servers[1].host_policy is None and servers[1].served is servers[1].bridge
        assert all(server.bridge.app is app for server in servers)
        guarded = servers[2].host_policy
        assert guarded is not None and guarded.allows("sched.example.com")
        assert not guarded.allows("attacker.example")
    finally:
        for server in servers:
            server.sock.close()


# --------------------------------------------------------------- in-process guard


def test_a_forged_host_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """A mutation with a valid token but a foreign Host gets 400 host_not_allowed (JSON,
    with the security headers) and changes nothing; the same request with a loopback
    Host works."""

    async def scenario() -> None:
        async with harness(tmp_path) as h:
            policy = HostPolicy.for_listen("127.0.0.1")
            assert policy is not None
            guarded = HostGuard(h.app, policy)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded),
                                         base_url="http://127.0.0.1:8080") as client:
                for host in EVIL[:3]:
                    r = await client.post("/api/v1/tasks/heartbeat/suspend",
                                          headers={**AUTH, "Host": host})
                    assert r.status_code == 400, host
                    assert r.json()["error"]["code"] == "host_not_allowed"
                    assert host not in r.text
                    assert r.headers["x-content-type-options"] == "nosniff"
                    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
                    r = await client.get("/api/v1/tasks", headers={"Host": host})
                    assert r.status_code == 400
                assert not (await client.get("/api/v1/tasks/heartbeat")).json()["suspended"]
                assert (await client.get("/api/v1/audit")).json()["items"] == []
                r = await client.post("/api/v1/tasks/heartbeat/suspend",
                                      headers={**AUTH, "Host": "localhost:8080"})
                assert r.status_code == 200 and r.json()["task"]["suspended"]

    run(scenario)


# --------------------------------------------------------------------- real daemon


def raw_request(port: int, host: str, method: str = "GET", path: str = "/api/v1/tasks",
                headers: str = "") -> tuple[int, bytes]:
    """One HTTP/1.1 request with exactly the Host header given; (status, raw response)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}"
                     "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


class TokenDaemon(DaemonProcess):
    def env(self) -> dict[str, str]:
        return {**super().env(), "RECONCILER_API_TOKEN": "ops:host-test-token-0123456789",
                "RECONCILER_ALLOWED_HOSTS": "sched.example.com, *.ops.example.com"}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    d = TokenDaemon(tmp_path)
    d.write("t.yaml", task_yaml("probe", "@yearly", "command: [/bin/true]"))
    yield d.start()
    d.stop()


@pytest.mark.e2e
def test_the_daemon_on_loopback_refuses_rebound_names(daemon: DaemonProcess) -> None:
    """The real daemon on 127.0.0.1 answers 127.0.0.1 / localhost / [::1] Hosts and the
    names in RECONCILER_ALLOWED_HOSTS, and refuses a rebound name on reads, mutations
    (with a valid token) and the dashboard; the refused mutation is not applied and the
    refusal is logged."""
    port = daemon.port
    token = "Authorization: Bearer host-test-token-0123456789\r\n"
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}",
                 "sched.example.com", f"a.ops.example.com:{port}"):  # RECONCILER_ALLOWED_HOSTS
        assert raw_request(port, host)[0] == 200, host
    for path in ("/api/v1/tasks", "/", "/metrics", "/api/v1/status"):
        status, data = raw_request(port, f"attacker.example:{port}", path=path)
        assert status == 400, (path, data[:200])
        assert b"host_not_allowed" in data and b"nosniff" in data
    status, _ = raw_request(port, "attacker.example", "POST",
                            "/api/v1/tasks/probe/suspend", token)
    assert status == 400
    assert not httpx.get(f"http://127.0.0.1:{port}/api/v1/tasks/probe").json()["suspended"]
    status, _ = raw_request(port, f"localhost:{port}", "POST", "/api/v1/tasks/probe/suspend",
                            token)
    assert status == 200
    wait_until(lambda: b"refused a request with Host 'attacker.example" in
               daemon.log.read_bytes(), what="the refusal in the log")

"""Idle, slow and churning connections cannot lock anyone out of the API.

The real daemon runs as a subprocess (tests/e2e/conftest.py) with an API token. Attacks
come from loopback addresses other than 127.0.0.1 where the test needs an innocent
client on 127.0.0.1 (any 127.x address reaches a 127.0.0.1 listener on Linux):

* 600 silent sockets and 400 clients opening and closing the event stream in a loop:
  ``/healthz`` and ``/readyz`` still answer 200 within 10 s, and the daemon closes the
  silent sockets by itself (request-head timeout);
* a request head that never completes is closed;
* one address over its connection cap gets a quick 503 for anything but the probes,
  while another address is served;
* one address over its stream cap gets 503 for another stream, another address not;
* one address over its request rate (``--api-rate-per-address``) gets 429 for anything
  but the probes, while another address is served.

Waits are bounded and on observable progress (a status code, a closed socket).
"""

from __future__ import annotations

import asyncio
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reconciler.api.limits import Limits
from tests.bench.api_load import TOKEN, hostile_load, new_counts
from tests.e2e.conftest import DaemonProcess, wait_until

pytestmark = [pytest.mark.security]

LIMITS = Limits()  # the daemon's defaults
IDLE, SSE = 600, 400
NEEDED_FDS = IDLE + SSE + 2 * LIMITS.per_client + 256


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DaemonProcess]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < NEEDED_FDS:
        if hard != resource.RLIM_INFINITY and hard < NEEDED_FDS:
            pytest.skip(f"the open-files hard limit {hard} is below {NEEDED_FDS}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (NEEDED_FDS, hard))
    monkeypatch.setenv("RECONCILER_API_TOKEN", TOKEN)
    d = DaemonProcess(tmp_path).start()
    try:
        yield d
    finally:
        d.stop()


def url(d: DaemonProcess, path: str) -> str:
    return f"http://127.0.0.1:{d.port}{path}"


def status(d: DaemonProcess, path: str, **kwargs: object) -> int:
    """The status of a GET, or 0 when the connection failed or timed out."""
    try:
        return httpx.get(url(d, path), timeout=5, **kwargs).status_code  # type: ignore[arg-type]
    except httpx.HTTPError:
        return 0


def connect_from(d: DaemonProcess, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", d.port))
    return sock


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the daemon closes ``sock`` within ``within`` seconds (bytes it sends
    first, e.g. a 503, are read and dropped)."""
    sock.settimeout(within)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def raw_get(path: str, port: int) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN.partition(':')[2]}\r\n\r\n").encode()


def first_line(sock: socket.socket, timeout: float = 5) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.partition(b"\r\n")[0]


def test_idle_and_churning_connections_leave_the_probes_answering(api: DaemonProcess) -> None:
    counts = new_counts()
    seconds = LIMITS.head_timeout + 15
    loader = threading.Thread(
        target=lambda: asyncio.run(hostile_load(api.port, seconds, IDLE, SSE, counts)),
        daemon=True)
    loader.start()
    try:
        wait_until(lambda: counts["idle_opened"] >= IDLE
                   and sum(v for k, v in counts.items() if k.startswith("sse_")) >= SSE,
                   timeout=30, what="600 idle sockets open and 400 streams tried")
        wait_until(lambda: status(api, "/healthz") == 200, timeout=10, what="/healthz 200")
        wait_until(lambda: status(api, "/readyz") == 200, timeout=10, what="/readyz 200")
        # the daemon closes silent sockets itself (they are reopened by the loader)
        wait_until(lambda: counts["idle_closed_by_daemon"] >= IDLE // 2,
                   timeout=LIMITS.head_timeout + 10, what="silent sockets closed")
    finally:
        loader.join(timeout=seconds + 30)
    assert not loader.is_alive()
    # the load is gone: an authenticated call is served again
    wait_until(lambda: status(api, "/api/v1/tasks", headers={
        "Authorization": f"Bearer {TOKEN.partition(':')[2]}"}) == 200,
        timeout=LIMITS.head_timeout + 10, what="an authenticated call after the load")


def test_an_incomplete_request_head_is_closed(api: DaemonProcess) -> None:
    silent = connect_from(api, "127.0.0.1")
    partial = connect_from(api, "127.0.0.1")
    partial.sendall(b"GET /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line
    try:
        assert closed_by_peer(silent, LIMITS.head_timeout + 5)
        assert closed_by_peer(partial, 5)
    finally:
        silent.close()
        partial.close()
    assert status(api, "/healthz") == 200


def test_an_address_over_its_connection_cap_gets_503_others_are_served(
        api: DaemonProcess) -> None:
    held = [connect_from(api, "127.0.0.2") for _ in range(LIMITS.per_client)]
    try:
        extra = connect_from(api, "127.0.0.2")
        started = time.monotonic()
        extra.sendall(raw_get("/api/v1/tasks", api.port))
        assert first_line(extra).startswith(b"HTTP/1.1 503")
        assert closed_by_peer(extra, 5)
        assert time.monotonic() - started < 5  # answered and closed, not left hanging
        probe = connect_from(api, "127.0.0.2")
        probe.sendall(raw_get("/healthz", api.port))
        assert first_line(probe).startswith(b"HTTP/1.1 200")
        for sock in (extra, probe):
            sock.close()
        assert status(api, "/api/v1/tasks") == 200  # 127.0.0.1 is not affected
    finally:
        for sock in held:
            sock.close()


def test_an_address_over_its_stream_cap_gets_503_others_are_served(
        api: DaemonProcess) -> None:
    streams = []
    try:
        for _ in range(LIMITS.streams_per_client):
            sock = connect_from(api, "127.0.0.3")
            sock.sendall(raw_get("/api/v1/events", api.port))
            assert first_line(sock).startswith(b"HTTP/1.1 200")
            streams.append(sock)
        extra = connect_from(api, "127.0.0.3")
        extra.sendall(raw_get("/api/v1/events", api.port))
        assert first_line(extra).startswith(b"HTTP/1.1 503")
        extra.close()
        other = connect_from(api, "127.0.0.1")
        other.sendall(raw_get("/api/v1/events", api.port))
        assert first_line(other).startswith(b"HTTP/1.1 200")
        other.close()
    finally:
        for sock in streams:
            sock.close()
    # closed streams are released: the address may open one again
    def reopened() -> bool:
        sock = connect_from(api, "127.0.0.3")
        try:
            sock.sendall(raw_get("/api/v1/events", api.port))
            return first_line(sock).startswith(b"HTTP/1.1 200")
        finally:
            sock.close()
    wait_until(reopened, timeout=10, what="a stream from 127.0.0.3 again")


def test_an_address_over_its_request_rate_gets_429_others_are_served(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_API_TOKEN", TOKEN)
    d = DaemonProcess(tmp_path).start("--api-rate-per-address", "0.1")  # a burst of one
    try:
        def answer(source: str, path: str) -> bytes:
            sock = connect_from(d, source)
            try:
                sock.sendall(raw_get(path, d.port))
                return first_line(sock)
            finally:
                sock.close()

        assert answer("127.0.0.4", "/api/v1/tasks").startswith(b"HTTP/1.1 200")
        assert answer("127.0.0.4", "/api/v1/tasks").startswith(b"HTTP/1.1 429")
        assert answer("127.0.0.4", "/healthz").startswith(b"HTTP/1.1 200")
        assert answer("127.0.0.4", "/readyz").split(b" ")[1] != b"429"
        assert answer("127.0.0.5", "/api/v1/tasks").startswith(b"HTTP/1.1 200")
    finally:
        d.stop()

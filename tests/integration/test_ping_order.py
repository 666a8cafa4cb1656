"""Pings of one check are sent in the order they were asked for, on the sender's own
thread: a run's ``/start`` is never overtaken by its ``/fail``, even when the receiver
answers the first one slowly (healthchecks-style services read them in arrival order)."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

import httpx

from reconciler.core.clock import SystemClock
from reconciler.daemon.sender import NotificationSender, SenderConfig, ping_check
from reconciler.executors.delivery import Deliverer
from reconciler.store.memory import MemoryStore


def test_the_check_of_a_ping_url() -> None:
    assert ping_check("http://hc.test/ping/abc/start") == "http://hc.test/ping/abc"
    assert ping_check("http://hc.test/ping/abc/fail") == "http://hc.test/ping/abc"
    assert ping_check("http://hc.test/ping/abc/") == "http://hc.test/ping/abc"


def test_a_slow_start_ping_is_not_overtaken_by_its_fail() -> None:
    arrived: list[str] = []
    lock = threading.Lock()

    async def receiver(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/start"):
            await asyncio.sleep(0.3)  # the first ping is answered slowly
        with lock:
            arrived.append(request.url.path)
        return httpx.Response(200)

    sender = NotificationSender(
        MemoryStore(), SystemClock(),
        SenderConfig(replica="r1", min_interval=timedelta(minutes=5),
                     backoff=timedelta(seconds=10)),
        Deliverer(httpx.MockTransport(receiver)))
    sender.start()
    try:
        sender.ping("http://hc.test/ping/a/start")
        sender.ping("http://hc.test/ping/a/fail", "disk full")
        sender.ping("http://hc.test/ping/b")  # another check is not held back
        deadline = time.monotonic() + 10
        while len(arrived) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sender.stop()
    assert arrived == ["/ping/b", "/ping/a/start", "/ping/a/fail"]

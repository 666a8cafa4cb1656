"""End-to-end: notifications from the real daemon to a webhook receiver on loopback.

The receiver is a tiny ``http.server`` on a thread of the test. ``--notify-backoff
200ms`` makes retries come fast (the default is 10s) and ``--notify-min-interval 1ms``
turns grouping off, so every event is its own message and can be counted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.outbox import OutboxStatus
from reconciler.core.runtime import RunStatus
from tests.e2e.conftest import DaemonProcess, free_port, task_yaml, wait_until

pytestmark = pytest.mark.e2e

KEY = "e2e-hook-key"
FAST = ("--notify-backoff", "200ms", "--notify-min-interval", "1ms")


class Receiver:
    """A webhook receiver on 127.0.0.1 that can go down and come back on its port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[float, dict[str, str], bytes]] = []
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def up(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer._lock:
                    outer.received.append((time.time(), dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(body) for _, _, body in self.received]

    def ids(self) -> list[str]:
        return [e["id"] for e in self.events()]


@pytest.fixture
def receiver() -> Any:
    r = Receiver()
    yield r
    r.down()


def channel_yaml(port: int) -> str:
    return (
        "apiVersion: reconciler/v1\nkind: Channel\nmetadata: {name: hook}\n"
        "spec:\n  webhook:\n"
        f"    url: http://127.0.0.1:{port}/reconciler\n"
        "    headers: {X-Team: platform}\n"
        "    secret: {fromEnv: HOOK_KEY}\n"
    )


def setup(daemon: DaemonProcess, receiver: Receiver, schedule: str = "@every 1s") -> None:
    daemon.write("channels.yaml", channel_yaml(receiver.port))
    daemon.write("fail.yaml", task_yaml("fail", schedule, "command: [\"false\"]",
                                        notify="[{channel: hook}]"))


@pytest.fixture
def notifying(daemon: DaemonProcess, monkeypatch: pytest.MonkeyPatch) -> DaemonProcess:
    monkeypatch.setenv("HOOK_KEY", KEY)
    return daemon


def outbox_ids(daemon: DaemonProcess, *statuses: OutboxStatus) -> set[str]:
    return {r.event_id for r in daemon.store.list_notifications(limit=10_000,
                                                                statuses=statuses)}


def test_a_failure_reaches_the_receiver_within_2s_signed(
        notifying: DaemonProcess, receiver: Receiver) -> None:
    daemon = notifying
    receiver.up()
    setup(daemon, receiver, "@every 2s")
    daemon.start()
    wait_until(lambda: receiver.received, timeout=15, what="the first notification")
    at, headers, body = receiver.received[0]
    event = json.loads(body)
    assert (event["event"], event["task"], event["run"]["status"]) == ("failed", "fail",
                                                                        "failed")
    finished = datetime.fromisoformat(event["run"]["finishedAt"]).timestamp()
    assert at - finished < 2.0, f"delivered {at - finished:.2f}s after the failure"
    expected = hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Reconciler-Signature"] == f"sha256={expected}"
    assert headers["X-Team"] == "platform"
    assert headers["Content-Type"] == "application/json"
    slot, attempt = event["run"]["slot"], event["run"]["attempt"]
    run = next(r for r in daemon.runs("fail") if r.id == event["run"]["id"])
    assert event["id"] == f"fail/{run.slot.isoformat()}/{attempt}/failed" and slot


def test_receiver_down_then_up_loses_nothing(
        notifying: DaemonProcess, receiver: Receiver) -> None:
    daemon = notifying
    setup(daemon, receiver)  # the receiver is down: connections are refused
    daemon.start(*FAST)
    wait_until(lambda: sum(r.attempts >= 2 for r in daemon.store.list_notifications()) >= 3,
               timeout=15, what="three events retried while the receiver is down")
    assert receiver.received == []
    receiver.up()
    res = daemon.cli("suspend", "fail")  # no new events from here on
    assert res.returncode == 0, res.stderr
    wait_until(lambda: not [r for r in daemon.runs("fail") if r.status is RunStatus.RUNNING]
               and not outbox_ids(daemon, OutboxStatus.PENDING),
               timeout=30, what="the outbox to drain")
    failed = {f"fail/{r.slot.isoformat()}/{r.attempt}/failed"
              for r in daemon.runs("fail") if r.status is RunStatus.FAILED}
    got = receiver.ids()
    assert failed and failed == set(got) == outbox_ids(daemon, OutboxStatus.SENT)
    assert len(got) == len(set(got)), "an event was delivered twice"


def test_kill_9_with_events_in_the_outbox_delivers_them_after_restart(
        notifying: DaemonProcess, receiver: Receiver, tmp_path: Path) -> None:
    daemon = notifying
    setup(daemon, receiver)
    daemon.start(*FAST)
    wait_until(lambda: len(outbox_ids(daemon, OutboxStatus.PENDING)) >= 3, timeout=15,
               what="three undelivered events")
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    waiting = outbox_ids(daemon, OutboxStatus.PENDING)
    assert len(waiting) >= 3
    receiver.up()
    daemon.start(*FAST)
    # the backoff doubles per attempt: the last retry can be a few seconds away
    wait_until(lambda: waiting <= set(receiver.ids()), timeout=30,
               what="every event of the killed daemon to arrive")
    assert waiting <= outbox_ids(daemon, OutboxStatus.SENT)

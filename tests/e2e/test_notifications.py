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

import httpx
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
        self.paths: list[tuple[float, str, bytes]] = []  # every request: its path too
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def up(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer._lock:
                    outer.paths.append((time.time(), self.path, body))
                    if not self.path.startswith("/ping"):
                        outer.received.append((time.time(), dict(self.headers.items()),
                                               body))
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


def test_surfaces_cli_api_metrics_and_a_test_event(
        notifying: DaemonProcess, receiver: Receiver) -> None:
    daemon = notifying
    receiver.up()
    setup(daemon, receiver, "@yearly")
    daemon.start()
    assert daemon.cli("trigger", "fail").returncode == 0
    wait_until(lambda: receiver.received, timeout=15, what="the notification")
    server = f"http://127.0.0.1:{daemon.port}"
    wait_until(lambda: httpx.get(f"{server}/api/v1/notifications", timeout=5).json()
               ["items"][0]["status"] == "sent", what="the row marked sent")
    # one wire format: the API, the CLI against the server and against the database
    api = httpx.get(f"{server}/api/v1/notifications", params={"task": "fail"},
                    timeout=5).json()
    remote = daemon.cli("notifications", "--task", "fail", "-o", "json", "--server", server)
    local = daemon.cli("notifications", "--task", "fail", "-o", "json")
    assert json.loads(remote.stdout) == json.loads(local.stdout) == api
    (item,) = api["items"]
    assert (item["event"], item["channel"], item["attempts"], item["lastStatusCode"]) == (
        "failed", "hook", 1, 204)
    assert api["backlog"] == 0
    text = daemon.cli("notifications").stdout
    assert "fail" in text and "sent" in text and "0 waiting for delivery" in text
    metrics = httpx.get(f"{server}/metrics", timeout=5).text
    assert ('reconciler_notifications_total{channel="hook",event="failed",status="sent"} 1.0'
            in metrics)
    assert "reconciler_notification_backlog 0.0" in metrics
    # a test event through the same delivery code
    res = daemon.cli("notify", "test", "hook")
    assert res.returncode == 0 and "sent to hook (HTTP 204)" in res.stdout, res.stderr
    _, headers, body = receiver.received[-1]
    assert json.loads(body)["task"] == "notify-test"
    expected = hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Reconciler-Signature"] == f"sha256={expected}"
    res = daemon.cli("notify", "test", "nope")
    assert res.returncode == 1 and "channel 'nope' not found (applied channels: hook)" in (
        res.stderr)


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
    wait_until(lambda: waiting <= outbox_ids(daemon, OutboxStatus.SENT), timeout=5,
               what="the rows recorded sent")


def test_a_run_abandoned_by_a_killed_daemon_is_notified_at_restart(
        notifying: DaemonProcess, receiver: Receiver) -> None:
    """kill -9 while a run is going: the restarted daemon marks it abandoned and its
    ``abandoned`` event is written in that transaction (then delivered)."""
    daemon = notifying
    receiver.up()
    daemon.write("channels.yaml", channel_yaml(receiver.port))
    daemon.write("slow.yaml", task_yaml("slow", "@every 1h", 'command: ["sleep", "600"]',
                                        notify="[{channel: hook}]"))
    daemon.start(*FAST)
    daemon.cli("trigger", "slow")
    wait_until(lambda: any(r.status is RunStatus.RUNNING for r in daemon.runs("slow")),
               timeout=15, what="the run to start")
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    daemon.start(*FAST)
    wait_until(lambda: any(e["event"] == "abandoned" for e in receiver.events()), timeout=15,
               what="the abandoned event")
    (event,) = [e for e in receiver.events() if e["event"] == "abandoned"]
    (run,) = [r for r in daemon.runs("slow") if r.status is RunStatus.ABANDONED]
    assert (event["task"], event["run"]["id"], event["run"]["status"]) == (
        "slow", run.id, "abandoned")


def late_setup(daemon: DaemonProcess, receiver: Receiver, run: str) -> None:
    receiver.up()
    daemon.write("channels.yaml", channel_yaml(receiver.port))
    daemon.write("late.yaml", task_yaml("late", "*/10 * * * * *", run, deadline="3s",
                                        notify="[{channel: hook}]"))


def late_events(receiver: Receiver) -> list[tuple[float, dict[str, Any]]]:
    with receiver._lock:
        got = [(at, json.loads(body)) for at, _, body in receiver.received]
    return [(at, e) for at, e in got if e["event"] == "late"]


def test_a_run_still_going_at_its_deadline_is_late_within_2s(
        notifying: DaemonProcess, receiver: Receiver) -> None:
    daemon = notifying
    late_setup(daemon, receiver, 'command: ["sleep", "30"]')
    daemon.start(*FAST)
    wait_until(lambda: late_events(receiver), timeout=25, what="a late event")
    arrived, event = late_events(receiver)[0]
    due = datetime.fromisoformat(event["at"]).timestamp()
    slot = datetime.fromisoformat(event["run"]["slot"])
    assert due == slot.timestamp() + 3
    assert 0 <= arrived - due < 2.0, f"delivered {arrived - due:.2f}s after the deadline"
    assert event["id"] == f"late/{slot.isoformat()}/0/late"
    assert event["run"]["status"] == "running"


def test_a_deadline_passed_while_the_daemon_was_down_is_late_at_start_up(
        notifying: DaemonProcess, receiver: Receiver) -> None:
    """The daemon is stopped at the slot: the restarted daemon writes the late event
    at start-up (it looks back), once, and none for the slots that succeeded."""
    daemon = notifying
    late_setup(daemon, receiver, 'command: ["true"]')
    daemon.start(*FAST)
    daemon.stop()
    stopped = time.time()
    missed = (int(stopped) // 10 + 1) * 10  # the next slot: nobody runs it
    time.sleep(max(0.0, missed + 3.5 - time.time()))
    daemon.start(*FAST)
    ready = time.time()
    wait_until(lambda: any(datetime.fromisoformat(e["run"]["slot"]).timestamp() == missed
                           for _, e in late_events(receiver)),
               timeout=10, what="the missed slot's late event")
    events = late_events(receiver)
    ids = [e["id"] for _, e in events]
    assert len(ids) == len(set(ids)), "a late event was delivered twice"
    mine = [(at, e) for at, e in events
            if datetime.fromisoformat(e["run"]["slot"]).timestamp() == missed]
    ((arrived, _),) = mine
    assert arrived - ready < 2.0, f"delivered {arrived - ready:.2f}s after start-up"
    succeeded = {r.slot.timestamp() for r in daemon.runs("late")
                 if r.status is RunStatus.SUCCEEDED and r.finished_at is not None
                 and (r.finished_at - r.slot).total_seconds() <= 3}
    assert not succeeded & {datetime.fromisoformat(e["run"]["slot"]).timestamp()
                            for _, e in events}



def pings(receiver: Receiver) -> list[tuple[str, bytes]]:
    with receiver._lock:
        return [(path, body) for _, path, body in receiver.paths if path.startswith("/ping")]


def test_pings_of_runs_and_the_daemons_heartbeat(
        daemon: DaemonProcess, receiver: Receiver) -> None:
    """spec.ping: /start and /fail with the output's tail (a failing task), /start and
    the bare URL (a succeeding one); --heartbeat-url pinged every --heartbeat-every; a
    receiver that is down costs nothing but the pings."""
    receiver.up()
    base = f"http://127.0.0.1:{receiver.port}"
    daemon.write("bad.yaml", task_yaml(
        "bad", "@every 1h", 'shell: "echo disk full; exit 3"',
        ping=f"{{url: {base}/ping/bad}}"))
    daemon.write("good.yaml", task_yaml("good", "@every 1h", 'command: ["true"]',
                                        ping=f"{{url: {base}/ping/good/}}"))
    daemon.start("--heartbeat-url", f"{base}/ping/daemon", "--heartbeat-every", "300ms")
    daemon.cli("trigger", "bad")
    daemon.cli("trigger", "good")
    wanted = {"/ping/bad/start", "/ping/bad/fail", "/ping/good/start", "/ping/good"}
    wait_until(lambda: wanted <= {p for p, _ in pings(receiver)}, timeout=15,
               what="the runs' pings")
    got = dict(pings(receiver))
    assert got["/ping/bad/fail"].decode().strip() == "disk full"
    assert got["/ping/good"] == b""
    paths = [p for p, _ in pings(receiver)]
    assert paths.index("/ping/bad/start") < paths.index("/ping/bad/fail")
    wait_until(lambda: sum(p == "/ping/daemon" for p, _ in pings(receiver)) >= 3, timeout=5,
               what="three heartbeats")
    daemon.stop()
    beats = sum(p == "/ping/daemon" for p, _ in pings(receiver))
    time.sleep(1)
    assert sum(p == "/ping/daemon" for p, _ in pings(receiver)) == beats  # stopped: silent
    log = daemon.log.read_text()
    assert "/ping/daemon" not in log and "/ping/bad" not in log  # never logged


def test_a_bad_heartbeat_url_is_refused_naming_the_flag(daemon: DaemonProcess) -> None:
    result = daemon.cli("run", "--manifests", str(daemon.manifests),
                        "--heartbeat-url", "ftp://hc.example/secret-key")
    assert result.returncode != 0
    assert "--heartbeat-url: not an http:// or https:// URL" in result.stderr
    assert "secret-key" not in result.stderr

"""The notification sender: delivers the outbox, on a thread and event loop of its own.

Each cycle claims the due rows (a lease in the table, so exactly one replica holds a
row; a crashed sender's rows are taken over when the lease runs out), asks the core
which are sent now and which wait (:func:`~reconciler.core.outbox.plan_delivery`: one
message per channel, task and event per ``min_interval``, the rest folded into the
next one), delivers them concurrently and writes every attempt back. A failed
delivery is retried with exponential backoff (:func:`~reconciler.core.outbox.retry_at`)
until it has failed for 24 hours (then ``failed``).

Nothing here runs on the scheduler's loop: the scheduler only calls :meth:`wake`
(thread-safe) after writing rows; otherwise the sender looks every ``poll`` seconds.

Pings (``spec.ping``, ``--heartbeat-url``) are sent here too (:meth:`ping`, from any
thread): best effort, once, within :data:`PING_TIMEOUT`; at most
:data:`MAX_PINGS_IN_FLIGHT` at a time (more are dropped, with a warning).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from reconciler.core.clock import Clock
from reconciler.core.errors import ReconcilerError
from reconciler.core.outbox import (
    DeliveryAttempt,
    NotificationUpdate,
    OutboxStatus,
    Send,
    plan_delivery,
    retry_at,
)
from reconciler.core.protocols import NotificationStore
from reconciler.core.runtime import ActualChannel
from reconciler.executors.delivery import Deliverer

log = logging.getLogger("reconciler.notify")

#: A ping's receiver answers within this or the ping is lost (never retried).
PING_TIMEOUT = 5.0
MAX_PINGS_IN_FLIGHT = 256


class SenderStore(NotificationStore, Protocol):
    def load_channels(self) -> list[ActualChannel]: ...


#: Called per attempt: channel, event, outcome (``sent``, ``retry`` or ``failed``).
ResultHook = Callable[[str, str, str], None]


@dataclass(frozen=True)
class SenderConfig:
    replica: str
    min_interval: timedelta = timedelta(minutes=5)
    backoff: timedelta = timedelta(seconds=10)  # the first retry; doubles up to 1 h
    lease: timedelta = timedelta(seconds=60)
    poll: float = 1.0
    batch: int = 100
    #: A single replica (it holds the database lock): at start-up, rows claimed by a
    #: process that is gone are taken over at once, not when their lease runs out.
    takeover_at_start: bool = True


def _no_result(channel: str, event: str, outcome: str) -> None:
    pass


def _no_backlog(pending: int) -> None:
    pass


class NotificationSender:
    def __init__(self, store: SenderStore, clock: Clock, config: SenderConfig,
                 deliverer: Deliverer | None = None, *, on_result: ResultHook = _no_result,
                 on_backlog: Callable[[int], None] = _no_backlog) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self.deliverer = deliverer or Deliverer()
        self.on_result = on_result
        self.on_backlog = on_backlog
        self._takeover = config.takeover_at_start
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._pings: set[asyncio.Task[None]] = set()
        #: The newest ping of each check (its URL without /start or /fail): a run's
        #: /start is sent before its /fail or success, never overtaken by it
        self._last_ping: dict[str, asyncio.Task[None]] = {}
        self.pings_dropped = 0

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(ready,),
                                        name="notify-sender", daemon=True)
        self._thread.start()
        ready.wait()

    def _main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._wake, self._stop = asyncio.Event(), asyncio.Event()
        ready.set()
        try:
            loop.run_until_complete(self._run(self._wake, self._stop))
        finally:
            loop.close()

    def wake(self) -> None:
        """Look at the outbox now (from any thread)."""
        loop, event = self._loop, self._wake
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop just stopped
                loop.call_soon_threadsafe(event.set)

    def ping(self, url: str, body: str = "") -> None:
        """POST ``body`` to ``url`` on the sender's loop (from any thread; never blocks)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop just stopped
                loop.call_soon_threadsafe(self._start_ping, url, body)

    def _start_ping(self, url: str, body: str) -> None:
        if len(self._pings) >= MAX_PINGS_IN_FLIGHT:
            self.pings_dropped += 1
            log.warning("ping to %s dropped: %d pings in flight", _host(url), len(self._pings))
            return
        key = ping_check(url)
        before = self._last_ping.get(key)
        task = asyncio.get_running_loop().create_task(self._send_ping(url, body, before))
        self._pings.add(task)
        self._last_ping[key] = task
        task.add_done_callback(self._pings.discard)
        task.add_done_callback(lambda done: self._forget_ping(key, done))

    def _forget_ping(self, key: str, done: asyncio.Task[None]) -> None:
        if self._last_ping.get(key) is done:
            del self._last_ping[key]

    async def _send_ping(self, url: str, body: str, before: asyncio.Task[None] | None
                         ) -> None:
        if before is not None:
            await asyncio.wait([before])  # in order per check; its outcome does not matter
        result = await self.deliverer.ping(url, body, PING_TIMEOUT)
        if not result.ok:
            log.info("ping to %s failed: %s", _host(url), result.error)

    def stop(self, timeout: float = 15.0) -> None:
        loop, event = self._loop, self._stop
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
        if self._thread is not None:
            self._thread.join(timeout)

    async def _run(self, wake: asyncio.Event, stop: asyncio.Event) -> None:
        while not stop.is_set():
            wake.clear()
            try:
                busy = await self.cycle()
            except ReconcilerError as exc:
                log.warning("notifications: the outbox could not be read or written: %s", exc)
                busy = 0
            except Exception:  # the sender must outlive a bug in one cycle
                log.exception("notifications: sender cycle failed")
                busy = 0
            if busy >= self.config.batch:
                continue  # more are due
            waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())}
            await asyncio.wait(waiters, timeout=self.config.poll,
                               return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
        if self._pings:  # the last pings (a run that ended at shutdown) get their time
            await asyncio.wait(set(self._pings), timeout=PING_TIMEOUT)

    # ------------------------------------------------------------------- cycle

    async def cycle(self) -> int:
        """Claim, plan, deliver and record what is due now; return how many rows."""
        cfg = self.config
        now = self.clock.now()
        claimed = self.store.claim_notifications(replica=cfg.replica, now=now, lease=cfg.lease,
                                                 limit=cfg.batch, takeover=self._takeover)
        self._takeover = False
        if claimed:
            last = self.store.last_sent(sorted({r.key for r in claimed}))
            plan = plan_delivery(claimed, last, now, cfg.min_interval)
            channels = {c.name: c.document for c in self.store.load_channels()}
            updates = [NotificationUpdate(r.id, OutboxStatus.PENDING, next_attempt_at=until)
                       for r, until in plan.postponed]
            for done in await asyncio.gather(*(self._send(s, channels) for s in plan.sends)):
                updates.extend(done)
            self.store.finish_notifications(updates, replica=cfg.replica)
        self.on_backlog(self.store.notification_counts().get(OutboxStatus.PENDING.value, 0))
        return len(claimed)

    async def _send(self, send: Send, channels: dict[str, Any]) -> list[NotificationUpdate]:
        row = send.row
        body = {**row.body, "repeats": send.repeats}
        started = self.clock.now()
        document = channels.get(row.channel)
        code: int | None = None
        error: str | None = f"channel {row.channel} no longer exists"
        result_ok = False
        if document is not None:
            result = await self.deliverer.deliver(document, body)
            result_ok, code, error = result.ok, result.status_code, result.error
        attempt = DeliveryAttempt(started, code, error)
        folded = [NotificationUpdate(f.id, OutboxStatus.GROUPED, grouped_into=row.id)
                  for f in send.folded]
        if result_ok:
            self.on_result(row.channel, row.event, "sent")
            return [NotificationUpdate(row.id, OutboxStatus.SENT, attempt=attempt,
                                       repeats=send.repeats, sent_at=self.clock.now()),
                    *folded]
        again = None if document is None else retry_at(
            row.created_at, row.attempts + 1, self.clock.now(), base=self.config.backoff)
        if again is None:
            log.warning("notification %d (%s of %s to %s) failed for good: %s", row.id,
                        row.event, row.task_name, row.channel, error)
            self.on_result(row.channel, row.event, "failed")
            return [NotificationUpdate(row.id, OutboxStatus.FAILED, attempt=attempt,
                                       repeats=send.repeats), *folded]
        log.info("notification %d (%s of %s to %s) not delivered (%s); next attempt at %s",
                 row.id, row.event, row.task_name, row.channel, error, again.isoformat())
        self.on_result(row.channel, row.event, "retry")
        return [NotificationUpdate(row.id, OutboxStatus.PENDING, attempt=attempt,
                                   repeats=send.repeats, next_attempt_at=again), *folded]


def ping_check(url: str) -> str:
    """The check a ping URL reports to: the URL without its ``/start`` or ``/fail``."""
    for suffix in ("/start", "/fail"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url.rstrip("/")


def _host(url: str) -> str:
    """What a log line says of a ping URL (its path and query may hold a key)."""
    return urlsplit(url).hostname or "?"


__all__: Sequence[str] = ("NotificationSender", "SenderConfig")

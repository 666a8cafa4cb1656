"""Pings: ``spec.ping`` of a task's runs and the daemon's own heartbeat.

:class:`Pinger` listens to the scheduler: when a run of a task with ``spec.ping``
starts or ends, the core says which ping that is (:func:`~reconciler.core.notify.
ping_of`: ``URL/start``, ``URL``, ``URL/fail`` with the output's tail) and the sender
thread sends it (:meth:`~reconciler.daemon.sender.NotificationSender.ping`: best
effort, a short timeout, never on the scheduler's loop).

:meth:`Pinger.heartbeat` (``reconciler run --heartbeat-url URL --heartbeat-every
60s``) pings ``URL`` from the scheduler's loop every so often, so a daemon that died
or whose loop is stuck stops pinging and a service such as healthchecks.io notices.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta

from reconciler.core.notify import ping_of
from reconciler.core.runtime import RunRecord
from reconciler.daemon.notices import PolicyOf
from reconciler.daemon.runs import NoListener

#: Sends one ping (url, body) without blocking: the sender thread's ``ping``.
PingSink = Callable[[str, str], None]


class Pinger(NoListener):
    def __init__(self, send: PingSink, policy_of: PolicyOf, *,
                 heartbeat_url: str | None = None,
                 heartbeat_every: timedelta = timedelta(seconds=60)) -> None:
        self.send = send
        self.policy_of = policy_of
        self.heartbeat_url = heartbeat_url
        self.heartbeat_every = heartbeat_every

    def _ping(self, record: RunRecord) -> None:
        policy = self.policy_of(record.task_name)
        if policy is None or policy.spec.ping is None:
            return
        ping = ping_of(policy.spec.ping.url, record.status, record.output_tail)
        if ping is not None:
            self.send(ping.url, ping.body)

    def run_started(self, record: RunRecord) -> None:
        self._ping(record)

    def run_finished(self, record: RunRecord) -> None:
        self._ping(record)

    async def heartbeat(self, stop: asyncio.Event) -> None:
        """Ping ``heartbeat_url`` now and every ``heartbeat_every`` until ``stop``."""
        if self.heartbeat_url is None:
            return
        every = self.heartbeat_every.total_seconds()
        while not stop.is_set():
            self.send(self.heartbeat_url, "")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

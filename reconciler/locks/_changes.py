"""Change notification: the ``changes`` znode, bumped by the writer after an apply.

:class:`_Changes` is the part of the coordinator that bumps it and turns each bump seen
by its data watch into a :class:`ChangeEvent` for the change listeners;
:func:`notify_change_now` bumps it from outside a daemon.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

from kazoo.exceptions import KazooException, NoNodeError

from reconciler.locks._bridge import wait
from reconciler.locks._session import (
    ChangeEvent,
    ChangeListener,
    _Session,
    _stop,
    log,
    make_client,
    namespace_root,
    parse_hosts,
)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class _Changes(_Session):
    """The change notification of a coordinator."""

    @property
    def change_version(self) -> int | None:
        return self._change_version

    def add_change_listener(self, listener: ChangeListener) -> None:
        """``listener(event)`` on the event loop when the change znode was bumped."""
        self._change_listeners.append(listener)

    async def notify_change(self, **info: Any) -> int | None:
        """Bump the change-notification znode (after an apply); returns its new version.

        None when ZooKeeper could not be reached (logged): replicas still pick the
        change up at their next periodic resync.
        """
        payload = {"by": self.replica, "at": _now_iso(), **info}
        try:
            stat = await wait(
                self.client.set_async(self.changes_path,
                                      json.dumps(payload, default=str).encode()),
                self.loop, self.op_timeout,
            )
        except (KazooException, TimeoutError) as exc:
            log.warning("could not notify the other replicas of a change: %s", exc)
            return None
        return int(stat.version)

    def _on_change_data(self, data: bytes | None, stat: Any) -> None:
        """DataWatch callback (a kazoo thread): first call, every bump, every new session."""
        if stat is None:
            return
        try:
            info = json.loads(data or b"{}")
        except ValueError:
            info = {}
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._apply_change, int(stat.version), info)

    def _apply_change(self, version: int, info: dict[str, Any]) -> None:
        previous = self._change_version
        if previous is not None and version <= previous:
            return
        self._change_version, self._change_info = version, info
        if previous is None:
            return  # the value found at start-up is not a change
        event = ChangeEvent(version, info)
        for listener in list(self._change_listeners):
            try:
                listener(event)
            except Exception:
                log.exception("change listener failed")


def notify_change_now(hosts: str, namespace: str = "default", timeout: float = 5.0,
                      **info: Any) -> int:
    """Bump the change znode from outside a daemon (e.g. after ``reconciler apply``)."""
    _, chroot = parse_hosts(hosts)
    path = f"{namespace_root(chroot, namespace)}/changes"
    client = make_client(hosts, session_timeout=max(timeout, 4.0))
    client.start(timeout)
    try:
        payload = json.dumps({"by": "cli", "at": _now_iso(), **info}, default=str).encode()
        try:
            stat = client.set(path, payload)
        except NoNodeError:
            client.ensure_path(path)
            stat = client.set(path, payload)
        return int(stat.version)
    finally:
        _stop(client)

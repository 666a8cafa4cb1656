"""Membership: one ephemeral node per live replica, and reading who is there.

:class:`_Membership` is the part of the coordinator that registers this replica under
``members/`` at every new session; :func:`_read_members` lists the live replicas with
the writer flagged, for a running coordinator and for :func:`read_cluster`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError

from reconciler.locks._bridge import wait
from reconciler.locks._election import _sequence
from reconciler.locks._session import _Session, _stop, log, make_client, namespace_root, parse_hosts


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    host: str | None
    pid: int | None
    version: str | None
    started_at: datetime | None
    session: str | None = None
    writer: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "session": self.session,
            "writer": self.writer,
        }


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class _Membership(_Session):
    """The membership node of a coordinator."""

    def _member_payload(self) -> bytes:
        return json.dumps({
            "id": self.replica,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": self.version,
            "started_at": self.started_at.isoformat(),
            "session": f"{self._session_id:#x}" if self._session_id else None,
        }).encode()

    async def _register_member(self) -> None:
        path = f"{self.members_path}/{self.replica}"
        data = self._member_payload()
        for _ in range(2):
            try:
                await wait(self.client.create_async(path, data, ephemeral=True), self.loop,
                           self.op_timeout)
                return
            except NodeExistsError:
                stat = await wait(self.client.exists_async(path), self.loop, self.op_timeout)
                if stat is not None and stat.ephemeralOwner == self._session_id:
                    return
                # A previous incarnation with the same id whose session has not expired
                # yet (e.g. a pod restarted under the same name): this process replaces it.
                log.warning("replacing a stale membership node %s", path)
                with contextlib.suppress(NoNodeError):
                    await wait(self.client.delete_async(path), self.loop, self.op_timeout)

    async def members(self) -> list[Member]:
        """Every live replica (its ephemeral membership node), the writer flagged."""
        return await _read_members(self.client, self.root, self.loop, self.op_timeout)


async def _read_members(
    client: KazooClient, root: str, loop: asyncio.AbstractEventLoop, timeout: float
) -> list[Member]:
    members_path, election_path = f"{root}/members", f"{root}/election"
    try:
        names = await wait(client.get_children_async(members_path), loop, timeout)
        contenders = await wait(client.get_children_async(election_path), loop, timeout)
    except NoNodeError:
        return []
    writer: str | None = None
    if contenders:
        first = min(contenders, key=_sequence)
        with contextlib.suppress(NoNodeError):
            data, _ = await wait(client.get_async(f"{election_path}/{first}"), loop, timeout)
            writer = data.decode()
    futures = [wait(client.get_async(f"{members_path}/{n}"), loop, timeout) for n in names]
    out: list[Member] = []
    for name, result in zip(names, await asyncio.gather(*futures, return_exceptions=True),
                            strict=True):
        if isinstance(result, NoNodeError):
            continue  # left meanwhile
        if isinstance(result, BaseException):
            raise result
        try:
            doc = json.loads(result[0] or b"{}")
        except ValueError:
            doc = {}
        out.append(Member(
            id=name,
            host=doc.get("host"),
            pid=doc.get("pid"),
            version=doc.get("version"),
            started_at=_parse_time(doc.get("started_at")),
            session=doc.get("session"),
            writer=name == writer,
        ))
    out.sort(key=lambda m: (not m.writer, m.id))
    return out


# ------------------------------------------------------- one-shot helpers for the CLI


def read_cluster(hosts: str, namespace: str = "default", timeout: float = 5.0) -> list[Member]:
    """The live members (for ``reconciler status``), with a short-lived connection."""
    _, chroot = parse_hosts(hosts)
    root = namespace_root(chroot, namespace)

    async def main() -> list[Member]:
        client = make_client(hosts, session_timeout=max(timeout, 4.0))
        await asyncio.to_thread(client.start, timeout)
        try:
            return await _read_members(client, root, asyncio.get_running_loop(), timeout)
        finally:
            await asyncio.to_thread(_stop, client)

    return asyncio.run(main())

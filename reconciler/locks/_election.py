"""Writer election: the replica whose election node is the lowest is the writer.

:class:`_Election` is the part of the coordinator that joins the election
(``election/<prefix>__n_<seq>``, ephemeral sequential), watches its predecessor, and
tells the writer listeners when this replica gains or loses writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from kazoo.exceptions import KazooException

from reconciler.locks._bridge import wait
from reconciler.locks._session import ConnectionState, WriterListener, _Session, log

_SEQ_DIGITS = 10


def _sequence(name: str) -> int:
    tail = name[-_SEQ_DIGITS:]
    return int(tail) if tail.isdigit() else -1


class _Election(_Session):
    """The writer election of a coordinator."""

    @property
    def is_writer(self) -> bool:
        """This replica leads the election and its session is certainly alive."""
        return self._writer and self._thread_state is ConnectionState.CONNECTED and (
            self.lease_valid
        )

    def add_writer_listener(self, listener: WriterListener) -> None:
        """``listener(is_writer)`` on the event loop when this replica gains/loses writing."""
        self._writer_listeners.append(listener)

    def _set_writer(self, value: bool) -> None:
        if value == self._writer:
            return
        self._writer = value
        log.info("this replica %s the writer", "is now" if value else "is no longer")
        for listener in list(self._writer_listeners):
            try:
                listener(value)
            except Exception:
                log.exception("writer listener failed")

    async def _election_loop(self) -> None:
        if not self.elect:
            return
        while not self._closing:
            await self._election_kick.wait()
            self._election_kick.clear()
            if self._thread_state is not ConnectionState.CONNECTED or self._data_watch is None:
                continue
            try:
                await self._election_step()
            except (KazooException, TimeoutError) as exc:
                log.debug("election step failed (%s); retrying", exc)
                await asyncio.sleep(0.1)
                self._election_kick.set()

    async def _election_step(self) -> None:
        loop, t = self.loop, self.op_timeout
        gen = self._session_gen
        if self._election_node is None or self._election_gen != gen:
            children = await wait(self.client.get_children_async(self.election_path), loop, t)
            mine = sorted((c for c in children if c.startswith(self._election_prefix)),
                          key=_sequence)
            if mine:  # created earlier in this session, the answer was lost
                node = mine[0]
            else:
                created = await wait(self.client.create_async(
                    f"{self.election_path}/{self._election_prefix}",
                    self.replica.encode(), ephemeral=True, sequence=True,
                ), loop, t)
                node = created.rsplit("/", 1)[1]
            self._election_node, self._election_gen = node, gen
        children = sorted(
            await wait(self.client.get_children_async(self.election_path), loop, t),
            key=_sequence,
        )
        node = self._election_node
        if node not in children:  # our node vanished (session expired): join again
            self._election_node = None
            self._election_kick.set()
            return
        index = children.index(node)
        if index == 0:
            self._set_writer(gen == self._session_gen)
            return
        self._set_writer(False)
        predecessor = f"{self.election_path}/{children[index - 1]}"
        stat = await wait(
            self.client.exists_async(predecessor, watch=self._on_predecessor_event), loop, t
        )
        if stat is None:
            self._election_kick.set()

    def _on_predecessor_event(self, _event: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._election_kick.set)

    async def wait_writer(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_writer:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.replica} did not become the writer in {timeout}s")
            await asyncio.sleep(0.01)

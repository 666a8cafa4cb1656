"""The pool of ``--max-concurrent-runs``: how many runs execute at once, and which
waiting run starts when a place frees.

A run holds a place while its executor runs (:meth:`RunPool.place`). When every place
is taken, waiting runs start in the order :func:`~reconciler.core.scheduling.start_order`
decides (priority, then slot, then arrival); a waiter that is cancelled (shutdown)
leaves the queue, and a place given to it just before is passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator
from datetime import datetime

from reconciler.core.scheduling import start_order


class RunPool:
    """``size`` places; waiting runs start by :func:`start_order`."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("the pool needs at least one place")
        self.size = size
        self.running = 0
        self._waiting: list[tuple[tuple[int, datetime, int], asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        """Runs waiting for a place (cancelled waiters not yet dropped aside)."""
        return sum(1 for _, future in self._waiting if not future.done())

    @contextlib.asynccontextmanager
    async def place(self, priority: int, slot: datetime) -> AsyncIterator[None]:
        """Hold a place for the body; wait for one by :func:`start_order` if all are taken."""
        await self._acquire(priority, slot)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int, slot: datetime) -> None:
        if self.running < self.size:  # then nobody waits: _release fills every free place
            self.running += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (start_order(priority, slot, next(self._arrivals)),
                                       future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # the place came with the cancellation: pass it on
            raise

    def _release(self) -> None:
        self.running -= 1
        while self.running < self.size and self._waiting:
            _, future = heapq.heappop(self._waiting)
            if future.done():  # its waiter was cancelled
                continue
            self.running += 1
            future.set_result(None)

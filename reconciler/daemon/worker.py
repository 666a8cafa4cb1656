"""Blocking store calls, off the event loop.

SQL round trips (and SQLite's fsync) must never stall the timeline, so every store
call goes through a :class:`StoreWorker`. Two threads: one for the hot path (run rows,
claims) and one for bulk work (loading thousands of tasks on resync), so a resync
cannot delay a run's start.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class StoreWorker:
    def __init__(self) -> None:
        self._hot = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-hot")
        self._bulk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-bulk")

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._hot, functools.partial(fn, *args, **kwargs))

    async def bulk(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._bulk, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._hot.shutdown(wait=True)
        self._bulk.shutdown(wait=True)

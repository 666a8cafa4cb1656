"""Run one asyncio scenario from a synchronous test, bounded in time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


def run(coro: Callable[[], Awaitable[None]], timeout: float = 30) -> None:
    async def main() -> None:
        await asyncio.wait_for(coro(), timeout)

    asyncio.run(main())

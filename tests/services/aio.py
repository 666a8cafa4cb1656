"""Small waiting helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    check: Callable[[], T | None], timeout: float = 10.0, what: str = "condition",
    interval: float = 0.02,
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def run(coro: Callable[[], Awaitable[None]], timeout: float = 30) -> None:
    async def main() -> None:
        await asyncio.wait_for(coro(), timeout)

    asyncio.run(main())

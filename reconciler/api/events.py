"""Server-sent events (``GET /api/v1/events``) for the dashboard and scripts.

Event types (``event:`` field; ``data:`` is one JSON object):

* ``hello``: sent first, ``{"replica": ..., "version": ...}``.
* ``task``: a task's definition or suspension changed, or it was removed:
  ``{"name": ..., "change": "updated" | "removed"}``.
* ``run``: a run started, finished, or a slot was recorded missed/skipped:
  ``{"task": ..., "run": <Run>}``.
* ``reconcile``: a reconcile finished: ``{"at", "revision", "errors", "created",
  "updated", "deleted"}``.
* ``resync``: this subscriber fell behind and events were dropped: re-read everything.

Publishing never blocks and never waits for a slow client: each subscriber has a
bounded queue; when it is full the queue is emptied and ``resync`` is queued instead.
A comment line (``: ping``) is sent every 15 s so proxies keep the stream open.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

PING_INTERVAL_S = 15.0
QUEUE_SIZE = 1000
_CLOSE = b""


def encode(event: str, data: Any) -> bytes:
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    return f"event: {event}\ndata: {payload}\n\n".encode()


class EventHub:
    def __init__(self, ping_interval: float = PING_INTERVAL_S, queue_size: int = QUEUE_SIZE
                 ) -> None:
        self._subscribers: set[asyncio.Queue[bytes]] = set()
        self._ping = ping_interval
        self._size = queue_size
        self.closed = False
        self.published = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: str, data: Any) -> None:
        """Queue an event for every subscriber (call on the event loop)."""
        self.published += 1
        if not self._subscribers:
            return
        message = encode(event, data)
        for queue in self._subscribers:
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(encode("resync", {"reason": "events were dropped"}))

    def close(self) -> None:
        """End every stream (daemon shutdown)."""
        self.closed = True
        for queue in self._subscribers:
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(_CLOSE)

    async def stream(self, hello: Any) -> AsyncIterator[bytes]:
        """The bytes of one subscriber's event stream, until :meth:`close`."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(self._size)
        self._subscribers.add(queue)
        try:
            yield b"retry: 3000\n\n" + encode("hello", hello)
            while not self.closed:
                try:
                    message = await asyncio.wait_for(queue.get(), timeout=self._ping)
                except TimeoutError:
                    yield b": ping\n\n"
                    continue
                if message is _CLOSE or message == _CLOSE:
                    break
                yield message
        finally:
            self._subscribers.discard(queue)

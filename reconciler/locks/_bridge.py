"""kazoo's asynchronous results as asyncio futures.

kazoo completes requests on its own threads; ``rawlink`` callbacks run there, so the
result is handed to the event loop with ``call_soon_threadsafe``. Nothing here blocks
the loop, and any number of requests can be in flight on the one connection (that is
what pipelines claims).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import selectors
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import AsyncResult, SequentialThreadingHandler
from kazoo.handlers.utils import selector_select
from kazoo.security import OPEN_ACL_UNSAFE


class _InlineAsyncResult(AsyncResult):  # type: ignore[misc]
    """Runs callbacks marked ``_inline`` on the thread that completes the request.

    kazoo queues every ``rawlink`` callback to its completion thread, one more thread
    hop (and GIL hand-off) per request. Our bridge callback only hands the result to
    the event loop, so it runs where the answer is read; kazoo's own callbacks still go
    through the queue.
    """

    def _do_callbacks(self) -> None:
        for callback in self._callbacks:
            if getattr(callback, "_inline", False) or not self._handler.running:
                callback(self)
            else:
                self._handler.completion_queue.put(functools.partial(callback, self))


# kazoo builds a new selector for every select() of its connection loop (several per
# request); with epoll that is an epoll_create + close each time. poll(2) objects cost
# no kernel state and have no FD_SETSIZE limit either.
_POLL = types.SimpleNamespace(
    EVENT_READ=selectors.EVENT_READ,
    EVENT_WRITE=selectors.EVENT_WRITE,
    DefaultSelector=getattr(selectors, "PollSelector", selectors.DefaultSelector),
)


class InlineCallbackHandler(SequentialThreadingHandler):  # type: ignore[misc]
    """kazoo's threading handler, cheaper per request: :class:`_InlineAsyncResult`
    results and poll(2)-based selects."""

    def async_result(self) -> _InlineAsyncResult:
        return _InlineAsyncResult(self)

    def select(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("selectors_module", _POLL)
        return selector_select(*args, **kwargs)


def _inline(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    fn._inline = True  # type: ignore[attr-defined]
    return fn


def _settle(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


class _Mailbox:
    """Completions handed to one event loop, with one wake-up per burst.

    ``call_soon_threadsafe`` writes to the loop's self-pipe on every call; with
    hundreds of answers arriving together that is a syscall and a loop wake-up each.
    Here answers queue up and the loop is woken once until it has drained the queue.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: collections.deque[tuple[asyncio.Future[Any], Any, BaseException | None]] = (
            collections.deque())
        self.lock = threading.Lock()
        self.scheduled = False

    def post(self, fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
        self.queue.append((fut, value, exc))
        with self.lock:
            if self.scheduled:
                return
            self.scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self.loop.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        with self.lock:
            self.scheduled = False
        queue = self.queue
        while queue:
            fut, value, exc = queue.popleft()
            _settle(fut, value, exc)


_mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox] = (
    weakref.WeakKeyDictionary())


def _mailbox(loop: asyncio.AbstractEventLoop) -> _Mailbox:
    box = _mailboxes.get(loop)
    if box is None:
        box = _mailboxes[loop] = _Mailbox(loop)
    return box


def to_future(result: Any, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    """An asyncio future (on ``loop``) for a kazoo ``IAsyncResult``."""
    fut: asyncio.Future[Any] = loop.create_future()
    post = _mailbox(loop).post

    @_inline
    def done(r: Any) -> None:
        exc = r.exception
        post(fut, None if exc is not None else r.value, exc)

    result.rawlink(done)
    return fut


async def wait(
    result: Any, loop: asyncio.AbstractEventLoop, timeout: float | None = None
) -> Any:
    """Await a kazoo ``IAsyncResult``; ``TimeoutError`` after ``timeout`` seconds.

    On timeout the request is *not* cancelled (ZooKeeper may still apply it); callers
    that must know the outcome use :func:`to_future` and keep the future.
    """
    fut = to_future(result, loop)
    if timeout is None:
        return await fut
    if not await settled(fut, loop, timeout):
        # Nobody will look at the late outcome: retrieve it, or asyncio logs "Future
        # exception was never retrieved" with a traceback for every request a session
        # expiry fails later.
        fut.add_done_callback(_retrieve)
        raise TimeoutError(f"no answer from ZooKeeper within {timeout:.3g}s")
    return fut.result()


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _wake(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


async def settled(fut: asyncio.Future[Any], loop: asyncio.AbstractEventLoop,
                  timeout: float) -> bool:
    """Wait until ``fut`` is done or ``timeout`` passed; True when done. Never cancels
    ``fut``. (``asyncio.wait`` does the same with several times the overhead, which
    counts at thousands of claims a second.)"""
    if fut.done():
        return True
    waiter: asyncio.Future[bool] = loop.create_future()
    timer = loop.call_later(timeout, _wake, waiter, False)
    fut.add_done_callback(lambda _f: _wake(waiter, True))
    try:
        return await waiter
    finally:
        timer.cancel()


_EPHEMERAL = 1


def create_ephemeral_async(client: KazooClient, path: str, value: bytes) -> Any:
    """``client.create_async(path, value, ephemeral=True, include_data=True)``, cheaper.

    ``create_async`` wraps the request in two decorator layers (``functools.wraps`` on
    every call) and a second result completed on kazoo's completion thread: about
    200 us of CPU per create against 75 us for the request itself, measured here. The
    claim path sends the ``Create2`` request directly (kazoo's ``_create_async_inner``;
    kazoo is pinned below 3) and falls back to the public call if that ever changes.
    The result is ``(path, ZnodeStat)`` either way (no chroot: paths are absolute).
    """
    inner = getattr(client, "_create_async_inner", None)
    if inner is not None and not client.chroot:
        try:
            return inner(path, value, OPEN_ACL_UNSAFE, _EPHEMERAL, trailing=False,
                         include_data=True)
        except TypeError:  # another signature: use the public API
            pass
        except KazooException as exc:  # short-circuited (closed, expired): a failed result
            result = client.handler.async_result()
            result.set_exception(exc)
            return result
    return client.create_async(path, value, ephemeral=True, include_data=True)

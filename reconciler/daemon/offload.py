"""Run executors on their own event loop thread, away from the timeline.

Starting a process costs the event loop about a millisecond (fork/exec, pipes, the
child watcher). Two hundred runs due in the same second would delay the timeline's
next wake-up by a few hundred milliseconds if they shared its loop. The
:class:`OffloadExecutor` gives executors a loop of their own: the scheduler's loop only
hands requests over and awaits results, so slot times stay precise under load.

Callbacks (output, progress) are handed back to the scheduler's loop, and the
scheduler's cancel event is mirrored onto the executor loop, so neither side touches
the other's asyncio objects from the wrong thread.

Creating one makes the process a child subreaper (:func:`become_subreaper`): a task's
descendants orphaned by a dying parent come back to the daemon, which then finds and
kills them with their run and reaps them.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

from reconciler.core.protocols import ExecutionEvents, ExecutionRequest, ExecutionResult, Executor
from reconciler.executors.tree import become_subreaper


class _Relay:
    """ExecutionEvents called on the executor loop, delivered on the scheduler's loop."""

    def __init__(self, target: ExecutionEvents, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def output(self, text: str) -> None:
        self._loop.call_soon_threadsafe(self._target.output, text)

    def progress(self, percent: float | None, message: str | None) -> None:
        self._loop.call_soon_threadsafe(self._target.progress, percent, message)


class OffloadExecutor:
    def __init__(self, inner: Executor, name: str = "executors") -> None:
        become_subreaper()
        self._inner = inner
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def execute(
        self, request: ExecutionRequest, events: ExecutionEvents, cancel: asyncio.Event
    ) -> ExecutionResult:
        assert self._loop is not None
        home = asyncio.get_running_loop()
        ready: Future[asyncio.Event] = Future()

        async def run() -> ExecutionResult:
            remote_cancel = asyncio.Event()
            ready.set_result(remote_cancel)
            return await self._inner.execute(request, _Relay(events, home), remote_cancel)

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        remote_cancel = await asyncio.wrap_future(ready)

        def forward_cancel() -> None:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(remote_cancel.set)

        waiter = home.create_task(cancel.wait())
        waiter.add_done_callback(lambda t: None if t.cancelled() else forward_cancel())
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # the inner executor kills the process on cancellation
            raise
        finally:
            waiter.cancel()

    def close(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

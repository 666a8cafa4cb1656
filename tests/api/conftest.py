"""A real daemon (SQLite, fake clock, fake executor) behind the API, driven in-process.

Every test runs one coroutine with ``asyncio.run``: the daemon, the scheduler and the
app share that loop, and requests go through httpx's ASGI transport (no sockets).
Nothing sleeps on the wall clock: time moves with ``FakeClock.advance`` and runs
finish when the test releases them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx

from reconciler.api.app import create_app
from reconciler.core.clock import FakeClock
from reconciler.core.protocols import ExecutionEvents, ExecutionRequest, ExecutionResult
from reconciler.core.runtime import RunStatus
from reconciler.daemon import DaemonConfig
from reconciler.daemon.compose import build_daemon

T = TypeVar("T")
T0 = datetime(2026, 3, 2, 11, 59, 58, tzinfo=UTC)  # a Monday, 2 s before noon UTC
TOKEN = "alice:s3cr3t-token-for-tests-0001"
SECRET = "s3cr3t-token-for-tests-0001"
AUTH = {"Authorization": f"Bearer {SECRET}"}

MANIFESTS = {
    "reports.yaml": """\
apiVersion: reconciler/v1
kind: Task
metadata:
  name: nightly-report
  labels: {team: data}
  annotations: {owner: data@example.com}
spec:
  schedule: "30 2 * * *"
  timeZone: Europe/Berlin
  run:
    command: [python3, -c, "print('report')"]
    env:
      REPORT_FORMAT: text
      DB_PASSWORD: hunter2
      API_TOKEN: {fromEnv: REPORT_API_TOKEN}
---
apiVersion: reconciler/v1
kind: Task
metadata:
  name: weekly-summary
  labels: {team: data, tier: batch}
spec:
  schedule: "0 9 * * MON"
  timeZone: America/New_York
  run:
    command: [uname, -a]
""",
    "backup.yaml": """\
apiVersion: reconciler/v1
kind: Task
metadata:
  name: nightly-backup
  labels: {team: platform, tier: critical}
spec:
  schedule: "15 1 * * *"
  timeZone: Europe/Berlin
  concurrencyPolicy: Forbid
  run:
    shell: echo backup
""",
    "heartbeat.yaml": """\
apiVersion: reconciler/v1
kind: Task
metadata:
  name: heartbeat
  labels: {team: demo}
spec:
  schedule: "@every 10s"
  concurrencyPolicy: Allow
  run:
    shell: echo tick
""",
    "paused.yaml": """\
apiVersion: reconciler/v1
kind: Task
metadata:
  name: paused-in-git
  labels: {team: demo}
spec:
  schedule: "0 * * * *"
  suspend: true
  run:
    http:
      url: https://user:pw@example.com/hook?token=abc&x=1
      headers: {Authorization: Bearer xyz, X-Trace: "1"}
""",
}


class FakeExecutor:
    """Runs finish at once (succeeded) unless their task is in ``blocked``."""

    def __init__(self) -> None:
        self.blocked: set[str] = set()
        self.release = asyncio.Event()
        self.started: list[ExecutionRequest] = []
        self.events: dict[int, ExecutionEvents] = {}
        self.fail: set[str] = set()

    async def execute(self, request: ExecutionRequest, events: ExecutionEvents,
                      cancel: asyncio.Event) -> ExecutionResult:
        self.started.append(request)
        self.events[request.run_id] = events
        events.output(f"hello from {request.task}\n")
        if request.task in self.blocked:
            waiters = {asyncio.ensure_future(self.release.wait()),
                       asyncio.ensure_future(cancel.wait())}
            _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
            if cancel.is_set():
                return ExecutionResult(RunStatus.CANCELLED, exit_code=-15, output_tail="bye\n")
        if request.task in self.fail:
            return ExecutionResult(RunStatus.FAILED, exit_code=3, error="exit code 3",
                                   output_tail="boom\n")
        return ExecutionResult(RunStatus.SUCCEEDED, exit_code=0,
                               output_tail=f"hello from {request.task}\n")


class Harness:
    def __init__(self, root: Path, *, token: str | None = TOKEN, token_file: Path | None = None,
                 auth_reads: bool = False, manifests: dict[str, str] | None = None,
                 executor: Any = None) -> None:
        self.root = root
        self.manifests = root / "manifests"
        self.manifests.mkdir(parents=True, exist_ok=True)
        for name, text in (MANIFESTS if manifests is None else manifests).items():
            (self.manifests / name).write_text(text)
        self.clock = FakeClock(T0)
        self.config = DaemonConfig(
            manifests=str(self.manifests), database=f"sqlite:///{root / 'state.db'}",
            replica="test-replica", api_token=token,
            api_token_file=str(token_file) if token_file else None, auth_reads=auth_reads,
        )
        self.executor = executor or FakeExecutor()
        self.daemon = build_daemon(self.config, clock=self.clock, executor=self.executor)
        self.app = create_app(self.daemon.api.ctx)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                        base_url="http://testserver")

    @property
    def store(self) -> Any:
        return self.daemon.store

    async def start(self) -> Harness:
        await self.daemon.start()
        await self.daemon.api.started()
        return self

    async def advance(self, seconds: float) -> None:
        """Move the clock and let the scheduler handle what came due."""
        self.clock.advance(timedelta(seconds=seconds))
        await self.daemon.scheduler.tick()

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every live run is one of a blocked task (the others finished)."""
        scheduler = self.daemon.scheduler
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        blocked = set() if self.executor.release.is_set() else self.executor.blocked
        while any(a.record.task_name not in blocked for a in scheduler.active_runs) or (
            scheduler._background
        ):
            if loop.time() > deadline:
                raise AssertionError("runs did not finish")
            await asyncio.sleep(0.002)  # a condition wait: the store threads are working
        await scheduler.flush_state()

    async def close(self) -> None:
        self.executor.release.set()
        await self.client.aclose()
        await self.daemon.scheduler.shutdown(timedelta(seconds=5))
        await self.daemon.api.close()
        self.app.state.read_pool.shutdown(wait=True)
        self.daemon.worker.close()
        assert self.daemon.executor is None  # the fake executor ran on this loop
        self.daemon.store.close()


@contextlib.asynccontextmanager
async def harness(root: Path, **kwargs: Any) -> AsyncIterator[Harness]:
    h = Harness(root, **kwargs)
    try:
        await h.start()
        yield h
    finally:
        await h.close()


class LoopServer:
    """The harness on an event loop in a thread; :meth:`call` sends one request."""

    def __init__(self, root: Path, **options: Any) -> None:
        self.options = options
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.harness: Harness = self._run(self._start(root))

    def _run(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop and wait for it (from any other thread)."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=60)

    async def _start(self, root: Path) -> Harness:
        h = Harness(root, **self.options)
        await h.start()
        return h

    def call(self, kwargs: dict[str, Any]) -> httpx.Response:
        async def send() -> httpx.Response:
            response = await self.harness.client.request(
                kwargs["method"], kwargs["url"], headers=kwargs.get("headers"),
                params=kwargs.get("params"), content=kwargs.get("data"),
                **({"json": kwargs["json"]} if "json" in kwargs else {}),
            )
            await self.harness.settle()
            return response

        result: httpx.Response = self._run(send())
        return result

    def close(self) -> None:
        self._run(self.harness.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


    def transport(self) -> httpx.MockTransport:
        """A synchronous httpx transport into the app (for the CLI's ApiClient)."""

        def handle(request: httpx.Request) -> httpx.Response:
            async def send() -> httpx.Response:
                response = await self.harness.client.request(
                    request.method, str(request.url), headers=request.headers,
                    content=request.content)
                await self.harness.settle()
                return httpx.Response(response.status_code, headers=response.headers,
                                      content=response.content)

            result: httpx.Response = self._run(send())
            return result

        return httpx.MockTransport(handle)


def run(factory: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(factory(), timeout=60))  # type: ignore[arg-type]

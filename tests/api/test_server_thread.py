"""uvicorn serves on a thread of its own, but every request runs on the daemon's loop.

The operations the API calls assume the daemon's event loop (daemon/api_ops.py); the
server's thread only accepts, parses and enforces the connection limits. A real
:class:`ApiServer` on an ephemeral port, an app that records where it runs.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
from starlette.types import Receive, Scope, Send

from reconciler.api.server import ApiServer


def test_requests_run_on_the_loop_that_started_the_server() -> None:
    seen: list[tuple[asyncio.AbstractEventLoop, str]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((asyncio.get_running_loop(), threading.current_thread().name))
        body = b"streamed" if scope["path"] == "/stream" else b"ok"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body[:4], "more_body": True})
        await send({"type": "http.response.body", "body": body[4:]})

    async def main() -> tuple[asyncio.AbstractEventLoop, list[str]]:
        server = ApiServer(app, "127.0.0.1:0")
        server.start()
        try:
            def get(path: str) -> str:
                return httpx.get(server.url + path, timeout=10).text

            bodies = [await asyncio.to_thread(get, path) for path in ("/", "/stream")]
        finally:
            await server.stop()
        return asyncio.get_running_loop(), bodies

    loop, bodies = asyncio.run(main())
    assert bodies == ["ok", "streamed"]
    assert [entry[0] for entry in seen] == [loop, loop]
    assert {entry[1] for entry in seen} == {threading.main_thread().name}

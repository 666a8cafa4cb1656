"""``HEAD`` on every ``GET`` route: the ``GET`` response's status and headers, no body.

FastAPI routes answer only the methods they declare, so a ``HEAD`` (load balancers and
uptime probes send them to ``/healthz``) got 405. This pure ASGI middleware hands a
``HEAD`` request to the app as a ``GET``, passes the response's start on and drops its
body. Once the headers are out, the app sees the client as gone, so a streamed response
(the event stream, a followed log) ends instead of running on.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DISCONNECT: Message = {"type": "http.disconnect"}


class HeadMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        started = asyncio.Event()

        async def head_receive() -> Message:
            if started.is_set():
                return DISCONNECT
            got = asyncio.ensure_future(receive())
            sent = asyncio.ensure_future(started.wait())
            await asyncio.wait({got, sent}, return_when=asyncio.FIRST_COMPLETED)
            sent.cancel()
            if got.done():
                return got.result()
            got.cancel()
            return DISCONNECT

        async def head_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                await send(message)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                started.set()
            # the body (and any later part of it) is dropped

        await self.app({**scope, "method": "GET"}, head_receive, head_send)

"""The API's defences: who may call what, which hosts it answers, what every response carries.

* :class:`SecurityMiddleware`: security headers on every response, request bodies
  over the limit refused before the app reads them;
* :class:`HostPolicy` and :class:`HostGuard`: the ``Host`` names the API answers (the
  DNS-rebinding defence), wrapped around the served app;
* :func:`authorize` and the ``Reader``/``Writer`` dependencies: the bearer-token check
  of reads (with ``--auth-reads``) and mutations. ``api/contract.py`` derives the
  statuses a route can answer from which of the two it depends on.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconciler.api.auth import bearer_token
from reconciler.api.control import ApiContext
from reconciler.api.errors import ApiError, error_body

log = logging.getLogger("reconciler.api")

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


class SecurityMiddleware:
    """Security headers on every response; request bodies over ``max_body`` get 413.

    Pure ASGI (no per-request task or buffering of responses), so streamed responses
    (events, live logs) pass straight through. A request body is read up front, up to
    the limit, whatever its ``Content-Length`` claims. Every response also says how long
    the app took to produce its headers (``Server-Timing: app;dur=<ms>``), so the time
    spent in the daemon can be told apart from the network and the client.
    """

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                took = (time.perf_counter() - started) * 1000
                headers.append((b"server-timing", b"app;dur=%.3f" % took))
                present = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in SECURITY_HEADERS if k not in present)
                if scope["path"].startswith("/api/") and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        declared = None
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
        if declared is not None and (declared < 0 or declared > self.max_body):
            await self._too_large(send_with_headers, declared < 0)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE") and not declared:
            await self.app(scope, receive, send_with_headers)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body:
                await self._too_large(send_with_headers, False)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_headers)

    async def _too_large(self, send: Send, bad_length: bool) -> None:
        status = 400 if bad_length else 413
        code = "bad_request" if bad_length else "payload_too_large"
        text = ("invalid Content-Length" if bad_length
                else f"request body larger than {self.max_body} bytes")
        response = JSONResponse(error_body(code, text), status_code=status)
        await send({"type": "http.response.start", "status": status,
                    "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback_name(host: str) -> bool:
    """True for ``localhost``, ``*.localhost`` and loopback addresses (127/8, ::1)."""
    host = host.strip().strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """The host part of a ``Host`` header value, lower-cased, without port or final dot."""
    value = header.strip().lower()
    if value.startswith("["):  # [v6] or [v6]:port; an unclosed bracket matches nothing
        inner, closed, _ = value[1:].partition("]")
        return inner if closed else value
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


class HostPolicy:
    """Which ``Host`` header values the API answers (the DNS-rebinding defence).

    A web page on an attacker's domain can make a victim's browser send requests to
    a loopback address by re-pointing its own DNS name there ("DNS rebinding"); the
    browser then treats the API as same-origin with the attacker's page and still
    sends ``Host: attacker.example``. Refusing unknown host names closes that. Always
    allowed: a missing ``Host`` (no browser sends one), IP literals (a page whose
    origin is an IP address was served by that address), ``localhost`` and
    ``*.localhost``. Besides those, ``allowed`` lists exact names and ``*.suffix``
    patterns (``*.example.com`` matches ``api.example.com``, not ``example.com``).
    """

    def __init__(self, allowed: Sequence[str] = ()) -> None:
        self.exact: set[str] = set()
        self.suffixes: list[str] = []
        for raw in allowed:
            name = raw.strip().lower().rstrip(".")
            if not name:
                continue
            if name.startswith("*."):
                self.suffixes.append(name[1:])
            else:
                self.exact.add(host_of(name))

    @classmethod
    def for_listen(cls, listen_host: str, allowed: Sequence[str] | None = None
                   ) -> HostPolicy | None:
        """The policy for a server on ``listen_host``; ``None`` means any Host.

        Default (``allowed`` is None): on a loopback address only the always-allowed
        names; on any other address (``0.0.0.0``, a pod IP behind a Service or an
        ingress) any name, since the names clients use cannot be guessed. A list
        containing ``*`` allows any name.
        """
        if allowed is None:
            allowed = [] if is_loopback_name(listen_host) else ["*"]
        if any(a.strip() == "*" for a in allowed):
            return None
        return cls(allowed)

    def allows(self, header: str | None) -> bool:
        if header is None or not header.strip():
            return True
        host = host_of(header)
        if _is_ip_literal(host) or host == "localhost" or host.endswith(".localhost"):
            return True
        return host in self.exact or any(host.endswith(s) for s in self.suffixes)


class HostGuard:
    """Pure ASGI: refuse (400 ``host_not_allowed``) requests whose Host the policy refuses.

    The refusal carries the security headers itself, so the guard may wrap any app.
    """

    MAX_LOGGED = 64

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy
        self._logged: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header: str | None = None
        for key, value in scope.get("headers", []):
            if key == b"host":
                header = value.decode("latin-1")
                break
        if self.policy.allows(header):
            await self.app(scope, receive, send)
            return
        shown = (header or "")[:100]
        if shown not in self._logged and len(self._logged) < self.MAX_LOGGED:
            self._logged.add(shown)
            log.warning("API: refused a request with Host %r (not a loopback name or an "
                        "allowed host; DNS rebinding protection)", shown)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        response = JSONResponse(
            error_body("host_not_allowed",
                       "this Host is not allowed (DNS rebinding protection); start the daemon "
                       "with the name in its allowed hosts"),
            status_code=400)
        headers = [*response.raw_headers, *SECURITY_HEADERS]
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


#: Reads are open unless the daemon runs with --auth-reads: the bearer token is optional.
OPTIONAL_AUTH: dict[str, Any] = {"security": [{}]}

_bearer = HTTPBearer(auto_error=False,
                     description="A token from RECONCILER_API_TOKEN or --api-token-file.")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="reconciler"'}


def authorize(request: Request, write: bool) -> str | None:
    """The actor (token name) of ``request``; raises 401/403 ``ApiError`` when refused."""
    c: ApiContext | None = request.app.state.ctx
    if c is None:
        raise ApiError(503, "no daemon behind this app")
    if write and not c.tokens.configured:
        raise ApiError(
            403,
            "mutations are disabled: no API token is configured on the daemon "
            "(set RECONCILER_API_TOKEN or start it with --api-token-file)",
            "mutations_disabled",
        )
    if not write and not c.auth_reads:
        return None
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise ApiError(401, "this endpoint needs 'Authorization: Bearer <token>'",
                       "unauthorized", _CHALLENGE)
    verdict = c.tokens.verify(token)
    if verdict.expired_at is not None:  # logged once per token by the token store
        raise ApiError(401, f"the token expired at {verdict.expired_at.isoformat()}; ask for "
                            "a new one", "token_expired",
                       {"WWW-Authenticate": 'Bearer realm="reconciler", error="invalid_token", '
                                            'error_description="The access token expired"'})
    if verdict.name is None:
        client = request.client.host if request.client else "?"
        log.warning("API: rejected a token from %s (%s %s)", client, request.method,
                    request.url.path)
        raise ApiError(401, "invalid, expired or removed token", "unauthorized",
                       {"WWW-Authenticate": 'Bearer realm="reconciler", error="invalid_token"'})
    return verdict.name


async def _reader(
    request: Request,
    _cred: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> str | None:
    return authorize(request, write=False)


async def _writer(
    request: Request,
    _cred: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> str:
    name = authorize(request, write=True)
    assert name is not None
    return name


Reader = Annotated[str | None, Depends(_reader)]
Writer = Annotated[str, Depends(_writer)]

#: The statuses each token check can answer, for the OpenAPI document (``api/contract.py``).
TOKEN_CHECKS: dict[Callable[..., Any], tuple[int, ...]] = {
    _reader: (401, 503),
    _writer: (401, 403, 503),
}

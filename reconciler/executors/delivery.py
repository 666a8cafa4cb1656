"""Deliver one notification to one channel: the outbound half of the outbox.

* ``webhook``: a POST of the event's JSON (compact, UTF-8) with the channel's headers;
  with a ``secret``, ``X-Reconciler-Signature: sha256=<hex HMAC-SHA256 of the body>``.

Secrets (``fromEnv``/``fromFile``) are read at each delivery and never appear in an
error. Delivery never raises for a failing receiver: the :class:`DeliveryResult` says
what happened (status code, error), and the sender decides about retries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from reconciler.core.channels import Webhook, channel_manifest
from reconciler.core.errors import ReconcilerError
from reconciler.executors.environment import resolve_value

SIGNATURE_HEADER = "X-Reconciler-Signature"
#: A receiver that takes longer than this for one event has failed this attempt.
TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    ok: bool
    status_code: int | None = None
    error: str | None = None


def event_body(event: Mapping[str, Any]) -> bytes:
    """The bytes that are sent (and signed): compact JSON, UTF-8."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def signature(key: str, body: bytes) -> str:
    """The ``X-Reconciler-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


class Deliverer:
    """Delivers events to channels; ``transport`` replaces the network (tests)."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = TIMEOUT) -> None:
        self._transport = transport
        self.timeout = timeout

    async def deliver(self, channel: Mapping[str, Any],
                      event: Mapping[str, Any]) -> DeliveryResult:
        """Send ``event`` (the notification's JSON) to the channel stored as
        ``channel`` (its canonical manifest document)."""
        name = channel.get("metadata", {}).get("name", "?")
        try:
            spec = channel_manifest(dict(channel)).spec
            if spec.webhook is not None:
                return await self._webhook(name, spec.webhook, event)
            return DeliveryResult(False, error=f"channel {name}: {spec.type} is not supported")
        except ReconcilerError as exc:  # a secret that cannot be read
            return DeliveryResult(False, error=str(exc))
        except ValueError as exc:  # a stored document this version cannot read
            return DeliveryResult(False, error=f"channel {name}: {exc}")

    async def _webhook(self, name: str, hook: Webhook,
                       event: Mapping[str, Any]) -> DeliveryResult:
        body = event_body(event)
        headers = {"Content-Type": "application/json",
                   "User-Agent": "reconciler-notify"}
        for key, value in hook.headers.items():
            headers[key] = resolve_value(value, f"channel {name} header {key}")
        if hook.secret is not None:
            key = resolve_value(hook.secret, f"channel {name} secret")
            headers[SIGNATURE_HEADER] = signature(key, body)
        return await self._post(hook.url, body, headers)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> DeliveryResult:
        try:
            async with httpx.AsyncClient(transport=self._transport, timeout=self.timeout,
                                         follow_redirects=False) as client:
                response = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return DeliveryResult(False, error=f"{type(exc).__name__}: {exc}"[:2000])
        if 200 <= response.status_code < 300:
            return DeliveryResult(True, response.status_code)
        return DeliveryResult(False, response.status_code,
                              f"HTTP {response.status_code}: {response.text[:200]}")

"""Deliver one notification to one channel: the outbound half of the outbox.

* ``webhook``: a POST of the event's JSON (compact, UTF-8) with the channel's headers;
  with a ``secret``, ``X-Reconciler-Signature: sha256=<hex HMAC-SHA256 of the body>``.
* ``slack``: a POST of :func:`~reconciler.core.notify_format.slack_payload` to the
  incoming-webhook URL.
* ``email``: :func:`~reconciler.core.notify_format.email_message` through the SMTP
  server (``smtplib`` on a worker thread; STARTTLS with certificate checks when
  ``starttls``, then LOGIN when a username is set).

Secrets (``fromEnv``/``fromFile``) are read at each delivery and never appear in an
error. Delivery never raises for a failing receiver: the :class:`DeliveryResult` says
what happened (status code, error), and the sender decides about retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import httpx

from reconciler.core.channels import Email, Webhook, channel_manifest
from reconciler.core.errors import ReconcilerError
from reconciler.core.notify_format import email_message, slack_payload
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
            if spec.slack is not None:
                url = resolve_value(spec.slack.url, f"channel {name} url")
                body = event_body(slack_payload(event))
                return await self._post(url, body, {"Content-Type": "application/json"},
                                        secret_url=True)
            assert spec.email is not None
            return await asyncio.to_thread(send_mail, name, spec.email, event, self.timeout)
        except ReconcilerError as exc:  # a secret that cannot be read
            return DeliveryResult(False, error=str(exc))
        except ValueError as exc:  # a stored document this version cannot read
            return DeliveryResult(False, error=f"channel {name}: {exc}")

    async def ping(self, url: str, body: str, timeout: float) -> DeliveryResult:
        """POST a ping (``spec.ping``, the daemon's heartbeat) to ``url``: best effort
        within ``timeout``. A ping URL is a credential: never in an error."""
        return await self._post(url, body.encode(), {"User-Agent": "reconciler-ping",
                                                     "Content-Type": "text/plain"},
                                secret_url=True, timeout=timeout)

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

    async def _post(self, url: str, body: bytes, headers: dict[str, str],
                    secret_url: bool = False, timeout: float | None = None) -> DeliveryResult:
        try:
            async with httpx.AsyncClient(transport=self._transport,
                                         timeout=timeout or self.timeout,
                                         follow_redirects=False) as client:
                response = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
            if secret_url:  # a Slack webhook URL is a credential: never in an error
                error = error.replace(url, "<the URL>")
            return DeliveryResult(False, error=error[:2000])
        if 200 <= response.status_code < 300:
            return DeliveryResult(True, response.status_code)
        return DeliveryResult(False, response.status_code,
                              f"HTTP {response.status_code}: {response.text[:200]}")


def send_mail(name: str, email: Email, event: Mapping[str, Any],
              timeout: float = TIMEOUT) -> DeliveryResult:
    """Send the mail of ``event`` (blocking: call it on a worker thread)."""
    subject, text = email_message(event)
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = email.from_
    message["To"] = ", ".join(email.to)
    message["X-Reconciler-Event-Id"] = str(event.get("id", ""))
    message.set_content(text)
    smtp = email.smtp
    try:
        password = (None if smtp.password is None
                    else resolve_value(smtp.password, f"channel {name} smtp password"))
        with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as client:
            if smtp.starttls:
                client.starttls(context=ssl.create_default_context())
            if smtp.username is not None:
                client.login(smtp.username, password or "")
            refused = client.send_message(message)
    except ReconcilerError as exc:
        return DeliveryResult(False, error=str(exc))
    except smtplib.SMTPRecipientsRefused as exc:
        codes = sorted({code for code, _ in exc.recipients.values()})
        return DeliveryResult(False, codes[0] if codes else None,
                              f"recipients refused: {', '.join(sorted(exc.recipients))}")
    except smtplib.SMTPResponseException as exc:
        said = exc.smtp_error
        text = said.decode(errors="replace") if isinstance(said, bytes) else str(said)
        return DeliveryResult(False, exc.smtp_code, f"SMTP {exc.smtp_code}: {text[:200]}")
    except (smtplib.SMTPException, OSError) as exc:
        return DeliveryResult(False, error=f"{type(exc).__name__}: {exc}"[:2000])
    if refused:
        return DeliveryResult(False, error=f"recipients refused: {', '.join(sorted(refused))}")
    return DeliveryResult(True, 250)

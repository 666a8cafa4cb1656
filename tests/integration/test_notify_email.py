"""Email channels through a real SMTP server (aiosmtpd on loopback): the mail that
arrives, LOGIN with a password from the environment, and the errors of a server that
refuses."""

from __future__ import annotations

import asyncio
import email
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from reconciler.core.model import NotifyEvent
from reconciler.core.notify import NotificationEvent, NotificationRun
from reconciler.executors.delivery import Deliverer

pytestmark = pytest.mark.integration

T = datetime(2026, 3, 2, 2, 30, tzinfo=UTC)


class Inbox:
    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], Message]] = []
        self.refuse = False

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: Any) -> str:
        if self.refuse:
            return "550 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos),
                           email.message_from_bytes(envelope.content)))
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()

    def check(server: Any, session: Any, envelope: Any, mechanism: str,
              data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and {data.login, data.password} <= {
            b"reconciler", b"s3cret", "reconciler", "s3cret"}
        return AuthResult(success=ok)

    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=check,
                            auth_require_tls=False)
    controller.start()
    yield inbox, port
    controller.stop()


def channel(port: int, **smtp: Any) -> dict[str, Any]:
    return {"apiVersion": "reconciler/v1", "kind": "Channel", "metadata": {"name": "mail"},
            "spec": {"email": {"smtp": {"host": "127.0.0.1", "port": port,
                                        "starttls": False, **smtp},
                               "from": "reconciler@example.org",
                               "to": ["ops@example.org", "oncall@example.org"]}}}


def event() -> dict[str, Any]:
    return NotificationEvent(
        id=f"backup/{T.isoformat()}/1/failed", event=NotifyEvent.FAILED, task="backup",
        run=NotificationRun(id=3, status="failed", slot=T, attempt=1, trigger="schedule",
                            exit_code=2, reason="exit 2", output_tail="disk full\n"),
        at=T, repeats=4,
    ).model_dump(mode="json")


def test_the_mail_arrives(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    result = asyncio.run(Deliverer().deliver(channel(port), event()))
    assert result.ok and result.status_code == 250, result
    ((sender, rcpts, mail),) = inbox.mails
    assert sender == "reconciler@example.org"
    assert rcpts == ["ops@example.org", "oncall@example.org"]
    subject = " ".join(str(mail["Subject"]).split())  # unfolded
    assert subject == ("[reconciler] backup failed (slot 2026-03-02T02:30:00Z, "
                       "attempt 1), and 4 more failures")
    assert mail["X-Reconciler-Event-Id"] == f"backup/{T.isoformat()}/1/failed"
    body = mail.get_payload(decode=True)
    assert isinstance(body, bytes) and b"disk full" in body and b"exit code: 2" in body


def test_login_with_a_password_from_the_environment(
        smtp: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch) -> None:
    inbox, port = smtp
    doc = channel(port, username="reconciler", password={"fromEnv": "SMTP_PASSWORD"})
    monkeypatch.delenv("SMTP_PASSWORD", raising=False)
    result = asyncio.run(Deliverer().deliver(doc, event()))
    assert not result.ok and result.error == ("channel mail smtp password: environment "
                                              "variable SMTP_PASSWORD is not set in the "
                                              "daemon's environment")
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret")
    result = asyncio.run(Deliverer().deliver(doc, event()))
    assert result.ok and len(inbox.mails) == 1


def test_refused_recipients_and_a_server_that_is_not_there(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    inbox.refuse = True
    result = asyncio.run(Deliverer().deliver(channel(port), event()))
    assert not result.ok and result.status_code == 550 and inbox.mails == []
    assert result.error == "recipients refused: oncall@example.org, ops@example.org"
    result = asyncio.run(Deliverer(timeout=2).deliver(channel(free_port()), event()))
    assert not result.ok and result.status_code is None
    assert "ConnectionRefusedError" in str(result.error)

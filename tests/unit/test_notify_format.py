"""What notifications say: the one-line summary ("and N more failures"), the Slack
payload checked against Slack's documented Block Kit limits, the mail; and a Slack
channel delivered through the same delivery code as a webhook."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from reconciler.core.model import NotifyEvent
from reconciler.core.notify import NotificationEvent, NotificationRun
from reconciler.core.notify_format import email_message, slack_payload, summary_line
from reconciler.executors.delivery import Deliverer

T = datetime(2026, 3, 2, 2, 30, tzinfo=UTC)


def event(kind: str = "failed", repeats: int = 0, output: str | None = "ok\nboom\n",
          reason: str | None = "exit 1") -> dict[str, Any]:
    return NotificationEvent(
        id=f"backup/{T.isoformat()}/2/{kind}", event=NotifyEvent(kind), task="backup",
        run=NotificationRun(id=7, status="failed", slot=T, attempt=2, trigger="schedule",
                            exit_code=1, reason=reason, output_tail=output),
        at=T, repeats=repeats,
    ).model_dump(mode="json")


def check_block_kit(payload: dict[str, Any]) -> None:
    """Slack's Block Kit reference for an incoming-webhook message made of section
    blocks: a ``text`` fallback; at most 50 blocks; a section has ``text`` (a text
    object, at most 3000 characters) and/or ``fields`` (at most 10 text objects of at
    most 2000 characters); text objects are ``mrkdwn`` or ``plain_text``."""
    assert set(payload) == {"text", "blocks"} and isinstance(payload["text"], str)
    blocks = payload["blocks"]
    assert 1 <= len(blocks) <= 50
    for block in blocks:
        assert block["type"] == "section" and set(block) <= {"type", "text", "fields",
                                                              "block_id"}
        assert "text" in block or "fields" in block
        texts = ([(block["text"], 3000)] if "text" in block else []) + [
            (f, 2000) for f in block.get("fields", [])]
        assert len(block.get("fields", [])) <= 10
        for obj, limit in texts:
            assert set(obj) == {"type", "text"} and obj["type"] in ("mrkdwn", "plain_text")
            assert 0 < len(obj["text"]) <= limit


def test_summary_says_how_many_more() -> None:
    assert summary_line(event()) == (
        "backup failed (slot 2026-03-02T02:30:00Z, attempt 2)")
    assert summary_line(event(repeats=1)).endswith(", and 1 more failure")
    assert summary_line(event(repeats=14)).endswith(", and 14 more failures")
    assert summary_line(event("missed", repeats=3)).endswith(
        "missed a slot (slot 2026-03-02T02:30:00Z, attempt 2), and 3 more missed slots")


def test_the_slack_payload_follows_block_kit() -> None:
    payload = slack_payload(event(repeats=14))
    check_block_kit(payload)
    assert payload["text"] == ("backup failed (slot 2026-03-02T02:30:00Z, attempt 2), "
                               "and 14 more failures")
    head, facts, reason, output = payload["blocks"]
    assert head["text"] == {"type": "mrkdwn",
                            "text": ":red_circle: *backup* failed, _and 14 more failures_"}
    assert {"type": "mrkdwn", "text": "*Exit code*\n1"} in facts["fields"]
    assert reason["text"]["text"] == "*Reason*\nexit 1"
    assert output["text"]["text"] == "*Output*\n```\nok\nboom\n```"


def test_slack_text_from_tasks_is_escaped_and_cut_to_the_limits() -> None:
    payload = slack_payload(event(output="x" * 10_000 + "\n<!channel> & <http://evil|click>",
                                  reason="<@U123> " + "r" * 5000))
    check_block_kit(payload)
    out = payload["blocks"][-1]["text"]["text"]
    assert "&lt;!channel&gt; &amp; &lt;http://evil|click&gt;" in out and "<!" not in out
    assert out.endswith("&gt;\n```")  # the end of the output is kept
    assert payload["blocks"][2]["text"]["text"].startswith("*Reason*\n&lt;@U123&gt;")


def test_slack_without_output_or_reason_and_a_recovery() -> None:
    payload = slack_payload(event("recovered", output=None, reason=None))
    check_block_kit(payload)
    assert len(payload["blocks"]) == 2
    assert payload["blocks"][0]["text"]["text"] == ":large_green_circle: *backup* recovered"


def test_the_mail() -> None:
    subject, body = email_message(event(repeats=2))
    assert subject == ("[reconciler] backup failed (slot 2026-03-02T02:30:00Z, attempt 2), "
                       "and 2 more failures")
    assert "reason:    exit 1\n" in body and body.endswith("ok\nboom\n")
    assert f"id:        backup/{T.isoformat()}/2/failed\n" in body


def test_a_slack_channel_posts_the_payload_to_its_secret_url(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_URL", "https://hooks.slack.test/services/T0/B0/secret")
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="ok")

    channel = {"apiVersion": "reconciler/v1", "kind": "Channel", "metadata": {"name": "s"},
               "spec": {"slack": {"url": {"fromEnv": "SLACK_URL"}}}}
    result = asyncio.run(Deliverer(httpx.MockTransport(answer)).deliver(channel, event()))
    assert result.ok and result.status_code == 200
    (request,) = seen
    assert str(request.url) == "https://hooks.slack.test/services/T0/B0/secret"
    assert json.loads(request.content) == slack_payload(event())
    monkeypatch.delenv("SLACK_URL")
    result = asyncio.run(Deliverer(httpx.MockTransport(answer)).deliver(channel, event()))
    assert not result.ok and result.error == (
        "channel s url: environment variable SLACK_URL is not set in the daemon's environment")

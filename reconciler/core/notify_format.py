"""What a notification says, for people: one line, a Slack message, a mail.

Pure functions of the event's JSON (``specs/notification.schema.json``), the same
document a webhook receives; ``repeats`` (events folded into this message by the
grouping) becomes "and N more failures".

Slack: an incoming-webhook payload per Slack's Block Kit reference: ``text`` (the
fallback shown in notifications) and ``blocks``, all of type ``section`` with
``mrkdwn`` text of at most 3000 characters each (fields at most 10, 2000 characters
each); ``&``, ``<`` and ``>`` in task output or reasons are escaped as Slack requires,
so a task cannot mention ``<!channel>`` or forge a link.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SECTION_MAX = 3000  # characters of a section block's text
FIELD_MAX = 2000  # characters of one field of a section block
OUTPUT_LINES = 20  # lines of the output's end shown

_VERB = {
    "failed": "failed", "timed_out": "timed out", "abandoned": "was abandoned",
    "missed": "missed a slot", "late": "is late", "recovered": "recovered",
    "succeeded": "succeeded",
}
_NOUN = {
    "failed": ("failure", "failures"), "timed_out": ("timeout", "timeouts"),
    "abandoned": ("abandoned run", "abandoned runs"), "missed": ("missed slot", "missed slots"),
    "late": ("late slot", "late slots"), "recovered": ("recovery", "recoveries"),
    "succeeded": ("success", "successes"),
}
_ICON = {"recovered": ":large_green_circle:", "succeeded": ":white_check_mark:",
         "late": ":hourglass:", "missed": ":warning:"}


def more_text(event: Mapping[str, Any]) -> str:
    """"and 14 more failures" (empty without repeats)."""
    n = int(event.get("repeats") or 0)
    if n <= 0:
        return ""
    one, many = _NOUN.get(event["event"], ("event", "events"))
    return f"and {n} more {one if n == 1 else many}"


def summary_line(event: Mapping[str, Any]) -> str:
    """``backup failed (slot 2026-03-02T02:30:00Z, attempt 2), and 3 more failures``."""
    run = event["run"]
    line = (f"{event['task']} {_VERB.get(event['event'], event['event'])} "
            f"(slot {run['slot']}, attempt {run['attempt']})")
    more = more_text(event)
    return f"{line}, {more}" if more else line


def output_tail(event: Mapping[str, Any], lines: int = OUTPUT_LINES) -> str:
    tail = event["run"].get("outputTail") or ""
    return "\n".join(tail.rstrip("\n").splitlines()[-lines:])


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(event: Mapping[str, Any]) -> dict[str, Any]:
    """The incoming-webhook body for ``event``: ``text`` plus section blocks."""
    run = event["run"]
    icon = _ICON.get(event["event"], ":red_circle:")
    head = (f"{icon} *{slack_escape(event['task'])}* "
            f"{_VERB.get(event['event'], slack_escape(event['event']))}")
    more = more_text(event)
    if more:
        head += f", _{more}_"
    fields = [f"*Slot*\n{run['slot']}", f"*Attempt*\n{run['attempt']}",
              f"*Status*\n{slack_escape(run['status'])}"]
    if run.get("exitCode") is not None:
        fields.append(f"*Exit code*\n{run['exitCode']}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(head, SECTION_MAX)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(f, FIELD_MAX)}
                                       for f in fields]},
    ]
    if run.get("reason"):
        reason = f"*Reason*\n{slack_escape(run['reason'])}"
        blocks.append({"type": "section",
                       "text": {"type": "mrkdwn", "text": _cut(reason, SECTION_MAX)}})
    tail = output_tail(event)
    if tail:
        # keep the end of the output: it is what explains a failure
        room = SECTION_MAX - len("*Output*\n```\n\n```")
        body = slack_escape(tail)[-room:]
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": f"*Output*\n```\n{body}\n```"}})
    return {"text": slack_escape(summary_line(event)), "blocks": blocks}


def email_message(event: Mapping[str, Any]) -> tuple[str, str]:
    """``(subject, plain-text body)`` of the mail for ``event``."""
    run = event["run"]
    subject = f"[reconciler] {summary_line(event)}"
    lines = [summary_line(event), "",
             f"task:      {event['task']}", f"event:     {event['event']}",
             f"slot:      {run['slot']}", f"attempt:   {run['attempt']}",
             f"status:    {run['status']}"]
    if run.get("exitCode") is not None:
        lines.append(f"exit code: {run['exitCode']}")
    if run.get("reason"):
        lines.append(f"reason:    {run['reason']}")
    lines.append(f"id:        {event['id']}")
    tail = output_tail(event)
    if tail:
        lines += ["", "The end of the output:", "", tail]
    return subject.replace("\r", " ").replace("\n", " ")[:250], "\n".join(lines) + "\n"

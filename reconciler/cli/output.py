"""Rendering for humans: the terraform-style plan, aligned tables, zoned timestamps."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from reconciler.core.channels import channel_type
from reconciler.core.impact import LOAD_DAYS, SLOT_DAYS, Impact, SlotDelta
from reconciler.core.plan import UNSET, Action, FieldChange, ObjectChange, Plan
from reconciler.core.redaction import redact_change


def fmt_value(value: Any) -> str:
    if value is UNSET:
        return "(unset)"
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def render_plan(plan: Plan, impact: Impact | None = None, max_concurrent_runs: int = 16) -> str:
    """The plan for people; with ``impact`` (``diff``) the slot counts of changed
    schedules and a last line with the load."""
    lines: list[str] = []
    for change in plan.changes:
        if change.action is Action.CREATE:
            d = change.desired
            assert d is not None
            lines.append(
                f"+ {change.name}  schedule {fmt_value(d.schedule)} ({d.time_zone})"
                f"  from {d.source_file}"
            )
        elif change.action is Action.UPDATE:
            lines.append(f"~ {change.name}")
            lines += _field_lines(change.changes)
            delta = impact.deltas.get(change.name) if impact is not None else None
            if delta is not None:
                lines.append(f"    slots in the next {SLOT_DAYS} days: +{delta.added} "
                             f"-{delta.removed}")
        elif change.action is Action.DELETE:
            a = change.actual
            assert a is not None
            lines.append(f"- {change.name}  (was in {a.source_file})")
    lines += _object_lines("channel", plan.channels, _channel_text)
    lines += _object_lines("calendar", plan.calendars, _calendar_text,
                           impact.calendar_deltas if impact is not None else {})
    for error in plan.errors:
        lines.append(f"! {error} (tasks kept)")
    kept = plan.kept
    if kept:
        lines.append(f"= kept unchanged: {', '.join(c.name for c in kept)}")
    for drift in plan.drift:
        lines.append(f"# {drift.name}: drift: {drift.message} (apply keeps the override)")
    for reason in plan.refusals:
        lines.append(f"refused: {reason}")
    if plan.has_changes:
        lines.append(
            f"Plan: {plan.count(Action.CREATE)} to create, {plan.count(Action.UPDATE)} to update, "
            f"{plan.count(Action.DELETE)} to delete, {plan.count(Action.UNCHANGED)} unchanged."
            + _object_counts("Channels", plan.channels_of)
            + _object_counts("Calendars", plan.calendars_of)
        )
    else:
        lines.append("No changes.")
    if impact is not None:
        lines.append(load_line(impact, max_concurrent_runs))
    return "\n".join(lines)


def _field_lines(changes: Sequence[FieldChange]) -> list[str]:
    lines = []
    for f in changes:
        old, new, masked = redact_change(f.path, f.old, f.new)
        secret = " (secrets masked)" if masked else ""
        lines.append(f"    ~ {f.path}: {fmt_value(old)} -> {fmt_value(new)}{secret}")
    return lines


def _channel_text(document: dict[str, Any]) -> str:
    return channel_type(document)


def _calendar_text(document: dict[str, Any]) -> str:
    spec = document.get("spec", {})
    return f"{len(spec.get('exclude', ()))} exclusion(s) in {spec.get('timeZone', 'UTC')}"


def _object_lines(kind: str, changes: Sequence[ObjectChange],
                  describe: Callable[[dict[str, Any]], str],
                  deltas: Mapping[str, SlotDelta] | None = None) -> list[str]:
    """``+ KIND NAME`` / ``~`` / ``-`` lines, field changes with secrets masked; with
    ``deltas``, the slots each change adds and removes for the tasks that use it."""
    lines = []
    for change in changes:
        source = change.desired or change.actual
        assert source is not None
        if change.action is Action.CREATE:
            lines.append(f"+ {kind} {change.name}  {describe(source.document)}  "
                         f"from {source.source_file}")
        elif change.action is Action.UPDATE:
            lines.append(f"~ {kind} {change.name}")
            lines += _field_lines(change.changes)
        elif change.action is Action.DELETE:
            lines.append(f"- {kind} {change.name}  (was in {source.source_file})")
        elif change.action is Action.KEEP:
            lines.append(f"= {kind} {change.name} kept: {change.reason}")
        delta = (deltas or {}).get(change.name)
        if delta is not None and change.action is not Action.KEEP:
            lines.append(f"    slots in the next {SLOT_DAYS} days of the tasks using it: "
                         f"+{delta.added} -{delta.removed}")
    return lines


def _object_counts(title: str, of: Callable[[Action], Sequence[ObjectChange]]) -> str:
    counts = [(len(of(a)), word) for a, word in
              ((Action.CREATE, "created"), (Action.UPDATE, "updated"),
               (Action.DELETE, "deleted"))]
    shown = [f"{n} {word}" for n, word in counts if n]
    return f" {title}: {', '.join(shown)}." if shown else ""


def load_line(impact: Impact, max_concurrent_runs: int) -> str:
    """``Load: peak 240 starts at Sun 02:00 UTC (was 12); --max-concurrent-runs is 16``."""
    after, before = impact.after, impact.before
    pool = f"--max-concurrent-runs is {max_concurrent_runs}"
    if not after.starts:
        return f"Load: no slot starts in the next {LOAD_DAYS} days (was {before.starts}); {pool}"
    return f"Load: peak {after.starts} starts at {after.text} (was {before.starts}); {pool}"


def fmt_time(instant: datetime | None, zone: str = "UTC") -> str:
    if instant is None:
        return "-"
    return instant.astimezone(ZoneInfo(zone)).isoformat(timespec="seconds")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    out = []
    for row in (headers, *rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(out)


# ------------------------------------------------------------- terminal-safe output

# C0 controls except tab and newline, DEL, C1 controls, and a carriage return that does
# not start a CRLF. Manifest names, run errors and task output are untrusted (a pull
# request author writes the first, a task the others); written raw, "\x1b]0;...\x07"
# retitles the terminal and "\x1b[2J" clears it.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    # \u00XX for DEL and C1: also a valid escape inside a JSON string, so JSON output
    # (where json.dumps already escaped C0) stays valid and means the same.
    return f"\\x{code:02x}" if code < 0x7F else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with every control character except newline and tab made visible
    (``\\x1b``, ``\\u009b``); a terminal shown the result only prints it."""
    return _CONTROL.sub(_escape, text)


class VisibleStream(io.TextIOBase):
    """A text stream that writes :func:`visible` text to ``inner``.

    A carriage return ending one write is held back until the next, so that a CRLF
    split across writes (``print`` writes the end of line on its own) stays a CRLF.
    """

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner
        self._cr = ""

    def write(self, text: str) -> int:
        whole = self._cr + text
        self._cr = "\r" if whole.endswith("\r") else ""
        self.inner.write(visible(whole[: len(whole) - len(self._cr)]))
        return len(text)

    def flush(self) -> None:
        if self._cr:
            self._cr = ""
            self.inner.write(visible("\r"))
        self.inner.flush()

    def fileno(self) -> int:
        return self.inner.fileno()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")

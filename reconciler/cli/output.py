"""Rendering for humans: the terraform-style plan, aligned tables, zoned timestamps."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from reconciler.core.plan import UNSET, Action, Plan
from reconciler.core.redaction import redact_change


def fmt_value(value: Any) -> str:
    if value is UNSET:
        return "(unset)"
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def render_plan(plan: Plan) -> str:
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
            for f in change.changes:
                old, new, masked = redact_change(f.path, f.old, f.new)
                secret = " (secrets masked)" if masked else ""
                lines.append(f"    ~ {f.path}: {fmt_value(old)} -> {fmt_value(new)}{secret}")
        elif change.action is Action.DELETE:
            a = change.actual
            assert a is not None
            lines.append(f"- {change.name}  (was in {a.source_file})")
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
        )
    else:
        lines.append("No changes.")
    return "\n".join(lines)


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

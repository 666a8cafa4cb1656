"""What the commands share: exit codes, the store, the safety options, runs and tasks as
text or JSON (the same for the database and the ``--server`` forms).

Heavy modules (the store, the API's views, the output tables) are imported inside the
functions that use them: the CLI's start-up stays short.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from reconciler.api.views import RunDoc
    from reconciler.core.plan import SafetyOptions
    from reconciler.core.protocols import Store

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def open_store(url: str | None, *, create: bool = False) -> Store:
    """The store, its schema upgraded. Only ``create`` (apply) makes a new SQLite file:
    for every other command a missing file is a typo, not an empty database."""
    from reconciler.store import create_store

    store = create_store(url, must_exist=not create)
    store.upgrade()
    return store


def safety_options(args: argparse.Namespace, strict: bool = False) -> SafetyOptions:
    from reconciler.core.plan import SafetyOptions

    if args.max_delete < 0:
        raise SystemExit("error: --max-delete must be >= 0")
    return SafetyOptions(
        allow_empty=args.allow_empty, max_delete=args.max_delete, force=args.force, strict=strict
    )


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def emit_task_list(args: argparse.Namespace, document: dict[str, Any]) -> int:
    """``GET /api/v1/tasks``'s document (from the server, or built from the database by
    the same code): as it is with ``-o json``, else as a table."""
    from reconciler.cli.output import fmt_time, table

    if args.output == "json":
        print_json(document)
        return EXIT_OK
    headers = ["NAME", "SCHEDULE", "TIMEZONE", "NEXT", "NEXT (UTC)", "SUSPENDED", "SOURCE"]
    if args.output == "wide":
        headers += ["GEN", "REVISION", "LABELS"]
    cells = []
    for t in document["items"]:
        nxt = datetime.fromisoformat(t["nextFireAt"]) if t["nextFireAt"] else None
        suspended = "yes" if t["suspended"] else "no"
        if t["suspended"] and (t.get("suspension") or {}).get("source") == "override":
            suspended += " (override)"
        source = t["source"]
        row = [
            t["name"], t["schedule"], t["timeZone"],
            fmt_time(nxt, t["timeZone"]) if nxt else "-", fmt_time(nxt) if nxt else "-",
            suspended, source["file"],
        ]
        if args.output == "wide":
            labels = ",".join(f"{k}={v}" for k, v in sorted(t["labels"].items()))
            row += [str(source["generation"]), (source["revision"] or "-")[:12], labels or "-"]
        cells.append(row)
    print(table(headers, cells))
    return EXIT_OK


def params_text(values: Mapping[str, Any] | None) -> str:
    """``region=us,dryRun=false``: a run's parameters in the ``runs`` table."""
    from reconciler.core.params import text

    shown = ",".join(f"{k}={text(v)}" for k, v in (values or {}).items())
    return shown if len(shown) <= 60 else shown[:57] + "..."


def emit_runs(args: argparse.Namespace, runs: Sequence[RunDoc], zone: str) -> int:
    from reconciler.cli.output import fmt_time, table

    if args.output == "json":
        print_json(runs)
        return EXIT_OK
    rows = []
    for r in runs:
        dur = "-"
        if r["startedAt"] and r["finishedAt"]:
            seconds = (datetime.fromisoformat(r["finishedAt"])
                       - datetime.fromisoformat(r["startedAt"])).total_seconds()
            dur = f"{seconds:.3f}s"
        lateness = r["latenessSeconds"]
        late = f"{lateness * 1000:.0f}ms" if lateness is not None else "-"
        info = r["reason"] or r["error"] or ""
        rows.append([str(r["id"]), fmt_time(datetime.fromisoformat(r["slot"]), zone),
                     str(r["attempt"]), str(r["trigger"]), str(r["status"]), late, dur,
                     "-" if r["exitCode"] is None else str(r["exitCode"]),
                     info.splitlines()[0][:80] if info else ""])
    heads = ["ID", "SLOT", "ATTEMPT", "TRIGGER", "STATUS", "LATENESS", "DURATION", "EXIT", "INFO"]
    if any(r["params"] for r in runs):  # a column only for tasks with parameters
        heads.insert(-1, "PARAMS")
        for row, r in zip(rows, runs, strict=True):
            row.insert(-1, params_text(r["params"]))
    print(table(heads, rows))
    return EXIT_OK


def emit_notifications(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    """``reconciler notifications``: ``doc`` is the API's ``NotificationList``."""
    from reconciler.cli.output import fmt_time, table

    if args.output == "json":
        print_json(doc)
        return EXIT_OK
    rows = []
    for n in doc["items"]:
        when = n["sentAt"] or n["nextAttemptAt"] or n["createdAt"]
        info = n["lastError"] or ("" if n["groupedInto"] is None
                                  else f"in the message of {n['groupedInto']}")
        if n["repeats"]:
            info = f"and {n['repeats']} more; {info}".rstrip("; ")
        rows.append([str(n["id"]), n["task"], n["event"], n["channel"], n["status"],
                     str(n["attempts"]), fmt_time(datetime.fromisoformat(when), "UTC"),
                     "-" if n["lastStatusCode"] is None else str(n["lastStatusCode"]),
                     info.splitlines()[0][:80] if info else ""])
    print(table(["ID", "TASK", "EVENT", "CHANNEL", "STATUS", "ATTEMPTS", "AT", "CODE", "INFO"],
                rows))
    print(f"{doc['backlog']} waiting for delivery")
    return EXIT_OK

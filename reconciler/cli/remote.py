"""The commands over a running daemon's HTTP API (``--server``), printing what the
database forms print."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from reconciler.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    emit_notifications,
    emit_runs,
    emit_task_list,
    print_json,
)


def _client(args: argparse.Namespace) -> Any:
    from reconciler.api.client import ApiClient

    return ApiClient(args.server, args.token)


def client(args: argparse.Namespace) -> Any:
    """The API client for ``--server`` (other CLI modules' way to it)."""
    return _client(args)


def _parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def remote_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        document = client.task_list()
    return emit_task_list(args, document)


def remote_runs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        runs = client.runs(args.name, args.limit)
        zone = "UTC"
        if args.output != "json":
            from reconciler.api.client import ApiClientError

            try:
                zone = client.task(args.name)["timeZone"]
            except ApiClientError as exc:
                if exc.status != 404:  # a deleted task: its runs, shown in UTC
                    raise
    return emit_runs(args, runs, zone)


def remote_notifications(args: argparse.Namespace) -> int:
    with _client(args) as client:
        doc = client.notifications(args.task, args.limit)
    return emit_notifications(args, doc)


def remote_logs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        last = ""
        for chunk in client.log(args.run_id, follow=args.follow):
            sys.stdout.write(chunk)
            sys.stdout.flush()
            last = chunk or last
        if last and not last.endswith("\n"):
            sys.stdout.write("\n")
        run = client.run(args.run_id)
    if run.get("error"):
        print(f"[{run['status']}] {run['error']}", file=sys.stderr)
    return EXIT_OK


def remote_trigger(args: argparse.Namespace) -> int:
    from reconciler.core.params import parse_assignments

    params = parse_assignments(args.param)  # a ParamError (exit 1) names the item
    with _client(args) as client:
        run = client.trigger(args.name, params)["run"]
    print(f"run {run['id']} of {args.name} started ({run['status']})")
    return EXIT_OK


def remote_suspend(args: argparse.Namespace) -> int:
    with _client(args) as client:
        answer = client.suspend(args.name, args.note)
    if not answer["changed"]:
        print(f"{args.name} was already suspended (nothing changed)")
    else:
        print(f"{args.name} suspended" + (f": {args.note}" if args.note else ""))
    return EXIT_OK


def remote_resume(args: argparse.Namespace) -> int:
    with _client(args) as client:
        answer = client.resume(args.name, args.catch_up)
    if not answer["changed"]:
        print(f"{args.name} was not suspended (nothing changed)")
    else:
        print(f"{args.name} resumed")
    run = answer.get("run")
    if run:
        print(f"run {run['id']} for the missed slot {run['slot']} ({run['status']})")
    elif args.catch_up and answer["changed"]:
        print("no slot was missed while it was suspended")
    return EXIT_OK


def remote_status(args: argparse.Namespace) -> int:
    from reconciler.cli.output import fmt_time, table

    with _client(args) as client:
        data = client.status()
    if args.output == "json":
        print_json(data)
    else:
        t = data["tasks"]
        print(f"tasks: {t['total']} ({t['suspended']} suspended, {t['running']} running, "
              f"{t['failing']} failing)")
        last = data.get("lastReconcile")
        if last:
            at = _parse_iso(last["at"])
            print(f"last reconcile: {fmt_time(at) if at else '-'}"
                  + (f" at {last['revision'][:12]}" if last.get("revision") else "")
                  + (f" (failed: {last['error']})" if last.get("error") else ""))
        print(f"mode: {data['mode']}, writer: {data['writer'] or '-'}, "
              f"ready: {'yes' if data['ready'] else 'no'}")
        rows = []
        for r in data["replicas"]:
            state = "stopped" if r["stoppedAt"] else ("ok" if r["healthy"] else "stale")
            rows.append([r["id"] + (" *" if r["writer"] else ""), state,
                         r["heartbeatAt"] or "-", str(r["tasks"] if r["tasks"] is not None
                                                      else "-"),
                         str(r["activeRuns"] if r["activeRuns"] is not None else "-"),
                         r["lastError"] or "-"])
        if rows:
            print(table(["REPLICA", "STATE", "HEARTBEAT", "TASKS", "ACTIVE", "LAST ERROR"],
                        rows))
        errors = [_error_line(e) for e in data["manifestErrors"]]
        errors += [f"refused: {x}" for x in data["refusals"]]
        if errors:
            print("manifest errors (their tasks are kept unchanged):")
            for e in errors:
                print(f"  {e}")
    healthy = data["ready"] and not data["manifestErrors"] and not data["refusals"]
    return EXIT_OK if healthy else EXIT_ERROR


def _error_line(e: dict[str, Any]) -> str:
    where = e["file"] + (f":{e['line']}" if e.get("line") is not None else "")
    parts = [where, *(x for x in (e.get("task"), e.get("field")) if x), e["message"]]
    return ": ".join(parts)

"""``reconciler``: validate, diff, apply and inspect tasks.

Exit codes follow the plan: ``diff`` exits 0 when there is nothing to do, 2 when
changes are pending and 1 on errors (invalid manifests, unreachable database);
``validate`` and ``apply`` exit 0 on success and 1 on any error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.core.plan import SafetyOptions
    from reconciler.store import SQLStore

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Declarative, GitOps-style scheduler for recurring tasks.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    src = argparse.ArgumentParser(add_help=False)
    src.add_argument(
        "--manifests",
        default=_env("RECONCILER_MANIFESTS", "./manifests"),
        help="manifests directory (env RECONCILER_MANIFESTS, default ./manifests)",
    )
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--database",
        default=_env("RECONCILER_DATABASE_URL"),
        help="database URL (env RECONCILER_DATABASE_URL, default sqlite .reconciler/state.db)",
    )
    safety = argparse.ArgumentParser(add_help=False)
    safety.add_argument(
        "--allow-empty", action="store_true", help="allow an empty directory to delete every task"
    )
    safety.add_argument(
        "--max-delete", type=int, default=10, help="refuse plans deleting more tasks (default 10)"
    )
    safety.add_argument("--force", action="store_true", help="apply even over --max-delete")
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("-o", "--output", choices=["text", "json"], default="text")

    p = sub.add_parser("validate", help="validate manifest files or directories")
    p.add_argument("paths", nargs="*", help="files or directories (default: --manifests)")
    p.add_argument(
        "--manifests", default=_env("RECONCILER_MANIFESTS", "./manifests"), help=argparse.SUPPRESS
    )
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")

    p = sub.add_parser("diff", parents=[src, db, safety, out], help="show what apply would do")
    p.add_argument(
        "--against-ref",
        metavar="REF",
        help="compare with the manifests at a git ref instead of the database",
    )

    p = sub.add_parser("apply", parents=[src, db, safety, out], help="apply the manifests")
    p.add_argument(
        "--strict", action="store_true", help="apply nothing when any manifest is invalid"
    )

    p = sub.add_parser("get", parents=[db], help="list tasks")
    p.add_argument("what", choices=["tasks"])
    p.add_argument("-o", "--output", choices=["text", "wide", "json"], default="text")

    p = sub.add_parser("next", parents=[db], help="print upcoming fire times")
    p.add_argument("name", nargs="?", help="a task in the runtime table")
    p.add_argument("--schedule", help="a schedule expression instead of a task")
    p.add_argument("--tz", default="UTC", help="time zone for --schedule (default UTC)")
    p.add_argument("--from", dest="start", help="ISO time to start from (default now)")
    p.add_argument("--count", type=int, default=5)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")

    p = sub.add_parser("schema", help="print a generated JSON schema")
    p.add_argument("which", choices=["task", "plan"], nargs="?", default="task")

    p = sub.add_parser("db", parents=[db], help="database maintenance")
    p.add_argument("action", choices=["upgrade"])

    p = sub.add_parser("run", parents=[src, db, safety], help="run the daemon")
    p.add_argument("--resync-interval", default="60s", help="full resync period (default 60s)")
    p.add_argument("--max-concurrent-runs", type=int, default=16)
    p.add_argument("--shutdown-grace", default="30s", help="wait for runs on SIGTERM (30s)")
    p.add_argument("--heartbeat-interval", default="5s", help="run heartbeat period (5s)")
    p.add_argument("--abandon-after", default="30s",
                   help="a run without a heartbeat for this long is abandoned (30s)")
    p.add_argument("--output-limit", type=int, default=64 * 1024,
                   help="bytes of output kept per run (64 KiB)")
    p.add_argument("--clock-offset", default=_env("RECONCILER_CLOCK_OFFSET"),
                   help=argparse.SUPPRESS)  # testing aid: shift the daemon's clock
    p.add_argument("--log-level", default=_env("RECONCILER_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"])

    p = sub.add_parser("status", parents=[db], help="daemon health and manifest errors")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")

    p = sub.add_parser("runs", parents=[db], help="list the runs of a task")
    p.add_argument("name")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")

    p = sub.add_parser("logs", parents=[db], help="print the output of a run")
    p.add_argument("run_id", type=int)

    p = sub.add_parser("trigger", parents=[db], help="run a task now (the daemon picks it up)")
    p.add_argument("name")

    p = sub.add_parser("suspend", parents=[db], help="suspend a task at run time")
    p.add_argument("name")
    p.add_argument("--note", default=None, help="why (shown in status and the dashboard)")

    p = sub.add_parser("resume", parents=[db], help="resume a task suspended at run time")
    p.add_argument("name")
    p.add_argument("--catch-up", action="store_true",
                   help="also run the most recent slot missed while suspended")
    return parser


# ------------------------------------------------------------------------ helpers


def _store(url: str | None) -> SQLStore:
    from reconciler.store import create_store

    store = create_store(url)
    store.upgrade()
    return store


def _safety(args: argparse.Namespace, strict: bool = False) -> SafetyOptions:
    from reconciler.core.plan import SafetyOptions

    if args.max_delete < 0:
        raise SystemExit("error: --max-delete must be >= 0")
    return SafetyOptions(
        allow_empty=args.allow_empty, max_delete=args.max_delete, force=args.force, strict=strict
    )


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"error: --from: not an ISO 8601 time: {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# ----------------------------------------------------------------------- commands


def cmd_validate(args: argparse.Namespace) -> int:
    from reconciler.manifests import load_paths

    paths = args.paths or [args.manifests]
    desired = load_paths(paths)
    if args.output == "json":
        _print_json(
            {
                "valid": desired.ok,
                "tasks": len(desired.tasks),
                "files": len(desired.files),
                "errors": [e.to_json() for e in desired.errors],
            }
        )
    else:
        for error in desired.errors:
            print(error, file=sys.stderr)
        if desired.directory_missing and not desired.errors:
            print(f"{', '.join(paths)}: no such file or directory", file=sys.stderr)
        if desired.ok:
            print(f"{len(desired.tasks)} task(s) in {len(desired.files)} file(s): valid")
    return EXIT_OK if desired.ok else EXIT_ERROR


def _plan_exit(plan_: Any) -> int:
    if plan_.errors or plan_.refused:
        return EXIT_ERROR
    return EXIT_CHANGES if plan_.has_changes else EXIT_OK


def _emit_plan(args: argparse.Namespace, plan_: Any) -> None:
    from reconciler.cli.output import render_plan
    from reconciler.core.plan_document import plan_document

    if args.output == "json":
        print(plan_document(plan_).model_dump_json(indent=2))
    else:
        print(render_plan(plan_))


def cmd_diff(args: argparse.Namespace) -> int:
    from reconciler.core.plan import plan
    from reconciler.manifests import load_directory, load_tree
    from reconciler.manifests.git import read_tree_at
    from reconciler.service import actual_from_desired, make_plan

    options = _safety(args)
    if args.against_ref:
        base = load_tree(read_tree_at(args.manifests, args.against_ref))
        desired = load_directory(args.manifests)
        plan_ = plan(desired, actual_from_desired(base), options)
    else:
        _, plan_ = make_plan(args.manifests, _store(args.database), options)
    _emit_plan(args, plan_)
    return _plan_exit(plan_)


def cmd_apply(args: argparse.Namespace) -> int:
    from reconciler.service import default_actor, reconcile

    store = _store(args.database)
    result = reconcile(
        args.manifests, store, _safety(args, strict=args.strict), actor=default_actor()
    )
    _emit_plan(args, result.plan)
    if result.applied is not None and args.output == "text":
        a = result.applied
        rev = f" at {result.revision}" if result.revision else ""
        print(
            f"Applied{rev}: {a.created} created, {a.updated} updated, {a.deleted} deleted "
            f"(apply #{a.id})."
        )
    return EXIT_ERROR if result.plan.errors or result.plan.refused else EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    from reconciler.cli.output import fmt_time, table
    from reconciler.core.schedule import Schedule

    store = _store(args.database)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for task in sorted(store.load_tasks(), key=lambda t: t.name):
        nxt = task.next_fire_at
        if nxt is None or nxt <= now:
            nxt = Schedule.parse(task.schedule, task.time_zone).next_after(now)
        suspended = "yes" if task.suspended else "no"
        if task.override is not None and task.override.suspended != task.suspended_in_git:
            suspended += " (override)"
        rows.append(
            {
                "name": task.name,
                "schedule": task.schedule,
                "timeZone": task.time_zone,
                "next": fmt_time(nxt, task.time_zone) if nxt else None,
                "nextUTC": fmt_time(nxt) if nxt else None,
                "suspended": task.suspended,
                "suspendedText": suspended,
                "source": task.source_file,
                "revision": task.source_revision,
                "generation": task.generation,
                "labels": task.document.get("metadata", {}).get("labels", {}),
            }
        )
    if args.output == "json":
        for r in rows:
            del r["suspendedText"]
        _print_json(rows)
        return EXIT_OK
    headers = ["NAME", "SCHEDULE", "TIMEZONE", "NEXT", "NEXT (UTC)", "SUSPENDED", "SOURCE"]
    if args.output == "wide":
        headers += ["GEN", "REVISION", "LABELS"]
    cells = []
    for r in rows:
        row = [
            r["name"], r["schedule"], r["timeZone"], r["next"] or "-", r["nextUTC"] or "-",
            r["suspendedText"], r["source"],
        ]
        if args.output == "wide":
            labels = ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items()))
            row += [str(r["generation"]), (r["revision"] or "-")[:12], labels or "-"]
        cells.append(row)
    print(table(headers, cells))
    return EXIT_OK


def cmd_next(args: argparse.Namespace) -> int:
    from reconciler.cli.output import fmt_time
    from reconciler.core.errors import ScheduleError
    from reconciler.core.schedule import Schedule

    if bool(args.name) == bool(args.schedule):
        raise SystemExit("error: give a task NAME or --schedule EXPR (not both)")
    if args.name:
        task = _store(args.database).get_task(args.name)
        if task is None:
            from reconciler.core.errors import TaskNotFoundError

            raise TaskNotFoundError(args.name)
        expr, zone = task.schedule, task.time_zone
    else:
        expr, zone = args.schedule, args.tz
    try:
        schedule = Schedule.parse(expr, zone)
    except ScheduleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    start = _parse_time(args.start) if args.start else datetime.now(UTC)
    times = []
    it = schedule.iter_after(start)
    for _ in range(max(0, args.count)):
        t = next(it, None)
        if t is None:
            break
        times.append(t)
    if args.output == "json":
        _print_json(
            {
                "schedule": expr,
                "timeZone": zone,
                "times": [{"local": fmt_time(t, zone), "utc": fmt_time(t)} for t in times],
            }
        )
    else:
        for t in times:
            print(f"{fmt_time(t, zone)}  ({fmt_time(t)})" if zone != "UTC" else fmt_time(t))
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from reconciler.core.specs import plan_schema, render, task_schema

    sys.stdout.write(render(task_schema() if args.which == "task" else plan_schema()))
    return EXIT_OK


def cmd_db(args: argparse.Namespace) -> int:
    from reconciler.store import create_store

    create_store(args.database).upgrade()
    print("database schema is up to date")
    return EXIT_OK


def _duration_arg(flag: str, text: str) -> Any:
    from reconciler.core.durations import parse_duration
    from reconciler.core.errors import DurationError

    try:
        return parse_duration(text)
    except DurationError as exc:
        raise SystemExit(f"error: {flag}: {exc}") from None


def cmd_run(args: argparse.Namespace) -> int:
    import logging

    from reconciler.core.clock import SystemClock
    from reconciler.daemon import Daemon, DaemonConfig

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    config = DaemonConfig(
        manifests=args.manifests,
        database=args.database,
        resync_interval=_duration_arg("--resync-interval", args.resync_interval),
        shutdown_grace=_duration_arg("--shutdown-grace", args.shutdown_grace),
        heartbeat_interval=_duration_arg("--heartbeat-interval", args.heartbeat_interval),
        abandon_after=_duration_arg("--abandon-after", args.abandon_after),
        max_concurrent_runs=max(1, args.max_concurrent_runs),
        output_limit=max(1024, args.output_limit),
        safety=_safety(args),
    )
    clock = None
    if args.clock_offset:
        from datetime import timedelta

        text = args.clock_offset
        sign = -1 if text.startswith("-") else 1
        clock = SystemClock(sign * _duration_arg("--clock-offset", text.lstrip("+-")))
        if clock.offset == timedelta(0):
            clock = None
    import asyncio

    return asyncio.run(Daemon(config, clock=clock).run())


def cmd_status(args: argparse.Namespace) -> int:
    from reconciler.cli.output import fmt_time, table

    store = _store(args.database)
    now = datetime.now(UTC)
    replicas = store.list_replicas()
    tasks = store.load_tasks()
    applies = store.list_applies(limit=1)
    live = [r for r in replicas if r["stopped_at"] is None]
    replica_docs: list[dict[str, Any]] = [
        {**{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()},
         "healthy": r["stopped_at"] is None and r["heartbeat_at"] is not None
         and (now - r["heartbeat_at"]).total_seconds() < 60}
        for r in replicas
    ]
    data: dict[str, Any] = {
        "tasks": len(tasks),
        "suspended": sum(1 for t in tasks if t.suspended),
        "lastApply": (
            {"at": applies[0].applied_at.isoformat(), "actor": applies[0].actor,
             "revision": applies[0].revision} if applies else None
        ),
        "replicas": replica_docs,
    }
    if args.output == "json":
        _print_json(data)
        return EXIT_OK
    print(f"tasks: {data['tasks']} ({data['suspended']} suspended)")
    if applies:
        a = applies[0]
        print(f"last apply: {fmt_time(a.applied_at)} by {a.actor}"
              + (f" at {a.revision[:12]}" if a.revision else ""))
    if not live:
        print("daemon: not running (no live replica has reported)")
    rows: list[list[str]] = []
    errors: list[str] = []
    for r in replica_docs:
        st = r.get("status") or {}
        state = "stopped" if r["stopped_at"] else ("ok" if r["healthy"] else "stale")
        rows.append([str(r["id"]), state, str(r["heartbeat_at"] or "-"),
                     str(st.get("tasks", "-")), str(st.get("active_runs", "-")),
                     str(st.get("last_error") or "-")])
        if not r["stopped_at"]:
            errors.extend(st.get("manifest_errors") or [])
            errors.extend(f"refused: {x}" for x in st.get("refusals") or [])
    if rows:
        print(table(["REPLICA", "STATE", "HEARTBEAT", "TASKS", "ACTIVE", "LAST ERROR"], rows))
    if errors:
        print("manifest errors (their tasks are kept unchanged):")
        for e in dict.fromkeys(errors):
            print(f"  {e}")
    return EXIT_OK if live and not errors else EXIT_ERROR


def _run_json(r: Any) -> dict[str, Any]:
    return {
        "id": r.id, "task": r.task_name, "slot": r.slot.isoformat(), "attempt": r.attempt,
        "trigger": str(r.trigger), "status": str(r.status), "replica": r.replica,
        "startedAt": r.started_at.isoformat() if r.started_at else None,
        "finishedAt": r.finished_at.isoformat() if r.finished_at else None,
        "latenessSeconds": r.lateness_seconds, "exitCode": r.exit_code, "error": r.error,
        "reason": r.reason, "progressPercent": r.progress_percent,
        "progressMessage": r.progress_message,
    }


def cmd_runs(args: argparse.Namespace) -> int:
    from reconciler.cli.output import fmt_time, table
    from reconciler.core.errors import TaskNotFoundError

    store = _store(args.database)
    task = store.get_task(args.name, include_deleted=True)
    if task is None:
        raise TaskNotFoundError(args.name)
    runs = store.list_runs(args.name, limit=args.limit)
    if args.output == "json":
        _print_json([_run_json(r) for r in runs])
        return EXIT_OK
    rows = []
    for r in runs:
        dur = "-"
        if r.started_at and r.finished_at:
            dur = f"{(r.finished_at - r.started_at).total_seconds():.3f}s"
        late = f"{r.lateness_seconds * 1000:.0f}ms" if r.lateness_seconds is not None else "-"
        info = r.reason or r.error or ""
        rows.append([str(r.id), fmt_time(r.slot, task.time_zone), str(r.attempt), str(r.trigger),
                     str(r.status), late, dur, "-" if r.exit_code is None else str(r.exit_code),
                     info.splitlines()[0][:80] if info else ""])
    print(table(["ID", "SLOT", "ATTEMPT", "TRIGGER", "STATUS", "LATENESS", "DURATION", "EXIT",
                 "INFO"], rows))
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    store = _store(args.database)
    run = store.get_run(args.run_id)
    if run is None:
        print(f"error: run {args.run_id} not found", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(run.output_tail or "")
    if run.output_tail and not run.output_tail.endswith("\n"):
        sys.stdout.write("\n")
    if run.error:
        print(f"[{run.status}] {run.error}", file=sys.stderr)
    return EXIT_OK


def cmd_trigger(args: argparse.Namespace) -> int:
    from reconciler.core.errors import TaskNotFoundError
    from reconciler.core.protocols import NewRun
    from reconciler.core.runtime import RunStatus, Trigger

    store = _store(args.database)
    if store.get_task(args.name) is None:
        raise TaskNotFoundError(args.name)
    run = store.insert_run(NewRun(task_name=args.name, slot=datetime.now(UTC), attempt=1,
                                  trigger=Trigger.MANUAL, status=RunStatus.PENDING))
    print(f"run {run.id} of {args.name} queued; the daemon starts it within a second")
    return EXIT_OK


def cmd_suspend(args: argparse.Namespace) -> int:
    from reconciler.core.runtime import SuspendOverride
    from reconciler.service import default_actor

    store = _store(args.database)
    task = store.set_override(
        args.name, SuspendOverride(True, args.note, default_actor(), datetime.now(UTC))
    )
    print(f"{task.name} suspended" + (f": {args.note}" if args.note else ""))
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    from reconciler.core.errors import TaskNotFoundError
    from reconciler.core.protocols import NewRun
    from reconciler.core.runtime import RunStatus, SuspendOverride, Trigger
    from reconciler.core.schedule import Schedule
    from reconciler.service import default_actor

    store = _store(args.database)
    task = store.get_task(args.name)
    if task is None:
        raise TaskNotFoundError(args.name)
    now = datetime.now(UTC)
    if task.suspended_in_git:
        store.set_override(args.name, SuspendOverride(False, None, default_actor(), now))
        print(f"{args.name} resumed (overrides suspend: true in git until the next change)")
    else:
        store.set_override(args.name, None)
        print(f"{args.name} resumed")
    if args.catch_up:
        slot = Schedule.parse(task.schedule, task.time_zone).previous_before(now)
        if slot is None:
            print("no earlier slot to catch up")
        else:
            attempt = store.next_attempt(args.name, slot)
            run = store.insert_run(NewRun(task_name=args.name, slot=slot, attempt=attempt,
                                          trigger=Trigger.CATCH_UP, status=RunStatus.PENDING))
            print(f"run {run.id} queued for the missed slot {slot.isoformat()}")
    return EXIT_OK


COMMANDS = {
    "validate": cmd_validate,
    "diff": cmd_diff,
    "apply": cmd_apply,
    "get": cmd_get,
    "next": cmd_next,
    "schema": cmd_schema,
    "db": cmd_db,
    "run": cmd_run,
    "status": cmd_status,
    "runs": cmd_runs,
    "logs": cmd_logs,
    "trigger": cmd_trigger,
    "suspend": cmd_suspend,
    "resume": cmd_resume,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import version

        print(f"reconciler {version('reconciler')}")
        return EXIT_OK
    if not args.command:
        parser.print_help()
        return EXIT_ERROR
    from reconciler.core.errors import ReconcilerError

    try:
        return COMMANDS[args.command](args)
    except ReconcilerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `reconciler diff -o json | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

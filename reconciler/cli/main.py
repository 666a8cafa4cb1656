"""``reconciler``: validate, diff, apply and inspect tasks.

Exit codes follow the plan: ``diff`` exits 0 when there is nothing to do, 2 when
changes are pending and 1 on errors (invalid manifests, unreachable database);
``validate`` and ``apply`` exit 0 on success and 1 on any error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.core.plan import SafetyOptions
    from reconciler.core.protocols import Store

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def _names(value: str | None) -> tuple[str, ...] | None:
    """A comma-separated list (``--allowed-hosts``); None when not given."""
    if not value:
        return None
    return tuple(name.strip() for name in value.split(",") if name.strip())


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
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--server",
        default=_env("RECONCILER_SERVER"),
        metavar="URL",
        help="talk to a running daemon's HTTP API instead of the database "
        "(env RECONCILER_SERVER, e.g. http://127.0.0.1:8080)",
    )
    remote.add_argument(
        "--token",
        default=_env("RECONCILER_TOKEN"),
        help="API token for --server (env RECONCILER_TOKEN; prefer the env variable)",
    )
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

    p = sub.add_parser("get", parents=[db, remote], help="list tasks")
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
    p.add_argument("--clock-offset-file", default=_env("RECONCILER_CLOCK_OFFSET_FILE"),
                   help=argparse.SUPPRESS)  # testing aid: step the clock while running
    p.add_argument("--log-level", default=_env("RECONCILER_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--listen", default=_env("RECONCILER_LISTEN", "127.0.0.1:8080"),
                   metavar="HOST:PORT",
                   help="HTTP API, dashboard and /metrics address (env RECONCILER_LISTEN, "
                        "default 127.0.0.1:8080)")
    p.add_argument("--no-api", action="store_true",
                   help="serve no HTTP API, dashboard or metrics")
    p.add_argument("--api-token-file", default=_env("RECONCILER_API_TOKEN_FILE"),
                   metavar="FILE",
                   help="'name:token' lines allowed to call mutations (re-read on change and "
                        "SIGHUP); also env RECONCILER_API_TOKEN='name:token'")
    p.add_argument("--allowed-hosts", default=_env("RECONCILER_ALLOWED_HOSTS"),
                   metavar="NAMES",
                   help="comma-separated Host header names the API answers, '*.example.com' "
                        "wildcards allowed (env RECONCILER_ALLOWED_HOSTS); default: loopback "
                        "names and IP literals on a loopback address, any Host otherwise")
    p.add_argument("--auth-reads", action="store_true",
                   help="require a token for reads too (the dashboard asks for it)")
    p.add_argument("--api-head-timeout", default=_env("RECONCILER_API_HEAD_TIMEOUT", "5s"),
                   help="close a connection that sends no complete request head in this "
                        "long (default 5s)")
    p.add_argument("--api-max-connections-per-address", type=int, default=64, metavar="N",
                   help="past N open connections, an address gets only the probes (64)")
    p.add_argument("--api-rate-per-address", type=float, default=100.0, metavar="PER_S",
                   help="requests a second per client address, bursts of twice that; past "
                        "it 429 (default 100; 0: no limit; behind a proxy all share one)")
    p.add_argument("--zookeeper", default=_env("RECONCILER_ZOOKEEPER"), metavar="HOSTS",
                   help="distributed mode: 'zk-0:2181,zk-1:2181,zk-2:2181[/chroot]' "
                        "(env RECONCILER_ZOOKEEPER); without it: one replica")
    p.add_argument("--namespace", default=_env("RECONCILER_NAMESPACE", "default"),
                   help="separates installations on one ZooKeeper (default 'default')")
    p.add_argument("--max-clock-skew", default=_env("RECONCILER_MAX_CLOCK_SKEW", "2s"),
                   help="refuse to claim while this replica's clock is further than this "
                        "from the database's (default 2s; distributed mode)")
    p.add_argument("--zookeeper-session-timeout",
                   default=_env("RECONCILER_ZOOKEEPER_SESSION_TIMEOUT", "10s"),
                   help="ZooKeeper session timeout: how long a crashed or stalled replica "
                        "keeps its locks (env RECONCILER_ZOOKEEPER_SESSION_TIMEOUT, default 10s)")
    p.add_argument("--unclaimed-grace", default=_env("RECONCILER_UNCLAIMED_GRACE", "30s"),
                   help="distributed mode: a slot a peer claimed but recorded nothing for "
                        "within this long is recorded missed (env RECONCILER_UNCLAIMED_GRACE, "
                        "default 30s)")

    p = sub.add_parser("status", parents=[db, remote], help="daemon health and manifest errors")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")

    p = sub.add_parser("runs", parents=[db, remote], help="list the runs of a task")
    p.add_argument("name")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")

    p = sub.add_parser("logs", parents=[db, remote], help="print the output of a run")
    p.add_argument("run_id", type=int)
    p.add_argument("-f", "--follow", action="store_true",
                   help="with --server: keep printing a live run's output until it ends")
    p.add_argument("--raw", action="store_true",
                   help="write the output's bytes unchanged (default: control characters "
                        "except newline and tab are shown as escapes such as \\x1b)")

    p = sub.add_parser("trigger", parents=[db, remote],
                       help="run a task now (the daemon picks it up)")
    p.add_argument("name")

    p = sub.add_parser("suspend", parents=[db, remote], help="suspend a task at run time")
    p.add_argument("name")
    p.add_argument("--note", default=None, help="why (shown in status and the dashboard)")

    p = sub.add_parser("resume", parents=[db, remote], help="resume a task suspended at run time")
    p.add_argument("name")
    p.add_argument("--catch-up", action="store_true",
                   help="also run the most recent slot missed while suspended")
    return parser


# ------------------------------------------------------------------------ helpers


def _store(url: str | None, *, create: bool = False) -> Store:
    """The store, its schema upgraded. Only ``create`` (apply) makes a new SQLite file:
    for every other command a missing file is a typo, not an empty database."""
    from reconciler.store import create_store

    store = create_store(url, must_exist=not create)
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

    store = _store(args.database, create=True)
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
    from reconciler.cli.output import fmt_time
    from reconciler.core.schedule import Schedule

    store = _store(args.database)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for task in sorted(store.load_tasks(), key=lambda t: t.name):
        nxt = task.next_fire_at
        if task.suspended:  # as the API says: a suspended task has no next fire time
            nxt = None
        elif nxt is None or nxt <= now:
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
    return _emit_task_rows(args, rows)


def _emit_task_rows(args: argparse.Namespace, rows: list[dict[str, Any]]) -> int:
    from reconciler.cli.output import table

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
    from reconciler.daemon import DaemonConfig
    from reconciler.daemon.compose import build_daemon

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
        listen=None if args.no_api else args.listen,
        api_token=_env("RECONCILER_API_TOKEN"),
        api_token_file=args.api_token_file,
        auth_reads=args.auth_reads,
        allowed_hosts=_names(args.allowed_hosts),
        api_head_timeout=_duration_arg("--api-head-timeout", args.api_head_timeout),
        api_max_connections_per_address=max(1, args.api_max_connections_per_address),
        api_rate_per_address=max(0.0, args.api_rate_per_address),
        zookeeper=args.zookeeper or None,
        namespace=args.namespace,
        max_clock_skew=_duration_arg("--max-clock-skew", args.max_clock_skew),
        zookeeper_session_timeout=_duration_arg("--zookeeper-session-timeout",
                                                args.zookeeper_session_timeout),
        unclaimed_grace=_duration_arg("--unclaimed-grace", args.unclaimed_grace),
    )
    clock: Any = None
    if args.clock_offset_file:
        from reconciler.cli.clockfile import FileOffsetClock

        clock = FileOffsetClock(args.clock_offset_file)
    elif args.clock_offset:
        from datetime import timedelta

        text = args.clock_offset
        sign = -1 if text.startswith("-") else 1
        clock = SystemClock(sign * _duration_arg("--clock-offset", text.lstrip("+-")))
        if clock.offset == timedelta(0):
            clock = None
    return asyncio.run(build_daemon(config, clock=clock).run())


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
    notes: list[str] = []
    for r in replica_docs:
        st = r.get("status") or {}
        state = "stopped" if r["stopped_at"] else ("ok" if r["healthy"] else "stale")
        zk: dict[str, Any] = st.get("zookeeper") or {}
        writer = " *" if zk.get("writer") and not r["stopped_at"] else ""  # distributed mode
        rows.append([str(r["id"]) + writer, state, str(r["heartbeat_at"] or "-"),
                     str(st.get("tasks", "-")), str(st.get("active_runs", "-")),
                     str(st.get("last_error") or "-")])
        if not r["stopped_at"]:
            errors.extend(st.get("manifest_errors") or [])
            errors.extend(f"refused: {x}" for x in st.get("refusals") or [])
            skew: dict[str, Any] = st.get("clock_skew") or {}
            if skew.get("refusing"):
                notes.append(f"{r['id']} is not claiming: {skew['refusing']}")
    if rows:
        print(table(["REPLICA", "STATE", "HEARTBEAT", "TASKS", "ACTIVE", "LAST ERROR"], rows))
    for note in notes:
        print(note)
    if errors:
        print("manifest errors (their tasks are kept unchanged):")
        for e in dict.fromkeys(errors):
            print(f"  {e}")
    return EXIT_OK if live and not errors else EXIT_ERROR


def cmd_runs(args: argparse.Namespace) -> int:
    from reconciler.core.errors import TaskNotFoundError

    store = _store(args.database)
    task = store.get_task(args.name, include_deleted=True)
    if task is None:
        raise TaskNotFoundError(args.name)
    from reconciler.api.views import run_doc  # the API's wire format, built in one place

    runs = store.list_runs(args.name, limit=args.limit)
    return _emit_runs(args, [run_doc(r) for r in runs], task.time_zone)


def _emit_runs(args: argparse.Namespace, runs: list[dict[str, Any]], zone: str) -> int:
    from reconciler.cli.output import fmt_time, table

    if args.output == "json":
        _print_json(runs)
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


def _operations(args: argparse.Namespace) -> tuple[Any, Any]:
    """The operations on the database (no daemon at hand: runs become pending rows
    that the daemon starts), and the caller: the OS user, client ``cli``."""
    from reconciler.core.clock import SystemClock
    from reconciler.service import default_actor
    from reconciler.service.operations import Caller, TaskOperations

    return TaskOperations(_store(args.database), SystemClock()), Caller(
        default_actor(), "cli", "CLI")


def cmd_trigger(args: argparse.Namespace) -> int:
    ops, caller = _operations(args)
    run = asyncio.run(ops.trigger(args.name, caller))
    print(f"run {run.id} of {args.name} queued; the daemon starts it within a second")
    return EXIT_OK


def cmd_suspend(args: argparse.Namespace) -> int:
    ops, caller = _operations(args)
    task, changed = asyncio.run(ops.suspend(args.name, args.note, caller))
    if not changed:
        print(f"{task.name} was already suspended (nothing changed)")
    else:
        print(f"{task.name} suspended" + (f": {args.note}" if args.note else ""))
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    ops, caller = _operations(args)
    result = asyncio.run(ops.resume(args.name, args.catch_up, caller))
    if not result.changed:
        print(f"{args.name} was not suspended (nothing changed)")
        return EXIT_OK
    if result.task.suspended_in_git:
        print(f"{args.name} resumed (overrides suspend: true in git until the next change)")
    else:
        print(f"{args.name} resumed")
    if result.run is not None:
        print(f"run {result.run.id} queued for the missed slot {result.run.slot.isoformat()}")
    elif args.catch_up:
        print(f"no catch-up run: {result.no_catch_up}")
    return EXIT_OK


# ------------------------------------------------------- the same commands over HTTP


def _client(args: argparse.Namespace) -> Any:
    from reconciler.api.client import ApiClient

    return ApiClient(args.server, args.token)


def _parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def remote_get(args: argparse.Namespace) -> int:
    from reconciler.cli.output import fmt_time

    with _client(args) as client:
        items = client.tasks()
    rows: list[dict[str, Any]] = []
    for t in items:
        nxt = _parse_iso(t["nextFireAt"])
        suspended = "yes" if t["suspended"] else "no"
        if t["suspended"] and (t.get("suspension") or {}).get("source") == "override":
            suspended += " (override)"
        rows.append({
            "name": t["name"],
            "schedule": t["schedule"],
            "timeZone": t["timeZone"],
            "next": fmt_time(nxt, t["timeZone"]) if nxt else None,
            "nextUTC": fmt_time(nxt) if nxt else None,
            "suspended": t["suspended"],
            "suspendedText": suspended,
            "source": t["source"]["file"],
            "revision": t["source"]["revision"],
            "generation": t["source"]["generation"],
            "labels": t["labels"],
        })
    return _emit_task_rows(args, rows)


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
    return _emit_runs(args, runs, zone)


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
    with _client(args) as client:
        run = client.trigger(args.name)["run"]
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
        _print_json(data)
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


REMOTE_COMMANDS = {
    "get": remote_get,
    "status": remote_status,
    "runs": remote_runs,
    "logs": remote_logs,
    "trigger": remote_trigger,
    "suspend": remote_suspend,
    "resume": remote_resume,
}


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
    if args.command == "run":  # the daemon's own log lines are not sanitised here
        return _dispatch(args)
    from reconciler.cli.output import VisibleStream

    # Names, errors and output come from manifests and tasks: whatever this command
    # prints, a control sequence in it is shown, not obeyed (`logs --raw` excepted).
    stdout, stderr = sys.stdout, sys.stderr
    if not (args.command == "logs" and args.raw):
        sys.stdout = VisibleStream(stdout)
    sys.stderr = VisibleStream(stderr)
    try:
        return _dispatch(args)
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        sys.stdout, sys.stderr = stdout, stderr


def _dispatch(args: argparse.Namespace) -> int:
    from reconciler.core.errors import ReconcilerError

    try:
        if getattr(args, "server", None) and args.command in REMOTE_COMMANDS:
            return REMOTE_COMMANDS[args.command](args)
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

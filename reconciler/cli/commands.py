"""The commands on the database (and the manifests): no daemon needed.

``diff`` exits 0 when there is nothing to do, 2 when changes are pending and 1 on
errors; the others exit 0 on success and 1 on any error. Heavy modules are imported
inside each command: the CLI's start-up stays short.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from reconciler.cli.common import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_OK,
    emit_notifications,
    emit_runs,
    emit_task_list,
    env,
    open_store,
    print_json,
    safety_options,
)


def _names(value: str | None) -> tuple[str, ...] | None:
    """A comma-separated list (``--allowed-hosts``); None when not given."""
    if not value:
        return None
    return tuple(name.strip() for name in value.split(",") if name.strip())


def cmd_validate(args: argparse.Namespace) -> int:
    from reconciler.manifests import load_paths

    paths = args.paths or [args.manifests]
    desired = load_paths(paths)
    if args.output == "json":
        print_json(
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
            others = "".join(f", {len(found)} {word}(s)" for found, word in (
                (desired.channels, "channel"), (desired.calendars, "calendar")) if found)
            print(f"{len(desired.tasks)} task(s){others} in {len(desired.files)} file(s): "
                  "valid")
    return EXIT_OK if desired.ok else EXIT_ERROR


def _plan_exit(plan_: Any) -> int:
    if plan_.errors or plan_.refused:
        return EXIT_ERROR
    return EXIT_CHANGES if plan_.has_changes else EXIT_OK


def _emit_plan(args: argparse.Namespace, plan_: Any, impact: Any = None) -> None:
    from reconciler.cli.output import render_plan
    from reconciler.core.plan_document import plan_document

    pool = max(1, getattr(args, "max_concurrent_runs", 16))
    if args.output == "json":
        print(plan_document(plan_, impact, pool).model_dump_json(indent=2))
    else:
        print(render_plan(plan_, impact, pool))


def cmd_diff(args: argparse.Namespace) -> int:
    from reconciler.core.plan import plan
    from reconciler.manifests import load_directory, load_tree
    from reconciler.manifests.git import read_tree_at
    from reconciler.service import (
        actual_from_desired,
        calendars_from_desired,
        channels_from_desired,
        make_plan,
    )

    options = safety_options(args)
    if args.against_ref:
        base = load_tree(read_tree_at(args.manifests, args.against_ref))
        desired = load_directory(args.manifests)
        plan_ = plan(desired, actual_from_desired(base), options, channels_from_desired(base),
                     calendars_from_desired(base))
    else:
        _, plan_ = make_plan(args.manifests, open_store(args.database), options)
    from reconciler.core.impact import plan_impact

    _emit_plan(args, plan_, plan_impact(plan_, datetime.now(UTC)))
    return _plan_exit(plan_)


def cmd_apply(args: argparse.Namespace) -> int:
    from reconciler.service import default_actor, reconcile

    store = open_store(args.database, create=True)
    result = reconcile(
        args.manifests, store, safety_options(args, strict=args.strict), actor=default_actor()
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
    from reconciler.api.index import list_document

    return emit_task_list(args, list_document(open_store(args.database), datetime.now(UTC)))


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


def _url_arg(flag: str, text: str | None) -> str | None:
    import re

    from reconciler.core.model import URL_PATTERN

    if not text:
        return None
    if len(text) > 8192 or not re.match(URL_PATTERN, text):
        # the URL may hold a key: say what is wrong, not what it is
        raise SystemExit(f"error: {flag}: not an http:// or https:// URL "
                         "(scheme, host, then no spaces)")
    return text


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
    # httpx logs every request's URL at INFO, httpcore its connections at DEBUG: a ping,
    # heartbeat or Slack webhook URL is a credential (never logged)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    config = DaemonConfig(
        manifests=args.manifests,
        database=args.database,
        resync_interval=_duration_arg("--resync-interval", args.resync_interval),
        shutdown_grace=_duration_arg("--shutdown-grace", args.shutdown_grace),
        heartbeat_interval=_duration_arg("--heartbeat-interval", args.heartbeat_interval),
        abandon_after=_duration_arg("--abandon-after", args.abandon_after),
        max_concurrent_runs=max(1, args.max_concurrent_runs),
        output_limit=max(1024, args.output_limit),
        safety=safety_options(args),
        listen=None if args.no_api else args.listen,
        api_token=env("RECONCILER_API_TOKEN"),
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
        notify_min_interval=_duration_arg("--notify-min-interval", args.notify_min_interval),
        notify_backoff=_duration_arg("--notify-backoff", args.notify_backoff),
        heartbeat_url=_url_arg("--heartbeat-url", args.heartbeat_url),
        heartbeat_every=_duration_arg("--heartbeat-every", args.heartbeat_every),
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
    import asyncio

    return asyncio.run(build_daemon(config, clock=clock).run())


def cmd_status(args: argparse.Namespace) -> int:
    from reconciler.cli.output import fmt_time, table

    store = open_store(args.database)
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
        print_json(data)
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
            if st.get("isolation"):
                notes.append(f"{r['id']} isolation of runs with limits: {st['isolation']}")
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

    store = open_store(args.database)
    task = store.get_task(args.name, include_deleted=True)
    if task is None:
        raise TaskNotFoundError(args.name)
    from reconciler.api.views import run_doc  # the API's wire format, built in one place

    runs = store.list_runs(args.name, limit=args.limit)
    return emit_runs(args, [run_doc(r) for r in runs], task.time_zone)


def cmd_notifications(args: argparse.Namespace) -> int:
    from reconciler.api.views import notification_doc  # the API's wire format
    from reconciler.core.outbox import OutboxStatus

    store = open_store(args.database)
    rows = store.list_notifications(args.task, limit=args.limit)
    backlog = store.notification_counts().get(OutboxStatus.PENDING.value, 0)
    return emit_notifications(args, {"items": [notification_doc(r) for r in rows],
                                     "backlog": backlog})


def cmd_notify(args: argparse.Namespace) -> int:
    """``notify test CHANNEL``: a test event through the sender's delivery code, with
    this process's environment (secrets by ``fromEnv`` must be set here too)."""
    import asyncio

    from reconciler.core.notify import test_event
    from reconciler.executors.delivery import Deliverer

    store = open_store(args.database)
    channel = next((c for c in store.load_channels() if c.name == args.channel), None)
    if channel is None:
        known = ", ".join(c.name for c in store.load_channels()) or "none"
        print(f"error: channel {args.channel!r} not found (applied channels: {known})",
              file=sys.stderr)
        return EXIT_ERROR
    event = test_event(channel.name, datetime.now(UTC)).model_dump(mode="json")
    result = asyncio.run(Deliverer().deliver(channel.document, event))
    if result.ok:
        code = f" (HTTP {result.status_code})" if result.status_code else ""
        print(f"test notification sent to {channel.name}{code}")
        return EXIT_OK
    print(f"error: test notification to {channel.name} failed: {result.error}",
          file=sys.stderr)
    return EXIT_ERROR


def cmd_logs(args: argparse.Namespace) -> int:
    store = open_store(args.database)
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


def _run(coroutine: Any) -> Any:
    import asyncio  # here: the other commands start without it

    return asyncio.run(coroutine)


def _operations(args: argparse.Namespace) -> tuple[Any, Any]:
    """The operations on the database (no daemon at hand: runs become pending rows
    that the daemon starts), and the caller: the OS user, client ``cli``."""
    from reconciler.core.clock import SystemClock
    from reconciler.service import default_actor
    from reconciler.service.operations import Caller, TaskOperations

    return TaskOperations(open_store(args.database), SystemClock()), Caller(
        default_actor(), "cli", "CLI")


def cmd_trigger(args: argparse.Namespace) -> int:
    from reconciler.core.params import parse_assignments

    params = parse_assignments(args.param)  # a ParamError (exit 1) names the item
    ops, caller = _operations(args)
    run = _run(ops.trigger(args.name, caller, params))
    print(f"run {run.id} of {args.name} queued; the daemon starts it within a second")
    return EXIT_OK


def cmd_suspend(args: argparse.Namespace) -> int:
    ops, caller = _operations(args)
    task, changed = _run(ops.suspend(args.name, args.note, caller))
    if not changed:
        print(f"{task.name} was already suspended (nothing changed)")
    else:
        print(f"{task.name} suspended" + (f": {args.note}" if args.note else ""))
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    ops, caller = _operations(args)
    result = _run(ops.resume(args.name, args.catch_up, caller))
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

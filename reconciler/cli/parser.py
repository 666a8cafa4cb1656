"""The command line: the ``reconciler`` parser, its commands and their options.

Options read their defaults from the environment (``RECONCILER_*``) when it sets them.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

from reconciler.cli.common import env
from reconciler.importers.args import add_parser as add_import_parser

if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


class Parents(NamedTuple):
    """Option groups shared by several commands (argparse parent parsers)."""

    src: argparse.ArgumentParser
    db: argparse.ArgumentParser
    safety: argparse.ArgumentParser
    remote: argparse.ArgumentParser
    out: argparse.ArgumentParser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Declarative, GitOps-style scheduler for recurring tasks.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parents = _parents()
    _manifest_commands(sub, parents)
    _table_commands(sub, parents)
    _run_command(sub, parents)
    _observe_commands(sub, parents)
    _operation_commands(sub, parents)
    add_import_parser(sub)
    return parser


def _parents() -> Parents:
    src = argparse.ArgumentParser(add_help=False)
    src.add_argument(
        "--manifests",
        default=env("RECONCILER_MANIFESTS", "./manifests"),
        help="manifests directory (env RECONCILER_MANIFESTS, default ./manifests)",
    )
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--database",
        default=env("RECONCILER_DATABASE_URL"),
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
        default=env("RECONCILER_SERVER"),
        metavar="URL",
        help="talk to a running daemon's HTTP API instead of the database "
        "(env RECONCILER_SERVER, e.g. http://127.0.0.1:8080)",
    )
    remote.add_argument(
        "--token",
        default=env("RECONCILER_TOKEN"),
        help="API token for --server (env RECONCILER_TOKEN; prefer the env variable)",
    )
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("-o", "--output", choices=["text", "json"], default="text")
    return Parents(src, db, safety, remote, out)


def _manifest_commands(sub: Subparsers, parents: Parents) -> None:
    """validate, diff, apply: the manifests against the runtime table."""
    src, db, safety, out = parents.src, parents.db, parents.safety, parents.out
    p = sub.add_parser("validate", help="validate manifest files or directories")
    p.add_argument("paths", nargs="*", help="files or directories (default: --manifests)")
    p.add_argument(
        "--manifests", default=env("RECONCILER_MANIFESTS", "./manifests"), help=argparse.SUPPRESS
    )
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")

    p = sub.add_parser("diff", parents=[src, db, safety, out], help="show what apply would do")
    p.add_argument(
        "--against-ref",
        metavar="REF",
        help="compare with the manifests at a git ref instead of the database",
    )
    p.add_argument("--max-concurrent-runs", type=int, default=16, metavar="N",
                   help="the daemon's pool, shown beside the load (default 16)")

    p = sub.add_parser("apply", parents=[src, db, safety, out], help="apply the manifests")
    p.add_argument(
        "--strict", action="store_true", help="apply nothing when any manifest is invalid"
    )


def _table_commands(sub: Subparsers, parents: Parents) -> None:
    """get, next, schema, db: the runtime table, schedules, schemas, the database."""
    db, remote = parents.db, parents.remote
    p = sub.add_parser("get", parents=[db, remote], help="list tasks")
    p.add_argument("what", choices=["tasks"])
    p.add_argument("-o", "--output", choices=["text", "wide", "json"], default="text")

    p = sub.add_parser("next", parents=[parents.src, db],
                       help="print upcoming slots, and when each starts (jitter)")
    p.add_argument("stored", nargs="?", metavar="NAME", help="a task in the runtime table")
    p.add_argument("--task", metavar="NAME",
                   help="a task declared in --manifests (no database needed)")
    p.add_argument("--schedule", help="a schedule expression instead of a task")
    p.add_argument("--name", help="with --schedule: the task name that resolves H")
    p.add_argument("--tz", default="UTC", help="time zone for --schedule (default UTC)")
    p.add_argument("--from", dest="start", help="ISO time to start from (default now)")
    p.add_argument("--count", type=int, default=5)
    p.add_argument("--show-excluded", action="store_true",
                   help="also list the slots a calendar removes, with the calendar's name")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")

    p = sub.add_parser("schema", help="print a generated JSON schema")
    p.add_argument("which", choices=["task", "plan"], nargs="?", default="task")

    p = sub.add_parser("db", parents=[db], help="database maintenance")
    p.add_argument("action", choices=["upgrade"])


def _run_command(sub: Subparsers, parents: Parents) -> None:
    """run: the daemon, its HTTP API and its distributed mode."""
    p = sub.add_parser("run", parents=[parents.src, parents.db, parents.safety],
                       help="run the daemon")
    p.add_argument("--resync-interval", default="60s", help="full resync period (default 60s)")
    p.add_argument("--max-concurrent-runs", type=int, default=16)
    p.add_argument("--shutdown-grace", default="30s", help="wait for runs on SIGTERM (30s)")
    p.add_argument("--heartbeat-interval", default="5s", help="run heartbeat period (5s)")
    p.add_argument("--abandon-after", default="30s",
                   help="a run without a heartbeat for this long is abandoned (30s)")
    p.add_argument("--output-limit", type=int, default=64 * 1024,
                   help="bytes of output kept per run (64 KiB)")
    p.add_argument("--clock-offset", default=env("RECONCILER_CLOCK_OFFSET"),
                   help=argparse.SUPPRESS)  # testing aid: shift the daemon's clock
    p.add_argument("--clock-offset-file", default=env("RECONCILER_CLOCK_OFFSET_FILE"),
                   help=argparse.SUPPRESS)  # testing aid: step the clock while running
    p.add_argument("--log-level", default=env("RECONCILER_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--listen", default=env("RECONCILER_LISTEN", "127.0.0.1:8080"),
                   metavar="HOST:PORT",
                   help="HTTP API, dashboard and /metrics address (env RECONCILER_LISTEN, "
                        "default 127.0.0.1:8080)")
    p.add_argument("--no-api", action="store_true",
                   help="serve no HTTP API, dashboard or metrics")
    p.add_argument("--api-token-file", default=env("RECONCILER_API_TOKEN_FILE"),
                   metavar="FILE",
                   help="'name:token' lines allowed to call mutations (re-read on change and "
                        "SIGHUP); also env RECONCILER_API_TOKEN='name:token'")
    p.add_argument("--allowed-hosts", default=env("RECONCILER_ALLOWED_HOSTS"),
                   metavar="NAMES",
                   help="comma-separated Host header names the API answers, '*.example.com' "
                        "wildcards allowed (env RECONCILER_ALLOWED_HOSTS); default: loopback "
                        "names and IP literals on a loopback address, any Host otherwise")
    p.add_argument("--auth-reads", action="store_true",
                   help="require a token for reads too (the dashboard asks for it)")
    p.add_argument("--api-head-timeout", default=env("RECONCILER_API_HEAD_TIMEOUT", "5s"),
                   help="close a connection that sends no complete request head in this "
                        "long (default 5s)")
    p.add_argument("--api-max-connections-per-address", type=int, default=64, metavar="N",
                   help="past N open connections, an address gets only the probes (64)")
    p.add_argument("--api-rate-per-address", type=float, default=100.0, metavar="PER_S",
                   help="requests a second per client address, bursts of twice that; past "
                        "it 429 (default 100; 0: no limit; behind a proxy all share one)")
    p.add_argument("--zookeeper", default=env("RECONCILER_ZOOKEEPER"), metavar="HOSTS",
                   help="distributed mode: 'zk-0:2181,zk-1:2181,zk-2:2181[/chroot]' "
                        "(env RECONCILER_ZOOKEEPER); without it: one replica")
    p.add_argument("--namespace", default=env("RECONCILER_NAMESPACE", "default"),
                   help="separates installations on one ZooKeeper (default 'default')")
    p.add_argument("--max-clock-skew", default=env("RECONCILER_MAX_CLOCK_SKEW", "2s"),
                   help="refuse to claim while this replica's clock is further than this "
                        "from the database's (default 2s; distributed mode)")
    p.add_argument("--zookeeper-session-timeout",
                   default=env("RECONCILER_ZOOKEEPER_SESSION_TIMEOUT", "10s"),
                   help="ZooKeeper session timeout: how long a crashed or stalled replica "
                        "keeps its locks (env RECONCILER_ZOOKEEPER_SESSION_TIMEOUT, default 10s)")
    p.add_argument("--unclaimed-grace", default=env("RECONCILER_UNCLAIMED_GRACE", "30s"),
                   help="distributed mode: a slot a peer claimed but recorded nothing for "
                        "within this long is recorded missed (env RECONCILER_UNCLAIMED_GRACE, "
                        "default 30s)")
    p.add_argument("--notify-min-interval",
                   default=env("RECONCILER_NOTIFY_MIN_INTERVAL", "5m"),
                   help="at most one notification per channel, task and event this often; "
                        "the others are summed up in the next (env "
                        "RECONCILER_NOTIFY_MIN_INTERVAL, default 5m)")
    p.add_argument("--heartbeat-url", default=env("RECONCILER_HEARTBEAT_URL"),
                   help="ping this http(s) URL every --heartbeat-every (healthchecks.io "
                        "style), so a dead daemon is noticed from outside (env "
                        "RECONCILER_HEARTBEAT_URL; never logged)")
    p.add_argument("--heartbeat-every", default=env("RECONCILER_HEARTBEAT_EVERY", "60s"),
                   help="how often --heartbeat-url is pinged (env RECONCILER_HEARTBEAT_EVERY, "
                        "default 60s)")
    p.add_argument("--notify-backoff", default=env("RECONCILER_NOTIFY_BACKOFF", "10s"),
                   help="wait before retrying a failed delivery, doubled per attempt up to "
                        "1h; given up after 24h (env RECONCILER_NOTIFY_BACKOFF, default 10s)")


def _observe_commands(sub: Subparsers, parents: Parents) -> None:
    """status, runs, logs: the daemon's health, runs and their output."""
    db, remote = parents.db, parents.remote
    p = sub.add_parser("status", parents=[db, remote], help="daemon health and manifest errors")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")

    p = sub.add_parser("runs", parents=[db, remote], help="list the runs of a task")
    p.add_argument("name")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")

    p = sub.add_parser("notifications", parents=[db, remote],
                       help="notifications: sent, waiting for delivery, failed")
    p.add_argument("--task", default=None, help="only this task's")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")

    p = sub.add_parser("notify", parents=[db], help="send a test notification")
    p.add_argument("action", choices=["test"])
    p.add_argument("channel", help="metadata.name of a kind: Channel (as applied)")

    p = sub.add_parser("logs", parents=[db, remote], help="print the output of a run")
    p.add_argument("run_id", type=int)
    p.add_argument("-f", "--follow", action="store_true",
                   help="with --server: keep printing a live run's output until it ends")
    p.add_argument("--raw", action="store_true",
                   help="write the output's bytes unchanged (default: control characters "
                        "except newline and tab are shown as escapes such as \\x1b)")


def _operation_commands(sub: Subparsers, parents: Parents) -> None:
    """trigger, suspend, resume: the operations, on the database or over HTTP."""
    db, remote = parents.db, parents.remote
    p = sub.add_parser("trigger", parents=[db, remote],
                       help="run a task now (the daemon picks it up)")
    p.add_argument("name")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a value for one of the task's parameters (spec.params), over its "
                        "default; repeat for more. Secret parameters are refused here")

    p = sub.add_parser("suspend", parents=[db, remote], help="suspend a task at run time")
    p.add_argument("name")
    p.add_argument("--note", default=None, help="why (shown in status and the dashboard)")

    p = sub.add_parser("resume", parents=[db, remote], help="resume a task suspended at run time")
    p.add_argument("name")
    p.add_argument("--catch-up", action="store_true",
                   help="also run the most recent slot missed while suspended")
    _backfill_commands(sub, parents)


def _backfill_commands(sub: Subparsers, parents: Parents) -> None:
    """backfill, backfills: run the slots of a range, list and cancel backfills."""
    db, remote = parents.db, parents.remote
    p = sub.add_parser("backfill", parents=[parents.src, db, remote],
                       help="run a task's slots in [--from, --to) (or: backfill cancel ID)")
    p.add_argument("name", metavar="NAME", help="the task (or 'cancel' ID)")
    p.add_argument("id", nargs="?", metavar="ID", help=argparse.SUPPRESS)
    p.add_argument("--from", dest="start", metavar="T1",
                   help="first instant (inclusive): a date (local midnight in the task's "
                        "zone), a local time, or an RFC 3339 instant")
    p.add_argument("--to", dest="end", metavar="T2", help="end (exclusive), the same forms")
    p.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="at most N of its runs at once (default 1)")
    p.add_argument("--rerun", action="store_true",
                   help="also run slots that already have a succeeded run")
    p.add_argument("--dry-run", action="store_true",
                   help="list the slots from --manifests and exit (no database)")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")

    p = sub.add_parser("backfills", parents=[db, remote], help="list backfills, newest first")
    p.add_argument("--task", default=None, help="only this task's")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")

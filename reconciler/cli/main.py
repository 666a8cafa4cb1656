"""``reconciler``: validate, diff, apply and inspect tasks.

Exit codes follow the plan: ``diff`` exits 0 when there is nothing to do, 2 when
changes are pending and 1 on errors (invalid manifests, unreachable database);
``validate`` and ``apply`` exit 0 on success and 1 on any error.

The parser is :mod:`reconciler.cli.parser`; the commands on the database are in
:mod:`reconciler.cli.commands`, their ``--server`` forms in :mod:`reconciler.cli.remote`.
This module picks one and runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from reconciler.cli import backfill, commands, preview, remote
from reconciler.cli.common import EXIT_ERROR, EXIT_OK
from reconciler.cli.parser import build_parser

__all__ = ["COMMANDS", "REMOTE_COMMANDS", "build_parser", "main"]

REMOTE_COMMANDS = {
    "get": remote.remote_get,
    "status": remote.remote_status,
    "runs": remote.remote_runs,
    "notifications": remote.remote_notifications,
    "logs": remote.remote_logs,
    "trigger": remote.remote_trigger,
    "suspend": remote.remote_suspend,
    "resume": remote.remote_resume,
}


def _cmd_import(args: argparse.Namespace) -> int:
    from reconciler.importers.cli import cmd_import  # here: only when importing

    return cmd_import(args)


COMMANDS = {
    "validate": commands.cmd_validate,
    "import": _cmd_import,
    "diff": commands.cmd_diff,
    "apply": commands.cmd_apply,
    "get": commands.cmd_get,
    "next": preview.cmd_next,
    "schema": commands.cmd_schema,
    "db": commands.cmd_db,
    "run": commands.cmd_run,
    "status": commands.cmd_status,
    "runs": commands.cmd_runs,
    "notifications": commands.cmd_notifications,
    "notify": commands.cmd_notify,
    "logs": commands.cmd_logs,
    "trigger": commands.cmd_trigger,
    "suspend": commands.cmd_suspend,
    "resume": commands.cmd_resume,
    "backfill": backfill.cmd_backfill,
    "backfills": backfill.cmd_backfills,
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

"""``reconciler import crontab|cronjob|systemd SOURCE...``: the arguments and the command.

Wired into the main parser with two calls::

    from reconciler.importers.args import add_parser

__all__ = ["add_parser", "cmd_import", "import_sources"]   # in the CLI's parser
    from reconciler.importers.cli import cmd_import    # COMMANDS["import"]

Without ``--out`` the manifests are printed on stdout (YAML, or with ``-o json`` one
JSON document holding manifests and report) and the report goes to stderr; with
``--out DIR`` one file per source is written there (always YAML, what the manifests
directory reads) and the report is printed on stdout. Existing files are not
overwritten unless they already hold the same text, or ``--force`` is given.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from reconciler.core.errors import ReconcilerError, ScheduleError
from reconciler.importers.args import add_parser

__all__ = ["add_parser", "cmd_import", "import_sources"]
from reconciler.core.schedule import check_time_zone
from reconciler.importers.cronjob import CronJobError, import_cronjobs
from reconciler.importers.crontab import import_crontab
from reconciler.importers.report import (
    SourceImport,
    assign_names,
    dns_label,
    finish,
    render_json,
    render_report,
    render_yaml,
)
from reconciler.importers.systemd import import_timer, parse_unit

EXIT_OK, EXIT_ERROR = 0, 1
MAX_SOURCE_BYTES = 4 << 20


class SourceError(ReconcilerError):
    """A source that cannot be read at all (the message names the file)."""


def _read(path: str) -> str:
    try:
        if os.path.getsize(path) > MAX_SOURCE_BYTES:
            raise SourceError(f"{path}: larger than {MAX_SOURCE_BYTES} bytes")
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot read: {exc}") from None


def import_sources(
    kind: str,
    sources: Sequence[str],
    *,
    prefix: str = "",
    time_zone: str | None = None,
    system: bool = False,
) -> list[SourceImport]:
    """Read, convert, name and validate every source (pure apart from reading files)."""
    imports = []
    for path in sources:
        text = _read(path)
        if kind == "crontab":
            imports.append(import_crontab(path, text, system=system or None,
                                          time_zone=time_zone))
        elif kind == "cronjob":
            try:
                imports.append(import_cronjobs(path, text, time_zone=time_zone))
            except CronJobError as exc:
                raise SourceError(str(exc)) from None
        else:
            service = os.path.join(os.path.dirname(path), _service_name(path, text))
            service_text = _read(service) if os.path.isfile(service) else None
            imports.append(import_timer(path, text, service_text, time_zone=time_zone))
    assign_names(imports, prefix)
    return [finish(source) for source in imports]


def _service_name(timer_path: str, text: str) -> str:
    named = parse_unit(text).last("Timer", "Unit")
    return named or os.path.basename(timer_path).removesuffix(".timer") + ".service"


def _write(out: str, imports: list[SourceImport], force: bool) -> None:
    os.makedirs(out, exist_ok=True)
    planned = [(os.path.join(out, s.file_name), render_yaml(s)) for s in imports if s.mapped]
    for path, text in planned:
        if os.path.exists(path) and not force:
            with open(path, encoding="utf-8") as f:
                if f.read() != text:
                    raise SourceError(f"{path}: exists with other content (use --force)")
    for path, text in planned:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def cmd_import(args: argparse.Namespace) -> int:
    """Run ``reconciler import``; exit 1 when a source cannot be read or nothing maps."""
    if args.prefix and dns_label(args.prefix) != args.prefix.rstrip("-"):
        print(f"error: --prefix {args.prefix!r}: use lower-case letters, digits and '-'",
              file=sys.stderr)
        return EXIT_ERROR
    try:
        if args.time_zone:
            check_time_zone(args.time_zone)
        imports = import_sources(args.source_kind, args.sources, prefix=args.prefix,
                                 time_zone=args.time_zone, system=args.system)
        if args.out:
            _write(args.out, imports, args.force)
    except (SourceError, ScheduleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.out:
        sys.stdout.write(render_report(imports))
    elif args.output == "json":
        sys.stdout.write(render_json(imports))
    else:
        sys.stdout.write("---\n".join(render_yaml(s) for s in imports if s.mapped))
        sys.stderr.write(render_report(imports))
    return EXIT_OK if any(s.mapped for s in imports) else EXIT_ERROR

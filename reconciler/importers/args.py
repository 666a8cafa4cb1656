"""The arguments of ``reconciler import`` (argparse only: the CLI builds its parser
without importing the importers themselves)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def add_parser(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
    parents: Sequence[argparse.ArgumentParser] = (),
) -> argparse.ArgumentParser:
    """Add the ``import`` command to ``subparsers``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "import",
        parents=list(parents),
        help="turn crontabs, Kubernetes CronJobs or systemd timers into manifests",
        description="Write one manifest file per source (or print them), then a semantics "
        "report: for each task what maps exactly, approximately (and how it differs) or not.",
    )
    p.add_argument("source_kind", choices=["crontab", "cronjob", "systemd"], metavar="KIND",
                   help="crontab, cronjob or systemd")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="crontab files, CronJob YAML files or .timer files")
    p.add_argument("--out", metavar="DIR", help="write one manifest file per source here")
    p.add_argument("--prefix", default="", metavar="NAME-", help="prefix for every task name")
    p.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml",
                   help="what is printed: YAML manifests, or one JSON document")
    p.add_argument("--time-zone", metavar="ZONE",
                   help="the zone cron or systemd ran in (IANA name; default UTC)")
    p.add_argument("--system", action="store_true",
                   help="crontabs have a user field (default: /etc/crontab and cron.d files)")
    p.add_argument("--force", action="store_true", help="overwrite files in --out")
    return p

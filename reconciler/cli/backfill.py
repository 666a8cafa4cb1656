"""``reconciler backfill`` and ``reconciler backfills``: run a task's slots of a range,
list the backfills, cancel one.

``backfill NAME --from T1 --to T2 --dry-run`` lists the slots from the manifests alone
(``--manifests``, no database), through the core's
:func:`~reconciler.core.backfill.backfill_slots`; without ``--dry-run`` the backfill is
stored (:meth:`~reconciler.service.operations.TaskOperations.backfill`, on the
database or through ``--server``) and a daemon carries it out. Every JSON form prints
the API's documents (:func:`~reconciler.api.views.backfill_doc`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from reconciler.cli.common import EXIT_OK, print_json


def _remote(args: argparse.Namespace) -> Any:
    from reconciler.cli import remote

    return remote.client(args)


def _local(args: argparse.Namespace) -> tuple[Any, Any]:
    from reconciler.cli.commands import _operations

    return _operations(args)


def _run(coroutine: Any) -> Any:
    import asyncio

    return asyncio.run(coroutine)


def cmd_backfill(args: argparse.Namespace) -> int:
    if args.name == "cancel" and args.id is not None and args.start is None:
        return _cancel(args)
    if args.id is not None:
        raise SystemExit(f"error: unexpected argument {args.id!r} (backfill cancel ID?)")
    if not args.start or not args.end:
        raise SystemExit("error: backfill needs --from and --to")
    if args.dry_run:
        return _dry_run(args)
    if args.parallel < 1:
        raise SystemExit("error: --parallel must be at least 1")
    if args.server:
        with _remote(args) as client:
            doc = client.backfill(args.name, args.start, args.end, parallel=args.parallel,
                                  rerun=args.rerun)["backfill"]
    else:
        from reconciler.api.views import backfill_doc

        ops, caller = _local(args)
        doc = backfill_doc(_run(ops.backfill(args.name, args.start, args.end, caller,
                                             parallel=args.parallel, rerun=args.rerun)))
    if args.output == "json":
        print_json(doc)
    else:
        print(f"backfill {doc['id']} of {doc['task']}: {doc['total']} slot(s) in "
              f"[{doc['from']}, {doc['to']}), {doc['parallel']} at a time; "
              "a daemon carries it out (reconciler backfills)")
    return EXIT_OK


def _dry_run(args: argparse.Namespace) -> int:
    from reconciler.api.views import backfill_preview_doc
    from reconciler.cli.preview import declared_slots
    from reconciler.core.backfill import backfill_slots, range_bound

    args.task = args.name
    slots = declared_slots(args)
    zone = slots.schedules.time_zone
    try:
        start = range_bound(args.start, zone, "--from")
        end = range_bound(args.end, zone, "--to")
        found = backfill_slots(slots, start, end)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    doc = backfill_preview_doc(args.name, zone, start, end, found)
    if args.output == "json":
        print_json(doc)
        return EXIT_OK
    for item in doc["slots"]:
        print(f"{item['local']}  ({item['slot']})" if zone != "UTC" else item["slot"])
    print(f"{len(found)} slot(s) of {args.name} in [{doc['from']}, {doc['to']})",
          file=sys.stderr)
    return EXIT_OK


def _cancel(args: argparse.Namespace) -> int:
    try:
        backfill_id = int(args.id)
    except ValueError:
        raise SystemExit(f"error: not a backfill id: {args.id!r}") from None
    if args.server:
        with _remote(args) as client:
            answer = client.cancel_backfill(backfill_id)
        doc, changed = answer["backfill"], answer["changed"]
    else:
        from reconciler.api.views import backfill_doc

        ops, caller = _local(args)
        record, changed = _run(ops.cancel_backfill(backfill_id, caller))
        doc = backfill_doc(record)
    if args.output == "json":
        print_json({"backfill": doc, "changed": changed})
    elif changed:
        print(f"backfill {backfill_id} cancelled at {doc['progress']}")
    else:
        print(f"backfill {backfill_id} was already cancelled (nothing changed)")
    return EXIT_OK


def cmd_backfills(args: argparse.Namespace) -> int:
    from reconciler.cli.output import table

    if args.server:
        with _remote(args) as client:
            docs = client.backfills(args.task, args.limit)["items"]
    else:
        from reconciler.api.views import backfill_doc
        from reconciler.cli.common import open_store

        store = open_store(args.database)
        docs = [backfill_doc(b) for b in store.list_backfills(task_name=args.task,
                                                              limit=args.limit)]
    if args.output == "json":
        print_json({"items": docs, "count": len(docs)})
        return EXIT_OK
    rows = [[str(d["id"]), d["task"], d["from"], d["to"], d["state"], d["progress"],
             str(d["failed"]), str(d["parallel"]), "yes" if d["rerun"] else "no",
             d["createdBy"]] for d in docs]
    print(table(["ID", "TASK", "FROM", "TO", "STATE", "PROGRESS", "FAILED", "PARALLEL",
                 "RERUN", "BY"], rows))
    return EXIT_OK

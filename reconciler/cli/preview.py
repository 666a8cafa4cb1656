"""``reconciler next``: the coming slots of a task or an expression, and when each starts.

Three sources, one output: a task declared in the manifests (``--task``, no database;
its calendars from the same manifests), a task in the runtime table (``NAME``; its
calendars from the table), or an ad-hoc expression (``--schedule``, with ``--name`` to
resolve ``H``). Every slot comes from the core's
:class:`~reconciler.core.scheduling.TaskSlots` (schedules, ``H``, active window,
calendars, jitter), exactly as the daemon steps through them; ``--show-excluded``
lists the slots a calendar removes too, with the calendar's name.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reconciler.cli.common import EXIT_OK, open_store, print_json

if TYPE_CHECKING:  # the core's model is imported when the command runs (start-up time)
    from reconciler.core.scheduling import TaskSlots


def _parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"error: --from: not an ISO 8601 time: {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def declared_slots(args: argparse.Namespace) -> TaskSlots:
    """The slots of ``--task`` as the manifests in ``--manifests`` declare it."""
    from reconciler.core.calendars import calendars_of_rows
    from reconciler.core.scheduling import TaskSlots
    from reconciler.manifests import load_directory

    desired = load_directory(args.manifests)
    calendars = calendars_of_rows(desired.calendars)
    for task in desired.tasks:
        if task.name == args.task and task.name not in desired.frozen_names:
            return TaskSlots.from_document(task.document, calendars)
    errors = [e for e in desired.errors if e.task == args.task]
    if errors:
        raise SystemExit("\n".join(f"error: {e}" for e in errors))
    if args.task in desired.frozen_names:
        raise SystemExit(f"error: task {args.task!r} is declared more than once")
    raise SystemExit(f"error: task {args.task!r} is not declared in {args.manifests}")


def _slots(args: argparse.Namespace) -> tuple[TaskSlots, str]:
    from reconciler.core.errors import ReconcilerError, TaskNotFoundError
    from reconciler.core.schedule_set import ScheduleSet
    from reconciler.core.scheduling import TaskSlots

    if sum(1 for x in (args.stored, args.task, args.schedule) if x) != 1:
        raise SystemExit("error: give one of NAME (the runtime table), --task NAME (the "
                         "manifests) or --schedule EXPR")
    if args.name and not args.schedule:
        raise SystemExit("error: --name goes with --schedule (it resolves H)")
    if args.schedule:
        try:
            schedules = ScheduleSet.parse(args.schedule, args.tz, args.name)
        except ReconcilerError as exc:
            hint = " (give --name NAME)" if "uses H" in str(exc) else ""
            raise SystemExit(f"error: {exc}{hint}") from None
        return TaskSlots(args.name or "", schedules), args.tz
    if args.task:
        slots = declared_slots(args)
        return slots, slots.schedules.time_zone
    from reconciler.core.calendars import calendars_of_rows

    store = open_store(args.database)
    row = store.get_task(args.stored)
    if row is None:
        raise TaskNotFoundError(args.stored)
    calendars = calendars_of_rows(store.load_calendars())
    return TaskSlots.from_document(row.document, calendars), row.time_zone


def upcoming(slots: TaskSlots, start: datetime, count: int, *, excluded: bool = False
             ) -> list[tuple[datetime, str | None]]:
    """The next ``count`` slots after ``start`` that run, each with None; with
    ``excluded``, the slots a calendar removes among them too, each with the name of
    the calendar (from :meth:`~reconciler.core.scheduling.TaskSlots.candidates`, what
    the daemon steps over)."""
    from reconciler.core.scheduling import MAX_EXCLUDED_IN_A_ROW

    out: list[tuple[datetime, str | None]] = []
    running = skipped = 0
    if count <= 0:
        return out
    for slot, by in slots.candidates(start):
        if by is not None:
            skipped += 1
            if skipped > MAX_EXCLUDED_IN_A_ROW:
                break
            if excluded:
                out.append((slot, by))
            continue
        skipped = 0
        running += 1
        out.append((slot, None))
        if running >= count:
            break
    return out


def _entry(slots: TaskSlots, slot: datetime, zone: str, by: str | None) -> dict[str, Any]:
    from reconciler.cli.output import fmt_time
    from reconciler.core.durations import format_duration

    start = slots.start_of(slot)
    return {"local": fmt_time(slot, zone), "utc": fmt_time(slot),
            "start": fmt_time(start), "startLocal": fmt_time(start, zone),
            "delay": format_duration(start - slot), "excludedBy": by}


def cmd_next(args: argparse.Namespace) -> int:
    from reconciler.core.durations import format_duration

    slots, zone = _slots(args)
    begin = _parse_time(args.start) if args.start else datetime.now(UTC)
    times = [_entry(slots, slot, zone, by) for slot, by in
             upcoming(slots, begin, args.count, excluded=args.show_excluded)]
    if args.output == "json":
        window = slots.window
        print_json({
            "task": slots.name or None,
            "schedule": "; ".join(slots.schedules.expressions),
            "schedules": list(slots.schedules.expressions),
            "timeZone": zone,
            "jitter": format_duration(slots.jitter) if slots.jitter else None,
            "window": {"start": window.start.isoformat() if window.start else None,
                       "end": window.end.isoformat() if window.end else None},
            "calendars": [e.name for e in slots.exclusions],
            "times": times,
        })
        return EXIT_OK
    for t in times:
        line = f"{t['local']}  ({t['utc']})" if zone != "UTC" else t["utc"]
        if t["excludedBy"] is not None:
            line += f"  excluded by calendar {t['excludedBy']}"
        elif slots.jitter:
            line += f"  starts {t['startLocal']} (+{t['delay']})"
        print(line)
    if not times and args.count > 0:
        print("no slots (outside the active window, or none within the search horizon)",
              file=sys.stderr)
    return EXIT_OK

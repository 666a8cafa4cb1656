"""systemd ``.timer`` units (with the ``.service`` beside them) -> tasks.

Semantics followed: systemd.timer(5), systemd.time(7) (calendar events), systemd.service(5)
and systemd.exec(5). A calendar event is ``[WEEKDAYS] [[YEAR-]MONTH-DAY] [HOUR:MINUTE[:SECOND]]
[TIMEZONE]`` or a shorthand (``daily``, ``weekly``, ...); components are ``*``, values,
lists ``a,b``, ranges ``a..b`` and repetitions ``a/n``. Weekdays and the date combine with
AND in systemd where cron combines restricted days with OR, so a weekday together with a
date is only written when it is "the n-th weekday of the month" (``Mon *-*-1..7`` is
``MON#1``). Several ``ExecStart=`` of a oneshot service run in order and stop at the first
failure (a ``-`` prefix ignores it); they become one ``run.shell`` script with each
argument quoted, since systemd runs no shell.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from typing import Any

from reconciler.core.errors import ScheduleError
from reconciler.core.schedule import check_schedule, check_time_zone
from reconciler.importers.report import ImportedTask, SourceImport, dns_label

SHORTHANDS = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
    "quarterly": "*-01,04,07,10-01 00:00:00",
    "semiannually": "*-01,07-01 00:00:00",
}
_DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_MONOTONIC = ("OnActiveSec", "OnBootSec", "OnStartupSec", "OnUnitActiveSec", "OnUnitInactiveSec")
_SERVICE_MAPPED = {"Type", "ExecStartPre", "ExecStart", "ExecStartPost", "Environment",
                   "WorkingDirectory", "User", "EnvironmentFile"}
_TIMER_MAPPED = {"OnCalendar", "Persistent", "RandomizedDelaySec", "AccuracySec", "Unit",
                 *_MONOTONIC}


class CalendarError(ValueError):
    """An ``OnCalendar=`` value cron cannot express."""


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit file: ``section -> key -> values`` (keys may repeat)."""

    sections: dict[str, dict[str, list[str]]]

    def values(self, section: str, key: str) -> list[str]:
        return self.sections.get(section, {}).get(key, [])

    def last(self, section: str, key: str) -> str | None:
        found = self.values(section, key)
        return found[-1] if found else None


def parse_unit(text: str) -> Unit:
    """systemd's INI dialect: ``#``/``;`` comments, ``\\`` continuation, repeated keys.

    An empty assignment (``ExecStart=``) resets the list, as in systemd.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if sep:
            values = current.setdefault(key.strip(), [])
            if value.strip():
                values.append(value.strip())
            else:
                values.clear()
    return Unit(sections)


# -------------------------------------------------------------------------- calendar


def _component(text: str, names: tuple[str, ...] = ()) -> str:
    """One systemd component as a cron field: ``a..b`` -> ``a-b``, values without zeros."""
    if "~" in text:
        raise CalendarError(f"{text!r}: '~' (days from the end) is not supported")

    def value(v: str) -> str:
        if v == "*":
            return v
        if names and v[:3].upper() in names:
            return v[:3].upper()
        if not v.isdigit():
            raise CalendarError(f"{text!r}: {v!r} is not a whole number")
        return str(int(v))

    parts = []
    for item in text.split(","):
        base, _, step = item.partition("/")
        low, dots, high = base.partition("..")
        if not dots and names:
            low, dots, high = base.partition("-")
        field = value(low) + (f"-{value(high)}" if dots else "")
        if step:
            if not step.isdigit() or int(step) == 0:
                raise CalendarError(f"{text!r}: repetition {step!r} is not a positive number")
            field += f"/{int(step)}"
        parts.append(field)
    return ",".join(parts)


def calendar_to_cron(expression: str) -> tuple[str, str | None]:
    """``OnCalendar=`` value -> (cron expression, time zone named in it or ``None``)."""
    text = SHORTHANDS.get(expression.strip().lower(), expression.strip())
    words = text.split()
    zone = None
    if words and (re.match(r"^[A-Za-z][A-Za-z_+-]*/[A-Za-z]", words[-1]) or words[-1] == "UTC"):
        zone = words.pop()
    weekdays = "*"
    if words and re.match(r"^[A-Za-z]", words[0]):
        weekdays = _component(words.pop(0), _DAYS)
    date, time = "*-*-*", "00:00:00"
    for word in words:
        if ":" in word:
            time = word
        elif "-" in word:
            date = word
        else:
            raise CalendarError(f"{word!r} is neither a date nor a time")
    date_parts = date.split("-")
    if len(date_parts) == 2:
        date_parts.insert(0, "*")
    time_parts = time.split(":")
    if len(date_parts) != 3 or len(time_parts) not in (2, 3):
        raise CalendarError(f"{expression!r}: expected [YEAR-]MONTH-DAY HOUR:MINUTE[:SECOND]")
    if date_parts[0] != "*":
        raise CalendarError(f"{expression!r}: a year ({date_parts[0]}) cannot be expressed")
    second = time_parts[2] if len(time_parts) == 3 else "00"
    if "." in second:
        raise CalendarError(f"{expression!r}: fractions of a second cannot be expressed")
    month, day = _component(date_parts[1]), _component(date_parts[2])
    hour, minute, seconds = (_component(p) for p in (time_parts[0], time_parts[1], second))
    if weekdays != "*" and day != "*":
        day, weekdays = "*", _nth_weekday(expression, day, weekdays)
    fields = [minute, hour, day, month, weekdays]
    if seconds != "0":
        fields.insert(0, seconds)
    return " ".join(fields), zone


def _nth_weekday(expression: str, day: str, weekdays: str) -> str:
    match = re.fullmatch(r"(\d+)-(\d+)", day)
    if not match or int(match[1]) % 7 != 1 or int(match[2]) != int(match[1]) + 6:
        raise CalendarError(f"{expression!r}: a weekday and a day of the month both must "
                            "match in systemd (AND), cron would run on either (OR)")
    nth = (int(match[1]) + 6) // 7
    days = [d for d in weekdays.split(",") if re.fullmatch(r"[A-Z]{3}", d)]
    if len(days) != len(weekdays.split(",")):
        raise CalendarError(f"{expression!r}: weekday ranges with a day of the month")
    return ",".join(f"{d}#{nth}" for d in days)


# ----------------------------------------------------------------------------- import


def import_timer(
    source: str, text: str, service_text: str | None, *, time_zone: str | None = None
) -> SourceImport:
    """One ``.timer`` (and its service's text, when found) -> one task per ``OnCalendar=``."""
    result = SourceImport("systemd", source)
    timer = parse_unit(text)
    unit_name = os.path.basename(source).removesuffix(".timer")
    service_name = timer.last("Timer", "Unit") or f"{unit_name}.service"
    calendars = timer.values("Timer", "OnCalendar")
    if "@" in unit_name:
        result.note_file("not mapped", unit_name, "a template unit: import an instance")
        return result
    for key in _MONOTONIC:
        for value in timer.values("Timer", key):
            hint = f'; the nearest schedule is "@every {value}" (slots counted from the Unix ' \
                   'epoch, not from the unit)' if key == "OnUnitActiveSec" else ""
            result.note_file("not mapped", f"{key}={value}", "timers relative to boot or to "
                             f"the unit's activation have no schedule equivalent{hint}")
    if not calendars:
        result.tasks.append(ImportedTask(dns_label(unit_name), None, None))
        result.tasks[-1].note("not mapped", "timer", "no OnCalendar=: nothing to schedule")
        return result
    service = parse_unit(service_text) if service_text is not None else None
    for index, calendar in enumerate(calendars, start=1):
        base = dns_label(unit_name) + (f"-{index}" if len(calendars) > 1 else "")
        task = ImportedTask(base, None, None)
        if len(calendars) > 1:
            task.note("approximate", "several OnCalendar=", "one task each; concurrencyPolicy "
                      "applies per task, systemd never runs the service twice at once")
        spec = _schedule_spec(task, calendar, time_zone)
        if spec is not None:
            spec["run"] = _run(task, service_name, service)
            _timer_options(task, spec, timer)
            task.spec = spec
        result.tasks.append(task)
    return result


def _schedule_spec(
    task: ImportedTask, calendar: str, time_zone: str | None
) -> dict[str, Any] | None:
    try:
        expression, zone = calendar_to_cron(calendar)
        check_schedule(expression)
        if zone:
            check_time_zone(zone)
    except (CalendarError, ScheduleError) as exc:
        task.note("not mapped", f"OnCalendar={calendar}", str(exc))
        return None
    task.note("exact", f"OnCalendar={calendar}", f"schedule {expression!r}")
    spec: dict[str, Any] = {"schedule": expression, "timeZone": zone or time_zone or "UTC"}
    if zone:
        task.note("exact", "time zone", zone)
    else:
        task.note("approximate", "time zone", "systemd follows the system's local time; "
                  f"timeZone: {spec['timeZone']}"
                  + (" (from --time-zone)" if time_zone else " (pass --time-zone ZONE)"))
    if spec["timeZone"] not in ("UTC", "Etc/UTC"):
        task.note("approximate", "daylight saving time", "systemd computes skipped and "
                  "repeated local times its own way; runs in a DST gap or repeat may move "
                  "(the reconciler's rule: docs/schedules.md)")
    return spec


def _timer_options(task: ImportedTask, spec: dict[str, Any], timer: Unit) -> None:
    persistent = (timer.last("Timer", "Persistent") or "false").lower() in ("true", "yes", "1")
    spec["catchUp"] = "Latest" if persistent else "None"
    spec["concurrencyPolicy"] = "Forbid"
    task.note("exact", f"Persistent={'true' if persistent else 'false'}",
              "catchUp: Latest (one run at start-up for what was missed)" if persistent
              else "catchUp: None (what was missed while down is not run)")
    task.note("exact", "overlap", "systemd does not start a service that is still running: "
              "concurrencyPolicy: Forbid")
    delay = timer.last("Timer", "RandomizedDelaySec")
    if delay:
        task.note("not mapped", f"RandomizedDelaySec={delay}", "runs at the scheduled time, "
                  "without the random delay (there is no jitter)")
    accuracy = timer.last("Timer", "AccuracySec")
    task.note("approximate", f"AccuracySec={accuracy or '1min'}"
              + ("" if accuracy else " (default)"), "systemd may start up to this late to "
              "coalesce wake-ups; the reconciler starts at the scheduled time")
    for key in sorted(set(timer.sections.get("Timer", {})) - _TIMER_MAPPED):
        task.note("not mapped", f"{key}={timer.last('Timer', key)}", "no equivalent")


def _run(task: ImportedTask, service_name: str, service: Unit | None) -> dict[str, Any]:
    if service is None:
        task.note("approximate", service_name, "not found beside the timer: the task runs "
                  f"systemctl start {service_name} (which returns once it has started, "
                  "unless the service is Type=oneshot)")
        return {"command": ["systemctl", "start", service_name]}
    lines: list[tuple[str, str]] = [
        (key, value)
        for key in ("ExecStartPre", "ExecStart", "ExecStartPost")
        for value in service.values("Service", key)
    ]
    run: dict[str, Any] = _commands(task, lines)
    env = _environment(task, service)
    if env:
        run["env"] = env
    workdir = service.last("Service", "WorkingDirectory")
    if workdir and workdir.startswith("/"):
        run["workingDir"] = workdir
        task.note("exact", f"WorkingDirectory={workdir}", "workingDir")
    user = service.last("Service", "User")
    if user:
        task.note("not mapped", f"User={user}", "the task runs as the daemon's user (there "
                  "is no run.user)")
    kind = service.last("Service", "Type") or "simple"
    if kind != "oneshot":
        task.note("approximate", f"Type={kind}", "the run lasts until the command exits")
    others = sorted(k for k in service.sections.get("Service", {}) if k not in _SERVICE_MAPPED)
    others += sorted(k for k in service.sections.get("Unit", {}) if k.startswith(("Condition",
                     "Assert", "Requires", "After", "Wants")))
    if others:
        task.note("not mapped", "service settings", ", ".join(others)
                  + ": sandboxing, priorities, conditions and ordering do not carry over")
    return run


def _commands(task: ImportedTask, lines: list[tuple[str, str]]) -> dict[str, Any]:
    if not lines:
        task.note("not mapped", "ExecStart=", "none in the service")
        return {"command": ["true"]}
    script, argvs, ignored = ["set -e"], [], False
    for key, value in lines:
        prefix = re.match(r"^[-@:+!]*", value)
        flags = prefix.group(0) if prefix else ""
        argv = shlex.split(value[len(flags):])
        if "@" in flags and len(argv) > 1:
            del argv[1]  # "@": the second word is argv[0], not an argument
        if "%" in value or "$" in value:
            task.note("not mapped", f"{key}={value}", "systemd substitutes specifiers (%n) "
                      "and $VARIABLES in it; the task passes them as written")
        if set(flags) - {"-"}:
            task.note("not mapped", f"prefix {flags!r}", f"in {key}: the command runs as the "
                      "task's process, without special privileges or argv[0]")
        ignored = ignored or "-" in flags
        argvs.append(argv)
        script.append(shlex.join(argv) + (" || true" if "-" in flags else ""))
    if len(lines) == 1 and lines[0][0] == "ExecStart" and not ignored:
        task.note("exact", "ExecStart=", "run.command (systemd runs no shell)")
        return {"command": argvs[0]}
    task.note("exact", "ExecStart= (several)", "one run.shell script, in order, stopping at "
              "the first failure ('-' ignores it), each argument quoted")
    return {"shell": "\n".join(script) + "\n"}


def _environment(task: ImportedTask, service: Unit) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in service.values("Service", "Environment"):
        for item in shlex.split(value):
            name, sep, val = item.partition("=")
            if sep:
                env[name] = val
                task.note("exact", f"Environment={item}", "env")
    for value in service.values("Service", "EnvironmentFile"):
        task.note("not mapped", f"EnvironmentFile={value}", "set these in env")
    return env

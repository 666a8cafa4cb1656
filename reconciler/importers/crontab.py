"""crontab files -> tasks: user crontabs and the system format with a user field.

The semantics followed are Debian's Vixie cron (crontab(5), cron(8)):

* ``NAME=value`` lines (quotes optional) set the environment of the lines *below*
  them; ``SHELL`` picks the shell, ``MAILTO`` where output is mailed, and cron itself
  sets ``SHELL=/bin/sh``, ``PATH=/usr/bin:/bin``, ``HOME`` and ``LOGNAME``;
* the command runs through ``$SHELL -c``; an unescaped ``%`` ends the command, the
  text after it is the command's standard input with every further ``%`` a newline,
  and ``\\%`` stands for a literal ``%``;
* day-of-month and day-of-week combine with OR when both are restricted, where a
  field starting with ``*`` is unrestricted (the reconciler's rule, the same);
* cron runs every due job (overlaps allowed) and never runs jobs missed while it was
  down;
* daylight saving time (cron(8)): a job with a fixed time (no ``*`` in its minute or
  hour field) that falls into a skipped hour runs soon after the change, and does not
  run again in a repeated hour; a job with ``*`` in its minute or hour field just
  follows the new wall clock.
"""

from __future__ import annotations

import os
import re
import shlex

from reconciler.importers.report import (
    ImportedTask,
    Note,
    SourceImport,
    checked_schedule,
    dns_label,
)

CRON_DEFAULT_PATH = "/usr/bin:/bin"
#: Vixie cron's macros (its entry.c); the reconciler's are the same, which the tests check.
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_ENV_LINE = re.compile(r"^\s*([^\s=#]+)\s*=\s*(.*?)\s*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STDIN_END = "CRON_STDIN"
# Words skipped when a task name is made from its command.
_NOISE = {"test", "cd", "sh", "bash", "exec", "nice", "ionice", "env", "usr", "bin", "sbin"}


def is_system_crontab(path: str) -> bool:
    """``/etc/crontab`` and files in a ``cron.d`` directory have a user field."""
    parent, name = os.path.split(os.path.normpath(path))
    return os.path.basename(parent) == "cron.d" or (
        name == "crontab" and os.path.basename(parent) == "etc"
    )


def import_crontab(
    source: str, text: str, *, system: bool | None = None, time_zone: str | None = None
) -> SourceImport:
    """Every job line of one crontab file, with the environment above it."""
    system = is_system_crontab(source) if system is None else system
    result = SourceImport("crontab", source)
    stem = dns_label(os.path.basename(source)) or "crontab"
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        assignment = _ENV_LINE.match(raw)
        if assignment and not line.startswith(("@", "*")) and not line[0].isdigit():
            env[assignment.group(1)] = _unquote(assignment.group(2))
            continue
        task = _job(line, number, stem, dict(env), system)
        _zone_notes(task, time_zone)
        result.tasks.append(task)
    return result


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _job(line: str, number: int, stem: str, env: dict[str, str], system: bool) -> ImportedTask:
    if line.startswith("@"):
        macro_and_command = line.split(None, 1)
        fields = macro_and_command[:1]
        rest = macro_and_command[1] if len(macro_and_command) > 1 else ""
    else:
        parts = line.split(None, 5)
        fields, rest = parts[:5], (parts[5] if len(parts) > 5 else "")
    user = None
    if system:
        user_and_command = rest.split(None, 1)
        user = user_and_command[0] if user_and_command else ""
        rest = user_and_command[1] if len(user_and_command) > 1 else ""
    task = ImportedTask(f"{stem}-{_slug(rest)}", number, None)
    if not rest or len(fields) not in (1, 5):
        task.note("not mapped", line, "not a crontab line (five time fields"
                  + (", a user" if system else "") + " and a command expected)")
        return task
    schedule = _schedule(task, fields)
    if schedule is None:
        return task
    spec: dict[str, object] = {"schedule": schedule, "timeZone": "UTC"}
    spec["run"] = _run(task, rest, env)
    spec["concurrencyPolicy"] = "Allow"
    spec["catchUp"] = "None"
    task.spec = spec
    task.note("exact", "overlapping runs", "cron starts every due run: concurrencyPolicy: Allow")
    task.note("exact", "missed runs", "cron does not run jobs missed while it was down: "
              "catchUp: None")
    _user_note(task, user)
    return task


def _slug(command: str) -> str:
    """Up to three words of the command (program names, basenames of paths)."""
    words: list[str] = []
    for word in re.split(r"[\s;|&(){}<>\"']+", command):
        if not word or word[0] == "-" or "=" in word:
            continue
        part = dns_label(word.rstrip("/").rsplit("/", 1)[-1].lstrip("$"))
        if len(part) > 1 and not part.isdigit() and part not in _NOISE and part not in words:
            words.append(part)
    return "-".join(words[:3])[:40].rstrip("-") or "job"


def _schedule(task: ImportedTask, fields: list[str]) -> str | None:
    if fields[0].startswith("@"):
        macro = fields[0].lower()
        if macro == "@reboot":
            task.note("not mapped", "@reboot", "runs once when cron starts; a task runs on a "
                      "schedule only (run it from the system's boot sequence instead)")
            return None
        if macro not in MACROS:
            task.note("not mapped", fields[0], "unknown macro")
            return None
        task.note("exact", fields[0], f"same as {MACROS[macro]!r} in both")
        return macro
    expression = checked_schedule(task, " ".join(fields), " ".join(fields))
    if expression is not None:
        _day_note(task, fields[2], fields[4])
    return expression


def _day_note(task: ImportedTask, dom: str, dow: str) -> None:
    if dom == "*" or dow == "*":
        return
    if dom.startswith("*") or dow.startswith("*"):
        task.note("exact", "day-of-month and day-of-week", f"{dom!r} and {dow!r} combine "
                  "with AND, as in cron: a field starting with '*' counts as unrestricted")
    else:
        task.note("exact", "day-of-month and day-of-week", f"runs when day-of-month {dom!r} "
                  f"OR day-of-week {dow!r} matches, as in cron (the Vixie rule)")


def _zone_notes(task: ImportedTask, time_zone: str | None) -> None:
    if task.spec is None:
        return
    if time_zone:
        task.spec["timeZone"] = time_zone
        task.note("approximate", "time zone", f"cron follows the system's local time; "
                  f"timeZone: {time_zone} (from --time-zone) must be that zone")
    else:
        task.note("approximate", "time zone", "cron follows the system's local time; "
                  "timeZone: UTC (pass --time-zone ZONE to keep local times)")
    schedule = str(task.spec["schedule"])
    task.notes.append(dst_note(schedule, "cron"))


def dst_note(schedule: str, origin: str) -> Note:
    """How the reconciler's DST rule compares with cron(8)'s for this schedule."""
    fields = MACROS.get(schedule, schedule).split()
    minute, hour = fields[-5], fields[-4]
    wild_minute, wild_hour = minute.startswith("*"), hour.startswith("*")
    if wild_minute and not wild_hour:
        return Note("approximate", "daylight saving time", f"{origin} treats a '*' minute as "
                    "a wildcard job: in a skipped hour it does not run, in a repeated hour it "
                    "runs in both passes; the reconciler (fixed hour) runs once right after a "
                    "skipped hour and only in the first pass of a repeated one")
    if not wild_hour and ("," in minute or "-" in minute or "/" in minute):
        return Note("approximate", "daylight saving time", f"{origin} runs each fixed time "
                    "skipped by a clock change soon after it; the reconciler collapses the "
                    "times of one gap into one run at the end of the gap; repeated times run "
                    "once in both")
    if wild_hour:
        return Note("exact", "daylight saving time", f"same rule as {origin}: a wildcard hour "
                    "follows the wall clock (no run in a skipped hour, both passes of a "
                    "repeated one)")
    return Note("exact", "daylight saving time", f"same rule as {origin}: a fixed time in a "
                "skipped hour runs once after the gap, and once in a repeated hour")


def _split_percent(command: str) -> tuple[str, str | None]:
    """crontab(5): the command up to the first unescaped ``%``, and the stdin after it."""
    out, i = [], 0
    while i < len(command):
        ch = command[i]
        if ch == "\\" and i + 1 < len(command) and command[i + 1] == "%":
            out.append("%")
            i += 2
            continue
        if ch == "%":
            return "".join(out), _stdin(command[i + 1 :])
        out.append(ch)
        i += 1
    return "".join(out), None


def _stdin(data: str) -> str:
    return re.sub(r"\\%|%", lambda m: "%" if m.group(0) == "\\%" else "\n", data)


def _run(task: ImportedTask, command: str, env: dict[str, str]) -> dict[str, object]:
    script, stdin = _split_percent(command)
    if stdin is None and "\\%" in command:
        task.note("exact", "'\\%'", "a literal '%' in the command, written as '%'")
    if stdin is not None:
        script = _with_stdin(task, script, stdin)
    run: dict[str, object] = {}
    shell = env.get("SHELL", "/bin/sh")
    subject = f"SHELL={shell}" if "SHELL" in env else "command"
    if shell == "/bin/sh":
        run["shell"] = script
        task.note("exact", subject, "run by /bin/sh -c, as cron does: run.shell")
    else:
        run["command"] = [shell, "-c", script]
        task.note("exact", f"SHELL={shell}", f"run as [{shell}, -c, command], as cron does")
    run["env"] = _env(task, env)
    return run


def _with_stdin(task: ImportedTask, script: str, stdin: str) -> str:
    lines = stdin.split("\n")
    if stdin.endswith("\n") and _STDIN_END not in lines:
        task.note("exact", "'%' in the command", "the text after the first '%' is the "
                  "command's standard input, other '%' newlines: written as a here-document")
        return f"{{\n{script}\n}} <<'{_STDIN_END}'\n{stdin}{_STDIN_END}\n"
    task.note("approximate", "'%' in the command", "the text after the first '%' is the "
              "command's standard input, other '%' newlines: piped in with printf, so the "
              "command runs in a subshell (a pipeline)")
    return f"printf '%s' {shlex.quote(stdin)} | {{\n{script}\n}}\n"


def _env(task: ImportedTask, env: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in env.items():
        if name == "MAILTO":
            task.note("not mapped", f"MAILTO={value}", "cron mails the output; the reconciler "
                      "keeps it in the run record (reconciler logs) and has no mail channel")
        elif name == "SHELL":
            out[name] = value
        elif _ENV_NAME.match(name):
            out[name] = value
            task.note("exact", f"{name}={value}", "env")
        else:
            task.note("not mapped", f"{name}={value}", "not a valid environment variable name")
    if "PATH" not in env:
        out["PATH"] = CRON_DEFAULT_PATH
        task.note("exact", "PATH", f"cron's default, env PATH: {CRON_DEFAULT_PATH}")
    out.setdefault("SHELL", "/bin/sh")
    task.note("approximate", "HOME and LOGNAME", "cron sets them from the owner's passwd "
              "entry; the task gets the daemon's HOME and no LOGNAME")
    return out


def _user_note(task: ImportedTask, user: str | None) -> None:
    if user is None:
        task.note("not mapped", "owner", "cron runs the job as the crontab's owner; the task "
                  "runs as the daemon's user (there is no run.user)")
    else:
        task.note("not mapped", f"user {user}", "cron runs the job as this user; the task "
                  "runs as the daemon's user (there is no run.user)")

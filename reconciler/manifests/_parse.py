"""One manifest file's content -> :class:`FileResult` (its tasks, errors and names).

Holds the per-file limits (:data:`MAX_FILE_BYTES`, :data:`MAX_ERRORS_PER_FILE`), the
parse of the YAML documents of a file into validated :class:`TaskDef` objects (the
YAML reading itself is ``_yaml``, the checks of one document ``_validate``), and how
errors are capped and shortened before they are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from reconciler.core.calendars import CALENDAR_KIND, CalendarDef
from reconciler.core.channels import CHANNEL_KIND
from reconciler.core.model import ManifestError, NamedDef, TaskDef
from reconciler.manifests._validate import (
    KINDS,
    calendar_references,
    identify,
    notify_references,
    validate_document,
)
from reconciler.manifests._yaml import (
    Constructor,
    YamlProblem,
    compose_documents,
    mark_position,
    may_have_aliases,
    prepare,
)

#: Files larger than this are refused without being read.
MAX_FILE_BYTES: Final = 1 << 20
#: After this many errors in one file the rest of the file is not reported.
MAX_ERRORS_PER_FILE: Final = 100


@dataclass(frozen=True, slots=True)
class FileResult:
    """What one file contributes (picklable: crosses process boundaries)."""

    tasks: tuple[TaskDef, ...] = ()
    errors: tuple[ManifestError, ...] = ()
    #: (name, line, column) of every ``metadata.name`` declared by a Task document,
    #: valid or not: duplicates are detected across all of them.
    names: tuple[tuple[str, int, int], ...] = ()
    channels: tuple[NamedDef, ...] = ()
    #: (name, line, column) of every Channel document's ``metadata.name``.
    channel_names: tuple[tuple[str, int, int], ...] = ()
    #: (task, channel, line, column, field) of every ``spec.notify[i].channel``.
    references: tuple[tuple[str, str, int, int, str], ...] = ()
    calendars: tuple[NamedDef, ...] = ()
    #: (name, line, column) of every Calendar document's ``metadata.name``.
    calendar_names: tuple[tuple[str, int, int], ...] = ()
    #: (task, calendar, line, column, field) of every ``spec.calendars[i]``.
    calendar_references: tuple[tuple[str, str, int, int, str], ...] = ()


def _file_error(label: str, message: str) -> FileResult:
    return FileResult(errors=(ManifestError(label, message),))


def _size_text(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _too_big(label: str, size: int) -> FileResult:
    limit = (
        f"{MAX_FILE_BYTES >> 20} MiB"
        if MAX_FILE_BYTES % (1 << 20) == 0
        else _size_text(MAX_FILE_BYTES)
    )
    return _file_error(label, f"file is {_size_text(size)}, larger than the {limit} limit")


def parse_file(data: bytes, *, label: str, source_file: str | None = None) -> FileResult:
    """Parse and validate the content of one manifest file.

    ``label`` is the name used in errors, ``source_file`` the one recorded in each
    :class:`TaskDef` (defaults to ``label``).
    """
    source_file = label if source_file is None else source_file
    if len(data) > MAX_FILE_BYTES:
        return _too_big(label, len(data))
    if not data:
        # The first step of a truncate-then-write save looks exactly like this; treating
        # it as "no tasks" would delete them. A file with only a comment is fine.
        return FileResult(errors=(ManifestError(
            label, "file is empty (a save in progress?); keep a comment in it to declare "
            "no tasks, or delete the file to delete its tasks", 1, 1),))
    errors: list[ManifestError] = []
    tasks: list[TaskDef] = []
    channels: list[NamedDef] = []
    calendars: list[NamedDef] = []
    names: list[tuple[str, int, int]] = []
    declared = {CHANNEL_KIND: list[tuple[str, int, int]](),
                CALENDAR_KIND: list[tuple[str, int, int]]()}
    references: list[tuple[str, str, int, int, str]] = []
    calendar_refs: list[tuple[str, str, int, int, str]] = []
    try:
        source = prepare(data)
        constructor = Constructor(aliases_possible=may_have_aliases(source))
        for root in compose_documents(source):
            if len(errors) >= MAX_ERRORS_PER_FILE:
                line, column = mark_position(root)
                errors.append(
                    ManifestError(
                        label,
                        f"more than {MAX_ERRORS_PER_FILE} errors; the rest of the "
                        "file is not checked",
                        line,
                        column,
                    )
                )
                break
            identity = identify(root)
            name = identity.name
            if name is not None and identity.name_node is not None and identity.kind in KINDS:
                declared.get(identity.kind, names).append(
                    (name, *mark_position(identity.name_node)))
            seen = len(constructor.problems)
            try:
                value = constructor.construct(root)
            except YamlProblem as problem:  # fatal for the file (alias budget, recursion)
                errors.extend(_problem(label, p, name) for p in constructor.problems[seen:])
                errors.append(_problem(label, problem, name))
                break
            if len(constructor.problems) > seen:
                errors.extend(_problem(label, p, name) for p in constructor.problems[seen:])
                continue
            task, found = validate_document(
                root,
                value,
                label=label,
                source_file=source_file,
                task=name,
                max_errors=MAX_ERRORS_PER_FILE + 1 - len(errors),
            )
            if isinstance(task, TaskDef):
                tasks.append(task)
                references += ((task.name, *ref) for ref in notify_references(root))
                calendar_refs += ((task.name, *ref) for ref in calendar_references(root))
            elif isinstance(task, CalendarDef):
                calendars.append(task)
            elif task is not None:
                channels.append(task)
            errors.extend(found)
    except YamlProblem as problem:
        errors.append(_problem(label, problem, None))
    if errors:
        return FileResult((), _reported(label, errors), tuple(names),
                          channel_names=tuple(declared[CHANNEL_KIND]),
                          calendar_names=tuple(declared[CALENDAR_KIND]))
    return FileResult(tuple(tasks), (), tuple(names), tuple(channels),
                      tuple(declared[CHANNEL_KIND]), tuple(references), tuple(calendars),
                      tuple(declared[CALENDAR_KIND]), tuple(calendar_refs))


#: Longest message or field path in an error: a value of 5,000 characters that an error
#: quotes (an unknown key, a duration) is shortened in the middle, not repeated whole.
MAX_ERROR_TEXT: Final = 500


def _shorten(text: str) -> str:
    if len(text) <= MAX_ERROR_TEXT:
        return text
    head, tail = MAX_ERROR_TEXT * 2 // 3, MAX_ERROR_TEXT // 4
    omitted = len(text) - head - tail
    return f"{text[:head]}...[{omitted:,} characters]...{text[-tail:]}"


def _reported(label: str, errors: list[ManifestError]) -> tuple[ManifestError, ...]:
    """At most :data:`MAX_ERRORS_PER_FILE` errors (one document can produce thousands),
    then a note where checking stopped; long texts shortened."""
    if len(errors) > MAX_ERRORS_PER_FILE:
        stop = errors[MAX_ERRORS_PER_FILE]
        note = ManifestError(
            label,
            f"more than {MAX_ERRORS_PER_FILE} errors; the rest of the file is not checked",
            stop.line,
            stop.column,
        )
        errors = [*errors[:MAX_ERRORS_PER_FILE], note]
    return tuple(
        replace(e, message=_shorten(e.message), field=e.field and _shorten(e.field))
        if len(e.message) > MAX_ERROR_TEXT or (e.field and len(e.field) > MAX_ERROR_TEXT)
        else e
        for e in errors
    )


def _problem(label: str, problem: YamlProblem, task: str | None) -> ManifestError:
    return ManifestError(label, problem.message, problem.line, problem.column, task)

"""What every importer shares: the semantics report, task names, validation, output.

An importer turns one source file into a :class:`SourceImport`: the tasks it found
(each an :class:`ImportedTask` with its manifest and its :class:`Note` list) and the
notes about the file itself. Every note says how one thing of the source carries
over: ``exact`` (same behaviour), ``approximate`` (how it differs) or ``not mapped``
(the manifest has no equivalent; what happens instead). A task whose manifest cannot
be built (``@reboot``, a timer without a calendar) keeps its notes and has no
manifest; it is reported and not written.

Names: :func:`assign_names` makes every task name a DNS label (``[a-z0-9-]``, at most
63 characters), unique across one import (``-2``, ``-3`` in input order) and stable:
the same input gives the same names, whatever the machine or the time.

Validation: :func:`finish` validates every manifest with the same model the loader
uses (:class:`~reconciler.core.model.TaskManifest`); a manifest that does not
validate is dropped and its error becomes a ``not mapped`` note, so a written file
always passes ``reconciler validate``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from reconciler.core.errors import ScheduleError
from reconciler.core.model import API_VERSION, KIND, TaskManifest
from reconciler.core.schedule import check_schedule

Level = Literal["exact", "approximate", "not mapped"]
LEVELS: tuple[Level, ...] = ("exact", "approximate", "not mapped")
MAX_NAME = 63


@dataclass(frozen=True, slots=True)
class Note:
    """How one thing of the source maps: ``subject`` is what the source says."""

    level: Level
    subject: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"level": self.level, "subject": self.subject, "detail": self.detail}


@dataclass(slots=True)
class ImportedTask:
    """One task of a source: where it is, its manifest (``None``: not mappable), notes."""

    base_name: str
    line: int | None
    spec: dict[str, Any] | None
    labels: dict[str, str] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    name: str = ""

    def note(self, level: Level, subject: str, detail: str) -> None:
        self.notes.append(Note(level, subject, detail))

    def manifest(self) -> dict[str, Any]:
        assert self.spec is not None
        metadata: dict[str, Any] = {"name": self.name}
        if self.labels:
            metadata["labels"] = dict(self.labels)
        return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": self.spec}


@dataclass(slots=True)
class SourceImport:
    """What one source file became."""

    kind: str
    source: str
    tasks: list[ImportedTask] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    file_name: str = ""

    def note_file(self, level: Level, subject: str, detail: str) -> None:
        self.notes.append(Note(level, subject, detail))

    @property
    def mapped(self) -> list[ImportedTask]:
        return [t for t in self.tasks if t.spec is not None]


def checked_schedule(task: ImportedTask, expression: str, written: str) -> str | None:
    """``expression`` when the reconciler accepts it (an ``exact`` note), else ``None``."""
    try:
        check_schedule(expression)
    except ScheduleError as exc:
        task.note("not mapped", f"schedule {written!r}", str(exc))
        return None
    task.note("exact", "schedule", repr(expression))
    return expression


# ------------------------------------------------------------------------------ names


def dns_label(text: str) -> str:
    """``text`` as a DNS label fragment: lower case, ``[a-z0-9-]``, no edge dashes."""
    label = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return label[:MAX_NAME].rstrip("-")


def _unique(base: str, taken: set[str]) -> str:
    base = base[:MAX_NAME].rstrip("-") or "task"
    name, n = base, 1
    while name in taken:
        n += 1
        suffix = f"-{n}"
        name = base[: MAX_NAME - len(suffix)].rstrip("-") + suffix
    taken.add(name)
    return name


def assign_names(imports: Iterable[SourceImport], prefix: str = "") -> None:
    """Name every task and every output file: DNS labels, unique, in input order."""
    task_names: set[str] = set()
    file_names: set[str] = set()
    for source in imports:
        stem = re.sub(r"\.(timer|ya?ml|json)$", "", source.source.rsplit("/", 1)[-1])
        source.file_name = _unique(dns_label(prefix + stem) or source.kind, file_names) + ".yaml"
        for task in source.tasks:
            task.name = _unique(dns_label(prefix + task.base_name), task_names)


# ------------------------------------------------------------------------- validation


def _error_text(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)


def finish(source: SourceImport) -> SourceImport:
    """Validate each named task's manifest; one that fails is reported, not written."""
    for task in source.mapped:
        try:
            TaskManifest.model_validate(task.manifest())
        except ValidationError as exc:
            task.note("not mapped", "manifest", f"does not validate: {_error_text(exc)}")
            task.spec = None
    return source


# ----------------------------------------------------------------------------- output


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings (shell scripts) as ``|`` literals."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not value.endswith(" ") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render_yaml(source: SourceImport) -> str:
    """The manifests of one source as one multi-document YAML file."""
    documents = []
    for task in source.mapped:
        where = source.source + (f" line {task.line}" if task.line else "")
        body = yaml.dump(
            task.manifest(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
        )
        documents.append(f"# imported from {where}\n{body}")
    return "---\n".join(documents)


def _shared(source: SourceImport) -> list[Note]:
    """The notes every imported task of a source has (printed once)."""
    mapped = source.mapped
    if len(mapped) < 2:
        return []
    return [n for n in mapped[0].notes if all(n in t.notes for t in mapped[1:])]


def render_report(imports: Iterable[SourceImport]) -> str:
    """The semantics report: per source, the notes of the file, of every task, per task."""
    imports = list(imports)
    lines: list[str] = []
    for source in imports:
        written = f" -> {source.file_name}" if source.mapped else " -> nothing to write"
        lines.append(f"{source.kind} {source.source}{written}")
        lines.extend(_note_lines(source.notes, "  "))
        shared = _shared(source)
        if shared:
            lines.append("  every task:")
            lines.extend(_note_lines(shared, "    "))
        for task in source.tasks:
            at = f" (line {task.line})" if task.line else ""
            state = "" if task.spec is not None else " [not imported]"
            lines.append(f"  task {task.name}{at}{state}")
            own = [n for n in task.notes if n not in shared or task.spec is None]
            lines.extend(_note_lines(own, "    "))
    counts = _counts(imports)
    lines.append(
        f"{counts['tasks']} task(s) imported, {counts['skipped']} not imported; "
        f"{counts['exact']} exact, {counts['approximate']} approximate, "
        f"{counts['not mapped']} not mapped"
    )
    return "\n".join(lines) + "\n"


def _note_lines(notes: Iterable[Note], indent: str) -> list[str]:
    width = max(len(level) for level in LEVELS)
    return [f"{indent}{n.level:<{width}}  {n.subject}: {n.detail}" for n in notes]


def _counts(imports: Iterable[SourceImport]) -> dict[str, int]:
    counts = dict.fromkeys(("tasks", "skipped", *LEVELS), 0)
    for source in imports:
        for note in source.notes:
            counts[note.level] += 1
        for task in source.tasks:
            counts["tasks" if task.spec is not None else "skipped"] += 1
            for note in task.notes:
                counts[note.level] += 1
    return counts


def render_json(imports: list[SourceImport]) -> str:
    """Manifests and report as one JSON document (``-o json``)."""
    document = {
        "sources": [
            {
                "kind": s.kind,
                "source": s.source,
                "file": s.file_name if s.mapped else None,
                "notes": [n.to_json() for n in s.notes],
                "tasks": [
                    {
                        "name": t.name,
                        "line": t.line,
                        "imported": t.spec is not None,
                        "manifest": t.manifest() if t.spec is not None else None,
                        "notes": [n.to_json() for n in t.notes],
                    }
                    for t in s.tasks
                ],
            }
            for s in imports
        ],
        "summary": _counts(imports),
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"

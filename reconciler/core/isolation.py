"""How a run is identified to the outside world and isolated from the host: pure decisions.

* :func:`idempotency_key`: the key every run of one (task, slot) carries, whatever
  replica, attempt or daemon start runs it (``RECONCILER_IDEMPOTENCY_KEY``, and the
  ``Idempotency-Key`` header of http tasks unless ``idempotencyKey: false``).
* :func:`admit_on_host`: tasks this daemon cannot run as declared (``run.user`` on a
  daemon that is not root) become manifest errors at plan time, not failures at run
  time.
* :func:`rlimits`, :func:`cgroup_settings`: what ``spec.limits`` means in each mode.
* :func:`memory_verdict`: whether a failed run was ended by its memory limit.

The executors carry these decisions out; nothing here touches a process or a file.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from reconciler.core.model import DesiredState, HttpTarget, Limits, ManifestError, TaskDef

#: The namespace of the name-based (version 5) UUIDs that are idempotency keys. Fixed
#: forever: changing it would give every (task, slot) a new key after an upgrade.
IDEMPOTENCY_NAMESPACE = uuid.UUID("5f0c6b7e-2d1a-4c55-9a53-6a0e1f6b8d21")
#: The header an http task sends the key in (IETF draft "The Idempotency-Key HTTP
#: Header Field").
IDEMPOTENCY_HEADER = "Idempotency-Key"


def idempotency_key(task: str, slot: datetime) -> str:
    """The idempotency key of every attempt of ``task`` at ``slot``: a UUID (version 5).

    Derived from the task's name and the slot (the UTC instant to the microsecond), and
    from nothing a replica, an attempt or a daemon start changes: a retry, a peer that
    takes over, a restarted daemon all compute the same key. Different slots give
    different keys. A manual run has its own slot (the instant it was asked for, made
    unique per task by the run table's key), hence its own key; its retries share it.
    """
    if slot.tzinfo is None:
        raise ValueError("slot must be timezone-aware")
    instant = slot.astimezone(UTC).isoformat(timespec="microseconds")
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{task}\n{instant}"))


def idempotency_header(target: HttpTarget, key: str) -> tuple[str, str] | None:
    """The header to add to an http task's request for ``key``, or None.

    None when the task opted out (``idempotencyKey: false``) or sets an
    ``Idempotency-Key`` header itself (any case): the task's own value wins.
    """
    if not target.idempotency_key:
        return None
    if any(name.lower() == IDEMPOTENCY_HEADER.lower() for name in target.headers):
        return None
    return IDEMPOTENCY_HEADER, key


# --------------------------------------------------------------------------- run as


#: Fields whose acceptance depends on the host; the loader records where they are.
HOST_FIELDS: tuple[str, ...] = ("spec.run.user", "spec.run.group")


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What the daemon knows about where it runs, for :func:`admit_on_host`."""

    root: bool


def run_as_refusal(document: Mapping[str, object], host: HostFacts) -> str | None:
    """Why a task cannot run on ``host`` as declared (None: it can)."""
    spec = document.get("spec")
    run = spec.get("run") if isinstance(spec, dict) else None
    if not isinstance(run, dict) or not ("user" in run or "group" in run):
        return None
    if host.root:
        return None
    return ("running as another user needs a daemon running as root "
            "(setpriv changes the user); this daemon is not root")


def admit_on_host(desired: DesiredState, host: HostFacts) -> DesiredState:
    """``desired`` with every task ``host`` cannot run turned into a manifest error.

    Its file counts as failed, as for any other error: the plan keeps what the table
    has for it (a task that ran before keeps running as it was), creates nothing new.
    """
    errors: list[ManifestError] = []
    failed: set[str] = set()
    for task in desired.tasks:
        reason = run_as_refusal(task.document, host)
        if reason is None:
            continue
        field = next((f for f in HOST_FIELDS if f in task.field_lines), HOST_FIELDS[0])
        line, column = task.field_lines.get(field, (task.source_line, None))
        errors.append(ManifestError(task.source_file, reason, line, column, task.name, field))
        failed.add(task.source_file)
    if not errors:
        return desired
    return replace(
        desired,
        tasks=tuple(t for t in desired.tasks if t.source_file not in failed),
        errors=tuple(sorted([*desired.errors, *errors],
                            key=lambda e: (e.file, e.line or 0, e.column or 0))),
        failed_files=desired.failed_files | failed,
    )


def with_field_lines(task: TaskDef, lines: Mapping[str, tuple[int, int]]) -> TaskDef:
    """``task`` knowing where its host-dependent fields are (see :data:`HOST_FIELDS`)."""
    return replace(task, field_lines=dict(lines)) if lines else task


# --------------------------------------------------------------------------- limits

IsolationMode = Literal["cgroup", "rlimit"]

_UNITS = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
_QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|K|M|G|T)?$")


def parse_quantity(text: str) -> int:
    """Bytes of ``512Mi``, ``1Gi``, ``64M`` or ``1000``."""
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (e.g. 512Mi, 1Gi, 64M)")
    return int(match.group(1)) * _UNITS[match.group(2) or ""]


def parse_cpu(text: str) -> float:
    """CPUs of ``"1.5"`` or ``"500m"``."""
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def rlimits(limits: Limits | None) -> dict[str, int]:
    """The rlimits of rlimit mode, as ``prlimit`` option names (``as``, ``nproc``, ...).

    ``cpu`` has none: an rlimit caps total CPU seconds (``RLIMIT_CPU``), not a rate, so
    rlimit mode does not enforce it (``reconciler status`` and docs/security.md say so).
    """
    if limits is None:
        return {}
    found: dict[str, int] = {}
    if limits.memory is not None:
        found["as"] = parse_quantity(limits.memory)
    if limits.processes is not None:
        found["nproc"] = limits.processes
    if limits.open_files is not None:
        found["nofile"] = limits.open_files
    if limits.file_size is not None:
        found["fsize"] = parse_quantity(limits.file_size)
    return found


#: cpu.max period in microseconds (the kernel's default).
CPU_PERIOD = 100_000


def cgroup_settings(limits: Limits | None) -> dict[str, str]:
    """The cgroup v2 files of cgroup mode and what to write into them.

    ``memory.swap.max`` is 0 so that the memory limit is not stretched by swap.
    ``openFiles`` and ``fileSize`` have no cgroup controller: they stay rlimits.
    """
    if limits is None:
        return {}
    found: dict[str, str] = {}
    if limits.memory is not None:
        found["memory.max"] = str(parse_quantity(limits.memory))
        found["memory.swap.max"] = "0"
    if limits.processes is not None:
        found["pids.max"] = str(limits.processes)
    if limits.cpu is not None:
        quota = max(1000, round(parse_cpu(limits.cpu) * CPU_PERIOD))
        found["cpu.max"] = f"{quota} {CPU_PERIOD}"
    return found


def process_rlimits(limits: Limits | None, mode: IsolationMode) -> dict[str, int]:
    """The rlimits a run gets in ``mode``: all of :func:`rlimits` in rlimit mode; in
    cgroup mode only those no controller covers (open files, file size)."""
    found = rlimits(limits)
    if mode == "cgroup":
        found.pop("as", None)
        found.pop("nproc", None)
    return found


#: What a process says or does when an allocation fails under RLIMIT_AS.
_ALLOCATION_FAILED = re.compile(
    r"MemoryError|Cannot allocate memory|out of memory|std::bad_alloc|"
    r"memory exhausted|failed to allocate|allocation failed", re.IGNORECASE)
#: Signals of a process that could not allocate: SIGSEGV (11), SIGABRT (6), SIGBUS (7),
#: SIGKILL (9, the kernel's OOM killer or a runtime killing itself).
_ALLOCATION_SIGNALS = frozenset({-6, -7, -9, -11})


def memory_verdict(limits: Limits | None, mode: IsolationMode, *, exit_code: int | None,
                   output_tail: str, oom_kills: int = 0) -> str | None:
    """``"memory limit 64Mi exceeded"`` when a failed run was ended by its memory limit.

    cgroup mode: the run's cgroup counted an OOM kill (``memory.events``), exact.
    rlimit mode, a heuristic (RLIMIT_AS makes allocations fail, and each program
    reports that its own way): the run failed and its output's tail names a failed
    allocation (Python's ``MemoryError``, ``Cannot allocate memory``, ``out of memory``,
    ``std::bad_alloc``, ...), or it was killed by SIGSEGV, SIGABRT, SIGBUS or a SIGKILL
    the daemon did not send. A program that fails quietly for want of memory is not
    recognised; one that segfaults for another reason under a memory limit is blamed
    on the limit.
    """
    if limits is None or limits.memory is None:
        return None
    message = f"memory limit {limits.memory} exceeded"
    if mode == "cgroup":
        return message if oom_kills > 0 else None
    if exit_code is None or exit_code == 0:
        return None
    if exit_code in _ALLOCATION_SIGNALS or _ALLOCATION_FAILED.search(output_tail):
        return message
    return None

"""JSON documents of the API, built by hand from the store's values.

These functions produce exactly the shapes the pydantic models in
:mod:`reconciler.api.models` describe (and the OpenAPI document publishes); the
schemathesis run checks every response against them. They are plain dict builders
because the task list is on a hot path (10,000 tasks within a frame budget).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from reconciler.core.errors import ReconcilerError
from reconciler.core.runtime import ActualTask, RunRecord
from reconciler.core.schedule import describe

REDACTED = "<redacted>"
#: Literal env values and HTTP header values whose *name* looks like a credential are
#: not shown, even though they come from git: the dashboard is readable by more people
#: than the repository. ``fromEnv``/``fromFile`` references are shown (they are names).
SENSITIVE_NAME = re.compile(
    r"(secret|token|passw|pwd|api[-_]?key|private|credential|auth|cookie|session|signature)",
    re.IGNORECASE,
)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@functools.lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_iso(value: datetime | None, time_zone: str) -> str | None:
    if value is None:
        return None
    try:
        return value.astimezone(zone(time_zone)).isoformat()
    except (ValueError, KeyError, OSError):
        return value.isoformat()


@functools.lru_cache(maxsize=4096)
def schedule_text(expression: str) -> str | None:
    try:
        return describe(expression)
    except (ReconcilerError, ValueError, KeyError, IndexError):
        return None


def duration(record: RunRecord) -> float | None:
    if record.started_at is None or record.finished_at is None:
        return None
    return round((record.finished_at - record.started_at).total_seconds(), 6)


def run_brief(record: RunRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "status": record.status.value,
        "trigger": record.trigger.value,
        "attempt": record.attempt,
        "slot": iso(record.slot),
        "startedAt": iso(record.started_at),
        "finishedAt": iso(record.finished_at),
        "durationSeconds": duration(record),
    }


def run_doc(record: RunRecord, *, live: bool = False) -> dict[str, Any]:
    """The same keys as ``reconciler runs -o json``, plus duration, generation and live."""
    return {
        "id": record.id,
        "task": record.task_name,
        "slot": iso(record.slot),
        "attempt": record.attempt,
        "trigger": record.trigger.value,
        "status": record.status.value,
        "replica": record.replica,
        "startedAt": iso(record.started_at),
        "finishedAt": iso(record.finished_at),
        "latenessSeconds": record.lateness_seconds,
        "durationSeconds": duration(record),
        "exitCode": record.exit_code,
        "error": record.error,
        "reason": record.reason,
        "progressPercent": record.progress_percent,
        "progressMessage": record.progress_message,
        "generation": record.generation,
        "live": live,
    }


def run_type(document: Mapping[str, Any]) -> str | None:
    run = document.get("spec", {}).get("run", {})
    for kind in ("command", "shell", "http", "python"):
        if kind in run:
            return kind
    return None


def suspension(row: ActualTask) -> dict[str, Any] | None:
    if not row.suspended:
        return None
    o = row.override
    if o is not None and o.suspended:
        return {"source": "override", "note": o.note, "actor": o.actor, "at": iso(o.at)}
    return {"source": "git", "note": None, "actor": None, "at": None}


def override_doc(row: ActualTask) -> dict[str, Any] | None:
    o = row.override
    if o is None:
        return None
    return {"suspended": o.suspended, "note": o.note, "actor": o.actor, "at": iso(o.at)}


def _redact_values(values: Any) -> Any:
    if not isinstance(values, dict):
        return values
    return {
        k: (REDACTED if isinstance(v, str) and SENSITIVE_NAME.search(str(k)) else v)
        for k, v in values.items()
    }


_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@?#]*@")
_QUERY_PARAM = re.compile(r"(?P<sep>[?&;])(?P<name>[^=&;#]+)=(?P<value>[^&;#]*)")


def redacted_url(url: str) -> str:
    """``https://user:pw@host/x?token=abc&a=b`` -> ``https://<redacted>@host/x?token=<redacted>&a=b``."""
    url = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", url)
    return _QUERY_PARAM.sub(
        lambda m: (
            f"{m['sep']}{m['name']}={REDACTED}" if SENSITIVE_NAME.search(m["name"]) else m[0]
        ),
        url,
    )


def redacted_spec(document: Mapping[str, Any]) -> dict[str, Any]:
    """The stored spec with credential-looking literal env/header values replaced."""
    spec = dict(document.get("spec", {}))
    run = dict(spec.get("run", {}))
    if "env" in run:
        run["env"] = _redact_values(run["env"])
    if isinstance(run.get("http"), dict):
        http = dict(run["http"])
        if "headers" in http:
            http["headers"] = _redact_values(http["headers"])
        if isinstance(http.get("url"), str):
            http["url"] = redacted_url(http["url"])
        run["http"] = http
    spec["run"] = run
    return spec

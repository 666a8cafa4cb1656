"""The Task manifest (``apiVersion: reconciler/v1``, ``kind: Task``) and its inner form.

Two representations on purpose:

* :class:`TaskManifest` and friends are frozen pydantic models: the edge where YAML
  written by people is validated. Unknown fields are errors (typos must not pass
  silently), types are strict (``suspend: "yes"`` is an error, not ``True``), and the
  JSON Schema in ``specs/task.schema.json`` is generated from them.
* :class:`TaskDef` is a plain frozen dataclass used everywhere inside: the task's
  name, its canonical spec as JSON-compatible data, the hash of that spec and where it
  came from. The canonical spec leaves out values equal to their defaults and prints
  durations in one form, so ``timeout: 90s`` and ``timeout: 1m30s`` are the same spec,
  and writing a default explicitly is not a change.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from reconciler.core.durations import format_duration, parse_duration
from reconciler.core.errors import DurationError, ScheduleError
from reconciler.core.model_base import (
    ENV_NAME_PATTERN as ENV_NAME_PATTERN,
)
from reconciler.core.model_base import (
    LABEL_KEY_PATTERN as LABEL_KEY_PATTERN,
)
from reconciler.core.model_base import (
    LABEL_VALUE_PATTERN as LABEL_VALUE_PATTERN,
)
from reconciler.core.model_base import (
    NAME_PATTERN as NAME_PATTERN,
)
from reconciler.core.model_base import FromEnv as FromEnv
from reconciler.core.model_base import FromFile as FromFile
from reconciler.core.model_base import _Frozen
from reconciler.core.model_options import DEFAULT_NOTIFY_ON as DEFAULT_NOTIFY_ON
from reconciler.core.model_options import QUANTITY_PATTERN as QUANTITY_PATTERN
from reconciler.core.model_options import Limits as Limits
from reconciler.core.model_options import NotifyEvent as NotifyEvent
from reconciler.core.model_options import NotifyRule as NotifyRule
from reconciler.core.model_options import Param as Param
from reconciler.core.model_options import ParamName as ParamName
from reconciler.core.model_options import ParamType as ParamType
from reconciler.core.params import env_name
from reconciler.core.schedule import check_schedule, check_time_zone

API_VERSION = "reconciler/v1"
KIND = "Task"
#: The executor kinds, declared once: a ``run`` names exactly one of these (with a
#: non-null value), each a field of :class:`RunSpec`. The executors' registry
#: (``reconciler.executors.dispatch.EXECUTORS``), the API's ``runType`` and the JSON
#: schema derive from it; a kind without an executor fails at import.
RunKind = Literal["command", "shell", "http", "python"]
RUN_TARGETS: tuple[RunKind, ...] = get_args(RunKind)


class ConcurrencyPolicy(enum.StrEnum):
    """What to do when a slot comes while the previous run is still active."""

    FORBID = "Forbid"
    ALLOW = "Allow"
    REPLACE = "Replace"


class CatchUpPolicy(enum.StrEnum):
    """What to do with slots missed during downtime."""

    NONE = "None"
    LATEST = "Latest"
    ALL = "All"


def _policy_schema(policy: type[enum.StrEnum], title: str) -> WithJsonSchema:
    """A policy field is the enum itself (one declaration for the model and the core),
    read from its string value (``Strict(False)``); the JSON schema shows it inline."""
    return WithJsonSchema({"enum": [m.value for m in policy], "title": title,
                           "type": "string"})


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    try:
        parsed = parse_duration(value)
    except DurationError as exc:
        raise ValueError(str(exc)) from None
    # The canonical form (what is stored and hashed) has millisecond resolution: "0.4ms"
    # would be stored as "0s", which no longer validates when the table is read back.
    if round(parsed.total_seconds() * 1000) == 0:
        raise ValueError(f"duration {value!r} is shorter than 1ms")
    return parsed


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$",
            "description": "Duration with units, Go/Kubernetes style: 90s, 1m30s, 2h, 500ms.",
        }
    ),
]


def _expression(value: str) -> str:
    try:
        check_schedule(value)
    except ScheduleError as exc:
        raise ValueError(str(exc)) from None
    return value


#: One schedule expression (``H`` is checked for its syntax here; with the task's name
#: by :func:`reconciler.core.scheduling.check_task`).
Expression = Annotated[str, Field(max_length=1024), AfterValidator(_expression)]
#: At most this many expressions in one ``spec.schedule`` list.
MAX_SCHEDULES = 64


def schedules_of(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``spec.schedule`` (one expression or a list) as a tuple of expressions."""
    return (value,) if isinstance(value, str) else tuple(value)


def schedule_text(value: str | list[str] | tuple[str, ...]) -> str:
    """``spec.schedule`` as one line for people: the expressions joined by ``"; "``."""
    return "; ".join(schedules_of(value))


def _when(value: object) -> str:
    """``activeFrom``/``activeUntil``: a date (``2026-06-01``, also a YAML date) or an
    RFC 3339 instant with its offset (``2026-06-01T08:00:00Z``), in canonical form."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            value = None
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValueError(
                f"{value.isoformat()} has no UTC offset: write it with one "
                "(2026-06-01T08:00:00Z, 2026-06-01T10:00:00+02:00), or write a date"
            )
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise ValueError(
        "expected a date (2026-06-01) or an RFC 3339 time with its offset "
        "(2026-06-01T08:00:00Z)"
    )


Instant = Annotated[
    str,
    BeforeValidator(_when),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}"
                       r"(\.[0-9]+)?)?([Zz]|[+-][0-9]{2}:?[0-9]{2}))?$",
            "description": "A date (local midnight in spec.timeZone) or an RFC 3339 time "
                           "with its offset, e.g. 2026-06-01 or 2026-06-01T08:00:00Z.",
        }
    ),
]


EnvValue = Annotated[str, Field(max_length=65536)] | FromEnv | FromFile
#: A user or group: a name (as useradd allows) or a numeric id.
UserRef = (Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")]
           | Annotated[int, Field(ge=0, le=4_294_967_294)])


class HttpTarget(_Frozen):
    """Call an HTTP endpoint; the run succeeds when the status matches ``successStatus``."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "POST"
    url: str = Field(pattern=r"^https?://[^\s/$.?#][^\s]*$", max_length=8192)
    headers: dict[Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")], EnvValue] = {}
    body: str = Field(default="", max_length=1 << 20)
    success_status: str = Field(
        default="2xx",
        pattern=r"^([1-5](xx|[0-9][0-9]))(,[1-5](xx|[0-9][0-9]))*$",
        description="Comma-separated status codes or classes, e.g. '2xx' or '200,204,3xx'.",
    )
    idempotency_key: bool = Field(
        default=True,
        description="Send the run's idempotency key as an Idempotency-Key header "
        "(the same for every attempt of a slot).",
    )
    params_as: Literal["query", "json"] | None = Field(
        default=None,
        description="Send the run's parameters (spec.params) as query parameters, or "
        "as a JSON object that is the request's body; off by default.",
    )

    @model_validator(mode="after")
    def _json_params_are_the_body(self) -> HttpTarget:
        if self.params_as == "json" and self.body:
            raise ValueError("paramsAs: json sends the parameters as the body; "
                             "body must be empty")
        return self


def _exactly_one_target_schema(schema: dict[str, Any]) -> None:
    """The JSON Schema form of ``RunSpec._exactly_one_target``: one target, not null."""
    schema["oneOf"] = [
        {"required": [target], "properties": {target: {"not": {"type": "null"}}}}
        for target in RUN_TARGETS
    ]


class RunSpec(_Frozen):
    """What a run executes: exactly one of ``command``, ``shell``, ``http`` or ``python``."""

    model_config = ConfigDict(json_schema_extra=_exactly_one_target_schema)

    command: list[Annotated[str, Field(max_length=65536)]] | None = Field(
        default=None, min_length=1, max_length=4096
    )
    shell: str | None = Field(default=None, min_length=1, max_length=1 << 20)
    http: HttpTarget | None = None
    python: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
        description="'package.module:function', called with a RunContext in a child process.",
    )
    env: dict[Annotated[str, Field(pattern=ENV_NAME_PATTERN, max_length=256)], EnvValue] = {}
    working_dir: str | None = Field(default=None, pattern=r"^/", max_length=4096)
    user: UserRef | None = Field(
        default=None,
        description="Run the command or shell as this user (name or uid); the daemon "
        "must run as root. HOME, USER and LOGNAME are that user's.",
    )
    group: UserRef | None = Field(
        default=None,
        description="Run as this group (name or gid); default: the user's primary group.",
    )

    @model_validator(mode="after")
    def _exactly_one_target(self) -> RunSpec:
        given = [k for k in RUN_TARGETS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "exactly one of command, shell, http or python is required"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if (self.user is not None or self.group is not None) and given[0] not in RUN_AS_KINDS:
            raise ValueError(
                f"user and group apply to command and shell runs only (this is {given[0]})"
            )
        return self

    @property
    def kind(self) -> str:
        for k in RUN_TARGETS:
            if getattr(self, k) is not None:
                return k
        raise AssertionError("unreachable")  # pragma: no cover


#: The run kinds that may run as another user (``run.user`` / ``run.group``).
RUN_AS_KINDS: tuple[RunKind, ...] = ("command", "shell")
class Retries(_Frozen):
    """Failed runs are retried as new attempts of the same slot, with exponential backoff."""

    limit: int = Field(default=0, ge=0, le=100)
    backoff: Duration = timedelta(seconds=10)
    max_backoff: Duration = timedelta(minutes=5)


#: An http(s) URL (``run.http.url``, ``--heartbeat-url``).
URL_PATTERN = r"^https?://[^\s/$.?#][^\s]*$"


class Ping(_Frozen):
    """healthchecks.io-style pings: ``URL/start`` when a run starts, ``URL`` when it
    succeeds, ``URL/fail`` when it fails (the output's tail as body)."""

    url: str = Field(pattern=r"^https?://[^\s/$.?#][^\s?#]*$", max_length=8192,
                     description="The check's ping URL (no query: /start and /fail are "
                                 "appended).")


class History(_Frozen):
    """How many finished runs of each kind are kept per task."""

    successful: int = Field(default=20, ge=0, le=100_000)
    failed: int = Field(default=50, ge=0, le=100_000)


class TaskSpec(_Frozen):
    """When and how a task runs."""

    schedule: Expression | Annotated[
        list[Expression], Field(min_length=1, max_length=MAX_SCHEDULES)
    ] = Field(
        description=(
            "5-field cron, or 6 fields with seconds first (H for a value spread by the "
            "task's name: H, H/15, H(0-29), H(0-29)/10); @yearly @annually @monthly "
            "@weekly @daily @midnight @hourly; or '@every <duration>'. Or a list of "
            "these: the task runs at the slots of each (an instant once)."
        ),
    )
    time_zone: str = Field(default="UTC", max_length=128, description="IANA time zone name.")
    suspend: bool = False
    run: RunSpec
    timeout: Duration | None = None
    concurrency_policy: Annotated[
        ConcurrencyPolicy, Strict(False), _policy_schema(ConcurrencyPolicy, "Concurrencypolicy")
    ] = ConcurrencyPolicy.FORBID
    starting_deadline: Duration | None = None
    catch_up: Annotated[CatchUpPolicy, Strict(False), _policy_schema(CatchUpPolicy, "Catchup")
                        ] = CatchUpPolicy.LATEST
    max_catch_up: int = Field(default=10, ge=1, le=10_000)
    retries: Retries = Retries()
    history: History = History()
    jitter: Duration | None = Field(
        default=None,
        description="Each slot starts up to this much later, by a delay derived from the "
                    "task's name and the slot (the same on every replica); at most the "
                    "shortest interval between slots.",
    )
    active_from: Instant | None = Field(
        default=None, description="No slot before this (a date: its local midnight).")
    active_until: Instant | None = Field(
        default=None, description="No slot after this (a date: the end of that day).")
    notify: list[NotifyRule] = Field(default=[], max_length=32)
    calendars: list[Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)]] = (
        Field(default=[], max_length=16,
              description="metadata.name of kind: Calendar manifests: slots they exclude "
                          "do not run."))
    deadline: Duration | None = Field(
        default=None,
        description="A slot's run must have succeeded within this much of the (nominal) "
                    "slot; otherwise a late event fires at slot + deadline.",
    )
    ping: Ping | None = None
    limits: Limits | None = None
    params: dict[ParamName, Param] = Field(
        default={}, max_length=64,
        description="Declared inputs of the runs; names [a-zA-Z][a-zA-Z0-9_]*.")
    priority: int = Field(
        default=5, ge=1, le=10,
        description="When --max-concurrent-runs runs are running, waiting runs start by "
        "priority (10 first), then by slot.")

    @field_validator("params")
    @classmethod
    def _distinct_variables(cls, value: dict[str, Param]) -> dict[str, Param]:
        seen: dict[str, str] = {}
        for name in value:
            other = seen.setdefault(env_name(name), name)
            if other != name:
                raise ValueError(f"parameters {other!r} and {name!r} would both be "
                                 f"{env_name(name)}")
        return value

    @field_validator("notify")
    @classmethod
    def _one_rule_per_channel(cls, value: list[NotifyRule]) -> list[NotifyRule]:
        names = [rule.channel for rule in value]
        if len(set(names)) != len(names):
            raise ValueError("a channel is named twice; list its events in one entry")
        return value

    @field_validator("calendars")
    @classmethod
    def _distinct_calendars(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a calendar is named twice")
        return value

    @model_validator(mode="after")
    def _limits_need_a_process(self) -> TaskSpec:
        if self.limits is not None and self.run.kind == "http":
            raise ValueError("limits apply to command, shell and python runs (this is http)")
        return self

    @property
    def schedules(self) -> tuple[str, ...]:
        return schedules_of(self.schedule)

    @field_validator("time_zone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        return valid_zone(value)


def valid_zone(value: str) -> str:
    """``spec.timeZone``: an IANA name (pydantic's validator)."""
    try:
        check_time_zone(value)
    except ScheduleError as exc:
        raise ValueError(str(exc)) from None
    return value


class Metadata(_Frozen):
    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    labels: dict[
        Annotated[str, Field(max_length=253, pattern=LABEL_KEY_PATTERN)],
        Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)],
    ] = {}
    annotations: dict[
        Annotated[str, Field(max_length=253, pattern=LABEL_KEY_PATTERN)],
        Annotated[str, Field(max_length=65536)],
    ] = {}


class TaskManifest(_Frozen):
    """One ``kind: Task`` document."""

    model_config = ConfigDict(
        title="Task",
        json_schema_extra={"description": "A reconciler Task manifest (apiVersion reconciler/v1)."},
    )

    api_version: Literal["reconciler/v1"] = Field(alias="apiVersion")
    kind: Literal["Task"]
    metadata: Metadata
    spec: TaskSpec

    def canonical(self) -> dict[str, Any]:
        """The manifest as JSON data without default values (what is stored and hashed)."""
        data: dict[str, Any] = self.model_dump(mode="json", exclude_defaults=True)
        return data


# --------------------------------------------------------------------------- inner form


@dataclass(frozen=True, slots=True)
class ManifestError:
    """A problem with one manifest, located as precisely as the input allows."""

    file: str
    message: str
    line: int | None = None
    column: int | None = None
    task: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        parts = [where]
        if self.task:
            parts.append(self.task)
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "task": self.task,
            "field": self.field,
            "message": self.message,
        }


def spec_hash(document: dict[str, Any]) -> str:
    """Stable hash of a canonical manifest document (metadata and spec)."""
    raw = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TaskDef:
    """A validated task as found in the manifests: the desired state of one task."""

    name: str
    document: dict[str, Any] = field(compare=False, hash=False)
    hash: str
    source_file: str
    source_line: int = 1
    #: (line, column) of fields whose acceptance depends on the host (``spec.run.user``),
    #: for errors found after loading; empty when the loader did not record them.
    field_lines: dict[str, tuple[int, int]] = field(
        default_factory=dict, compare=False, hash=False
    )

    @classmethod
    def from_manifest(
        cls, manifest: TaskManifest, source_file: str, source_line: int = 1
    ) -> TaskDef:
        doc = manifest.canonical()
        return cls(manifest.metadata.name, doc, spec_hash(doc), source_file, source_line)

    @classmethod
    def from_document(
        cls, document: dict[str, Any], source_file: str, source_line: int = 1
    ) -> TaskDef:
        """Rebuild from stored canonical JSON (validated again, so it round-trips)."""
        return cls.from_manifest(TaskManifest.model_validate(document), source_file, source_line)

    def manifest(self) -> TaskManifest:
        return TaskManifest.model_validate(self.document)

    @property
    def schedule(self) -> str:
        """The schedule as one line (several expressions joined by ``"; "``)."""
        return schedule_text(self.document["spec"]["schedule"])

    @property
    def schedules(self) -> tuple[str, ...]:
        return schedules_of(self.document["spec"]["schedule"])

    @property
    def time_zone(self) -> str:
        return str(self.document["spec"].get("timeZone", "UTC"))

    @property
    def suspend(self) -> bool:
        return bool(self.document["spec"].get("suspend", False))

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.document.get("metadata", {}).get("labels", {}))

    @property
    def notify_channels(self) -> tuple[str, ...]:
        """The channels ``spec.notify`` names, in order."""
        return tuple(r["channel"] for r in self.document["spec"].get("notify", ()))

    @property
    def calendars(self) -> tuple[str, ...]:
        """The calendars ``spec.calendars`` names, in order."""
        return tuple(self.document["spec"].get("calendars", ()))


@dataclass(frozen=True, slots=True)
class NamedDef:
    """A validated document of a kind other than Task (a channel, a calendar): its
    name, canonical document and hash, and where it came from."""

    name: str
    document: dict[str, Any] = field(compare=False, hash=False)
    hash: str
    source_file: str
    source_line: int = 1


@dataclass(frozen=True, slots=True)
class ChannelDef(NamedDef):
    """A validated ``kind: Channel`` as found in the manifests (see ``core/channels.py``
    for its manifest model): where notifications go."""


@dataclass(frozen=True, slots=True)
class DesiredState:
    """Everything the manifests directory says, including what could not be read.

    ``failed_files`` are files with at least one error; the plan keeps every task that
    came from one of them unchanged. ``frozen_names`` are names whose definition is in
    doubt (declared twice); the plan keeps those unchanged too.
    """

    tasks: tuple[TaskDef, ...]
    errors: tuple[ManifestError, ...] = ()
    channels: tuple[NamedDef, ...] = ()
    failed_files: frozenset[str] = frozenset()
    frozen_names: frozenset[str] = frozenset()
    frozen_channels: frozenset[str] = frozenset()
    #: ``kind: Calendar`` documents (:class:`~reconciler.core.calendars.CalendarDef`)
    calendars: tuple[NamedDef, ...] = ()
    frozen_calendars: frozenset[str] = frozenset()
    files: frozenset[str] = frozenset()
    directory_missing: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors and not self.directory_missing

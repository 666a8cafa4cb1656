"""What a task may declare beside its schedule and its run: notification rules
(``spec.notify``), resource limits (``spec.limits``) and parameters (``spec.params``)."""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import Field, Strict, WithJsonSchema, field_validator, model_validator

from reconciler.core.model_base import (
    ENV_NAME_PATTERN,
    NAME_PATTERN,
    FromEnv,
    FromFile,
    _Frozen,
)
from reconciler.core.params import MAX_VALUE_LENGTH, PARAM_NAME_PATTERN, coerce


class NotifyEvent(enum.StrEnum):
    """What happened to a task that a channel can be told about."""

    FAILED = "failed"  # the last attempt of a slot failed (no retry left)
    TIMED_OUT = "timed_out"
    ABANDONED = "abandoned"
    MISSED = "missed"
    LATE = "late"  # no success of a slot within ``spec.deadline`` of it
    RECOVERED = "recovered"  # the first success after a failure
    SUCCEEDED = "succeeded"  # every success; never in the default list


#: ``spec.notify[].on`` when it is not given: everything but ``succeeded``.
DEFAULT_NOTIFY_ON: tuple[NotifyEvent, ...] = tuple(
    e for e in NotifyEvent if e is not NotifyEvent.SUCCEEDED
)


class NotifyRule(_Frozen):
    """Send the task's events in ``on`` to the channel named ``channel``."""

    channel: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN,
                         description="metadata.name of a kind: Channel manifest.")
    on: Annotated[
        list[Annotated[NotifyEvent, Strict(False)]],
        WithJsonSchema({"type": "array", "minItems": 1, "uniqueItems": True,
                        "items": {"enum": [e.value for e in NotifyEvent], "type": "string"}}),
    ] = Field(default=list(DEFAULT_NOTIFY_ON), min_length=1, max_length=len(NotifyEvent))

    @field_validator("on")
    @classmethod
    def _distinct(cls, value: list[NotifyEvent]) -> list[NotifyEvent]:
        if len(set(value)) != len(value):
            raise ValueError("an event is listed twice")
        return value


#: Byte sizes, Kubernetes style: 512Mi, 1Gi, 64M, 1000 (bytes).
QUANTITY_PATTERN = r"^[1-9][0-9]{0,15}(Ki|Mi|Gi|Ti|K|M|G|T)?$"


class Limits(_Frozen):
    """Resources a run may use (cgroup v2 when the daemon can create cgroups, else rlimits).

    What each limit means in each mode: docs/security.md.
    """

    memory: str | None = Field(
        default=None, pattern=QUANTITY_PATTERN,
        description="Memory of the run: cgroup memory.max, or RLIMIT_AS (address space) "
        "per process in rlimit mode. 512Mi, 1Gi, 64M, or bytes.",
    )
    cpu: str | None = Field(
        default=None, pattern=r"^([0-9]{1,4}(\.[0-9]{1,3})?|[1-9][0-9]{0,6}m)$",
        description="CPUs, e.g. \"1.5\" or \"500m\": cgroup cpu.max; not enforced in "
        "rlimit mode (an rlimit can only cap total CPU seconds).",
    )
    processes: int | None = Field(
        default=None, ge=1, le=4_194_304,
        description="Processes and threads: cgroup pids.max, or RLIMIT_NPROC (per real "
        "user, ignored for root) in rlimit mode.",
    )
    open_files: int | None = Field(
        default=None, ge=8, le=1 << 20, description="Open files per process (RLIMIT_NOFILE)."
    )
    file_size: str | None = Field(
        default=None, pattern=QUANTITY_PATTERN,
        description="Largest file a process may write (RLIMIT_FSIZE).",
    )


ParamType = Literal["string", "integer", "number", "boolean", "enum"]


class Param(_Frozen):
    """A declared input of the task's runs (``spec.params.NAME``): every run gets it
    as ``RECONCILER_PARAM_<NAME>`` (and ``ctx.params``, or the request of an http task
    with ``paramsAs``). Manual runs may override it; runs of the schedule get the
    default. A ``secret`` one is read from ``fromEnv``/``fromFile`` at run time only."""

    type: ParamType = "string"
    default: Annotated[bool, Strict()] | int | float | Annotated[
        str, Field(max_length=MAX_VALUE_LENGTH)] | None = None
    required: bool = Field(default=False,
                           description="A manual run must give a value (no default).")
    values: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None, min_length=1, max_length=256, description="The values of an enum.")
    description: str = Field(default="", max_length=4096)
    secret: bool = Field(default=False, description="Taken only from fromEnv or fromFile "
                         "at run time; refused on the command line and the API.")
    from_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN, max_length=256)
    from_file: str | None = Field(default=None, min_length=2, max_length=4096, pattern=r"^/")

    @model_validator(mode="after")
    def _consistent(self) -> Param:
        if (self.type == "enum") != (self.values is not None):
            raise ValueError("values is required for type enum and only for it")
        if self.values is not None and len(set(self.values)) != len(self.values):
            raise ValueError("a value is listed twice in values")
        if self.secret:
            if self.type != "string":
                raise ValueError("a secret parameter has type string")
            if (self.from_env is None) == (self.from_file is None):
                raise ValueError("a secret parameter takes exactly one of fromEnv or fromFile")
            if self.default is not None or self.required:
                raise ValueError("a secret parameter has no default and is not required "
                                 "(its value comes from fromEnv or fromFile)")
        elif self.from_env is not None or self.from_file is not None:
            raise ValueError("fromEnv and fromFile are for secret parameters (secret: true)")
        if self.default is not None:
            if self.required:
                raise ValueError("required and default exclude each other")
            try:
                coerce(self.type, self.values, self.default)
            except ValueError as exc:
                raise ValueError(f"default: {exc}") from None
            if isinstance(self.default, str) and self.type not in ("string", "enum"):
                raise ValueError(f"default: expected a {self.type} value, not a string")
        return self

    def source(self) -> FromEnv | FromFile:
        """Where a secret parameter's value is read at run time."""
        if self.from_env is not None:
            return FromEnv(from_env=self.from_env)
        assert self.from_file is not None
        return FromFile(from_file=self.from_file)


ParamName = Annotated[str, Field(pattern=PARAM_NAME_PATTERN, max_length=64)]

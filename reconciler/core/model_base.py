"""What every manifest model shares: the frozen, strict, camelCase pydantic base, the
name patterns, and values read at run time (``fromEnv`` / ``fromFile``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_KEY_PATTERN = (
    r"^([a-z0-9A-Z]([-a-z0-9A-Z.]*[a-z0-9A-Z])?/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^([a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?)?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

class _Frozen(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        hide_input_in_errors=True,
    )


class FromEnv(_Frozen):
    """Take the value from the daemon's environment variable at run time."""

    from_env: str = Field(pattern=ENV_NAME_PATTERN, max_length=256)


class FromFile(_Frozen):
    """Take the value from a file (e.g. a mounted Secret) at run time."""

    from_file: str = Field(min_length=2, max_length=4096, pattern=r"^/")

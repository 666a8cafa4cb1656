"""The Channel manifest (``apiVersion: reconciler/v1``, ``kind: Channel``): where
notifications go.

A channel is exactly one of ``webhook`` (a JSON POST of the event, signed with an
HMAC when it has a ``secret``), ``slack`` (an incoming-webhook payload) or ``email``
(through an SMTP server). ``selector`` (optional, the label selector syntax of
``reconciler tasks -l``) makes the channel receive the events of every task whose
labels match, besides the tasks that name it in ``spec.notify``.

Secrets (the webhook's HMAC key, the SMTP password) are only ``fromEnv``/``fromFile``
references: the table holds names, never values, and the sender reads them when it
sends. A Slack URL is a credential too; it may be written literally (the views mask
it, :mod:`reconciler.core.redaction`) but ``fromEnv``/``fromFile`` is better.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import ConfigDict, Field, field_validator, model_validator

from reconciler.core.model import (
    ChannelDef,
    FromEnv,
    FromFile,
    Metadata,
    spec_hash,
)
from reconciler.core.model_base import _Frozen
from reconciler.core.selectors import SelectorError, parse_selector

CHANNEL_KIND = "Channel"
ChannelType = Literal["webhook", "slack", "email"]
CHANNEL_TYPES: tuple[ChannelType, ...] = get_args(ChannelType)

_URL = r"^https?://[^\s/$.?#][^\s]*$"
_HEADER = Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", max_length=256)]
_EMAIL = Annotated[str, Field(pattern=r"^[^@\s<>]+@[^@\s<>]+$", max_length=320)]
Secret = FromEnv | FromFile
UrlValue = Annotated[str, Field(pattern=_URL, max_length=8192)] | FromEnv | FromFile


class Webhook(_Frozen):
    """POST the event as JSON to ``url``."""

    url: str = Field(pattern=_URL, max_length=8192)
    headers: dict[_HEADER, Annotated[str, Field(max_length=65536)] | FromEnv | FromFile] = {}
    secret: Secret | None = Field(
        default=None,
        description="HMAC-SHA256 key: the request carries "
        "X-Reconciler-Signature: sha256=<hex HMAC of the body>.",
    )


class Slack(_Frozen):
    """A Slack incoming webhook (text plus blocks)."""

    url: UrlValue


class Smtp(_Frozen):
    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    username: str | None = Field(default=None, max_length=320)
    password: Secret | None = None

    @model_validator(mode="after")
    def _password_needs_username(self) -> Smtp:
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        return self


class Email(_Frozen):
    """A plain-text mail through an SMTP server."""

    smtp: Smtp
    from_: _EMAIL = Field(alias="from")
    to: list[_EMAIL] = Field(min_length=1, max_length=100)


def _exactly_one_type_schema(schema: dict[str, Any]) -> None:
    schema["oneOf"] = [
        {"required": [kind], "properties": {kind: {"not": {"type": "null"}}}}
        for kind in CHANNEL_TYPES
    ]


class ChannelSpec(_Frozen):
    """Exactly one of ``webhook``, ``slack`` or ``email``; ``selector`` optional."""

    model_config = ConfigDict(json_schema_extra=_exactly_one_type_schema)

    webhook: Webhook | None = None
    slack: Slack | None = None
    email: Email | None = None
    selector: str | None = Field(
        default=None, min_length=1, max_length=4096,
        description="Label selector (team=data,env in (prod,staging)): the channel also "
        "receives the events of every task whose labels match.",
    )

    @field_validator("selector")
    @classmethod
    def _valid_selector(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_selector(value)
            except SelectorError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _exactly_one_type(self) -> ChannelSpec:
        given = [k for k in CHANNEL_TYPES if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "exactly one of webhook, slack or email is required"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def type(self) -> ChannelType:
        return next(k for k in CHANNEL_TYPES if getattr(self, k) is not None)


class ChannelManifest(_Frozen):
    """One ``kind: Channel`` document."""

    model_config = ConfigDict(
        title="Channel",
        json_schema_extra={"description": "A reconciler notification Channel manifest "
                           "(apiVersion reconciler/v1)."},
    )

    api_version: Literal["reconciler/v1"] = Field(alias="apiVersion")
    kind: Literal["Channel"]
    metadata: Metadata
    spec: ChannelSpec


def channel_def(manifest: ChannelManifest, source_file: str, source_line: int = 1) -> ChannelDef:
    """The inner form: the canonical document (defaults left out) and its hash."""
    doc: dict[str, Any] = manifest.model_dump(mode="json", exclude_defaults=True)
    return ChannelDef(manifest.metadata.name, doc, spec_hash(doc), source_file, source_line)


def channel_manifest(document: dict[str, Any]) -> ChannelManifest:
    """A stored canonical document, validated again."""
    return ChannelManifest.model_validate(document)


def channel_type(document: dict[str, Any]) -> ChannelType:
    return next(k for k in CHANNEL_TYPES if k in document.get("spec", {}))


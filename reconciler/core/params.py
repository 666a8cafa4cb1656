"""A run's parameters (``spec.params``): the one place their values are checked and encoded.

A task declares its inputs in ``spec.params``; every run gets values for them:

* a run of the schedule (and its catch-up runs) gets the declared defaults
  (:func:`defaults`);
* a manual run gets the defaults overridden by what the operator gave
  (:func:`bind_params`): ``reconciler trigger NAME --param region=us`` on the database
  or through ``--server``, ``POST /api/v1/tasks/NAME/trigger`` with ``{"params": ...}``
  and the dashboard's trigger dialog all reach ``TaskOperations.trigger``, which calls
  :func:`bind_params` once. An unknown name, a value of the wrong type, a missing
  required value or a value for a ``secret`` parameter is a :class:`ParamError`
  naming the parameter (the CLI exits 1, the API answers 422).
* a retry keeps the values of the attempt it retries.

Values given as text (the command line, an HTML form) are read by the parameter's
type; values given as JSON must have its type (a string is read as text too).

Secret parameters (``secret: true``) take their value at run time from ``fromEnv`` or
``fromFile``, never from an operator: the run row records :data:`MASK` in their
place (:func:`row_values`), and the executors resolve them like ``env`` references.

Pure functions; the declarations are anything shaped like
:class:`~reconciler.core.model.Param` (:class:`ParamDecl`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from reconciler.core.errors import ReconcilerError
from reconciler.core.redaction import MASK, is_secret_name

#: A parameter's value: what ``ctx.params`` holds and the run row records.
ParamValue = str | int | float | bool
PARAM_NAME_PATTERN = r"^[a-zA-Z][a-zA-Z0-9_]*$"
#: The environment variable of parameter ``name`` is ``ENV_PREFIX + name.upper()``.
ENV_PREFIX = "RECONCILER_PARAM_"
#: The longest value a parameter takes (a string, or the text of another type).
MAX_VALUE_LENGTH = 4096
_INTEGER = re.compile(r"^-?[0-9]{1,30}$")
_NUMBER = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$")


class ParamDecl(Protocol):
    """What the functions here read of a declaration (``core.model.Param``)."""

    @property
    def type(self) -> str: ...

    @property
    def default(self) -> ParamValue | None: ...

    @property
    def required(self) -> bool: ...

    @property
    def values(self) -> Sequence[str] | None: ...

    @property
    def secret(self) -> bool: ...


class ParamError(ReconcilerError, ValueError):
    """Values for a run's parameters that the declarations refuse; ``problems`` holds
    one message per parameter, each naming it."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


def _article(kind: str) -> str:
    return {"integer": "an integer", "enum": "one of the values", "boolean": "true or false",
            "number": "a number", "string": "a string"}[kind]


def _got(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return json.dumps(shown)
    if value is None:
        return "null"
    return type(value).__name__ if isinstance(value, list | dict) else str(value)


def coerce(kind: str, values: Sequence[str] | None, value: object) -> ParamValue:
    """``value`` as a value of a parameter of type ``kind`` (``values``: an enum's);
    raises ``ValueError`` with what was expected. Text is read by the type (``"3"`` is
    3 for an integer, ``"false"`` is false for a boolean)."""
    if isinstance(value, str) and len(value) > MAX_VALUE_LENGTH:
        raise ValueError(f"longer than {MAX_VALUE_LENGTH} characters")
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("contains a NUL character")
    if kind in ("string", "enum"):
        if not isinstance(value, str):
            raise ValueError(f"expected {_article(kind)}, got {_got(value)}")
        if kind == "enum" and value not in (values or ()):
            allowed = ", ".join(values or ())
            raise ValueError(f"expected one of {allowed}, got {_got(value)}")
        return value
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INTEGER.match(value):
            return int(value)
    elif kind == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"expected a finite number, got {value}")
            return value
        if isinstance(value, str) and _NUMBER.match(value):
            number: int | float = json.loads(value)
            if isinstance(number, float) and not math.isfinite(number):
                raise ValueError(f"expected a finite number, got {_got(value)}")
            return number
    else:
        raise ValueError(f"unknown type {kind!r}")
    raise ValueError(f"expected {_article(kind)}, got {_got(value)}")


def defaults(decls: Mapping[str, ParamDecl]) -> dict[str, ParamValue]:
    """The values a run of the schedule gets: each default (secret ones are resolved
    at run time, not here)."""
    return {name: d.default for name, d in decls.items()
            if d.default is not None and not d.secret}


def bind_params(decls: Mapping[str, ParamDecl], given: Mapping[str, object]
                ) -> dict[str, ParamValue]:
    """The values of a manual run: the defaults overridden by ``given``.

    Raises :class:`ParamError` (every problem, each naming its parameter) for an
    unknown name, a secret parameter given, a value of the wrong type or a required
    parameter without a value. Secret parameters are not in the result.
    """
    problems: list[str] = []
    values = defaults(decls)
    for name, raw in given.items():
        decl = decls.get(name)
        if decl is None:
            known = ", ".join(decls) or "none"
            problems.append(f"unknown parameter {name!r} (declared: {known})")
        elif decl.secret:
            problems.append(f"parameter {name!r} is secret: it is taken from its fromEnv or "
                            "fromFile only, never from the command line or the API")
        else:
            try:
                values[name] = coerce(decl.type, decl.values, raw)
            except ValueError as exc:
                problems.append(f"parameter {name!r}: {exc}")
    problems.extend(_missing(decls, values))
    if problems:
        raise ParamError(problems)
    return {name: values[name] for name in decls if name in values}


def _missing(decls: Mapping[str, ParamDecl], values: Mapping[str, object]) -> list[str]:
    return [f"parameter {name!r} is required and has no value" for name, d in decls.items()
            if d.required and not d.secret and name not in values]


def missing_required(decls: Mapping[str, ParamDecl], values: Mapping[str, object]
                     ) -> str | None:
    """Why a run cannot start with ``values`` (None: it can): a required parameter
    without a value, as a run of the schedule has when it declares no default."""
    problems = _missing(decls, values)
    if not problems:
        return None
    return "; ".join(problems) + " (runs of the schedule use the defaults)"


def row_values(decls: Mapping[str, ParamDecl], values: Mapping[str, ParamValue]
               ) -> dict[str, ParamValue] | None:
    """What the run row records: the values, with :data:`MASK` for each secret
    parameter (its value never reaches the table); None when none are declared."""
    if not decls:
        return None
    out = {name: (MASK if d.secret else values[name]) for name, d in decls.items()
           if d.secret or name in values}
    return out


def shown_values(values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Stored values as the API, the CLI and audit rows show them: a value under a
    name that looks like a credential (``apiToken``) is masked as in ``env``."""
    if values is None:
        return None
    return {k: MASK if isinstance(v, str) and v and is_secret_name(k) else v
            for k, v in values.items()}


def text(value: ParamValue) -> str:
    """A value as its environment variable and a query parameter carry it: booleans
    ``true``/``false``, numbers as written in JSON, strings as they are."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return value


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def environment(values: Mapping[str, ParamValue]) -> dict[str, str]:
    """``RECONCILER_PARAM_<NAME>`` for each value."""
    return {env_name(name): text(value) for name, value in values.items()}


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """``["region=us", "dryRun=false"]`` (``--param``) as a mapping of text values;
    raises :class:`ParamError` for an item without ``=`` or a name given twice."""
    out: dict[str, str] = {}
    problems = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            problems.append(f"--param {item!r}: expected NAME=VALUE")
        elif name in out:
            problems.append(f"parameter {name!r} is given twice")
        else:
            out[name] = value
    if problems:
        raise ParamError(problems)
    return out

"""The environment a task runs with, and how secret references are resolved.

Why a *minimal* base environment: the daemon's own environment holds its database URL,
cloud credentials and whatever else the service manager put there. A task inherits
none of it by default; it gets only

* ``PATH`` (``os.defpath`` when the daemon has none), ``HOME``, ``LANG`` and ``TZ``,
  copied from the daemon's environment when set (:data:`BASE_ENV_VARS`),
* the task's ``env`` from the manifest, with ``fromEnv``/``fromFile`` references
  resolved at run time (never at load or apply time, so a rotated secret is picked
  up by the next run and the values are never stored),
* ``RECONCILER_TASK``, ``RECONCILER_RUN_ID``, ``RECONCILER_SLOT`` (ISO 8601),
  ``RECONCILER_ATTEMPT``, ``RECONCILER_IDEMPOTENCY_KEY`` (the same for every attempt
  of a slot: :func:`~reconciler.core.isolation.idempotency_key`) and, when the run
  has a timeout, ``RECONCILER_DEADLINE`` (ISO 8601, UTC), taken from the request and
  not overridable by the task's ``env``,
* ``RECONCILER_PARAM_<NAME>`` for each of the run's parameters (:func:`run_params`:
  the run row's values, a secret one read from its ``fromEnv``/``fromFile`` now),
* finally ``request.extra_env`` from the daemon, which wins over everything.

Secret handling: a value read through ``fromEnv`` or ``fromFile`` must not leak into
run records or logs. Errors raised here name the *variable* or the *file*, never a
value, and are raised ``from None`` so that no chained exception (a
``UnicodeDecodeError`` carries the offending bytes) travels with them. The resolved
secret values are returned separately so executors can mask them in the error
and the output that originate in task code (:func:`redact`, and the
:class:`~reconciler.executors.output.OutputSink` for output).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from reconciler.core.errors import ReconcilerError
from reconciler.core.isolation import idempotency_key
from reconciler.core.model import FromEnv, FromFile
from reconciler.core.params import ParamValue, environment, missing_required
from reconciler.core.protocols import ExecutionRequest
from reconciler.executors.output import MIN_REDACT_LENGTH, REDACTED, redact

__all__ = [
    "BASE_ENV_VARS",
    "MIN_REDACT_LENGTH",
    "REDACTED",
    "ResolvedEnv",
    "SecretResolutionError",
    "build_run_env",
    "redact",
    "run_params",
]

#: Variables copied from the daemon's environment into every task's environment.
BASE_ENV_VARS: tuple[str, ...] = ("PATH", "HOME", "LANG", "TZ")

#: ``fromFile`` secrets larger than this are refused (protects against ``/dev/zero``
#: or a mistyped path to a log file).
MAX_SECRET_FILE_BYTES = 1 << 20



class SecretResolutionError(ReconcilerError):
    """A ``fromEnv`` or ``fromFile`` reference could not be resolved.

    The message names the variable or file and the key it was meant for, never a value.
    """


@dataclass(frozen=True, slots=True)
class ResolvedEnv:
    """The environment for one run, plus the secret values in it (for redaction)."""

    env: dict[str, str]
    secrets: tuple[str, ...]


def base_environment(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of :data:`BASE_ENV_VARS` found in ``source`` (the daemon's env)."""
    source = os.environ if source is None else source
    env = {name: source[name] for name in BASE_ENV_VARS if name in source}
    env.setdefault("PATH", os.defpath)
    return env


def resolve_value(value: str | FromEnv | FromFile, what: str) -> str:
    """Resolve one value; ``what`` says what it is for (e.g. ``"env DB_PASSWORD"``)."""
    if isinstance(value, str):
        result = value
    elif isinstance(value, FromEnv):
        name = value.from_env
        found = os.environ.get(name)
        if found is None:
            raise SecretResolutionError(
                f"{what}: environment variable {name} is not set in the daemon's environment"
            )
        result = found
    elif isinstance(value, FromFile):
        result = _read_secret_file(value.from_file, what)
    else:  # pragma: no cover - guarded by the manifest model
        raise SecretResolutionError(f"{what}: unsupported value type {type(value).__name__}")
    if "\x00" in result:
        raise SecretResolutionError(f"{what}: value contains a NUL character")
    return result


def resolve_env(env: Mapping[str, str | FromEnv | FromFile]) -> dict[str, str]:
    """Resolve a task's ``env`` mapping; raise :class:`SecretResolutionError` on a miss.

    ``fromEnv`` reads the daemon's ``os.environ``; ``fromFile`` reads the file as UTF-8
    and strips one trailing newline (``\\n`` or ``\\r\\n``), as editors and
    ``echo`` add one.
    """
    return {key: resolve_value(value, f"env {key}") for key, value in env.items()}


def secret_values(
    values: Iterable[tuple[str | FromEnv | FromFile, str]],
) -> tuple[str, ...]:
    """The resolved values that came from ``fromEnv``/``fromFile``, longest first."""
    found = {resolved for ref, resolved in values if not isinstance(ref, str) and resolved}
    return tuple(sorted(found, key=len, reverse=True))


@dataclass(frozen=True, slots=True)
class RunParams:
    """A run's parameter values, and the secret values among them (for redaction)."""

    values: dict[str, ParamValue]
    secrets: tuple[str, ...]


def run_params(request: ExecutionRequest) -> RunParams:
    """The values of the run's parameters: the run row's, with each secret parameter
    read from its ``fromEnv``/``fromFile`` (the row holds a mask for it). Raises
    :class:`SecretResolutionError` for a secret that cannot be read or a required
    parameter without a value."""
    values: dict[str, ParamValue] = {}
    pairs = []
    for name, decl in request.param_specs.items():
        if decl.secret:
            ref = decl.source()
            secret = values[name] = resolve_value(ref, f"param {name}")
            pairs.append((ref, secret))
        elif name in request.params:
            values[name] = request.params[name]
    problem = missing_required(request.param_specs, values)
    if problem is not None:
        raise SecretResolutionError(problem)
    return RunParams(values, secret_values(pairs))


def build_run_env(request: ExecutionRequest, now: datetime | None = None) -> ResolvedEnv:
    """The complete environment of a process run (see the module docstring for order)."""
    spec_env = request.run.env
    resolved = resolve_env(spec_env)
    params = run_params(request)
    env = base_environment()
    env.update(resolved)
    env.update(reconciler_variables(request, now))
    env.update(environment(params.values))
    env.update(request.extra_env)
    secrets = secret_values((spec_env[key], resolved[key]) for key in spec_env)
    secrets = tuple(sorted({*secrets, *params.secrets}, key=len, reverse=True))
    return ResolvedEnv(env, secrets)


def reconciler_variables(request: ExecutionRequest, now: datetime | None = None) -> dict[str, str]:
    """``RECONCILER_*`` variables derived from the request itself."""
    variables = {
        "RECONCILER_TASK": request.task,
        "RECONCILER_RUN_ID": str(request.run_id),
        "RECONCILER_SLOT": request.slot.isoformat(),
        "RECONCILER_ATTEMPT": str(request.attempt),
        "RECONCILER_IDEMPOTENCY_KEY": idempotency_key(request.task, request.slot),
    }
    deadline = run_deadline(request, now)
    if deadline is not None:
        variables["RECONCILER_DEADLINE"] = deadline.isoformat()
    return variables


def run_deadline(request: ExecutionRequest, now: datetime | None = None) -> datetime | None:
    """Wall-clock instant (aware, UTC) at which the run times out, if it has a timeout."""
    if request.timeout is None:
        return None
    return (now or datetime.now(UTC)) + request.timeout


def _read_secret_file(path: str, what: str) -> str:
    # O_NONBLOCK: opening a FIFO by mistake must not hang the daemon's event loop;
    # the fstat check then refuses anything that is not a regular file.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise SecretResolutionError(f"{what}: secret file {path} does not exist") from None
    except PermissionError:
        raise SecretResolutionError(
            f"{what}: secret file {path} is not readable (permission denied)"
        ) from None
    except OSError as exc:
        raise SecretResolutionError(
            f"{what}: cannot open secret file {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretResolutionError(f"{what}: secret file {path} is not a regular file")
        data = b""
        while len(data) <= MAX_SECRET_FILE_BYTES:
            chunk = os.read(fd, MAX_SECRET_FILE_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise SecretResolutionError(
            f"{what}: cannot read secret file {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise SecretResolutionError(
            f"{what}: secret file {path} is larger than {MAX_SECRET_FILE_BYTES} bytes"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretResolutionError(f"{what}: secret file {path} is not valid UTF-8") from None
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text
